"""Proof-of-work search and the mining thread.

:func:`mine` is the hot loop: SHA-256 of the header prefix (everything but the nonce) is computed once; each
attempt copies that state and appends the 8-byte nonce, exactly what a bare hashlib loop does (see
``bench/ledger_core_bench.py``), except that the state after the nonce's seven high bytes is also reused for 256
attempts, so each attempt appends one prebuilt byte instead of converting an integer. A digest meets the target
when it compares below the target as 32 big-endian bytes, which avoids converting every digest to an integer.

:class:`Miner` runs :func:`mine` on a thread: it mines only while the template function returns a block
(i.e. records are pending), and :meth:`Miner.wake` aborts the current attempt within one batch whenever the tip
or the pool changes, so it never keeps hashing on a stale tip.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
import time
from collections.abc import Callable

from ledger.blocks import HEADER_SIZE, MAX_NONCE, NONCE_SIZE, Block, BlockHeader

log = logging.getLogger(__name__)
DEFAULT_BATCH = 1 << 14
TEMPLATE_REFRESH_HASHES = 1 << 22  # rebuild the template (fresh timestamp) after this many attempts
_HIGH = struct.Struct(">Q")  # packed, then the first byte dropped: the nonce's 7 high bytes
_LOW_BYTES = [bytes((i,)) for i in range(256)]


def mine(header: BlockHeader, stop: threading.Event, batch: int = DEFAULT_BATCH,
         progress: Callable[[int], None] | None = None, max_hashes: int | None = None) -> BlockHeader | None:
    """Search nonces from ``header.nonce`` upward for one meeting the header's target.

    Returns the solved header, or None if ``stop`` was set (checked every ``batch`` attempts), ``max_hashes``
    attempts were made or the nonce space ran out. ``progress`` receives the attempts of each finished batch.
    """
    # SHA-256 state after the 117-byte prefix, then after the nonce's 7 high bytes: the inner loop only copies
    # that state and appends the last nonce byte from a prebuilt table (no int-to-bytes conversion per hash).
    base = hashlib.sha256(header.packed[:HEADER_SIZE - NONCE_SIZE])
    # Valid digests are < 2**(256 - bits); as 32-byte big-endian strings the comparison is the same.
    target = header.target.to_bytes(32, "big") if header.target_bits > 0 else b"\xff" * 33
    low_bytes = _LOW_BYTES
    nonce = header.nonce
    last = MAX_NONCE + 1 if max_hashes is None else min(MAX_NONCE + 1, nonce + max_hashes)
    while nonce < last and not stop.is_set():
        end = min(nonce + batch, last)
        n = nonce
        while n < end:
            high = n >> 8
            low_end = min(256, (n & 0xFF) + (end - n))
            mid = base.copy()
            mid.update(_HIGH.pack(high)[1:])
            copy = mid.copy
            for low in low_bytes[n & 0xFF:low_end]:
                h = copy()
                h.update(low)
                if h.digest() < target:
                    return header.with_nonce((high << 8) | low[0])
            n = (high << 8) + low_end
        if progress is not None:
            progress(end - nonce)
        nonce = end
    return None


class Miner:
    """Mining thread: ``template()`` gives the block to mine (None when nothing is pending), ``found(block)``
    receives solved blocks; ``on_rate(hashes_per_second)`` is called about once a second while mining."""

    def __init__(self, template: Callable[[], Block | None], found: Callable[[Block], None], *,
                 on_rate: Callable[[float], None] | None = None, batch: int = DEFAULT_BATCH,
                 name: str = "ledger-miner") -> None:
        self._template = template
        self._found = found
        self._on_rate = on_rate
        self._batch = batch
        self._changed = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name)
        self._window_start = time.monotonic()
        self._window_hashes = 0
        self.hashrate = 0.0
        self.blocks_found = 0
        self.mining = False

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """The tip or the pool changed: abandon the current attempt and rebuild the template."""
        self._changed.set()

    def close(self) -> None:
        """Stop mining and join the thread."""
        self._closing.set()
        self._changed.set()
        if self._thread.is_alive():
            self._thread.join()

    def _progress(self, hashes: int) -> None:
        self._window_hashes += hashes
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self.hashrate = self._window_hashes / (now - self._window_start)
            self._window_start, self._window_hashes = now, 0
            if self._on_rate is not None:
                self._on_rate(self.hashrate)

    def _run(self) -> None:
        while not self._closing.is_set():
            self._changed.clear()
            block = self._template()
            if block is None:
                self.mining = False
                self.hashrate = 0.0
                self._changed.wait()
                continue
            self.mining = True
            self._window_start, self._window_hashes = time.monotonic(), 0
            solved = mine(block.header, self._changed, self._batch, self._progress, TEMPLATE_REFRESH_HASHES)
            if solved is not None and not self._closing.is_set():
                self.blocks_found += 1
                log.info("mined block %d (%s)", solved.height, solved.hash.hex()[:16])
                self._found(Block(solved, block.records))
        self.mining = False
