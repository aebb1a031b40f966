"""The spec implementation reads a real `ledger serve` over the wire of docs/ledger-protocol.md: it syncs and
checks every header, fetches and fully validates every block, and checks a lookup's Merkle proof."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time

import pytest

from tests.conftest import free_loopback_ip
from tests.helpers import wait_until
from tests.spec.harness import LEDGER_PORT, NETWORK, SPEC_KEY_INDEX, make_record, spec_key, start_world
from tests.spec.impl import chatcrypto as cc
from tests.spec.impl import ledgerspec as ls
from tests.spec.impl.wire import SpecError, pack

pytestmark = pytest.mark.slow


def test_blocks_served_by_a_real_node_validate_and_a_lookup_proof_checks(tmp_path):
    world = start_world(tmp_path)
    with world.cluster:
        with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip) as conn:
            ack = conn.hello_ack
            assert ack["network"] == NETWORK and ack["version"] == 1
            assert ls.genesis(conn.params).hash == ack["genesis"]
            chain = ls.sync_headers(conn)
            assert chain[-1].hash == ack["tip"] or len(chain) - 1 >= ack["height"]
        with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip, peer_params=conn.params) as peer:
            answer = peer.ask("get_blocks", hashes=[h.hash for h in chain[1:]])
            assert answer["t"] == "blocks"
            blocks = [ls.block_from_wire(b) for b in answer["blocks"]]
            assert [b.header for b in blocks] == chain[1:]
        now = int(time.time())
        for block in blocks:
            parent = chain[block.header.height - 1]
            ls.check_block(block, conn.params, parent, [h.timestamp for h in chain[:block.header.height]], now)
        mined = {r.id: r for b in blocks for r in b.records}
        assert {r.id for r in world.records} <= set(mined)
        assert ls.record_from_wire(mined[world.records[0].id].to_wire()) == world.records[0]

        with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip) as conn:
            for ip, record in ((world.spec_ip, world.records[0]), (world.host, world.records[1])):
                found = conn.ask("lookup", by="ip", value=ip)
                assert ls.check_lookup(found, chain, NETWORK, "ip", ip, now) == record
            # a proof altered anywhere is refused by the checks the doc lists
            found = conn.ask("lookup", by="ip", value=world.host)
            for change in ({"index": found["index"] ^ 1}, {"height": found["height"] - 1},
                           {"record": {**found["record"], "port": 1}}):
                with pytest.raises(SpecError):
                    ls.check_lookup({**found, **change}, chain, NETWORK, "ip", world.host, now)
            with pytest.raises(SpecError, match="not a live binding"):
                ls.check_lookup(found, chain, NETWORK, "ip", world.spec_ip, now)

            # §5.5: a chat node's report of its peer's ledger position
            peer_fp = world.records[0].fingerprint
            tip = chain[-1]
            for final, verdict in (((1, chain[1].hash), "on-chain"), ((2, bytes(range(32))), "recorded")):
                answer = conn.ask("checkpoint_evidence", peer=peer_fp, final_height=final[0], final_hash=final[1],
                                  tip_height=tip.height, tip_hash=tip.hash)
                assert answer["t"] == "evidence_result" and answer["verdict"] == verdict, answer


def test_a_record_submitted_by_the_spec_client_is_proved_reachable_mined_and_found(tmp_path):
    """The spec implementation submits an update of its record to a new address; the real node checks it by
    dialling that address for a reachability proof, which the spec implementation serves (hello_ack, proof)."""
    world = start_world(tmp_path)
    new_ip = free_loopback_ip()
    listener = socket.create_server((new_ip, LEDGER_PORT))
    listener.settimeout(20)
    with world.cluster, listener:
        with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip) as conn:
            params, chain = conn.params, ls.sync_headers(conn)
        first = world.records[0]
        update = dataclasses.replace(first, seq=1, prev=first.id, ip=new_ip, issued=first.issued + 1, sig=b"")
        update = dataclasses.replace(update, sig=cc.sign(world.key, "ledger-record", update.signed_bytes(NETWORK)))
        proved: list[str] = []

        def submit_answering(record: ls.Record, claim: str | None) -> dict[str, object]:
            def serve() -> None:
                sock, _ = listener.accept()
                with sock:
                    sock.settimeout(20)
                    proved.append(ls.answer_reachability(sock, world.key, params, chain, claim))
            thread = threading.Thread(target=serve, name="spec-reachability")
            thread.start()
            try:
                with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip, timeout=30) as conn:
                    return conn.ask("submit", record=record.to_wire())
            finally:
                thread.join(30)

        # a proof naming another address than the one the node reached is refused (§5.3)
        wrong = dataclasses.replace(update, sig=cc.sign(world.key, "ledger-record", update.signed_bytes(NETWORK)))
        result = submit_answering(wrong, world.spec_ip)
        assert result["accepted"] is False and "reachability proof" in str(result["reason"]), result
        result = submit_answering(update, None)
        assert result["t"] == "submit_result" and result["accepted"], result
        assert result["id"] == update.id
        assert proved == [world.spec_ip, new_ip]

        def mined() -> ls.Record | None:
            with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip) as conn:
                headers = ls.sync_headers(conn)
                answer = conn.ask("lookup", by="ip", value=new_ip)
            if not answer["found"]:
                return None
            return ls.check_lookup(answer, headers, NETWORK, "ip", new_ip, int(time.time()))
        assert wait_until(mined, 30, what="the spec record's update mined") == update


def test_binding_rules_the_doc_states_are_enforced_on_submitted_records(tmp_path):
    """docs/ledger.md "Binding rules" 1–2 and the signature rule, for records the spec client submits."""
    world = start_world(tmp_path)
    with world.cluster:
        first = world.records[0]
        now = int(time.time())

        def signed(network: str = NETWORK, **changes: object) -> ls.Record:
            fields: dict[str, object] = {"seq": 1, "prev": first.id, "issued": now, "expires": now + 86400,
                                         "sig": b"", **changes}
            record = dataclasses.replace(first, **fields)        # type: ignore[arg-type]
            return dataclasses.replace(record, sig=cc.sign(world.key, "ledger-record", record.signed_bytes(network)))

        def submit(record: ls.Record) -> dict[str, object]:
            with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip) as conn:
                return conn.ask("submit", record=record.to_wire())

        refused = {
            "issued past max_future_seconds": signed(issued=now + 600, expires=now + 86400),
            "lifetime over max_record_lifetime": signed(expires=now + 30 * 86400 + 1),
            "expired": signed(issued=now - 7200, expires=now - 3600),
            "a skipped seq": signed(seq=2),
            "seq 0 again": signed(seq=0, prev=bytes(32)),
            "another prev": signed(prev=bytes(range(32))),
            "signed for another network": signed(network="othernet"),
        }
        for name, record in refused.items():
            answer = submit(record)
            assert answer["t"] == "submit_result" and answer["accepted"] is False and answer["reason"], name
        good = signed()
        answer = submit(good)
        assert answer["accepted"] is True and answer["id"] == good.id


def test_a_block_mined_by_the_spec_implementation_is_taken_and_a_bad_one_is_not(tmp_path):
    """ledger.md "Blocks" from the producer's side: a block the spec implementation mines and announces as a
    gossip peer (ledger-protocol.md §5.1) becomes the real node's tip; one whose Merkle root is wrong does not."""
    world = start_world(tmp_path)
    with world.cluster:
        with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip) as conn:
            params, chain = conn.params, ls.sync_headers(conn)
        first = world.records[0]
        now = int(time.time())
        update = dataclasses.replace(first, seq=1, prev=first.id, nickname="spec-miner", issued=now, sig=b"")
        update = dataclasses.replace(update, sig=cc.sign(world.key, "ledger-record", update.signed_bytes(NETWORK)))
        window = [h.timestamp for h in chain]
        good = ls.mine(params, chain[-1], window, [update], now)
        bad_header = dataclasses.replace(good.header, merkle_root=bytes(32))
        while not bad_header.meets_work():
            bad_header = dataclasses.replace(bad_header, nonce=bad_header.nonce + 1)
        bad = ls.Block(bad_header, good.records)

        with ls.LedgerConnection(world.host, LEDGER_PORT, source=free_loopback_ip(), peer_params=params) as peer:
            peer.sock.sendall(pack("block", block=ls.block_to_wire(bad)))
            assert peer.read_answer()["t"] == "error"                  # an invalid block: refused and closed
        with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip, peer_params=params) as peer:
            peer.sock.sendall(pack("block", block=ls.block_to_wire(good)))

            def tip() -> bytes | None:
                with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip) as conn:
                    tip_hash: bytes = conn.hello_ack["tip"]
                return tip_hash if tip_hash == good.header.hash else None
            wait_until(tip, 15, what="the spec-mined block to become the node's tip")
        with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip) as conn:
            headers = ls.sync_headers(conn)
            answer = conn.ask("lookup", by="ip", value=world.spec_ip)
        assert ls.check_lookup(answer, headers, NETWORK, "ip", world.spec_ip, int(time.time())) == update


