"""The parallel block download scheduler (sans-IO): which heights are asked of whom, what an answer does, who
stalls. Headers here need no proof of work: the scheduler trusts the caller to have checked them."""

from __future__ import annotations

import dataclasses

import pytest

from ledger.block_download import DownloadScheduler, Height
from ledger.blocks import Block, BlockHeader
from ledger.merkle import EMPTY_ROOT
from ledger.params import NetworkParams

PARAMS = NetworkParams(name="dlnet", difficulty_bits=8)


def branch(n: int, start: int = 1) -> list[Block]:
    """``n`` consecutive empty blocks from height ``start`` (linked; no proof of work)."""
    prev = bytes(32)
    out = []
    for h in range(start, start + n):
        header = BlockHeader(version=PARAMS.version, network_id=PARAMS.network_id, height=h, prev_hash=prev,
                             merkle_root=EMPTY_ROOT, timestamp=1_700_000_000 + h, target_bits=8, nonce=0)
        out.append(Block(header, ()))
        prev = header.hash
    return out


def plan(blocks: list[Block], **kw) -> DownloadScheduler[str]:
    kw = {"batch": 4, "requests_per_peer": 2, "window": 100, "request_timeout": 10.0, "stall_timeout": 2.0} | kw
    dl: DownloadScheduler[str] = DownloadScheduler(**kw)
    dl.want([b.header for b in blocks])
    return dl


def heights(blocks: list[Block], hashes: list[bytes]) -> list[int]:
    by_hash = {b.hash: b.height for b in blocks}
    return [by_hash[h] for h in hashes]


def answer(blocks: list[Block], hashes: list[bytes]) -> list[Block]:
    by_hash = {b.hash: b for b in blocks}
    return [by_hash[h] for h in hashes]


def test_heights_are_spread_over_the_peers_lowest_first_with_a_bounded_number_in_flight_each():
    blocks = branch(40)
    dl = plan(blocks)
    for peer in "abc":
        dl.add_peer(peer, highest=40)
    requests = dl.assign(0.0)
    assert [(p, heights(blocks, hs)) for p, hs in requests] == [
        ("a", [1, 2, 3, 4]), ("b", [5, 6, 7, 8]), ("c", [9, 10, 11, 12]),
        ("a", [13, 14, 15, 16]), ("b", [17, 18, 19, 20]), ("c", [21, 22, 23, 24])]
    assert dl.assign(0.0) == []                          # two requests out to each: nothing more
    assert dl.in_flight("a") == 8 and dl.state(25) is Height.QUEUED


def test_bodies_are_applied_in_height_order_whatever_order_they_arrive_in():
    blocks = branch(8)
    dl = plan(blocks)
    dl.add_peer("a", highest=8)
    dl.add_peer("b", highest=8)
    (_, first), (_, second), *_ = dl.assign(0.0)
    assert dl.received("b", answer(blocks, second), 0, 1.0).accepted == 4
    assert not dl.ready and dl.take_ready(100) == []     # height 1 is not here yet
    assert dl.received("a", answer(blocks, first), 0, 1.0).accepted == 4
    ready = dl.take_ready(100)
    assert [b.height for b, _ in ready] == list(range(1, 9)) and [p for _, p in ready] == ["a"] * 4 + ["b"] * 4
    assert not dl.active and dl.next_height == 9


def test_a_peer_is_asked_only_for_heights_it_showed_and_a_refusal_sends_them_to_the_others():
    blocks = branch(8)
    dl = plan(blocks, requests_per_peer=1)
    dl.add_peer("leader", highest=8)
    dl.add_peer("short", highest=2)                     # its headers stop at height 2
    requests = dict(dl.assign(0.0))
    assert heights(blocks, requests["leader"]) == [1, 2, 3, 4] and "short" not in requests
    dl.add_peer("pruned", highest=8)
    [(peer, asked)] = dl.assign(0.0)
    assert peer == "pruned" and heights(blocks, asked) == [5, 6, 7, 8]
    receipt = dl.received("pruned", [], 0, 1.0)         # "not available": it has none of them
    assert receipt.refused == 4 and dl.state(5) is Height.QUEUED
    assert dl.assign(1.0) == []                          # never asked of it again; the leader is busy
    dl.received("leader", answer(blocks, requests["leader"]), 0, 2.0)
    [(peer, asked)] = dl.assign(2.0)
    assert peer == "leader" and heights(blocks, asked) == [5, 6, 7, 8]


