"""What a peer can make a framed socket hold (FrameReader.buffer_limit, FramedSocket.frame_limit): a stranger (a
ledger peer; a chat peer before step 3) only the bytes it sent, however large a frame it announces and however
long it stalls; a peer the owner vouched for one frame's own buffer at a time."""

from __future__ import annotations

import socket

import pytest

from p2pchat.admission import PRE_AUTH_FRAME
from p2pchat.chat_protocol import CHAT
from p2pchat.foundation.codec import BODY_BUFFER, HEADER, Field, Protocol
from p2pchat.foundation.errors import PeerUnreachable
from p2pchat.foundation.transport import FramedSocket

BULK = Protocol("bulk", {"blob": {"data": Field(bytes)}}, max_frame=4 * 1024 * 1024)


def _pair(ip: str, protocol: Protocol) -> tuple[socket.socket, FramedSocket]:
    listener = socket.create_server((ip, 0))
    sender = socket.create_connection(listener.getsockname())
    raw, _ = listener.accept()
    listener.close()
    return sender, FramedSocket(raw, protocol, timeout=5.0)


@pytest.mark.parametrize("limit", [None, PRE_AUTH_FRAME], ids=["limit never set (a ledger peer)",
                                                               "a chat peer before step 3"])
def test_a_stranger_announcing_a_large_frame_and_stalling_makes_the_reader_hold_only_what_it_sent(loopback_ip,
                                                                                                 limit):
    sender, conn = _pair(loopback_ip, BULK)
    with sender, conn:
        if limit is not None:
            conn.frame_limit = limit
        announced = conn.frame_limit
        sent = 0
        for piece in (HEADER.pack(announced) + b"\x81", bytes(100), bytes(3000)):
            sender.sendall(piece)
            sent += len(piece)
            with pytest.raises(PeerUnreachable, match="did not answer in time"):
                conn.recv(timeout=0.2)       # all of it arrived (the read took it), then the stall
            assert conn._reader.held() <= sent


def test_the_chat_nodes_limit_before_step_3_is_below_the_size_that_gets_a_buffer_of_its_own():
    """limit_strangers (node_runtime) sets PRE_AUTH_FRAME, which is also the reader's buffer_limit: it must stay
    at or below BODY_BUFFER, or a stranger's announced frame would be allocated ahead of its bytes."""
    assert PRE_AUTH_FRAME <= BODY_BUFFER < CHAT.max_frame


def test_a_vouched_for_peer_holds_one_frames_buffer_at_a_time(loopback_ip):
    sender, conn = _pair(loopback_ip, BULK)
    with sender, conn:
        conn.frame_limit = BULK.max_frame
        frame = BULK.encode("blob", data=bytes(1024 * 1024))
        sender.sendall(frame + frame[:HEADER.size + 10])         # one whole frame, then the next one's start
        assert len(conn.recv(timeout=5)["data"]) == 1024 * 1024
        with pytest.raises(PeerUnreachable):
            conn.recv(timeout=0.2)
        assert conn._reader.held() <= len(frame)                 # the second frame's buffer only
        sender.sendall(frame[HEADER.size + 10:])
        assert len(conn.recv(timeout=5)["data"]) == 1024 * 1024
        assert conn._reader.held() == 0


def test_frame_buffers_made_ahead_of_their_bytes_share_one_budget_and_a_frame_over_it_still_arrives(monkeypatch):
    """Many sessions of one verified peer, each announcing a large frame and stalling, commit no more than the
    process-wide budget together; a frame that finds the budget spent is buffered as it arrives and still decoded,
    and a reader dropped mid-frame gives its share back."""
    from p2pchat.foundation import codec

    budget = codec.AheadBudget(3 * 1024 * 1024)
    monkeypatch.setattr(codec, "AHEAD", budget)
    frame = BULK.encode("blob", data=bytes(2 * 1024 * 1024))
    readers = [BULK.reader() for _ in range(3)]
    for reader in readers:
        reader.buffer_limit = BULK.max_frame
        assert reader.feed(frame[:HEADER.size + 1]) == []
    del reader
    spaces = [r.space() for r in readers]
    assert [s is not None for s in spaces] == [True, False, False]     # one 2 MiB frame fits the budget, not two
    assert sum(r.held() for r in readers) <= budget.total + 2 * (HEADER.size + 1)
    assert len(readers[1].feed(frame[HEADER.size + 1:])[0]["data"]) == 2 * 1024 * 1024   # as it arrives
    rest = frame[HEADER.size + 1:]
    spaces[0][:len(rest)] = rest
    assert len(readers[0].wrote(len(rest))[0]["data"]) == 2 * 1024 * 1024
    assert budget.free == budget.total
    assert readers[2].space() is not None and budget.free < budget.total
    del readers[2]                                   # its connection ended mid-frame
    assert budget.free == budget.total


def test_many_vouched_for_connections_stalling_mid_frame_hold_no_more_than_the_budget(loopback_ip, monkeypatch):
    from p2pchat.foundation import codec

    budget = codec.AheadBudget(5 * 1024 * 1024)
    monkeypatch.setattr(codec, "AHEAD", budget)
    pairs = [_pair(loopback_ip, BULK) for _ in range(6)]
    try:
        sent = 0
        for sender, conn in pairs:
            conn.frame_limit = BULK.max_frame
            piece = HEADER.pack(BULK.max_frame) + bytes(1000)
            sender.sendall(piece)
            sent += len(piece)
            with pytest.raises(PeerUnreachable, match="did not answer in time"):
                conn.recv(timeout=0.2)
        assert sum(conn._reader.held() for _, conn in pairs) <= budget.total + sent
        for _, conn in pairs:
            conn.discard_buffers()
        assert budget.free == budget.total
    finally:
        for sender, conn in pairs:
            sender.close()
            conn.close()
