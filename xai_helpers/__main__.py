"""``python -m xai_helpers``: the command line (:mod:`xai_helpers.ui.cli`)."""

import sys

from .ui.cli import main

if __name__ == "__main__":
    sys.exit(main())
