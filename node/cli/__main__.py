"""``python -m node.cli``: the same entry point as the ``fedchain`` script."""

import sys

from node.cli.main import main

sys.exit(main())
