"""Memory a peer can make a node hold: connections that end (however they end) must not accumulate for the life
of the node, or anyone can grow a node's memory without bound by connecting and disconnecting."""

from __future__ import annotations

import socket
import struct

from p2pchat.admission import Admission
from p2pchat.events import SessionEnded
from p2pchat.peer_directory import FixedDirectory
from tests.conftest import free_loopback_ip, make_identities
from tests.helpers import wait_until
from tests.p2pchat.node_kit import make_peer

CONNECTIONS = 300


def test_connections_that_ended_are_not_kept_for_the_life_of_the_node():
    # Found by this suite: every connection used to leave its Session in ChatNode._sessions for good (~2.4 KiB per
    # finished handshake); ended sessions are now dropped once their reader is done, keeping a bounded few for the UI.
    # Roomy limits on strangers: this test is about the session table; that the limits refuse such a stream from
    # one address is tests/security/test_admission_floods.py.
    roomy = Admission(per_minute=1_000_000)
    peer = make_peer(make_identities(1)[0], "victim", FixedDirectory(), auto_accept=True, step_timeout=2.0,
                     admission=roomy)
    attacker = free_loopback_ip()
    try:
        for _ in range(CONNECTIONS):
            with socket.create_connection((peer.ip, peer.node.port), timeout=5,
                                          source_address=(attacker, 0)) as sock:
                sock.sendall(struct.pack(">I", 3) + b"\x92\x01\x02")       # a frame that is not a map
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(4096):
                    pass
        wait_until(lambda: len(peer.log.all(SessionEnded)) >= CONNECTIONS, 30, interval=0.1,
                   what="every garbage connection to end")
        kept = len(peer.node.sessions())
        assert kept <= 64, f"the node still holds {kept} sessions of connections that ended"
    finally:
        peer.node.close()