def test_blocks_that_break_the_validation_rules_are_refused(tmp_path):
    """ledger.md "Block validation" steps 4–6 from the producer's side: a timestamp not above the parent's median
    time past, a record twice, a record another key's live binding forbids (rule 5) — each refused (error frame,
    connection closed), the tip unchanged."""
    world = start_world(tmp_path)
    with world.cluster:
        with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip) as conn:
            params, chain = conn.params, ls.sync_headers(conn)
            tip = conn.hello_ack["tip"]
        now = int(time.time())
        window = [h.timestamp for h in chain]
        other = spec_key(SPEC_KEY_INDEX - 1)
        squat = make_record(other, world.host, "squatter", now)              # the host's IP is bound to its key
        first = world.records[0]
        update = dataclasses.replace(first, seq=1, prev=first.id, issued=now, sig=b"")
        update = dataclasses.replace(update, sig=cc.sign(world.key, "ledger-record", update.signed_bytes(NETWORK)))
        early = ls.mine(params, chain[-1], window, [update], 0)
        early_header = dataclasses.replace(early.header, timestamp=ls.mtp(window))
        while not early_header.meets_work():
            early_header = dataclasses.replace(early_header, nonce=early_header.nonce + 1)
        bad = {
            "timestamp at the median time past": ls.Block(early_header, early.records),
            "a record twice": ls.mine(params, chain[-1], window, [update, update], now),
            "another key's address": ls.mine(params, chain[-1], window, [squat], now),
        }
        for name, block in bad.items():
            with ls.LedgerConnection(world.host, LEDGER_PORT, source=free_loopback_ip(), peer_params=params) as peer:
                peer.sock.sendall(pack("block", block=ls.block_to_wire(block)))
                assert peer.read_answer()["t"] == "error", name
        with ls.LedgerConnection(world.host, LEDGER_PORT, source=world.spec_ip) as conn:
            assert conn.hello_ack["tip"] == tip
