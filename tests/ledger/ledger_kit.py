"""Builders shared by the ledger-core tests: low-difficulty params, records and mined blocks."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

from ledger.blocks import Block, BlockHeader
from ledger.chain import AddResult, Chain
from ledger.merkle import merkle_root
from ledger.miner import mine
from ledger.params import NetworkParams
from ledger.records import ZERO_HASH, Record, make_register
from p2pchat.foundation.identity import Identity
from tests.helpers import wait_until  # noqa: F401  (re-exported for the tests here)

NET = "testnet"
PARAMS = NetworkParams(name=NET, difficulty_bits=8)
T0 = 1_700_000_000
DAY = 86400


def reg(identity: Identity, *, seq: int = 0, prev: bytes = ZERO_HASH, nickname: str = "alice",
        ip: str | None = "10.0.0.1", port: int | None = 8471, ledger_port: int | None = 8470,
        relay: str | None = None, issued: int = T0, lifetime: int = DAY, network: str = NET) -> Record:
    return make_register(identity, network=network, seq=seq, prev=prev, nickname=nickname, ip=ip,
                         port=port if ip else None, ledger_port=ledger_port if ip else None, relay=relay,
                         issued=issued, lifetime=lifetime)


def solve(header: BlockHeader) -> BlockHeader:
    solved = mine(header, threading.Event())
    assert solved is not None
    return solved


def fail_pow(header: BlockHeader) -> BlockHeader:
    """The same header with a nonce whose hash misses the target."""
    nonce = header.nonce
    while True:
        candidate = header.with_nonce(nonce)
        if not candidate.meets_target():
            return candidate
        nonce += 1


def block_on(parent: BlockHeader, records: Sequence[Record], timestamp: int,
             params: NetworkParams = PARAMS, **header_changes: object) -> Block:
    """A mined block on ``parent`` (fields in ``header_changes`` override the computed ones before mining)."""
    header = BlockHeader(version=params.version, network_id=params.network_id, height=parent.height + 1,
                         prev_hash=parent.hash, merkle_root=merkle_root([r.id for r in records]),
                         timestamp=timestamp, target_bits=params.difficulty_bits, nonce=0)
    header = replace(header, **header_changes)  # type: ignore[arg-type]
    return Block(solve(header), tuple(records))


def add(chain: Chain, records: Sequence[Record] = (), at: int | None = None, now: float | None = None) -> Block:
    """Mine a block with ``records`` on the chain's tip and add it; asserts it becomes the tip."""
    at = at if at is not None else max(T0, chain.tip.timestamp + 1)
    block = block_on(chain.tip, records, at, chain.params)
    result = chain.add_block(block, now if now is not None else at)
    assert result.status == "added", result.reason
    assert result.became_tip
    return block


def branch(chain: Chain, parent: BlockHeader, n: int, start: int, records: Sequence[Sequence[Record]] = ()
           ) -> list[Block]:
    """``n`` mined blocks on ``parent`` (not added), with timestamps ``start``, ``start + 1``, …"""
    blocks: list[Block] = []
    for i in range(n):
        recs = records[i] if i < len(records) else ()
        blocks.append(block_on(blocks[-1].header if blocks else parent, recs, start + i, chain.params))
    return blocks


def feed(chain: Chain, blocks: Sequence[Block], now: float) -> list[AddResult]:
    """Add ``blocks`` in order; returns every result."""
    return [chain.add_block(b, now) for b in blocks]


def moves(results: Sequence[AddResult]) -> tuple[list[bytes], list[bytes]]:
    """Hashes of all blocks disconnected and connected over several results, in the order reported."""
    return ([b.hash for r in results for b in r.disconnected], [b.hash for r in results for b in r.connected])
