"""Squats, owner watch and disputes with in-process nodes on loopback: a block that binds a host's address to a
key that never answered there makes the host's own node alert and gossip its evidence; other nodes check the
evidence, dial the address themselves (bounded) and mark the binding disputed; forged evidence costs the sender
standing and is not relayed."""

import dataclasses
import re
import time
from pathlib import Path

import pytest
from gossip_kit import DAY, PARAMS, Net, RawPeer, config, grow, next_block, record_for, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.client import LedgerClient
from ledger.disputes import DisputeConfig, DisputeService, Evidence, evidence_id
from ledger.errors import LedgerError
from ledger.merkle import merkle_path
from ledger.records import make_register
from tests.conftest import free_loopback_ip, free_port

FAST_DISPUTES = DisputeConfig(check_interval=1.0, check_timeout=2.0, evidence_ttl=2.0)


@pytest.fixture
def net(tmp_path):
    with Net(tmp_path) as n:
        yield n


def squat(net, honest, victim_ip, *, nickname="squatter", relay="127.0.0.1:8472", attacker=None):
    """An attacker's block binding ``victim_ip`` to its own key (closed ledger port, a relay hint), announced to
    ``honest`` by a raw peer; returns the attacker's record."""
    attacker = attacker or net.identity()
    record = record_for(attacker, victim_ip, nickname=nickname, ledger_port=free_port(victim_ip), relay=relay)
    block = next_block(honest.ledger.chain.tip, [record], int(time.time()))
    peer = RawPeer(honest)
    peer.conn.send("block", block=block.to_wire())
    wait_until(lambda: honest.ledger.lookup("ip", victim_ip, time.time()), what="the squat to be accepted")
    peer.close()
    return record


def test_a_squatted_host_alerts_gossips_evidence_and_the_binding_becomes_disputed(net):
    cfg = config(disputes=FAST_DISPUTES)
    honest = net.node(config=dataclasses.replace(cfg, register=False))
    victim_ip = free_loopback_ip()
    squatter = net.identity()
    bad = squat(net, honest, victim_ip, attacker=squatter)
    victim = net.node(ip=victim_ip, seeds=[honest.address], nickname="victim", config=cfg)

    alerts = wait_until(lambda: victim.status()["binding_alerts"], what="the victim's alert")
    assert alerts[0]["kind"] == "address" and alerts[0]["other_key"] == bad.fingerprint.hex()
    assert victim_ip in alerts[0]["text"]
    conflicts = wait_until(lambda: honest.status()["binding_conflicts"], what="the evidence at the other node")
    assert conflicts[0]["claimant"] == victim.identity.fingerprint.hex()
    assert conflicts[0]["holder"] == bad.fingerprint.hex() and "address" in conflicts[0]["kinds"]

    mark = wait_until(lambda: honest.disputes.disputed(victim_ip, bad.id), what="the dispute mark")
    assert mark.holder == bad.fingerprint and mark.answering == victim.identity.fingerprint
    binding = LedgerClient(honest.host, honest.port).lookup(victim_ip)
    assert binding.fingerprint == bad.fingerprint              # the ledger still binds it: a local mark only
    assert binding.disputed is not None and "does not answer there" in binding.disputed.describe()
    assert LedgerClient(honest.host, honest.port).lookup("squatter").disputed is None   # by nickname: no mark

    # The squatter's renewal now needs a reachability proof on this node, which its key cannot give.
    renewal = record_for(squatter, victim_ip, nickname="squatter", seq=1, prev=bad.id, ledger_port=bad.ledger_port)
    with pytest.raises(LedgerError, match="reachability proof"):
        LedgerClient(honest.host, honest.port).submit(renewal)


def test_forged_evidence_costs_the_sender_standing_and_is_not_relayed(net):
    honest = net.node(config=config(register=False, disputes=FAST_DISPUTES))
    victim_ip = free_loopback_ip()
    bad = squat(net, honest, victim_ip)
    liar = net.identity()
    claim = record_for(liar, victim_ip, nickname="liar", ledger_port=8470)
    wire = Evidence(claim, "address").to_wire()
    wire["record"]["sig"] = bytes(len(claim.sig))                    # forged signature
    peer = RawPeer(honest)
    peer.conn.send("binding_alert", **wire)
    wait_until(lambda: honest.standing_points(peer.source_ip) > 0, what="the penalty")
    assert honest.status()["binding_conflicts"] == []
    assert honest.disputes.disputed(victim_ip, bad.id) is None
    peer.close()


