"""One-time-pad texts (issue 17) against the AES-GCM seal every text already gets, in the same run.

    python3 bench/pad_bench.py [--messages 300] [--size 200]

Per message the pad path spends pad bytes (the record replaced durably: temporary file, fsync, rename, fsync of
the directory), reads them, XORs and computes a one-time Poly1305 tag; then the receiver checks, decrypts and
records. The baseline is one AES-256-GCM seal and open of the same text (the channel's cost per text). The pad's
cost is dominated by the two fsyncs per direction, which is the price of never reusing pad bytes after a crash.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pchat.foundation import crypto  # noqa: E402
from p2pchat.pad import Pad, create_pad, import_pad  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--size", type=int, default=200, help="bytes of text per message")
    args = ap.parse_args()
    text = "x" * args.size
    me, peer = crypto.sha256(b"bench-a"), crypto.sha256(b"bench-b")
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:        # the repository's disk, not a tmpfs
        root = Path(tmp)
        _, mine, theirs = create_pad(me, peer, 2 * args.messages * (args.size + 64) + 4096, root / "usb")
        import_pad(mine, root / "a", me)
        import_pad(theirs, root / "b", peer)
        a, b = Pad.open(root / "a", me, peer), Pad.open(root / "b", peer, me)
        assert a is not None and b is not None
        key, nonce = crypto.random_bytes(32), bytes(12)
        crypto.open_sealed(key, nonce, crypto.seal(key, nonce, b"warm-up", b""), b"")    # imports, first call
        started = time.perf_counter()
        for _ in range(args.messages):
            crypto.open_sealed(key, nonce, crypto.seal(key, nonce, text.encode(), b"aad"), b"aad")
        aes = (time.perf_counter() - started) / args.messages
        started = time.perf_counter()
        for _ in range(args.messages):
            assert b.open_frame(a.seal(text)) == text
        pad = (time.perf_counter() - started) / args.messages
    print(f"{args.messages} messages of {args.size} B")
    print(f"  AES-256-GCM seal+open (baseline): {aes * 1e6:9.1f} µs/message")
    print(f"  pad seal+open, durable records:   {pad * 1e6:9.1f} µs/message   ({pad / aes:,.0f}× the baseline)")
    print(f"  pad messages per second: {1 / pad:,.0f}")


if __name__ == "__main__":
    main()
