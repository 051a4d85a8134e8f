"""`python -m mxgate` is the `mxgate` command."""

import sys

from mxgate.cli import main

if __name__ == "__main__":
    sys.exit(main())
