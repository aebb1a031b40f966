"""p2pchat: peer-to-peer end-to-end encrypted chat authenticated by a proof-of-work ledger.

Layers (imports flow one way): ``p2pchat.foundation`` → ``ledger`` → ``p2pchat`` chat node → UIs.
This package's ``__init__`` stays empty of imports so that ``ledger`` can use ``p2pchat.foundation``
without pulling in the chat layers.
"""

__version__ = "0.1.0"
