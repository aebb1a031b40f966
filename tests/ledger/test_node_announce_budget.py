"""Block announcements cost their sender's address a byte budget (red team 2026-12-07 night). A `block` frame is
parsed before anything else is known about it (~16 ms a MB); a repeat of a block the node holds, or one dated in
the future by a sender whose hello claims a clock that far ahead, then cost the sender nothing else — no standing
lost — so one address could keep a node parsing megabytes for free. Past the budget its reading now waits."""

import time

from gossip_kit import PARAMS, Net, RawPeer, config, next_block, wait_until

from ledger.records import ZERO_HASH, make_register
from tests.conftest import make_identities


def test_repeating_a_large_block_slows_the_senders_reading_without_costing_it_standing(tmp_path):
    with Net(tmp_path) as net:
        node = net.node(config=config(register=False, announce_rate=1024 * 1024, announce_burst=2 * 1024 * 1024))
        owner = make_identities(1)[0]
        records, prev = [], ZERO_HASH
        for seq in range(300):
            record = make_register(owner, network=PARAMS.name, seq=seq, prev=prev, nickname="big",
                                   relay="127.0.0.1:9000", issued=int(time.time()), lifetime=86400)
            records.append(record)
            prev = record.id
        block = next_block(node.ledger.chain.tip, records, int(time.time()))
        assert block.size > 250_000
        peer = RawPeer(node)
        try:
            for _ in range(12):   # 3+ MB of the same block
                peer.conn.send("block", block=block.to_wire())
            wait_until(lambda: node.stats["announcements_slowed"] >= 1, timeout=15, what="the sender to be slowed")
            assert node.ledger.has_block(block.hash)
            assert node.standing_points(peer.source_ip) == 0 and node.banned() == {}
        finally:
            peer.close()
