"""``python -m p2pchat``: the same as the ``p2pchat`` command."""

import sys

from p2pchat.cli import main

sys.exit(main())
