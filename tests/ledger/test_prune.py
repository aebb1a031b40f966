"""Pruning (ledger/prune.py): a pruned node answers every lookup and proof like an unpruned one, follows reorgs
within the finality window, refuses what it can no longer do with a plain reason, and `ledger verify` checks
what is kept."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import msgpack
import pytest
from checkpoint_kit import snapshot
from gossip_kit import Net, grow
from gossip_kit import config as gossip_config
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from ledger_kit import DAY, NET, PARAMS, T0, block_on, reg, wait_until

from ledger import cli
from ledger.assume_valid import AssumeValid, progress_path
from ledger.blocks import Block
from ledger.chain import Chain, FinalityPolicy
from ledger.errors import LedgerError, StoreError
from ledger.local_ledger import LocalLedger, store_path, verify_store
from ledger.prune import Pruner, PruneState, prune_all
from ledger.records import Record, make_revocation, make_rotation
from tests.conftest import make_identities

NOW = T0 + 40 * DAY
POLICY = FinalityPolicy(depth=3, min_hold=0, seconds=100 * DAY)  # by depth only: the test sets the final height
IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
NICKS = ["alice", "bob", "Alice", "carol"]


class ChainBuilder:
    """Valid random chains: renewals (some expiring soon, some moving address or nickname, some clashing with
    another key), a rotation and a revocation; a block whose records break a rule is mined without them."""

    def __init__(self, picks: list[tuple[int, int, int, int]]) -> None:
        self.keys = make_identities(6)
        self.chain = Chain(PARAMS, POLICY)
        self.latest: dict[int, Record] = {}
        self.owner = {i: i for i in range(4)}   # identity slot → index of its current key
        self.blocks: list[Block] = []
        self.picks = picks

    def record(self, slot: int, action: int, ip: int, nick: int, issued: int) -> Record:
        key = self.keys[self.owner[slot]]
        last = self.latest.get(slot)
        seq, prev = (0, bytes(32)) if last is None else (last.seq + 1, last.id)
        if action == 5 and last is not None and self.owner[slot] == slot:
            new = self.keys[4 + slot % 2]
            self.owner[slot] = 4 + slot % 2
            return make_rotation(key, new, network=NET, seq=seq, prev=prev, nickname=NICKS[nick], ip=IPS[ip],
                                 port=8471, ledger_port=8470, issued=issued, lifetime=DAY)
        if action == 6 and last is not None:
            return make_revocation(key, network=NET, seq=seq, prev=prev, issued=issued)
        lifetime = DAY // 4 if action in (1, 2) else 20 * DAY   # short ones expire within the chain's span
        return reg(key, seq=seq, prev=prev, ip=IPS[ip], nickname=NICKS[nick], issued=issued, lifetime=lifetime)

    def build(self) -> list[Block]:
        for i, (slot, action, ip, nick) in enumerate(self.picks):
            at = T0 + (i + 1) * DAY // 2
            records = []
            if action != 0 and not (self.latest.get(slot) and self.latest[slot].kind == "revoke"):
                records = [self.record(slot, action, ip, nick, at - 10)]
            block = block_on(self.chain.tip, records, at)
            result = self.chain.add_block(block, at)
            if result.status != "added":
                block = block_on(self.chain.tip, [], at)
                assert self.chain.add_block(block, at).status == "added"
            elif records:
                self.latest[slot] = records[0]
            self.blocks.append(block)
        return self.blocks


def prune_copy(source: Path, target: Path, keep: int) -> PruneState:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.lock"))
    with LocalLedger(target, PARAMS, clock=lambda: NOW, finality=POLICY) as ledger:
        state = prune_all(ledger, keep)
    assert state is not None
    return state


picks = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(0, 2), st.integers(0, 3)),
                 min_size=4, max_size=24)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=picks, keep=st.integers(0, 4))
def test_a_pruned_ledger_answers_every_lookup_and_proof_like_an_unpruned_one(plan, keep):
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        blocks = ChainBuilder(plan).build()
        with LocalLedger(work / "full", PARAMS, clock=lambda: NOW, finality=POLICY) as ledger:
            ledger.receive_blocks(blocks, NOW)
        state = prune_copy(work / "full", work / "pruned", keep)
        assert state.height == max(0, len(blocks) - POLICY.depth + 1 - keep)
        event(f"records pruned: {min(state.records, 3)}+")
        with LocalLedger(work / "full", PARAMS, clock=lambda: NOW, finality=POLICY) as full, \
                LocalLedger(work / "pruned", PARAMS, clock=lambda: NOW, finality=POLICY) as pruned:
            assert pruned.rebuilt_checkpoint is None
            assert snapshot(pruned, NOW) == snapshot(full, NOW)
            for at in (T0, NOW + DAY, NOW + 40 * DAY):   # lookups at other times read expired records too
                for ip in IPS:
                    assert _wire(pruned.lookup("ip", ip, at)) == _wire(full.lookup("ip", ip, at))
            # blocks above the prune height are still served in full, those at or below it not at all
            main = [full.main_at(h) for h in range(1, full.height + 1)]
            served = pruned.get_blocks([b.hash for b in main if b is not None])
            assert [b.height for b in served] == [b.height for b in main if b is not None and b.height > state.height]
            report = pruned.verify_store()
            assert report.ok, report.problems
            assert bool(report.unchecked) == (state.height > 0)
            assert full.verify_store().ok
            # A heavier branch from the final block replaces everything above it on both: the records it
            # disconnects make older records their identities' latest again, which pruning must have kept.
            final = full.chain.final_height
            side, parent = [], full.main_at(final).header  # type: ignore[union-attr]
            for i in range(full.height - final + 1):
                side.append(block_on(parent, [], NOW - 100 + i))
                parent = side[-1].header
            for ledger in (full, pruned):
                ledger.receive_blocks(side, NOW)
                assert ledger.chain.tip_hash == side[-1].hash
            assert snapshot(pruned, NOW) == snapshot(full, NOW)
        with LocalLedger(work / "pruned", PARAMS, clock=lambda: NOW, finality=POLICY) as pruned:
            after = snapshot(pruned, NOW)
        with LocalLedger(work / "full", PARAMS, clock=lambda: NOW, finality=POLICY) as full:
            assert after == snapshot(full, NOW)


def _wire(answer: object) -> object:
    return answer.to_wire() if answer is not None else None  # type: ignore[attr-defined]


def test_a_reorg_within_the_finality_window_works_on_a_pruned_node_and_renewals_follow_pruned_history(tmp_path):
    a, b = make_identities(2)
    records: list[Record] = []
    for seq in range(6):   # six renewals of one key, then a key that moves between addresses
        records.append(reg(a, seq=seq, prev=records[-1].id if records else bytes(32), issued=T0 + seq * DAY,
                           lifetime=2 * DAY))
    b0 = reg(b, ip="10.0.0.9", nickname="bob", issued=T0 + 6 * DAY)
    blocks: list[Block] = []
    tip = PARAMS.genesis().header
    for i, record in enumerate([*records, b0, None, None, None]):
        blocks.append(block_on(tip, [record] if record else [], T0 + i * DAY + 5))
        tip = blocks[-1].header
    now = T0 + 10 * DAY
    with LocalLedger(tmp_path / "full", PARAMS, clock=lambda: now, finality=POLICY) as ledger:
        ledger.receive_blocks(blocks, now)
        assert ledger.chain.final_height == 8
    state = prune_copy(tmp_path / "full", tmp_path / "pruned", keep=1)
    assert (state.height, state.records) == (7, 5)   # a0…a4 superseded; a5 and b0 named by the binding state
    # A heavier branch from block 8 (final) that renews both keys: it replaces blocks 9 and 10.
    c1 = reg(b, seq=1, prev=b0.id, ip="10.0.0.10", nickname="bob", issued=now - 100)
    a6 = reg(a, seq=6, prev=records[5].id, issued=now - 100, lifetime=2 * DAY)
    side, parent = [], blocks[7].header
    for i, recs in enumerate([[c1], [a6], []]):
        side.append(block_on(parent, recs, now - 50 + i))
        parent = side[-1].header
    answers = []
    for name in ("full", "pruned"):
        with LocalLedger(tmp_path / name, PARAMS, clock=lambda: now, finality=POLICY) as ledger:
            results = ledger.receive_blocks(side, now)
            # the switch comes at the equal-work block when its hash is lower, else at the last one
            assert ledger.chain.tip_hash == side[-1].hash and sum(len(r.disconnected) for r in results) == 2
            answers.append(snapshot(ledger, now))
        with LocalLedger(tmp_path / name, PARAMS, clock=lambda: now, finality=POLICY) as ledger:
            assert snapshot(ledger, now) == answers[-1]   # and across a restart
    assert answers[0] == answers[1]
    assert answers[1]["lookups"][("ip", "10.0.0.10")] is not None


def test_a_pruned_node_refuses_what_needs_pruned_history_with_a_plain_reason(tmp_path):
    (a,) = make_identities(1)
    blocks, tip, prev = [], PARAMS.genesis().header, bytes(32)
    for seq in range(6):
        record = reg(a, seq=seq, prev=prev, issued=T0 + seq * DAY, lifetime=2 * DAY)
        prev = record.id
        blocks.append(block_on(tip, [record], T0 + seq * DAY + 5))
        tip = blocks[-1].header
    now = T0 + 6 * DAY
    with LocalLedger(tmp_path, PARAMS, clock=lambda: now, finality=POLICY) as ledger:
        ledger.receive_blocks(blocks, now)
        state = prune_all(ledger, 0)
        assert state is not None and state.height == 4
        assert ledger.status()["pruned"] == state.to_meta()
        side = [block_on(blocks[1].header, [], now - 10 + i) for i in range(8)]   # forks at block 2 < 4
        ledger.receive_blocks(side, now)
        branch = ledger.parked_branches()[0]
        with pytest.raises(LedgerError, match="pruned its history"):
            ledger.accept_branch(branch.tip_hash.hex(), now)
    conn = sqlite3.connect(store_path(tmp_path, PARAMS.name))
    conn.execute("DELETE FROM meta WHERE key='derived'")   # a checkpoint that must be rebuilt by replay
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"pruned up to block 4.*join again"):
        LocalLedger(tmp_path, PARAMS, clock=lambda: now, finality=POLICY)


def test_verify_reports_a_damaged_kept_record_and_a_binding_state_naming_a_pruned_one(tmp_path):
    (a,) = make_identities(1)
    blocks, tip, prev = [], PARAMS.genesis().header, bytes(32)
    for seq in range(5):
        record = reg(a, seq=seq, prev=prev, issued=T0 + seq * DAY, lifetime=2 * DAY)
        prev = record.id
        blocks.append(block_on(tip, [record], T0 + seq * DAY + 5))
        tip = blocks[-1].header
    now = T0 + 5 * DAY
    with LocalLedger(tmp_path, PARAMS, clock=lambda: now, finality=POLICY) as ledger:
        ledger.receive_blocks(blocks, now)
        prune_all(ledger, 0)
        report = ledger.verify_store()
        assert report.ok and "NOT CHECKED (pruned)" in report.summary()
        path = ledger.path
    conn = sqlite3.connect(path)
    conn.execute("UPDATE bind_id SET record_id=?, height=1, idx=0", (blocks[0].records[0].id,))
    (items,) = conn.execute("SELECT records FROM blocks WHERE hash=?", (blocks[2].hash,)).fetchone()
    conn.execute("UPDATE blocks SET records=? WHERE hash=?", (items.replace(b"alice", b"alicf"), blocks[2].hash))
    conn.commit()
    conn.close()
    report = verify_store(path, PARAMS, now)
    assert not report.ok
    text = "\n".join(report.problems)
    assert "main-chain block 3" in text and "not kept there" in text


def test_a_pruned_body_keeps_ids_in_place_of_dropped_records(tmp_path):
    (a,) = make_identities(1)
    r0 = reg(a, issued=T0, lifetime=2 * DAY)
    r1 = reg(a, seq=1, prev=r0.id, issued=T0 + 1, lifetime=2 * DAY)
    blocks = [block_on(PARAMS.genesis().header, [r0, r1], T0 + 5)]
    blocks += [block_on(blocks[0].header, [], T0 + 6 + i) for i in range(0, 1)]
    blocks.append(block_on(blocks[-1].header, [], T0 + 8))
    with LocalLedger(tmp_path, PARAMS, clock=lambda: T0 + 10, finality=POLICY) as ledger:
        ledger.receive_blocks(blocks, T0 + 10)
        state = prune_all(ledger, 0)
        assert state is not None and (state.height, state.records) == (1, 1)
        assert state.bytes > r0.size - 40
    conn = sqlite3.connect(store_path(tmp_path, PARAMS.name))
    (items,) = conn.execute("SELECT records FROM blocks WHERE hash=?", (blocks[0].hash,)).fetchone()
    conn.close()
    stored = msgpack.unpackb(items, raw=False)
    assert stored[0] == r0.id and Record.from_wire(stored[1]) == r1


def test_the_pruner_thread_prunes_a_running_ledger_and_waits_while_it_is_not_ready(tmp_path):
    (a,) = make_identities(1)
    blocks, tip, prev = [], PARAMS.genesis().header, bytes(32)
    for seq in range(6):
        record = reg(a, seq=seq, prev=prev, issued=T0 + seq * DAY, lifetime=2 * DAY)
        prev = record.id
        blocks.append(block_on(tip, [record], T0 + seq * DAY + 5))
        tip = blocks[-1].header
    now = T0 + 6 * DAY
    ready = threading.Event()
    with LocalLedger(tmp_path, PARAMS, clock=lambda: now, finality=POLICY) as ledger:
        ledger.receive_blocks(blocks, now)
        pruner = Pruner(ledger, 0, interval=0.05, ready=ready.is_set)
        pruner.start()
        try:
            wait_until(lambda: pruner.rounds >= 2, 10, what="two rounds of the pruner")
            assert ledger.pruned.height == 0   # not ready: an assumed-valid history is still being checked
            ready.set()
            wait_until(lambda: ledger.pruned.height == 4, 10, what="the pruner to reach block 4")
        finally:
            pruner.close()
        assert ledger.pruned.records == 3 and ledger.lookup("fp", a.fingerprint, now) is not None


def test_ledger_prune_waits_for_the_background_check_of_a_fast_join_then_prunes_and_compacts(tmp_path, capsys):
    (a,) = make_identities(1)
    blocks, tip, prev = [], PARAMS.genesis().header, bytes(32)
    for seq in range(12):
        record = reg(a, seq=seq, prev=prev, issued=int(time.time()) - 3600 + seq, lifetime=2 * DAY)
        prev = record.id
        blocks.append(block_on(tip, [record], int(time.time()) - 3000 + seq))
        tip = blocks[-1].header
    with LocalLedger(tmp_path, PARAMS, finality=FinalityPolicy(min_hold=0)) as ledger:   # final at depth 6 now
        ledger.receive_blocks(blocks, time.time())
    AssumeValid(progress_path(tmp_path, PARAMS), 5, blocks[4].hash).save()   # a check still running
    argv = ["prune", "--data-dir", str(tmp_path), "--prune-keep", "2"]
    assert cli.main(argv) == 2
    assert "still checking, in the background" in capsys.readouterr().err
    progress_path(tmp_path, PARAMS).unlink()
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "pruned up to block 5: 4 superseded records dropped" in out and "database file" in out
    with LocalLedger(tmp_path, PARAMS) as ledger:
        assert ledger.pruned.height == 5 and ledger.lookup("fp", a.fingerprint, time.time()) is not None


def test_a_damaged_pruning_progress_is_a_plain_store_error_never_a_full_store(tmp_path):
    (a,) = make_identities(1)
    r0 = reg(a, issued=T0, lifetime=2 * DAY)
    r1 = reg(a, seq=1, prev=r0.id, issued=T0 + 1, lifetime=2 * DAY)
    blocks = [block_on(PARAMS.genesis().header, [r0, r1], T0 + 5)]
    for i in range(3):
        blocks.append(block_on(blocks[-1].header, [], T0 + 6 + i))
    with LocalLedger(tmp_path, PARAMS, clock=lambda: T0 + 10, finality=POLICY) as ledger:
        ledger.receive_blocks(blocks, T0 + 10)
        prune_all(ledger, 0)
        path = ledger.path
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value=? WHERE key='pruned'", (b"\xc1",))
    conn.execute("DELETE FROM meta WHERE key='derived'")   # and a start that would otherwise replay
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"pruning progress .* is damaged"):
        LocalLedger(tmp_path, PARAMS, clock=lambda: T0 + 10, finality=POLICY)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM blocks").fetchone()[0] == 4   # nothing was dropped as "damaged"
    conn.close()


def test_a_node_whose_only_peer_pruned_above_its_height_does_not_sync_from_it_and_says_why(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="ledger.node")
    quiet = gossip_config(register=False, mine=False)
    with Net(tmp_path) as net:
        pruned_ledger = net.ledger("pruned", finality=FinalityPolicy(min_hold=0))
        grow(pruned_ledger, 20)
        assert prune_all(pruned_ledger, 0) is not None and pruned_ledger.pruned.height == 15
        pruned = net.node(ledger=pruned_ledger, config=gossip_config(register=False, mine=False, prune_keep=0))
        joiner = net.node(seeds=[pruned.address], config=quiet)
        wait_until(lambda: "pruned their bodies up to height 15 (ours: 0)" in caplog.text, 15,
                   what="the joiner to say why it does not sync")
        (peer,) = joiner.peers()
        assert peer.pruned == 15 and joiner.ledger.height == 0 and not joiner.syncing
