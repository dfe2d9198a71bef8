"""``python -m asyncjobs_scheduler``: run a scheduler process (see :mod:`asyncjobs_scheduler.cli`)."""

import sys

from asyncjobs_scheduler.cli import main

if __name__ == "__main__":
    sys.exit(main())
