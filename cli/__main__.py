"""`python -m cli` (and `python -m smsfleet`, through runpy) is the `smsfleet` command."""

import sys

from cli import main

sys.exit(main())
