"""The shared-secret check (protocol.md §5.8) from the doc alone, against a real `p2pchat listen`: the spec peer
asks (Alice) and the node's user answers, then the node's user asks and the spec peer answers (Bob); a matching
and a non-matching answer, each side's verdict; the receiver's rules (a D not below q, both asking at once, a
question over 200 characters, the 10 runs a peer may start); at its end, pad texts in a chat without a pad (§5.9)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.integration.chat_procs import ChatProcess
from tests.spec.harness import called_peer, start_world
from tests.spec.impl import chatcrypto as cc
from tests.spec.impl import smp
from tests.spec.impl.peer import ChatPeer

pytestmark = pytest.mark.slow


class SmpPeer:
    """Collects the node's smp messages (the channel peer answers everything else as before)."""

    def __init__(self, peer: ChatPeer) -> None:
        self.peer = peer
        self.got: list[dict[str, Any]] = []
        self._handle = peer._handle
        peer._handle = self.handle                                    # type: ignore[method-assign]

    def handle(self, message: dict[str, Any]) -> None:
        if message["t"].startswith("smp"):
            self.got.append(message)
        else:
            self._handle(message)

    def next(self, t: str) -> dict[str, Any]:
        self.peer.pump(lambda: bool(self.got))
        message = self.got.pop(0)
        assert message["t"] == t, message
        return message


def test_the_shared_secret_check_both_ways_with_a_real_node(tmp_path):
    world = start_world(tmp_path)
    with world.cluster:
        node = ChatProcess("listen", "--host", world.host, "--accept-all", "--data-dir", str(world.data_dir))
        try:
            node.wait_for("Waiting for chats")
            with called_peer(world) as peer:
                node.choose_chat()
                check = SmpPeer(peer)
                mine, theirs = cc.H(peer.der), cc.H(world.records[1].key)

                # 1. the spec peer asks; the node's user answers the same words, written otherwise (§5.8 NFKC,
                # strip, case fold): both sides see a match
                alice = smp.Run(True, mine, theirs, peer.t2, os.urandom)
                peer.seal(cc.inner("smp1", **alice.smp1("Where did we meet?", "The Old Mill")))
                node.wait_for("Where did we meet?")
                node.write("/answer  the old mill")
                peer.seal(cc.inner("smp3", **alice.smp3(check.next("smp2"))))
                assert alice.finish_alice(check.next("smp4")) is True
                node.wait_for("same secret: marked verified")

                # 2. the node's user asks; the spec peer answers other words: neither side sees a match
                node.write("/ask Which colour was the door? | green")
                first = check.next("smp1")
                assert first["question"] == "Which colour was the door?"
                bob = smp.Run(False, theirs, mine, peer.t2, os.urandom)
                peer.seal(cc.inner("smp2", **bob.smp2(first, "blue")))
                peer.seal(cc.inner("smp4", **bob.smp4(check.next("smp3"))))
                assert bob.matched is False
                node.wait_for("the answers differ")

                # 3. the node asks again and the spec peer answers right: a match, as responder
                node.write("/ask Which colour was the door? | Green")
                bob = smp.Run(False, theirs, mine, peer.t2, os.urandom)
                peer.seal(cc.inner("smp2", **bob.smp2(check.next("smp1"), "GREEN ")))
                peer.seal(cc.inner("smp4", **bob.smp4(check.next("smp3"))))
                assert bob.matched is True
                node.wait_for("same secret: marked verified", count=2)

                # 4. §5.8's receiver rules: an smp2 whose D is not below q ends the run with an smp_abort back;
                # the session goes on
                node.write("/ask Which colour was the door? | green")
                bob = smp.Run(False, theirs, mine, peer.t2, os.urandom)
                bad = bob.smp2(check.next("smp1"), "green")
                bad["d5"] = smp.Q.to_bytes(smp.SIZE, "big")
                peer.seal(cc.inner("smp2", **bad))
                check.next("smp_abort")
                # both sides asking at once ends the run: the node, waiting for smp2, answers our smp1 with an
                # smp_abort
                node.write("/ask Which colour was the door? | green")
                check.next("smp1")
                crossing = smp.Run(True, mine, theirs, peer.t2, os.urandom)
                peer.seal(cc.inner("smp1", **crossing.smp1("And the window?", "blue")))
                check.next("smp_abort")

                # a message that breaks its schema (a question over 200 characters) is not an smp_abort but a
                # malformed frame: refused and counted (§5.2), the session goes on
                probe = smp.Run(True, mine, theirs, peer.t2, os.urandom)
                peer.seal(cc.inner("smp1", **probe.smp1("q" * 201, "x")))
                node.wait_for("'question' is too long")
                number = peer.send_text("still chatting after the abort")
                node.wait_for("still chatting after the abort")
                peer.pump(lambda: number in peer.receipts)
                # at most 10 runs started by the peer per session: an smp1 starts a run in EXPECT1, DONE or
                # ABORTED; one that arrives while the node waits for its user's answer (ANSWER) ends that run.
                # One run was started above (the crossing smp1 arrived in the node's EXPECT2 and started none).
                answers = []
                for i in range(20):
                    probe = smp.Run(True, mine, theirs, peer.t2, os.urandom)
                    peer.seal(cc.inner("smp1", **probe.smp1(f"run {i}?", "x")))
                    number = peer.send_text(f"after smp1 {i}")              # its receipt: the node read the smp1
                    peer.pump(lambda: number in peer.receipts)             # noqa: B023 — used at once
                    answers.append([m["t"] for m in check.got])
                    check.got.clear()
                started = [i for i, got in enumerate(answers) if got == []]
                assert started == list(range(0, 18, 2)), answers           # runs 2–10 of the session
                assert all(got == ["smp_abort"] for i, got in enumerate(answers) if i not in started)
                node.wait_for("after smp1 19")
                assert "«run 16?»" in node.output() and "«run 18?»" not in node.output()
                assert peer.receiver.refused == []
                # §5.9: a pad_text when no pad is installed is a refused frame; with the malformed smp1 above,
                # two of them are the third refusal, which ends the session
                for number in (peer.next_id, peer.next_id + 1):
                    peer.seal(cc.inner("pad_text", id=number, sent_at=1.0, box=bytes(40)))
                peer.pump(lambda: peer.goodbye is not None)
                assert peer.goodbye == "too many frames were refused"
        except BaseException:
            print(node.output())
            raise
        finally:
            node.stop()
