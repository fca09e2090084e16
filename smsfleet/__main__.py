"""`python -m smsfleet` is the `smsfleet` command."""

import sys

from smsfleet.cli import main

sys.exit(main())
