"""Issue 17's shared-secret check against running processes: `p2pchat chat` asks `/ask QUESTION | ANSWER`,
`p2pchat listen` answers with `/answer TEXT`; both print the match plainly and mark the other verified in their
contact stores (`p2pchat contacts` shows ✓)."""

from __future__ import annotations

import pytest

from p2pchat.contacts import ContactStore
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess, ledger_network
from tests.integration.procs import Cluster

pytestmark = pytest.mark.slow


def test_chat_asks_listen_answers_and_both_mark_each_other_verified(tmp_path):
    a, b = free_loopback_ip(), free_loopback_ip()
    identities = make_identities(2)
    with Cluster(tmp_path, identities) as cluster:
        ledger_network(cluster, [a, b])
        listen = ChatProcess("listen", "--host", a, "--accept-all", "--once", "--data-dir", str(cluster.data_dir(a)))
        chat = None
        try:
            listen.wait_for("Waiting for chats")
            chat = ChatProcess("chat", a, "--host", b, "--data-dir", str(cluster.data_dir(b)))
            chat.wait_for("✓ 4 Agree AES key")
            listen.choose_chat()
            chat.write("/ask Where did we first meet? | The Old Mill")
            listen.wait_for("asks you a question to check it is really you: «Where did we first meet?»")
            listen.write("/answer  the old mill ")
            chat.wait_for("answered your question with the same secret: marked verified")
            listen.wait_for("question with the same secret: marked verified")
            chat.close_input()
            assert chat.wait_exit() == 0, chat.output()
            assert listen.wait_exit() == 0, listen.output()
        finally:
            listen.stop()
            if chat is not None:
                chat.stop()
    for host, other in ((a, identities[1]), (b, identities[0])):
        store = ContactStore.in_data_dir(cluster.data_dir(host))
        try:
            contact = store.get(other.fingerprint)
            assert contact is not None and contact.verified, host
        finally:
            store.close()
