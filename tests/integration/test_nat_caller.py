"""Issue 14 with real processes: a host behind NAT (a relay-only record, `--no-inbound --relay`) calls a host
with an address directly — outbound TCP works through NAT — and is checked by the key its record names, although
the callee's `listen` has no `--relay`; the caller's own listener stays registered at the relay meanwhile."""

from __future__ import annotations

import pytest

from p2pchat.foundation.addresses import RELAY_PORT
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess
from tests.integration.procs import Cluster, wait_until
from tests.integration.test_chat_relay import relay_registered

pytestmark = pytest.mark.slow


def test_a_natd_host_calls_a_listener_without_relay_directly_and_keeps_its_relay_registration(tmp_path):
    r, a, b = free_loopback_ip(), free_loopback_ip(), free_loopback_ip()
    relay_addr = f"{r}:{RELAY_PORT}"
    relay = ChatProcess("relay", "--host", r, "--heartbeat", "1", "--ledger", a,
                        "--key-file", str(tmp_path / "relay_key"))
    public = natd_listener = call = None
    with Cluster(tmp_path, make_identities(2)) as cluster:
        try:
            relay.wait_for("relay listening on")
            cluster.serve(a, "--nickname", "alice").wait_ready()
            cluster.join(b, a, extra=("--no-inbound", "--relay", relay_addr, "--nickname", "bob")).wait_ready()
            cluster.procs[0].wait_lookup("bob", 60, what=f"bob's record\n{cluster.logs()}")
            assert cluster.procs[0].lookup("bob")["ip"] is None        # relay-only: no address anywhere
            public = ChatProcess("listen", "--host", a, "--accept-all", "--data-dir", str(cluster.data_dir(a)))
            public.wait_for("Waiting for chats")
            natd_listener = ChatProcess("listen", "--host", b, "--no-inbound", "--relay", relay_addr,
                                        "--accept-all", "--ledger", a, "--data-dir", str(cluster.data_dir(b)))
            natd_listener.wait_for("Waiting for chats")
            wait_until(lambda: relay_registered(r) == 1, 30, what="the NAT'd listener's registration at the relay")

            for query in (a, "alice"):      # by address and by nickname
                call = ChatProcess("chat", query, "--host", b, "--no-inbound", "--relay", relay_addr,
                                   "--ledger", a, "--data-dir", str(cluster.data_dir(b)))
                call.wait_for("✓ 4 Agree AES key")
                call.write(f"hello from behind the NAT via {query}")
                public.wait_for(f"hello from behind the NAT via {query}")
                call.close_input()
                assert call.wait_exit(30) == 0, call.output()
                call = None
            assert "(bob)" in public.output()               # checked against bob's relay-only record, by its key
            assert relay_registered(r) == 1
            assert "registered again" not in natd_listener.output()
        finally:
            for proc in (call, natd_listener, public, relay):
                if proc is not None:
                    proc.stop()
