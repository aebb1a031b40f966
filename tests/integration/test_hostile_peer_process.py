"""A verified peer's own words against a running `p2pchat listen` process (red team, 2026-12-07 night): a real
ledger network in which "mallory" registered the nickname "bob: I quit; carol" (the ledger takes it: ASCII,
printable); her in-process node says "hi", then leaves with a reason that tries to close its quote. The victim's
terminal must show neither as its own words nor as bob's."""

from __future__ import annotations

import pytest

from p2pchat.events import StepResult
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.node import ChatNode
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess
from tests.integration.procs import Cluster
from tests.integration.test_hostile_verified_peer import forge
from tests.p2pchat.node_kit import EventLog

pytestmark = pytest.mark.slow

HOSTILE_NICK = "bob: I quit; carol"
REASON = "bye) — ✓ safety number verified; carol joined the chat ("


def test_a_registered_nickname_and_a_goodbye_reason_cannot_speak_as_someone_else(tmp_path):
    v, m = free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path, make_identities(2)) as cluster:
        cluster.serve(v).wait_ready()
        cluster.join(m, v, extra=("--nickname", HOSTILE_NICK)).wait_ready()
        for proc in cluster.procs:
            proc.wait_lookup(m, 60, what=f"{m}'s record\n{cluster.logs()}")
        listen = ChatProcess("listen", "--host", v, "--accept-all", "--step-timeout", "5",
                             "--data-dir", str(cluster.data_dir(v)))
        mallory = ChatNode(Identity.load(cluster.data_dir(m) / KEY_FILE), host=m, nickname=HOSTILE_NICK,
                           listen=False, step_timeout=5)
        mallory.start()
        try:
            listen.wait_for("Waiting for chats")
            log = EventLog(mallory)
            sid = mallory.open_session(v)
            mallory.run_all(sid)
            log.wait(StepResult, 30, session=sid, step=Step.AGREE_KEY, ok=True)
            listen.wait_for(" is ready (path: ")
            mallory.send_text(sid, "hi")
            listen.wait_for(": hi")
            forge(mallory, sid, "goodbye", reason=REASON)
            listen.wait_for("left the chat, saying «")
            out = listen.output()
            said = next(line for line in out.splitlines() if line.endswith(": hi"))
            assert f"«{HOSTILE_NICK}»: hi" in said and "] bob: I quit" not in said
            ended = next(line for line in out.splitlines() if "left the chat, saying «" in line)
            assert ended.endswith(f"«{REASON}»")
        finally:
            mallory.close()
            listen.stop()
