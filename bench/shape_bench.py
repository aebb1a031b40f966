"""What one hostile frame of nested msgpack makes a node build (red team, 2026-12-07 night).

A verified peer may send a sealed frame of up to 1.1 MiB whose content is any msgpack: before the schema check,
msgpack built every map and list of it (an empty map is one byte on the wire and 64 bytes in Python). This bench
decodes such frames with the protocols as shipped (shape bounded by their schemas, ``bounded_shape``) and, in the
same run, with the same schemas without the bound (the code before the fix), and prints time, peak memory and the
ratios. A 1 MiB text is the honest reference.

    python3 bench/shape_bench.py
"""

from __future__ import annotations

import time
import tracemalloc

import msgpack

from p2pchat.chat_protocol import CHAT, MAX_FRAME, MAX_PLAINTEXT, SEALED_CONTENT
from p2pchat.foundation.codec import Protocol
from p2pchat.foundation.errors import FrameError


def measure(protocol: Protocol, body: bytes, rounds: int = 3) -> tuple[float, float, str]:
    """(seconds, peak MB, outcome) of decoding ``body``: the best of ``rounds`` times, peak of one traced run."""
    best = float("inf")
    outcome = "accepted"
    for _ in range(rounds):
        start = time.perf_counter()
        try:
            protocol.decode(body)
        except FrameError as exc:
            outcome = f"refused ({exc})"
        best = min(best, time.perf_counter() - start)
    tracemalloc.start()
    try:
        protocol.decode(body)
    except FrameError:
        pass
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return best, peak, outcome


def rows(limit: int, row: bytes, count: int) -> bytes:
    """``{"t": "typing", "on": true, "x": [row] * count}`` (an unknown field: dropped after decoding), under
    ``limit`` bytes."""
    head = b"\x83\xa1t\xa6typing\xa2on\xc3\xa1x"
    count = min(count, (limit - len(head) - 5) // len(row))
    return head + b"\xdd" + count.to_bytes(4, "big") + row * count


def main() -> None:
    unbounded = {p.name: Protocol(p.name, p.messages, p.max_frame) for p in (SEALED_CONTENT, CHAT)}
    cases = [
        ("sealed content: 1 MiB text (honest)", SEALED_CONTENT,
         msgpack.packb({"t": "text", "id": 1, "sent_at": 1.0, "text": "a" * (1 << 20)})),
        ("sealed content: lists of 10 empty maps", SEALED_CONTENT,
         rows(MAX_PLAINTEXT, b"\x9a" + b"\x80" * 10, 100_000)),
        ("sealed content: 256 lists of 256 empty maps", SEALED_CONTENT,
         rows(MAX_PLAINTEXT, b"\xdc\x01\x00" + b"\x80" * 256, 256)),
        ("sealed content: 256 lists of 256 2-char strings", SEALED_CONTENT,
         rows(MAX_PLAINTEXT, b"\xdc\x01\x00" + b"\xa2ab" * 256, 256)),
        ("outer chat frame: lists of 15 empty maps", CHAT, rows(MAX_FRAME, b"\x9f" + b"\x80" * 15, 100_000)),
    ]
    print(f"{'frame':52} {'size':>8} {'before ms':>10} {'after ms':>9} {'ratio':>7} {'before MB':>10} "
          f"{'after MB':>9}  after")
    for name, protocol, body in cases:
        t0, m0, _ = measure(unbounded[protocol.name], body)
        t1, m1, outcome = measure(protocol, body)
        print(f"{name:52} {len(body) / 1e6:7.2f}M {t0 * 1e3:10.2f} {t1 * 1e3:9.2f} {t1 / t0:7.3f} {m0:10.2f} "
              f"{m1:9.2f}  {outcome[:70]}")


if __name__ == "__main__":
    main()
