"""Foundation shared by every layer: frame codec, crypto, identity keys, data directory, addresses.

Nothing here imports from ``ledger``, the chat node or any UI.
"""
