"""`python -m smsfleet` is the `smsfleet` command.

The command line is the top-level package `cli`, which imports every package of ours; the kernel imports
none of them, so it is run here by name (`runpy`) rather than imported.
"""

import runpy

runpy.run_module("cli", run_name="__main__", alter_sys=True)
