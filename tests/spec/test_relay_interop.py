"""The spec implementation logs in at a real `p2pchat relay` and runs the whole chat (four steps, texts,
receipts, a rotation each way) through it: as a caller paired with `p2pchat listen --no-inbound`, and as a
registered callee that `p2pchat chat` reaches through the relay and that answers the invitation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import free_loopback_ip
from tests.helpers import wait_until
from tests.integration.chat_procs import ChatProcess
from tests.integration.test_chat_relay import relay_registered
from tests.spec.harness import NETWORK, SPEC_KEY_INDEX, spec_key, start_world
from tests.spec.impl.peer import ChatPeer
from tests.spec.impl.relaylink import RelayLink
from tests.spec.impl.wire import SpecError
from tests.spec.test_chat_interop import STEPS, answered_chat, exchange

pytestmark = pytest.mark.slow
RELAY_PORT = 8472


def start_relay(relay_ip: str, ledger: str, tmp_path: Path) -> ChatProcess:
    relay = ChatProcess("relay", "--host", relay_ip, "--ledger", ledger, "--key-file", str(tmp_path / "relay_key"))
    relay.wait_for("relay listening on")
    return relay


def test_spec_caller_chats_through_a_real_relay(tmp_path):
    r = free_loopback_ip()
    world = start_world(tmp_path)
    relay = start_relay(r, world.host, tmp_path)
    node = None
    with world.cluster:
        try:
            node = ChatProcess("listen", "--host", world.host, "--no-inbound", "--relay", f"{r}:{RELAY_PORT}",
                               "--accept-all", "--once", "--rotate-every", "1", "--data-dir", str(world.data_dir))
            node.wait_for("Waiting for chats")
            wait_until(lambda: relay_registered(r) == 1, 30, what="the listener's registration at the relay")
            host_fp = hashlib.sha256(world.records[1].key).digest()
            # "the caller has a ledger record, unless the callee accepts unregistered callers": a key without one
            stranger = RelayLink(r, RELAY_PORT, world.spec_ip)
            with pytest.raises(SpecError, match=r"the relay refused: .*ledger record"):
                stranger.login(spec_key(SPEC_KEY_INDEX - 2), NETWORK, "call", peer=host_fp)
            stranger.close()
            link = RelayLink(r, RELAY_PORT, world.spec_ip)
            try:
                assert link.relay_key.hex() in relay.output()          # the key the relay printed at start
                paired = link.login(world.key, NETWORK, "call", peer=host_fp, box_records=True)
                assert paired["t"] == "paired" and paired["peer"] == host_fp and paired["box_max"] >= 1024
                peer = ChatPeer(world.key, "spec-peer", "", world.ledger_view(), link.send_chat, link.chat_stream,
                                NETWORK, rotate_every=1)
                peer.initiate("fp", host_fp.hex())                    # §3.2: through a relay, by what was asked
                assert peer.log == STEPS
                node.wait_for("✓ 4 Agree AES key")
                exchange(peer, node, choose=True)
                # long texts: their sealed frames travel as box records both ways (relay.md "Box records")
                long_text = "é" * 20000
                peer.send_text(long_text)
                node.wait_for(long_text[:100])
                node.write("ü" * 20000)
                peer.pump(lambda: "ü" * 20000 in peer.texts)
                assert link.boxes_sent >= 1 and link.boxes_received >= 1
                peer.close()
            finally:
                link.close()
            assert node.wait_exit() == 0, node.output()
        finally:
            if node is not None:
                node.stop()
            relay.stop()
        assert "(path: relay " in node.output()


def test_spec_callee_registered_at_a_real_relay_is_called_by_p2pchat_chat(tmp_path):
    r = free_loopback_ip()
    world = start_world(tmp_path, spec_relay=f"{r}:{RELAY_PORT}")      # the spec peer's record: relay only
    relay = start_relay(r, world.host, tmp_path)
    node = None
    with world.cluster:
        registration = RelayLink(r, RELAY_PORT, world.spec_ip)
        try:
            registered = registration.login(world.key, NETWORK, "register")
            assert registered["t"] == "registered" and registered["heartbeat_ms"] >= 100
            node = ChatProcess("chat", "spec-peer", "--host", world.host, "--rotate-every", "1",
                               "--data-dir", str(world.data_dir))
            invite = registration.link_frames.read()
            assert invite["t"] == "invite", invite
            assert invite["caller"] == hashlib.sha256(world.records[1].key).digest()
            link = RelayLink(r, RELAY_PORT, world.spec_ip)
            try:
                paired = link.login(world.key, NETWORK, "answer", ticket=invite["ticket"])
                assert paired["t"] == "paired" and paired["peer"] == invite["caller"]
                peer = ChatPeer(world.key, "spec-peer", "", world.ledger_view(), link.send_chat, link.chat_stream,
                                NETWORK, rotate_every=1)
                peer.respond(None)                     # §3.2: a relayed responder looks up the key it received
                answered_chat(peer, node)
                node.wait_exit()
            finally:
                link.close()
        finally:
            registration.close()
            if node is not None:
                node.stop()
            relay.stop()
        assert "(path: relay " in node.output()
