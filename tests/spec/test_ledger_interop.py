"""The spec implementation reads a real `ledger serve` over the wire of docs/ledger-protocol.md: it syncs and
checks every header, fetches and fully validates every block, and checks a lookup's Merkle proof."""

from __future__ import annotations

import time

import pytest

from tests.spec.harness import LEDGER_PORT, NETWORK, start_world
from tests.spec.impl import ledgerspec as ls
from tests.spec.impl.wire import SpecError

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
                assert ls.check_lookup(found, chain, NETWORK, ip, now) == record
            # a proof altered anywhere is refused by the checks the doc lists
            found = conn.ask("lookup", by="ip", value=world.host)
            for change in ({"index": found["index"] ^ 1}, {"height": found["height"] - 1},
                           {"record": {**found["record"], "port": 1}}):
                with pytest.raises(SpecError):
                    ls.check_lookup({**found, **change}, chain, NETWORK, world.host, now)
            with pytest.raises(SpecError, match="not a live binding"):
                ls.check_lookup(found, chain, NETWORK, world.spec_ip, now)
