"""Issue 16 with real processes: texts bob types for carol while she is down reach her, in order, once she is
back; a chat whose peer vanished without a goodbye (kill -9) is called again by itself when she returns."""

from __future__ import annotations

import pytest

from p2pchat.foundation.identity import KEY_FILE, Identity
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess, ledger_network
from tests.integration.procs import Cluster

pytestmark = pytest.mark.slow


def test_texts_for_an_offline_contact_wait_and_a_dropped_chat_reconnects(tmp_path):
    c, b = free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path, make_identities(2)) as cluster:
        ledger_network(cluster, [c, b])
        carol_dir, bob_dir = str(cluster.data_dir(c)), str(cluster.data_dir(b))
        carol_fp = Identity.load(cluster.data_dir(c) / KEY_FILE).fingerprint.hex()
        procs: list[ChatProcess] = []

        def start(*args: str) -> ChatProcess:
            proc = ChatProcess(*args)
            procs.append(proc)
            return proc

        try:
            carol = start("listen", "--host", c, "--accept-all", "--data-dir", carol_dir)
            carol.wait_for("Waiting for chats")
            first = start("chat", c, "--host", b, "--data-dir", bob_dir)   # carol becomes bob's contact
            first.write("hello carol")
            first.close_input()
            assert first.wait_exit() == 0, first.output()
            carol.stop()

            # --once: the chats bob's node opens by itself (each failed call, the delivery, the reconnect) are not
            # "the first chat"; before, the first failed call to carol ended bob's process
            bob = start("listen", "--host", b, "--once", "--data-dir", bob_dir)
            bob.wait_for("Waiting for chats")
            bob.write(f"/msg {carol_fp[:12]} first while you were away", f"/msg {carol_fp[:12]} second")
            bob.wait_for("cannot be reached now")
            bob.write("/waiting")
            bob.wait_for("second")
            carol = start("listen", "--host", c, "--accept-all", "--data-dir", carol_dir)
            carol.wait_for("second", timeout=60)
            out = carol.output()
            assert out.index("first while you were away") < out.index("second"), out
            bob.wait_for("is ready")

            # carol's process dies without a goodbye: bob's node calls her again once she is back
            carol.proc.kill()
            carol.wait_exit()
            bob.wait_for("ended")
            carol = start("listen", "--host", c, "--accept-all", "--data-dir", carol_dir)
            bob.wait_for("is ready", count=2, timeout=60)
            carol.wait_for("is ready")
        finally:
            for proc in procs:
                proc.stop()