def test_a_pruned_peer_is_never_asked_below_its_lowest_height():
    blocks = branch(8)
    dl = plan(blocks)
    dl.add_peer("pruned", highest=8, lowest=5)
    assert [heights(blocks, hs) for _, hs in dl.assign(0.0)] == [[5, 6, 7, 8]]


def test_when_nobody_left_can_serve_the_next_height_the_download_is_stuck():
    blocks = branch(4)
    dl = plan(blocks)
    dl.add_peer("leader", highest=4)
    assert len(dl.assign(0.0)) == 1 and not dl.stuck
    dl.received("leader", [], 0, 1.0)
    assert dl.stuck


def test_an_answer_with_a_block_not_asked_for_or_none_asked_breaks_the_protocol_and_requeues():
    blocks = branch(8)
    dl = plan(blocks)
    dl.add_peer("a", highest=8)
    dl.assign(0.0)
    assert dl.received("a", [blocks[6]], 0, 1.0).unexpected == "the blocks answer holds blocks that were not asked for"
    assert dl.state(1) is Height.QUEUED
    assert dl.received("x", [blocks[0]], 0, 1.0).unexpected == "blocks were sent without being asked for"


def test_a_body_that_does_not_match_its_headers_merkle_root_is_refused_and_its_heights_requeued():
    blocks = branch(4)
    # The checked header commits to other records than the body that comes with it.
    forged = Block(dataclasses.replace(blocks[0].header, merkle_root=b"\x01" * 32), ())
    dl = plan([forged, *blocks[1:]])
    dl.add_peer("liar", highest=4)
    dl.assign(0.0)
    receipt = dl.received("liar", [forged], 0, 1.0)
    assert receipt.wrong is not None and "Merkle root" in receipt.wrong
    assert dl.state(1) is Height.QUEUED and not dl.ready


def test_a_silent_peer_expires_and_its_heights_go_to_the_others():
    blocks = branch(8)
    dl = plan(blocks, requests_per_peer=1)
    dl.add_peer("slow", highest=8)
    [(_, asked)] = dl.assign(0.0)
    assert dl.expired(9.5) == []
    assert dl.expired(10.5) == [("slow", "late")]
    dl.remove_peer("slow")
    dl.add_peer("fast", highest=8)
    [(peer, again)] = dl.assign(10.5)
    assert peer == "fast" and again == asked


def test_a_dripping_peer_does_not_move_its_deadline_on():
    blocks = branch(8)
    dl = plan(blocks, requests_per_peer=1, batch=8)
    dl.add_peer("drip", highest=8)
    [(_, asked)] = dl.assign(0.0)
    for t in (3.0, 6.0, 9.0):                            # one block per answer, each well within 10 s
        dl.received("drip", answer(blocks, asked)[:1], 100, t)
        [(_, asked)] = dl.assign(t)                      # the rest is asked again
    assert dl.expired(10.5) == [("drip", "late")]
    # An answer the sender's byte budget cut (or a complete one) moves it on.
    dl2 = plan(blocks, requests_per_peer=1, batch=8, full_answer_bytes=1000)
    dl2.add_peer("big", highest=8)
    [(_, asked)] = dl2.assign(0.0)
    dl2.received("big", answer(blocks, asked)[:2], 1000, 9.0)
    dl2.assign(9.0)
    assert dl2.expired(10.5) == []


