import itertools
import socket
import threading

import pytest

from p2pchat.foundation.codec import HEADER, Field, Protocol
from p2pchat.foundation.errors import PeerUnreachable
from p2pchat.foundation.transport import FramedSocket, FrameServer, connect

PROTO = Protocol("echo", {"ping": {"n": Field(int)}}, max_frame=256)


def echo(conn):
    while True:
        msg = conn.recv()
        conn.send("ping", n=msg["n"] + 1)


@pytest.fixture
def server(loopback_ip):
    srv = FrameServer(loopback_ip, 0, PROTO, echo, name="echo", timeout=2.0).start()
    yield srv
    srv.close()


def test_client_binds_to_its_source_address_and_gets_answers(server, loopback_ip):
    seen = []
    server.handler = lambda conn: (seen.append(conn.peer[0]), echo(conn))
    with connect(server.host, server.port, PROTO, source_ip=loopback_ip) as c:
        c.send("ping", n=1)
        assert c.recv()["n"] == 2
    assert seen == [loopback_ip]


def test_malformed_frame_gets_an_error_frame_and_the_server_keeps_serving(server):
    bad = socket.create_connection((server.host, server.port))
    bad.sendall(HEADER.pack(100_000))
    data = bad.recv(4096)
    assert b"over the 256-byte limit" in data
    bad.close()
    with connect(server.host, server.port, PROTO) as c:
        c.send("ping", n=5)
        assert c.recv()["n"] == 6


def test_silent_peer_times_out_and_close_joins_every_thread(loopback_ip):
    srv = FrameServer(loopback_ip, 0, PROTO, echo, name="echo", timeout=0.3).start()
    silent = socket.create_connection((srv.host, srv.port))
    assert silent.recv(100) == b"" or True  # the server drops the silent connection after its timeout
    before = threading.active_count()
    srv.close()
    assert threading.active_count() <= before
    assert not any(t.name.startswith("echo") for t in threading.enumerate())
    silent.close()


def test_connecting_to_a_closed_port_says_so(loopback_ip):
    with pytest.raises(PeerUnreachable, match="cannot connect"):
        connect(loopback_ip, 1, PROTO, timeout=1)


def test_connection_limit_refuses_with_a_reason(loopback_ip):
    hold = threading.Event()
    srv = FrameServer(loopback_ip, 0, PROTO, lambda c: hold.wait(5), name="lim", max_connections=1).start()
    try:
        first = connect(srv.host, srv.port, PROTO)
        second = connect(srv.host, srv.port, PROTO)
        msg = second.recv(timeout=2)
        assert msg.type == "error" and "connection limit" in msg["reason"]
        first.close()
        second.close()
    finally:
        hold.set()
        srv.close()


class _HookedSocket(socket.socket):
    """A real socket that runs ``hook`` (on another thread, waited for) when the ``reader`` thread is about to
    wait for data: right after it set the socket's timeout (how reads used to wait) or when it asks for the
    descriptor to poll (how they wait now). It forces the schedule the race needs: the reader has taken its
    deadline, then another thread sends."""

    hook = None
    reader = None

    def _maybe_hook(self):
        if self.hook is not None and threading.current_thread() is self.reader:
            hook, self.hook = self.hook, None
            t = threading.Thread(target=hook)
            t.start()
            t.join()

    def settimeout(self, value):
        super().settimeout(value)
        self._maybe_hook()

    def fileno(self):
        self._maybe_hook()
        return super().fileno()


def test_a_send_with_a_short_timeout_does_not_shorten_a_waiting_readers_deadline(loopback_ip):
    listener = socket.create_server((loopback_ip, 0))
    raw = _HookedSocket(socket.AF_INET, socket.SOCK_STREAM)
    raw.connect(listener.getsockname())
    other, _ = listener.accept()
    conn = FramedSocket(raw, PROTO, timeout=0.05)        # sends may take at most 50 ms
    peer = FramedSocket(other, PROTO, timeout=5.0)
    sent = threading.Event()

    def writer():
        conn.send("ping", n=1)                           # the writer thread, with its short send deadline
        sent.set()

    got = []
    reader = threading.Thread(target=lambda: got.append(conn.recv(timeout=10.0)))
    raw.reader, raw.hook = reader, writer
    reader.start()
    assert peer.recv()["n"] == 1
    # The peer stays silent for several of the writer's timeouts before it answers: the reader's own 10 s
    # deadline must be what counts.
    threading.Event().wait(0.4)
    peer.send("ping", n=2)
    reader.join()
    assert sent.is_set() and got and got[0]["n"] == 2
    for s in (conn, peer):
        s.close()
    listener.close()


