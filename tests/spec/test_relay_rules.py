"""Rules docs/relay.md states, checked on a real `p2pchat relay` from the wire by the spec implementation."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
from typing import Any

import pytest

from tests.conftest import free_loopback_ip
from tests.integration.chat_procs import ChatProcess
from tests.spec.harness import NETWORK, spec_key
from tests.spec.impl import chatcrypto as cc
from tests.spec.impl import relaylink as rl

pytestmark = pytest.mark.slow
RELAY_PORT = 8472


def test_the_relay_refuses_what_relay_md_says_it_refuses(tmp_path):
    r, me = free_loopback_ip(), free_loopback_ip()
    relay = ChatProcess("relay", "--host", r, "--no-ledger", "--key-file", str(tmp_path / "relay_key"))
    key = spec_key()
    der = key.public_key().export_key(format="DER")
    try:
        relay.wait_for("relay listening on")

        def login(address: str | None = None, version: int = 2, role: str = "register") -> dict[str, Any]:
            link = rl.RelayLink(r, RELAY_PORT, me)
            with link.sock:
                challenge = link.link_frames.read()
                data = rl.login_proof_data(challenge["nonce"], address or link.address, hashlib.sha256(der).digest(),
                                           NETWORK)
                link.send_frame("login", version=version, network=NETWORK, role=role, key=der,
                                sig=cc.sign(key, "relay-login", data))
                return link.link_frames.read()

        assert login()["t"] == "registered"
        # the proof names the address the client dialled: a proof for another address is refused
        assert "does not prove ownership" in login(address=f"127.0.0.1:{RELAY_PORT}")["reason"]
        assert "speaks relay protocol version 3; this program speaks version 2" in login(version=3)["reason"]

        def after_link(records: bytes) -> dict[str, Any]:
            """What the relay answers to ``records`` sent right after the link handshake (before the login)."""
            link = rl.RelayLink(r, RELAY_PORT, me)
            with link.sock:
                assert link.link_frames.read()["t"] == "challenge"
                link.sock.sendall(records)
                return link.link_frames.read()

        assert "outside 17..262160" in after_link(struct.pack(">I", 16))["reason"]     # judged from the word
        assert "outside a relay session" in after_link(rl.seal_record(os.urandom(32), 0, b"x", rl.PAIR_BIT))["reason"]

        # a client that does not speak the link gets the relay's 37 bytes and nothing more
        with socket.create_connection((r, RELAY_PORT), 10, (me, 0)) as sock:
            sock.settimeout(10)
            sock.sendall(b"XXXX" + bytes(33))
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
            assert received[:5] == b"P2PR\x02" and len(received) == 37
    finally:
        relay.stop()
