"""One-time-pad mode (protocol.md §5.9) from the doc alone, against a real `p2pchat listen`: a pad directory the
spec implementation wrote (pad.json as documented) imported by `p2pchat pad import`, the switch to pad mode,
pad texts both ways, the refusals a receiver makes, exhaustion, and the switch back."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.chat_procs import ChatProcess
from tests.spec.harness import called_peer, start_world
from tests.spec.impl import chatcrypto as cc
from tests.spec.impl.pad import PadHalves, write_pad
from tests.spec.impl.peer import ChatPeer

pytestmark = pytest.mark.slow

HALF = 1024                    # the smallest half a pad may have (§5.9)


class PadPeer:
    def __init__(self, peer: ChatPeer, halves: PadHalves) -> None:
        self.peer, self.halves = peer, halves
        self.ops: list[str] = []
        self.texts: list[str] = []
        self._handle = peer._handle
        peer._handle = self.handle                                    # type: ignore[method-assign]

    def handle(self, message: dict[str, Any]) -> None:
        if message["t"] == "pad_mode":
            self.ops.append(message["op"])
        elif message["t"] == "pad_text":
            self.texts.append(self.halves.open(message["box"]))
            self.peer.seal(cc.inner("receipt", ids=[message["id"]]))
        else:
            self._handle(message)

    def send(self, box: bytes) -> int:
        number = self.peer.next_id
        self.peer.next_id += 1
        self.peer.seal(cc.inner("pad_text", id=number, sent_at=time.time(), box=box))
        return number


def test_pad_mode_from_the_doc_with_a_real_node(tmp_path):
    world = start_world(tmp_path)
    mine, theirs = cc.H(world.records[0].key), cc.H(world.records[1].key)
    pad_id, a, b = write_pad(tmp_path / "pad", mine, theirs, HALF)
    halves = PadHalves(a, b) if mine < theirs else PadHalves(b, a)          # low sends with a
    with world.cluster:
        imported = ChatProcess("pad", "import", str(tmp_path / "pad"), "--data-dir", str(world.data_dir))
        assert imported.wait_exit() == 0, imported.output()
        node = ChatProcess("listen", "--host", world.host, "--accept-all", "--data-dir", str(world.data_dir))
        try:
            node.wait_for("Waiting for chats")
            with called_peer(world) as peer:
                node.choose_chat()
                pad = PadPeer(peer, halves)

                peer.seal(cc.inner("pad_mode", op="on?", pad_id=bytes(16)))   # another pad: off, answered `no`
                peer.pump(lambda: "no" in pad.ops)
                peer.seal(cc.inner("pad_mode", op="on?", pad_id=pad_id))      # off -> offered
                node.wait_for("asks to switch to the one-time pad")
                node.write("/pad yes")
                peer.pump(lambda: "on!" in pad.ops)
                first = pad.send(halves.seal("by the pad ✓"))
                peer.pump(lambda: first in peer.receipts)
                node.wait_for("by the pad ✓")
                node.write("the node's pad text")
                peer.pump(lambda: "the node's pad text" in pad.texts)
                assert halves.received == 32 + len("the node's pad text")

                # refused and counted (§5.2): past the half's end, then a replay below R; not shown
                pad.send(halves.forge_at(HALF - 40, "twenty bytes or so, too long"))
                node.wait_for("it was not shown")                  # §5.2: the first refusal is reported
                peer.send_text("a plain text in pad mode")         # a downgrade: refused, not shown
                # exhaustion: the node's sending half (1024 bytes, 51 spent) cannot hold 1000 more; nothing is sent
                node.write("x" * 1000)
                node.wait_for("the one-time pad is used up in your direction")
                last = pad.send(halves.seal("y" * (HALF - halves.sent - 32)))    # exactly the rest of the half
                peer.pump(lambda: last in peer.receipts)
                assert halves.sent == HALF

                peer.seal(cc.inner("pad_mode", op="off?", pad_id=pad_id))
                node.wait_for("asks to fall back to AES only")       # the node's user answers once asked
                node.write("/pad yes")
                peer.pump(lambda: "off!" in pad.ops)
                plain = peer.send_text("back to AES only")
                peer.pump(lambda: plain in peer.receipts)
                assert len(pad.texts) == 1 and peer.receiver.refused == []   # the plain text went as text
                assert pad.ops == ["no", "on!", "off!"]
                # both ask at once (§5.9 table: asked + peer on? -> on, sending on!): whichever of the two asks
                # the node took first, it ends in `on` and sends `on!`; the spec peer answers an `on?` it sees
                # while asking with `on!` too
                seen = len(pad.ops)
                node.write("/pad on")
                peer.seal(cc.inner("pad_mode", op="on?", pad_id=pad_id))
                peer.pump(lambda: "on!" in pad.ops[seen:])
                if "on?" in pad.ops[seen:]:
                    peer.seal(cc.inner("pad_mode", op="on!", pad_id=pad_id))
                assert pad.ops[seen:] in (["on!"], ["on?", "on!"])
                node.write("after both asked")
                peer.pump(lambda: "after both asked" in pad.texts)          # a pad text again: the node is on

                # a pad text is read whenever a pad is installed: a replayed one now is the third refusal,
                # which ends the session (so the two above were counted)
                pad.send(halves.forge_at(0, "again"))
                peer.pump(lambda: peer.goodbye is not None)
                assert peer.goodbye == "too many frames were refused"
            out = node.output()
            assert "again" not in out and "twenty bytes" not in out and "a plain text in pad mode" not in out
        except BaseException:
            print(node.output())
            raise
        finally:
            node.stop()
