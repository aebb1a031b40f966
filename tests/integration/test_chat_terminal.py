"""The issue's "done when": two hosts registered in a real ledger network chat through `p2pchat listen` and
`p2pchat chat` processes, 25 lines across key rotations, and both exit cleanly."""

from __future__ import annotations

import pytest

from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess, ledger_network
from tests.integration.procs import Cluster

pytestmark = pytest.mark.slow


def test_listen_and_chat_processes_exchange_25_lines_across_rotations(tmp_path):
    a, b = free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path, make_identities(2)) as cluster:
        ledger_network(cluster, [a, b])
        listen = ChatProcess("listen", "--host", a, "--accept-all", "--once", "--rotate-every", "4",
                             "--data-dir", str(cluster.data_dir(a)))
        chat = None
        try:
            listen.wait_for("Waiting for chats")
            replies = [f"reply {i} from the listener ✓" for i in range(5)]
            listen.write(replies[0])                 # no chat chosen: refused with a hint, never sent
            listen.wait_for("! not sent: no chat is chosen. Type /to N")
            chat = ChatProcess("chat", a, "--host", b, "--data-dir", str(cluster.data_dir(b)),
                               "--rotate-every", "4")
            lines = [f"line {i}: grüße 🙂" for i in range(25)]
            chat.write(*lines)                       # typed before the chat is ready: sent once it is
            listen.choose_chat()                     # /to 1, announced as ready
            listen.write(*replies)
            for text in ("✓ 1 Connect", "✓ 2 Swap public keys", "✓ 3 Authenticate", "✓ 4 Agree AES key"):
                chat.wait_for(text)
            listen.wait_for("line 24: grüße 🙂")
            chat.wait_for(replies[-1])
            chat.write("/status", "/verify")
            chat.wait_for("safety number:")
            chat.close_input()                       # end of input: goodbye
            assert chat.wait_exit() == 0, chat.output()
            assert listen.wait_exit() == 0, listen.output()
        finally:
            listen.stop()
            if chat is not None:
                chat.stop()
        out, heard = chat.output(), listen.output()
        got = [line.split(": ", 1)[1] for line in heard.splitlines() if "] " in line and ": line " in line]
        assert got == lines
        for reply in replies:
            assert reply in out
        assert "25 message(s) sent, 25 delivered." in out
        assert "the peer's sending key is now epoch 6" in heard      # 25 lines, a fresh key every 4
        assert "key rotated" in out
        assert "path:   direct" in out and "keys:   epoch" in out
        assert "matches the ledger record for " + a in out
        assert " ended: " in heard and "left the chat" in heard
