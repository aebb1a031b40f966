"""A hostile full node serving the light client (red team 2026-12-07 night): whatever it sends, a lookup ends in
bounded time with a plain error, the stored header file keeps its verified chain, and what one node sent never
stands in the way of another node's answers."""

import dataclasses
import time

import pytest
from gossip_kit import PARAMS, Net, record_for

from ledger.client import LedgerClient
from ledger.errors import LedgerError
from ledger.header_store import header_file_path
from ledger.lookup_service import LookupAnswer
from ledger.merkle import merkle_root
from ledger.protocol import LEDGER_PROTOCOL, MAX_HEADERS
from p2pchat.foundation.errors import PeerUnreachable
from tests.ledger.hostile_ledger import HostileLedgerNode, after_locator, header_chain, header_on
from tests.ledger.ledger_kit import solve

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


@pytest.fixture
def net(tmp_path):
    with Net(tmp_path / "nodes") as n:
        yield n


def test_a_node_that_out_mined_the_network_cannot_stand_in_the_way_of_an_honest_node_asked_later(
        net, hostile_nodes, tmp_path):
    # An attacker's node serves a heavier history from genesis (cheap on an idle network) and reports its own tip
    # final. Before, its headers and its final mark went to the one header file of the data directory: every
    # later lookup through the user's honest node (the chat node's key check) failed, for good.
    honest = net.registered_node()
    forged = [GENESIS, *header_chain(GENESIS, PARAMS, honest.ledger.height + 8, NOW - 600, salt=7)]

    def script(msg):
        if msg.type == "get_checkpoint":
            return [checkpoint(forged[-1].height, forged[-1].hash)]
        return [("headers", {"headers": after_locator(forged, msg["locator"], msg["limit"])})]

    hostile = HostileLedgerNode(PARAMS, script)
    hostile_nodes.append(hostile)
    misled = LedgerClient(hostile.host, hostile.port, network=PARAMS, pin_dir=tmp_path)
    assert misled.sync_headers() == forged[-1].height
    binding = LedgerClient(honest.host, honest.port, network=PARAMS, pin_dir=tmp_path).lookup(honest.host)
    assert binding.fingerprint == honest.identity.fingerprint
    # Each node's headers are in a file of its own; the hostile one still holds what it was sent.
    again = LedgerClient(hostile.host, hostile.port, network=PARAMS, pin_dir=tmp_path)
    assert again.height == forged[-1].height
    assert header_file_path(tmp_path, PARAMS, honest.host, honest.port).is_file()


def stale_answer(identity):
    """A lookup answer whose proof is valid for a block the node never sends the header chain of."""
    record = record_for(identity, "127.0.0.9", nickname="victim")
    unsolved = header_on(GENESIS, PARAMS, NOW - 50, mined=False)
    header = solve(dataclasses.replace(unsolved, merkle_root=merkle_root([record.id])))
    return LookupAnswer(record, header, 0, [], 1, 1).to_wire()


def test_a_node_answering_each_frame_just_in_time_cannot_stretch_a_lookup_past_its_deadline(net, hostile_nodes,
                                                                                             tmp_path):
    # Every answer comes 0.75 s after the request (the per-frame timeout is 1.5 s) and the lookup answer is proven
    # by a block off the node's header chain, so the client asks again (3 times) and syncs each time: 9 answers,
    # ≥ 6.75 s. The call's deadline (3 timeouts, 4.5 s) ends it with a plain error before the last ones are asked.
    answer = stale_answer(net.identity())

    def script(msg):
        time.sleep(0.75)
        if msg.type == "lookup":
            return [("lookup_result", {"found": True, **answer})]
        if msg.type == "get_checkpoint":
            return [checkpoint()]
        return [("headers", {"headers": []})]

    hostile = HostileLedgerNode(PARAMS, script)
    hostile_nodes.append(hostile)
    client = LedgerClient(hostile.host, hostile.port, network=PARAMS, pin_dir=tmp_path, timeout=1.5)
    with pytest.raises(LedgerError, match=r"^\S+ did not finish answering within \d s; giving up$"):
        client.lookup("127.0.0.9")
    assert len(hostile.requests) < 9
    assert client.height == 0


def test_an_answer_trickled_one_byte_a_second_ends_at_the_frame_deadline_with_a_plain_error(hostile_nodes, tmp_path):
    frame = LEDGER_PROTOCOL.encode("lookup_result", found=False, reason="x" * 100)
    hostile = HostileLedgerNode(PARAMS, lambda msg: bytes(frame), drip=1.0)
    hostile_nodes.append(hostile)
    client = LedgerClient(hostile.host, hostile.port, network=PARAMS, pin_dir=tmp_path, timeout=1.0)
    with pytest.raises(PeerUnreachable, match=r"did not answer in time"):
        client.lookup("127.0.0.9")


@pytest.mark.parametrize(("offset", "problem"), [
    (100, None),                                             # within the 120 s a header may be ahead
    (300, r"is dated \d+ s in the future"),
    ("median", "is dated before the median of the blocks before it"),
])
def test_header_timestamps_at_the_edges(hostile_nodes, tmp_path, offset, problem):
    base = [GENESIS, *header_chain(GENESIS, PARAMS, 3, NOW - 100)]
    stamp = base[-2].timestamp if offset == "median" else int(time.time()) + offset
    chain = [*base, *header_chain(base[-1], PARAMS, 1, stamp, salt=3)]

    def script(msg):
        if msg.type == "get_checkpoint":
            return [checkpoint()]
        return [("headers", {"headers": after_locator(chain, msg["locator"], msg["limit"])})]

    hostile = HostileLedgerNode(PARAMS, script)
    hostile_nodes.append(hostile)
    client = LedgerClient(hostile.host, hostile.port, network=PARAMS, pin_dir=tmp_path)
    if problem is None:
        assert client.sync_headers() == 4
        return
    with pytest.raises(LedgerError, match=problem):
        client.sync_headers()
    assert client.height == 0   # the whole answer refused: nothing of it stored
