"""Load on a running node: 200 chats at once against one `p2pchat listen` process, all served, each with a
message delivered, all ended cleanly, and the process still stopping cleanly afterwards."""

from __future__ import annotations

import pytest

from p2pchat.admission import PRE_AUTH_PER_ADDRESS
from p2pchat.events import DeliveryReceipt, SessionEnded, StepResult
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.node import ChatNode
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess, ledger_network
from tests.integration.procs import Cluster
from tests.p2pchat.node_kit import EventLog, wait_until

pytestmark = pytest.mark.slow
SESSIONS = 200


def test_200_sessions_at_once_on_one_running_node(tmp_path):
    v, h = free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path, make_identities(2)) as cluster:
        ledger_network(cluster, [v, h])
        victim = ChatProcess("listen", "--host", v, "--accept-all", "--step-timeout", "30",
                             "--chats-per-peer", str(SESSIONS),   # one key's 200 chats: over the default 16
                             "--data-dir", str(cluster.data_dir(v)))
        client = ChatNode(Identity.load(cluster.data_dir(h) / KEY_FILE), host=h, nickname="load", listen=False,
                          step_timeout=30)
        client.start()
        log = EventLog(client)
        try:
            victim.wait_for("Waiting for chats")
            sids = [client.open_session(v) for _ in range(SESSIONS)]
            # One address may hold PRE_AUTH_PER_ADDRESS unauthenticated connections at once (p2pchat.admission):
            # the client opens its chats in waves of that many, each wave once the one before authenticated; all
            # 200 then stay open at once.
            for start in range(0, SESSIONS, PRE_AUTH_PER_ADDRESS):
                wave = sids[start:start + PRE_AUTH_PER_ADDRESS]
                for sid in wave:
                    client.run_all(sid)
                wait_until(lambda w=wave: all(log.all(StepResult, session=s, step=Step.AUTHENTICATE, ok=True)
                                              or log.all(StepResult, session=s, ok=False) for s in w),
                           60, interval=0.05, what=f"wave {start // PRE_AUTH_PER_ADDRESS} to authenticate")

            def ready() -> bool:
                failed = log.all(StepResult, ok=False)
                assert not failed, failed[:3]
                return len(log.all(StepResult, step=Step.AGREE_KEY, ok=True)) == SESSIONS
            wait_until(ready, 240, interval=0.2, what="200 handshakes")
            for sid in sids:
                client.send_text(sid, f"hello from {sid}")
            wait_until(lambda: len(log.all(DeliveryReceipt)) == SESSIONS, 120, interval=0.2, what="200 receipts")
            victim.wait_for(": hello from s", count=SESSIONS, timeout=60)
            heard = {line.rsplit(": ", 1)[1] for line in victim.output().splitlines() if ": hello from s" in line}
            assert heard == {f"hello from {sid}" for sid in sids}
            for sid in sids:
                client.end_session(sid)
            wait_until(lambda: len(log.all(SessionEnded)) == SESSIONS, 60, interval=0.2, what="200 goodbyes")
            assert all(e.clean for e in log.all(SessionEnded))
            victim.wait_for(" ended: ", count=SESSIONS, timeout=60)
            assert victim.proc.poll() is None
        finally:
            client.close()
            victim.stop()
        assert victim.proc.returncode == 0, victim.output()[-3000:]
