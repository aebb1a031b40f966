"""Compare a ledger started from its stored checkpoint with one replayed from genesis (shared by the checkpoint
property tests and the kill -9 tests)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from ledger.bindings import state_row
from ledger.chain import FinalityPolicy
from ledger.local_ledger import LocalLedger, store_path
from ledger.params import NetworkParams


def snapshot(ledger: LocalLedger, now: float) -> dict[str, Any]:
    """Everything a lookup, a proof or a rule can read, in plain values."""
    chain, bindings = ledger.chain, ledger.chain.bindings
    identities = {fp: (state_row(st), st.record.to_wire()) for fp, st in bindings.identities.items()}
    lookups: dict[tuple[str, Any], Any] = {}
    for kind, keys in (("ip", list(bindings.by_ip)), ("nick", [st.record.nickname for st in
                                                                 bindings.identities.values()]),
                       ("fp", list(bindings.identities))):
        for key in keys:
            answer = ledger.lookup(kind, key, now)  # type: ignore[arg-type]
            if answer is not None:
                answer.verify_proof()
            lookups[(kind, key)] = answer.to_wire() if answer is not None else None
    return {"tip": chain.tip_hash, "height": chain.height, "final": chain.final_height, "work": chain.tip_work,
            "main": [chain.main_hash(h) for h in range(chain.height + 1)],
            "identities": identities, "ips": dict(bindings.by_ip), "nicks": dict(bindings.by_nick),
            "record_loc": dict(chain.record_locations()), "counts": bindings.counts(now),
            "parked": [p.to_json() for p in chain.parked_branches()], "lookups": lookups,
            "later_counts": [bindings.counts(t) for t in (0, now + 86400, now + 10**9)],
            "prefixes": {fp.hex()[:n]: [(i.record.id, i.height, i.index) for i in found[0]] + [found[1]]
                         for fp in bindings.identities for n in (8, 2, 1)
                         for found in [bindings.live_with_prefix(fp.hex()[:n], now, limit=5)]},
            # what sync and fork choice read of the main chain (final history stays in the store once restored)
            "locator": chain.locator(), "median": chain.median_time_past(), "blocks": chain.block_count(),
            "headers": [h.hash for h in chain.headers_after([chain.main_hash(0)])],
            "main_by_hash": {chain.main_hash(h): (chain.is_main(chain.main_hash(h)), chain.fork_height(
                chain.main_hash(h)), chain.chain_work(chain.main_hash(h))) for h in range(chain.height + 1)}}


def force_replay(data_dir: Path, params: NetworkParams) -> None:
    """Make the next start rebuild by replay, as with a store written by an older version."""
    conn = sqlite3.connect(store_path(data_dir, params.name))
    conn.execute("DELETE FROM meta WHERE key='derived'")
    conn.commit()
    conn.close()


def checkpoint_and_replay(data_dir: Path, params: NetworkParams, now: float, work: Path,
                          finality: FinalityPolicy | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Snapshots of the ledger in ``data_dir`` started from its checkpoint (asserted: no rebuild) and of a copy
    replayed from genesis."""
    copy = work / f"{data_dir.name}-replayed"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns("*.lock", "*.sock"))   # a killed node's socket
    with LocalLedger(data_dir, params, clock=lambda: now, finality=finality) as ledger:
        assert ledger.rebuilt_checkpoint is None, ledger.rebuilt_checkpoint
        restored = snapshot(ledger, now)
    force_replay(copy, params)
    with LocalLedger(copy, params, clock=lambda: now, finality=finality) as ledger:
        assert ledger.rebuilt_checkpoint is not None or not ledger.store.has_blocks()
        replayed = snapshot(ledger, now)
    shutil.rmtree(copy)
    return restored, replayed


def damage_oldest_body(path: Path) -> None:
    """Overwrite the page holding block 1's body in a stopped store: old history, which no start reads (the cheap
    open check after a clean shutdown does not see it; the whole-file check does)."""
    conn = sqlite3.connect(path)
    (body,) = conn.execute("SELECT records FROM blocks WHERE height=1").fetchone()
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(path.read_bytes())
    at = data.find(body)
    assert at > 0 and data.find(body, at + 1) < 0
    page = at // page_size
    data[page * page_size:(page + 1) * page_size] = b"\xab" * page_size
    path.write_bytes(bytes(data))
