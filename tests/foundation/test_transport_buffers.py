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