def test_evidence_without_a_conflict_here_is_dropped_and_a_flood_is_cut_to_the_budget(net):
    honest = net.node(config=config(register=False, disputes=DisputeConfig(alert_burst=3, alert_rate=0.001)))
    peer = RawPeer(honest)
    someone = net.identity()
    for i in range(6):      # valid records, but nothing in this ledger conflicts with them
        claim = record_for(someone, free_loopback_ip(), nickname=f"n{i}", ledger_port=8470)
        peer.conn.send("binding_alert", **Evidence(claim, "address").to_wire())
    wait_until(lambda: honest.disputes.stats["alerts_handled"] == 6, what="the alerts to be handled")
    stats = honest.disputes.stats
    assert stats["alerts_dropped"] == 3 and stats["conflicts"] == 0 and stats["dials"] == 0
    assert honest.standing_points(peer.source_ip) == 0      # honest disagreement costs nothing
    peer.close()


def test_evidence_with_a_header_must_carry_the_networks_proof_of_work(net):
    honest = net.node(config=config(register=False))
    owner = net.identity()
    record = record_for(owner, free_loopback_ip(), nickname="owner", ledger_port=8470)
    block = next_block(honest.ledger.chain.tip, [record], int(time.time()))
    weak = dataclasses.replace(block.header, nonce=block.header.nonce + 1)
    while weak.meets_target():
        weak = dataclasses.replace(weak, nonce=weak.nonce + 1)
    with pytest.raises(LedgerError, match="proof of work"):
        Evidence(record, "vanished", weak, 0, ()).check(PARAMS)
    Evidence(record, "vanished", block.header, 0, ()).check(PARAMS)   # the real header passes


def test_a_rewrite_that_drops_an_owners_record_makes_it_alert_and_others_see_the_evidence(net):
    cfg = config(disputes=FAST_DISPUTES)
    observer = net.node(config=dataclasses.replace(cfg, register=False))
    victim = net.node(seeds=[observer.address], nickname="victim", config=cfg)
    mined = wait_until(lambda: observer.ledger.lookup("ip", victim.host, time.time()), what="the registration")
    grow(observer.ledger, 2)                                  # bury it under two more blocks
    wait_until(lambda: victim.ledger.height == mined.height + 2, what="the victim to follow")
    victim.watch.check()
    assert victim.status()["binding_alerts"] == []

    # A heavier private branch from the block before the victim's, holding the attacker's claim instead, served by
    # an attacker's node (a real peer: the victim checks its headers first, then fetches the blocks).
    attacker = net.identity()
    claim = record_for(attacker, victim.host, nickname="squatter", ledger_port=free_port(victim.host))
    rogue = net.node(config=dataclasses.replace(cfg, register=False))
    for height in range(1, mined.height):
        assert rogue.ledger.receive_block(observer.ledger.main_at(height), time.time()).status == "added"
    parent = observer.ledger.main_at(mined.height - 1).header
    blocks, start = [], int(time.time())
    for i in range(4):
        block = next_block(parent, [claim] if i == 0 else [], max(start, parent.timestamp + 1))
        assert rogue.ledger.receive_block(block, time.time()).status == "added"
        blocks.append(block)
        parent = block.header
    victim.add_peer(rogue.address)
    wait_until(lambda: victim.ledger.chain.tip_hash == blocks[-1].hash, what="the rewrite on the victim")

    kinds = wait_until(lambda: {a["kind"] for a in victim.status()["binding_alerts"]} >= {"vanished", "address"}
                       and {a["kind"] for a in victim.status()["binding_alerts"]}, what="the victim's alerts")
    assert kinds == {"vanished", "address"}
    seen = wait_until(lambda: [c for c in observer.status()["binding_conflicts"] if "vanished" in c["kinds"]],
                      what="the evidence at the observer")
    assert seen[0]["block"] == mined.header.hash.hex()            # the header that held the victim's record
    assert seen[0]["claimant"] == victim.identity.fingerprint.hex()
    assert "address" in seen[0]["kinds"] and seen[0]["holder"] == claim.fingerprint.hex()


def test_the_documented_evidence_id_vectors_are_what_the_code_produces():
    text = (Path(__file__).resolve().parents[2] / "docs" / "ledger-protocol.md").read_text()
    found = {name: bytes.fromhex("".join(body.split()))
             for name, body in re.findall(r"```vector ([\w-]+)\n(.*?)```", text, flags=re.S)}
    assert found["binding-evidence-id"] == evidence_id(bytes(range(32)), bytes(range(32, 64)))
    assert found["binding-evidence-id-no-header"] == evidence_id(bytes(range(32)))


def test_a_copy_with_a_broken_path_sent_first_does_not_suppress_the_real_evidence(net):
    honest = net.node(config=config(register=False, disputes=FAST_DISPUTES))
    owner = net.identity()
    record = record_for(owner, free_loopback_ip(), nickname="owner", ledger_port=8470)
    other = record_for(net.identity(), free_loopback_ip(), nickname="other", ledger_port=8470)
    block = next_block(honest.ledger.chain.tip, [record, other], int(time.time()))
    broken = Evidence(record, "vanished", block.header, 0, (bytes(32),))
    with pytest.raises(LedgerError, match="Merkle"):
        honest.disputes.handle(broken, source=None, source_text="attacker")
    real = Evidence(record, "vanished", block.header, 0, tuple(merkle_path([record.id, other.id], 0)))
    assert real.id == broken.id
    assert honest.disputes.handle(real, source=None, source_text="owner") != "duplicate"


