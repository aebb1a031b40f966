"""The spec implementation logs in at a real `p2pchat relay`, is paired with a `p2pchat listen --no-inbound`
node registered there, and runs the whole chat (four steps, texts, receipts, rotations) through it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import pytest

from tests.conftest import free_loopback_ip
from tests.helpers import wait_until
from tests.integration.chat_procs import ChatProcess, _env
from tests.integration.procs import ROOT
from tests.spec.harness import NETWORK, SpecWorld, start_world
from tests.spec.impl import ledgerspec as ls
from tests.spec.impl.peer import ChatPeer
from tests.spec.impl.relaylink import RelayLink
from tests.spec.test_chat_interop import STEPS, exchange

pytestmark = pytest.mark.slow
RELAY_PORT = 8472


def relay_registered(relay_ip: str) -> int:
    result = subprocess.run([sys.executable, "-m", "p2pchat", "relay", "--status", "--json", "--host", relay_ip],
                            capture_output=True, text=True, timeout=20, cwd=ROOT, env=_env())
    return json.loads(result.stdout)["registered"] if result.returncode == 0 else 0


def test_spec_caller_chats_through_a_real_relay(tmp_path):
    r = free_loopback_ip()
    world = start_world(tmp_path)
    relay = ChatProcess("relay", "--host", r, "--heartbeat", "1", "--ledger", world.host,
                        "--key-file", str(tmp_path / "relay_key"))
    node = None
    with world.cluster:
        try:
            relay.wait_for("relay listening on")
            node = ChatProcess("listen", "--host", world.host, "--no-inbound", "--relay", f"{r}:{RELAY_PORT}",
                               "--accept-all", "--once", "--rotate-every", "1", "--data-dir", str(world.data_dir))
            node.wait_for("Waiting for chats")
            wait_until(lambda: relay_registered(r) == 1, 30, what="the listener's registration at the relay")
            host_der = world.records[1].key
            link = RelayLink(r, RELAY_PORT, world.spec_ip)
            try:
                assert link.relay_key.hex() in relay.output()          # the key the relay printed at start
                paired = link.login(world.key, NETWORK, "call", peer=hashlib.sha256(host_der).digest())
                assert paired["t"] == "paired" and paired["peer"] == hashlib.sha256(host_der).digest()
                view = world.ledger_view()
                view.peer_key = lambda _ip: _lookup_fp(world, host_der)        # §3.2: through a relay, by key
                peer = ChatPeer(world.key, "spec-peer", "", view, link.send_chat, link.chat_stream, NETWORK,
                                rotate_every=1)
                peer.initiate(world.host)
                assert peer.log == STEPS
                node.wait_for("✓ 4 Agree AES key")
                exchange(peer, node, choose=True)
            finally:
                link.close()
            assert node.wait_exit() == 0, node.output()
        finally:
            if node is not None:
                node.stop()
            relay.stop()
        assert "(path: relay " in node.output()


def _lookup_fp(world: SpecWorld, der: bytes) -> bytes:
    """The ledger's key for a fingerprint, with its proof checked by the spec light client."""
    with ls.LedgerConnection(world.host, 8470, source=world.spec_ip) as conn:
        chain = ls.sync_headers(conn)
        answer = conn.ask("lookup", by="fp", value=hashlib.sha256(der).hexdigest())
    record = ls.check_lookup(answer, chain, NETWORK, answer["record"].get("ip"), int(time.time()))
    assert record.key == der
    return record.key
