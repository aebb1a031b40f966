"""``python -m p2pchat.relay``: the same as ``p2pchat relay``."""

import sys

from p2pchat.relay.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
