"""The network defaults the command line shows in its help, in a module that imports nothing (start-up time)."""

DEFAULT_NETWORK = "p2pchat"
DEFAULT_DIFFICULTY_BITS = 20
MIN_DIFFICULTY_BITS = 1
MAX_DIFFICULTY_BITS = 64
FINALITY_DEPTH = 6              # ledger.chain.FinalityPolicy's defaults
FINALITY_SECONDS = 1800.0
FINALITY_MIN_HOLD = 60.0        # depth counts only for blocks held at least this long (see FinalityPolicy)
PRUNE_KEEP = 288                # ledger.prune: blocks whose bodies a pruning node keeps below its final height
