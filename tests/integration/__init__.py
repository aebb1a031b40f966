"""Multi-process tests: real ledger, chat and relay processes on 127.0.0.x (marked slow)."""
