"""The child of tests/crash/test_writers_kill9.py: runs one writer in a loop and prints one line per write that
returned (flushed), so the parent knows what was acknowledged when it kills the process with SIGKILL."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from p2pchat.foundation.identity import Identity

FP = "ab" * 32
CHUNK = 64 * 1024
SIZE = 64 * CHUNK


def content() -> bytes:
    """The file the download writer receives: 4 MiB that tell their offsets apart."""
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() * (CHUNK // 32) for i in range(SIZE // CHUNK))


def ack(value: object) -> None:
    sys.stdout.write(f"{value}\n")
    sys.stdout.flush()


def main(kind: str, data: Path) -> None:
    if kind == "key":
        ack(Identity.load_or_create(data).fingerprint.hex())
        return
    if kind == "settings":
        from gui import settings
        for i in range(100_000):        # bounded; the parent kills it long before
            settings.save(data, settings.Settings(width=600 + i % 5000))
            ack(i)
        return
    from p2pchat.vault import Vault
    vault = Vault.open(data, None)
    if kind == "contacts":
        from p2pchat.contacts import ContactStore
        store = ContactStore.in_data_dir(data, vault)
        fp = store.all()[0].fp
        for i in range(100_000):
            store.rename(fp, f"name-{i}")
            ack(i)
    elif kind == "outbox":
        from p2pchat.history import HistoryStore
        history = HistoryStore.in_data_dir(data, vault)
        first = len(history.waiting(FP))
        for i in range(first, first + 100_000):     # what Outbox.enqueue writes: one waiting row per text
            history.append(FP, "out", f"text {i}", ts=time.time(), status="waiting")
            ack(i)
    elif kind == "download":
        from p2pchat.downloads import Downloads
        whole = content()
        downloads = Downloads(data / "downloads", max_size=SIZE)
        partial = downloads.open(FP, "big.bin", hashlib.sha256(whole).digest(), SIZE)
        ack(partial.offset)             # where it resumed
        for start in range(partial.offset, SIZE, CHUNK):
            partial.write(whole[start:start + CHUNK])
            partial.checkpoint()        # on disk and in the resume record
            ack(partial.progress())
            time.sleep(0.005)           # a wider window for the kill to land between two chunks
        time.sleep(60)                  # killed here at the latest: never finished (renamed) on purpose


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
