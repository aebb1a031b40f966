"""Issue 5's client side with real processes: a `--no-inbound` host registered at a `p2pchat relay` and known
to the ledger only by nickname and relay hint; a normal host chats with it through the relay (four steps end to
end, path shown, both directions, across rotations); the relay restarts mid-chat: the chat ends with a clear
error, the listener registers again and the next chat works."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from p2pchat.foundation.addresses import RELAY_PORT
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess, _env
from tests.integration.procs import ROOT, Cluster, wait_until

pytestmark = pytest.mark.slow


def relay_registered(relay_ip: str) -> int:
    result = subprocess.run([sys.executable, "-m", "p2pchat", "relay", "--status", "--json", "--host", relay_ip],
                            capture_output=True, text=True, timeout=20, cwd=ROOT, env=_env())
    return json.loads(result.stdout)["registered"] if result.returncode == 0 else 0


def test_no_inbound_host_chats_through_the_relay_and_survives_a_relay_restart(tmp_path):
    r, a, b = free_loopback_ip(), free_loopback_ip(), free_loopback_ip()
    relay_addr = f"{r}:{RELAY_PORT}"
    # The relay checks callers' keys in the ledger (bob takes no calls from keys without a record) and keeps its
    # link key in a file, so the restarted relay presents the key the chat processes saw first.
    relay_args = ("relay", "--host", r, "--heartbeat", "1", "--ledger", a, "--key-file", str(tmp_path / "relay_key"))
    relay = ChatProcess(*relay_args)
    listen = chat = again = None
    with Cluster(tmp_path, make_identities(2)) as cluster:
        try:
            relay.wait_for("relay listening on")
            cluster.serve(a).wait_ready()
            cluster.join(b, a, extra=("--no-inbound", "--relay", relay_addr, "--nickname", "bob")).wait_ready()
            cluster.procs[0].wait_lookup("bob", 60, what=f"bob's record\n{cluster.logs()}")
            assert cluster.procs[0].lookup("bob")["ip"] is None
            listen = ChatProcess("listen", "--host", b, "--no-inbound", "--relay", relay_addr, "--accept-all",
                                 "--ledger", a, "--rotate-every", "3", "--data-dir", str(cluster.data_dir(b)))
            listen.wait_for("Waiting for chats")
            wait_until(lambda: relay_registered(r) == 1, 30, what="the listener's registration at the relay")
            chat = ChatProcess("chat", "bob", "--host", a, "--rotate-every", "3",
                               "--data-dir", str(cluster.data_dir(a)))
            chat.wait_for("✓ 4 Agree AES key")
            chat.wait_for(f"(path: relay {relay_addr})")
            listen.wait_for("✓ 4 Agree AES key")
            listen.choose_chat()
            chat.write(*(f"to bob {i}" for i in range(8)))
            listen.write(*(f"to the caller {i}" for i in range(8)))
            listen.wait_for("to bob 7")
            chat.wait_for("to the caller 7")
            chat.write("/status")
            chat.wait_for(f"path:   relay {relay_addr}")
            assert "connected through relay" in chat.output()
            assert "key rotated" in chat.output() and "key rotated" in listen.output()

            relay.stop()                                           # the relay goes away mid-chat
            assert chat.wait_exit(30) == 1
            assert "Chat ended:" in chat.output() and "relay" in chat.output().split("Chat ended:")[1]
            relay = ChatProcess(*relay_args)
            relay.wait_for("relay listening on")
            wait_until(lambda: relay_registered(r) == 1, 60, what="the listener registering again")
            again = ChatProcess("chat", "bob", "--host", a, "--data-dir", str(cluster.data_dir(a)))
            again.write("back again")
            listen.wait_for("back again")
            again.close_input()
            assert again.wait_exit(30) == 0, again.output()
        finally:
            for proc in (again, chat, listen, relay):
                if proc is not None:
                    proc.stop()