def test_the_peer_holding_the_lowest_missing_height_stalls_the_window_and_the_timeout_adapts():
    blocks = branch(12)
    dl = plan(blocks, window=8, requests_per_peer=1)
    dl.add_peer("slow", highest=12)
    dl.add_peer("fast", highest=12)
    requests = dict(dl.assign(0.0))
    assert heights(blocks, requests["slow"]) == [1, 2, 3, 4]
    dl.received("fast", answer(blocks, requests["fast"]), 0, 0.5)
    assert dl.assign(0.5) == []                          # heights 9.. are outside the window
    assert dl.expired(2.0) == []                         # not yet past the stall timeout
    assert dl.expired(2.5) == [("slow", "window")]
    assert dl.stall_timeout == 4.0                       # doubled: the next staller gets longer
    dl.remove_peer("slow")
    [(peer, asked)] = dl.assign(2.5)
    assert peer == "fast" and heights(blocks, asked) == [1, 2, 3, 4]


def test_no_window_stall_while_the_window_still_has_work_or_nobody_could_take_over():
    blocks = branch(12)
    dl = plan(blocks, window=100, requests_per_peer=1)
    dl.add_peer("slow", highest=12)
    dl.add_peer("fast", highest=12)
    requests = dict(dl.assign(0.0))
    dl.received("fast", answer(blocks, requests["fast"]), 0, 0.5)
    assert dl.expired(5.0) == []                         # the window has queued heights for "fast"
    last = plan(blocks[:8], window=100, requests_per_peer=1)
    last.add_peer("slow", highest=8)
    last.add_peer("fast", highest=8)
    requests = dict(last.assign(0.0))
    last.received("fast", answer(blocks, requests["fast"]), 0, 0.5)
    assert last.expired(5.0) == []                       # nothing waits beyond the window: being last is no stall
    alone = plan(blocks, window=4, requests_per_peer=1)
    alone.add_peer("only", highest=12)
    alone.assign(0.0)
    assert alone.expired(5.0) == []                      # nobody else could take the heights


def test_buffered_bytes_bound_new_requests_except_the_lowest_missing_height():
    blocks = branch(12)
    dl = plan(blocks, requests_per_peer=1, max_buffered_bytes=1)
    dl.add_peer("a", highest=12)
    dl.add_peer("b", highest=12)
    requests = dict(dl.assign(0.0))
    dl.received("b", answer(blocks, requests["b"]), 0, 1.0)   # 5..8 wait for 1..4: the buffer is full
    assert dl.assign(1.0) == []
    dl.received("a", answer(blocks, requests["a"]), 0, 1.0)
    assert len(dl.take_ready(100)) == 8 and dl.buffered_bytes == 0
    assert [heights(blocks, hs) for _, hs in dl.assign(1.0)] == [[9, 10, 11, 12]]


def test_reset_cancels_requests_whose_late_answers_are_dropped_without_blame():
    blocks = branch(8)
    dl = plan(blocks)
    dl.add_peer("a", highest=8)
    (_, first), _ = dl.assign(0.0)
    dl.reset()
    assert not dl.active
    other = branch(4, start=20)
    dl.want([b.header for b in other])
    receipt = dl.received("a", answer(blocks, first), 0, 1.0)
    assert receipt.dropped and receipt.unexpected is None and not dl.ready


def test_headers_must_continue_the_download():
    blocks = branch(8)
    dl = plan(blocks[:4])
    dl.want([b.header for b in blocks[4:]])
    assert dl.end_height == 8
    with pytest.raises(ValueError):
        dl.want([blocks[2].header])


def test_a_peer_that_left_gives_its_heights_back():
    blocks = branch(8)
    dl = plan(blocks)
    dl.add_peer("a", highest=8)
    dl.assign(0.0)
    assert dl.state(1) is Height.ASKED
    dl.remove_peer("a")
    assert all(dl.state(h) is Height.QUEUED for h in range(1, 9)) and dl.peers() == []
