"""``python -m DiffCodeRestoreLib``: the same command line as ``diffcode-restore``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
