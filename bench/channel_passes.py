"""Where a 1 MiB message's CPU goes in the channel core, pass by pass, against AES-256-GCM alone.

    python3 bench/channel_passes.py [--repeat N]

One thread, no sockets: the sans-IO channel (``p2pchat/channel.py``) seals a 1 MiB ASCII text and the peer's
channel opens it; each pass of that path is timed on its own (best of ``--repeat`` runs of 20 messages, the rows
interleaved run by run so that a load spike hits all of them, in µs of CPU per MiB), next to GCM's seal and open of the
same plaintext measured in the same run — the fixed cost (issue 12: "fewer passes; measure GCM per pass") — and
the sender's sealing as the code before did it (a padded copy joined first) beside the way it does now (sealed
from the parts). The frame's way through the kernel and the node's threads is not here: ``bench/chat_bench.py
--bulk`` measures the whole.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pchat.channel import Channel, Text
from p2pchat.chat_protocol import (
    CHAT,
    SEALED_CONTENT,
    padded_parts,
    padded_size,
    sealed_aad,
    sealed_frame,
    sealed_nonce,
    unpad,
)
from p2pchat.foundation import crypto
from p2pchat.handshake import Established, LedgerBinding

TEXT = "x" * (1 << 20)
PER_RUN = 20


def best_us(fn: Callable[[], object], repeat: int) -> float:
    """Best of ``repeat`` runs of ``PER_RUN`` calls, in µs of this process's CPU per call (one thread: the CPU
    time is the pass's own, and steadier than the wall clock on a machine shared with other work)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(PER_RUN):
            fn()
        best = min(best, (time.process_time() - t0) / PER_RUN)
    return best * 1e6


def channels() -> tuple[Channel, Channel]:
    k = [crypto.random_bytes(32) for _ in range(4)]
    sid = crypto.random_bytes(32)
    binding = LedgerBinding(b"der", "peer", "127.0.0.3", 8471, None, 1, 1)
    ei = Established(True, k[0], k[1], k[2], k[3], sid, b"der-r", "bob", binding, "0")
    er = Established(False, k[1], k[0], k[3], k[2], sid, b"der-i", "alice", binding, "0")
    # the protocol's largest interval: this bench measures one message's passes, not rotations
    return Channel(ei, rotate_every=1000), Channel(er, rotate_every=1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7, choices=range(1, 21), metavar="1..20",
                        help="runs per pass (at most 20: the sender stays below one key epoch's 1,000 texts)")
    args = parser.parse_args()
    key, sid = crypto.random_bytes(32), crypto.random_bytes(32)
    fields = {"id": 1, "sent_at": 1.0, "text": TEXT}
    plain = b"".join(padded_parts("text", **fields))
    aad = sealed_aad(sid, b"i2r", 0, 0)
    box = crypto.seal(key, sealed_nonce(0), plain, aad)

    alice, bob = channels()
    _, (frame,) = alice.send_text(TEXT, 1.0)
    alice, bob = channels()

    def round_trip() -> None:
        _, frames = alice.send_text(TEXT, 1.0)
        for f in frames:      # as the node's reader has it: the frame's body in a buffer of its own
            for ev in bob.receive(CHAT.decode_buffer(bytearray(memoryview(f)[4:])), more_buffered=True):
                assert not isinstance(ev, Text) or len(ev.text) == len(TEXT)
        bob.take_receipt()

    def open_copied() -> None:     # before: the box copied out by msgpack, then decrypted into new bytes
        msg = CHAT.decode(received)
        crypto.open_sealed(key0, sealed_nonce(0), msg["box"], aad0)

    def open_in_place() -> None:   # now: the box a view of the received buffer, decrypted where it lies
        msg = CHAT.decode_buffer(bytearray(received))
        crypto.open_in_place(key0, sealed_nonce(0), msg["box"], aad0)

    def seal_frame(parts: list[bytes], key: bytes = key, aad: bytes = aad) -> bytes:
        frame, at = sealed_frame(0, 0, sum(len(p) for p in parts) + crypto.GCM_TAG_LEN)
        with memoryview(frame) as view:
            crypto.seal_into(key, sealed_nonce(0), parts, aad, view[at:])
        return bytes(frame)

    sealed_body = memoryview(frame)[4:]
    body = SEALED_CONTENT.encode_body("text", **fields)
    key0, aad0 = crypto.random_bytes(32), sealed_aad(sid, b"i2r", 0, 0)
    received = bytes(seal_frame([plain], key0, aad0))[4:]
    rows = [
        ("GCM seal (crypto.seal)", lambda: crypto.seal(key, sealed_nonce(0), plain, aad)),
        ("GCM open (crypto.open_sealed)", lambda: crypto.open_sealed(key, sealed_nonce(0), box, aad)),
        ("sender: Channel.send_text, all passes", lambda: alice.send_text(TEXT, 1.0)),
        ("  seal a frame from the padded parts (now: the text's UTF-8 a part)",
         lambda: seal_frame(padded_parts("text", **fields))),
        ("  seal a frame from the msgpack-packed body (before)", lambda: seal_frame(packed_parts())),
        ("receiver: decode + open, box copied (before)", open_copied),
        ("receiver: decode + open in place (now)", open_in_place),
        ("receiver + sender: send_text then receive", round_trip),
        ("  inner msgpack pack (text → body; before)", lambda: SEALED_CONTENT.encode_body("text", **fields)),
        ("  padding (padded_parts: head + UTF-8 encode; now)", lambda: padded_parts("text", **fields)),
        ("  frame copy (bytes(bytearray))", lambda: bytes(bytearray(len(frame)))),
        ("  outer decode (CHAT.decode: box copied out; before)", lambda: CHAT.decode(sealed_body)),
        ("  outer decode (CHAT.decode_buffer: box a view; now)", lambda: CHAT.decode_buffer(bytearray(sealed_body))),
        ("  padding check (unpad)", lambda: unpad(plain)),
        ("  inner decode (SEALED_CONTENT.decode: UTF-8)",
         lambda: SEALED_CONTENT.decode(memoryview(plain)[4:4 + len(body)])),
    ]
    def packed_parts() -> list[bytes]:
        packed = SEALED_CONTENT.encode_body("text", **fields)
        n = 4 + len(packed)
        return [len(packed).to_bytes(4, "big"), packed, bytes(padded_size(n) - n)]

    results = {name: float("inf") for name, _ in rows}
    for _ in range(args.repeat):          # rows interleaved round by round: a load spike hits all of them
        for name, fn in rows:
            results[name] = min(results[name], best_us(fn, 1))
    mib = len(TEXT) / (1 << 20)
    gcm = results["GCM seal (crypto.seal)"] + results["GCM open (crypto.open_sealed)"]
    for name, us in results.items():
        print(f"{name:48s} {us / mib:8.0f} µs/MiB")
    sender = results["sender: Channel.send_text, all passes"]
    both = results["receiver + sender: send_text then receive"]
    print(f"sender / GCM seal alone: {sender / results['GCM seal (crypto.seal)']:.2f}; "
          f"sender + receiver / GCM both ways: {both / gcm:.2f}; "
          f"everything but GCM: {(both - gcm) / mib:.0f} µs/MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