def test_each_direction_keeps_its_own_deadline_under_concurrent_traffic(loopback_ip):
    listener = socket.create_server((loopback_ip, 0))
    a = FramedSocket(socket.create_connection(listener.getsockname()), PROTO, timeout=0.05)
    b = FramedSocket(listener.accept()[0], PROTO, timeout=5.0)
    assert a.sock.gettimeout() == 0.05                   # set once by the constructor…
    errors = []
    stop = threading.Event()

    def chatter():
        n = 0
        while not stop.is_set():
            try:
                a.send("ping", n=n)
            except PeerUnreachable as exc:
                errors.append(exc)
                return
            n += 1
            assert b.recv()["n"] == n - 1
    t = threading.Thread(target=chatter)
    t.start()
    with pytest.raises(PeerUnreachable, match="did not answer in time"):
        a.recv(timeout=0.5)                              # nothing comes the other way: the read deadline holds
    stop.set()
    t.join()
    assert not errors
    assert a.sock.gettimeout() == 0.05                   # …and never changed by a call
    a.close()
    b.close()
    listener.close()


BULK = Protocol("bulk", {"blob": {"data": Field(bytes)}}, max_frame=4 * 1024 * 1024)


def test_large_frames_trickled_in_pieces_and_packed_back_to_back_arrive_whole_and_in_order(loopback_ip):
    """A frame larger than one read is asked for in one read of its rest; pieces of any size, and several
    frames in one read, still come out whole and in order."""
    big = bytes(range(256)) * 8192                     # 2 MiB
    frames = [BULK.encode("blob", data=big), BULK.encode("blob", data=b"small"),
              BULK.encode("blob", data=big[:70_000])]
    wire = b"".join(frames)
    got: list[bytes] = []
    srv = FrameServer(loopback_ip, 0, BULK, lambda conn: [got.append(conn.recv()["data"]) for _ in range(3)],
                      name="bulk", timeout=5.0).start()
    try:
        raw = socket.create_connection((srv.host, srv.port))
        cuts = [0, 3, 100, 1_000_000, len(frames[0]) + 7, len(wire)]
        for start, end in itertools.pairwise(cuts):
            raw.sendall(wire[start:end])
        raw.shutdown(socket.SHUT_WR)
        raw.recv(1)        # the server closes once it has read the three frames
        raw.close()
    finally:
        srv.close()
    assert got == [big, b"small", big[:70_000]]


def test_a_peer_vouched_for_sends_large_frames_read_straight_into_their_own_buffers(loopback_ip):
    """Once the owner set the frame limit (the chat node after step 3), a large frame is read into a buffer of its
    own size (the reader offers it as space); it still arrives whole and in order with what follows it."""
    big = bytes(range(256)) * 4096                     # 1 MiB
    wire = BULK.encode("blob", data=big) + BULK.encode("blob", data=b"small") + BULK.encode("blob", data=big[::-1])
    listener = socket.create_server((loopback_ip, 0))
    sender = socket.create_connection(listener.getsockname())
    raw, _ = listener.accept()
    listener.close()
    conn = FramedSocket(raw, BULK, timeout=5.0)
    conn.frame_limit = BULK.max_frame
    offered: list[int] = []
    space = conn._reader.space

    def recording_space():
        view = space()
        if view is not None:
            offered.append(len(view))
        return view

    conn._reader.space = recording_space            # type: ignore[method-assign]
    writer = threading.Thread(target=lambda: [sender.sendall(wire[i:i + 300_000])
                                              for i in range(0, len(wire), 300_000)])
    writer.start()
    try:
        got = [conn.recv()["data"] for _ in range(3)]
    finally:
        writer.join()
        sender.close()
        conn.close()
    assert got == [big, b"small", big[::-1]]
    assert offered and max(offered) > 500_000          # the rest of a frame offered in one piece
