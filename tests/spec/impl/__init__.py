"""An independent implementation of p2pchat's wire protocols, written from docs/protocol.md, docs/ledger.md,
docs/ledger-protocol.md and docs/relay.md only: it imports nothing of p2pchat or ledger (tests/test_layering.py
checks), only the standard library, pycryptodome and msgpack. tests/spec/ uses it to talk to real nodes."""