_junk = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**40), st.binary(max_size=200), st.text(max_size=20),
                  st.lists(st.binary(min_size=32, max_size=32), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                                            st.integers(), max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["kind", "record", "header", "index", "path"]), _junk))
def test_any_binding_alert_fields_parse_or_are_refused_with_a_ledger_error(fields):
    try:
        Evidence.from_wire(fields)
    except LedgerError:
        pass


def test_a_claim_without_a_header_is_shown_only_once_the_address_check_confirms_it(net):
    cfg = config(register=False, disputes=FAST_DISPUTES)
    honest = net.node(config=cfg)
    watcher = net.node(seeds=[honest.address], config=cfg)
    wait_until(lambda: watcher.peers(), what="the two nodes to connect")
    victim_ip = free_loopback_ip()
    bad = squat(net, honest, victim_ip)
    # A stranger signs a claim on the squatted address, but nothing of its answers there.
    liar = net.identity()
    claim = record_for(liar, victim_ip, nickname="liar", ledger_port=free_port(victim_ip))
    peer = RawPeer(honest)
    peer.conn.send("binding_alert", **Evidence(claim, "address").to_wire())
    wait_until(lambda: honest.disputes.stats["checks_done"] == 1, what="the address check")
    assert honest.disputes.stats["unconfirmed"] == 1 and honest.disputes.stats["dials"] == 2
    assert honest.status()["binding_conflicts"] == [] and honest.disputes.disputed(victim_ip, bad.id) is None
    assert watcher.disputes.stats["alerts_received"] == 0          # not relayed either
    peer.close()


def test_a_conflict_that_no_longer_holds_leaves_the_status(net):
    ledger = net.ledger("alone")
    squatter, owner = net.identity(), net.identity()
    ip = free_loopback_ip()
    bad = record_for(squatter, ip, nickname="squatter", ledger_port=8470)
    assert ledger.receive_block(next_block(ledger.chain.tip, [bad], int(time.time())), time.time()).status == "added"
    now = [time.time()]
    service = DisputeService(ledger, host="127.0.0.1", address=lambda: "here", relay=lambda e, s: None,
                             clock=lambda: now[0])
    claim = make_register(owner, network=PARAMS.name, seq=0, prev=bytes(32), nickname="owner", ip=ip, port=8471,
                          ledger_port=8470, relay=None, issued=int(time.time()), lifetime=2 * DAY)
    assert service.handle(Evidence(claim, "address"), source=None, source_text="this node") == "conflict: address"
    service.revalidate()
    assert [c.holder for c in service.conflicts()] == [bad.fingerprint]
    now[0] = bad.expires + 1                      # the squat expired: nothing conflicts any more
    service.revalidate()
    assert service.conflicts() == [] and service.status()["binding_conflicts"] == []
    ledger.close()


def test_evidence_resting_on_a_private_block_is_not_shown(net):
    honest = net.node(config=config(register=False, disputes=FAST_DISPUTES))
    grow(honest.ledger, 2)
    liar = net.identity()
    record = record_for(liar, free_loopback_ip(), nickname="liar", ledger_port=8470)
    genesis = honest.ledger.main_at(0).header
    private = next_block(genesis, [record], int(time.time()))       # mined, never announced: a side block
    peer = RawPeer(honest)
    peer.conn.send("binding_alert", **Evidence(record, "vanished", private.header, 0, ()).to_wire())
    wait_until(lambda: honest.disputes.stats["alerts_handled"] == 1, what="the alert to be handled")
    assert honest.status()["binding_conflicts"] == [] and honest.disputes.stats["conflicts"] == 0
    assert honest.standing_points(peer.source_ip) == 0
    peer.close()


def test_evidence_pushed_out_of_the_waiting_list_is_handled_again_when_it_comes_back(net):
    # Red team 2026-12-07 night: strangers' claims filling the list of evidence waiting for its conflict pushed an
    # owner's evidence out while its id stayed "seen" for evidence_ttl, so the copies relayed once the conflict
    # showed here were dropped as duplicates.
    honest = net.node(config=config(register=False, disputes=DisputeConfig(waiting_limit=2)))
    owner, stranger = net.identity(), net.identity()
    real = Evidence(record_for(owner, free_loopback_ip(), nickname="owner", ledger_port=8470), "address")
    assert honest.disputes.handle(real, source=object(), source_text="10.0.0.1").startswith("no conflict")
    for i in range(2):
        claim = Evidence(record_for(stranger, free_loopback_ip(), nickname=f"s{i}", ledger_port=8470), "address")
        honest.disputes.handle(claim, source=object(), source_text="10.0.0.2")
    assert honest.disputes.handle(real, source=object(), source_text="10.0.0.3") != "duplicate"
