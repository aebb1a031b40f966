"""A hostile full node serving the light client (red team 2026-12-07 night): whatever it sends, a lookup ends in
bounded time with a plain error, the stored header file keeps its verified chain, and what one node sent never
stands in the way of another node's answers."""

import time

import pytest
from gossip_kit import PARAMS

from ledger.client import LedgerClient
from ledger.errors import LedgerError
from ledger.protocol import MAX_HEADERS
from tests.ledger.hostile_ledger import HostileLedgerNode, after_locator, header_chain

GENESIS = PARAMS.genesis().header
NOW = int(time.time())


@pytest.fixture
def hostile_nodes():
    nodes: list[HostileLedgerNode] = []
    yield nodes
    for node in nodes:
        node.close()


def checkpoint(height: int = 0, block_hash: bytes = GENESIS.hash) -> tuple[str, dict]:
    return ("checkpoint", {"final_height": height, "final_hash": block_hash})


def test_a_flood_of_branch_headers_without_proof_of_work_is_refused_in_the_first_answer(hostile_nodes, tmp_path):
    # After a first honest sync, 2,000 headers forking from genesis, no proof of work, sent again for every
    # request: before, the client buffered them as a competing branch round after round (up to 500 rounds) and
    # checked them only at the end.
    junk = [h.packed for h in header_chain(GENESIS, PARAMS, MAX_HEADERS, NOW - 5000, mined=False, salt=1)]
    own = [GENESIS, *header_chain(GENESIS, PARAMS, 3, NOW - 100)]
    synced = []

    def script(msg):
        if msg.type == "get_checkpoint":
            return [checkpoint()]
        if len(synced) < 1:
            answer = after_locator(own, msg["locator"], msg["limit"])
            if len(answer) < msg["limit"]:
                synced.append(True)
            return [("headers", {"headers": answer})]
        return [("headers", {"headers": junk})]

    hostile = HostileLedgerNode(PARAMS, script)
    hostile_nodes.append(hostile)
    client = LedgerClient(hostile.host, hostile.port, network=PARAMS, pin_dir=tmp_path)
    assert client.sync_headers() == 3
    hostile.requests.clear()
    with pytest.raises(LedgerError, match="proof of work"):
        client.sync_headers()
    assert hostile.requests.count("get_headers") == 1
    assert client.height == 3 and client.header(3) == own[3]
