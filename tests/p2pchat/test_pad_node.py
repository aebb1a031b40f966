"""One-time-pad mode between two real nodes over loopback sockets (issue 17)."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from p2pchat.bot import Bot
from p2pchat.events import DeliveryReceipt, MessageReceived, Notice, PadModeChanged, StepResult
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.identity import Identity
from p2pchat.pad import MAC_KEY_LEN, create_pad, import_pad
from p2pchat.steps import Step
from p2pchat.terminal import pad_lines, run_chat
from tests.helpers import wait_until
from tests.p2pchat.node_kit import Peer, connect_all, pair, reading_ui
from tests.p2pchat.test_bot import Lines, pump


@contextmanager
def pad_pair(identities: list[Identity], tmp_path: Path, size: int, *,
             bob_imports: bool = True) -> Iterator[tuple[Peer, Peer]]:
    """alice and bob (node_kit.pair) with data directories that share a pad of ``size`` bytes."""
    a_dir, b_dir = tmp_path / "alice", tmp_path / "bob"
    _, mine, theirs = create_pad(identities[0].fingerprint, identities[1].fingerprint, size, tmp_path / "usb")
    import_pad(mine, a_dir, identities[0].fingerprint)
    if bob_imports:
        import_pad(theirs, b_dir, identities[1].fingerprint)
    opts = {"contacts": False, "history": False}
    with pair(identities, data_dir=a_dir, bob={"data_dir": b_dir, **opts}, **opts) as (alice, bob, _):
        yield alice, bob


def test_two_nodes_agree_on_pad_mode_chat_run_out_and_fall_back(identities: list[Identity],
                                                                  tmp_path: Path) -> None:
    with pad_pair(identities, tmp_path, 2048) as (alice, bob):
        sid, bsid = connect_all(alice, bob)
        alice.node.pad_mode(sid, "ask_on")
        bob.log.wait(PadModeChanged, session=bsid, state="offered")
        with pytest.raises(UserError, match="nothing to do"):
            alice.node.pad_mode(sid, "accept")          # alice has nothing to answer
        bob.node.pad_mode(bsid, "accept")
        alice.log.wait(PadModeChanged, session=sid, state="on")
        # both send at once: each uses its own half
        m1 = alice.node.send_text(sid, "under the pad ✓")
        m2 = bob.node.send_text(bsid, "me too")
        bob.log.wait(MessageReceived, session=bsid, text="under the pad ✓")
        alice.log.wait(MessageReceived, session=sid, text="me too")
        alice.log.wait(DeliveryReceipt, session=sid, msg_id=m1)
        bob.log.wait(DeliveryReceipt, session=bsid, msg_id=m2)
        # a plain AES text while pad mode is on (what someone who broke AES could inject) is refused, not shown
        bob_session = bob.node._get(bsid)
        with bob_session.lock:
            assert bob_session.channel is not None
            _, frames = bob_session.channel.send_text("downgraded", time.time())
        for frame in frames:
            bob.node.inject_frame(bsid, frame)
        refused = alice.log.wait(Notice, kind="refused")
        assert refused.text.startswith(f"message {m2 + 1} arrived without the one-time pad while pad mode is on; it "
                                       "was not shown (the chat ends if 3 frames are refused)")
        assert pad_lines(alice.node, sid, "")[0] == "pad mode: on; pad left: 0 KiB ↑ / 0 KiB ↓"   # < 1 KiB each
        assert pad_lines(alice.node, sid, "yes")[0].startswith("! nothing to do: pad mode is on")
        assert pad_lines(alice.node, sid, "maybe")[0].startswith("unknown /pad maybe")
        status = alice.node.pad_status(sid)
        assert status is not None and status.state == "on"
        assert status.send_left == 1024 - (MAC_KEY_LEN + len("under the pad ✓".encode())) - MAC_KEY_LEN
        assert status.recv_left == 1024 - (MAC_KEY_LEN + len(b"me too"))
        # the pad runs out: said plainly, nothing sent, the chat stays in pad mode until both agree
        with pytest.raises(UserError, match="used up"):
            alice.node.send_text(sid, "x" * 2000)
        assert pad_lines(alice.node, sid, "off") == []      # the terminal's /pad off
        bob.log.wait(PadModeChanged, session=bsid, state="offered_off")
        bob.node.pad_mode(bsid, "accept")
        alice.log.wait(PadModeChanged, session=sid, state="off")
        alice.node.send_text(sid, "back to AES only")
        bob.log.wait(MessageReceived, session=bsid, text="back to AES only")
        assert len(alice.log.all(Notice, kind="refused")) == 1 and not bob.log.all(Notice, kind="refused")
        assert not alice.log.all(MessageReceived, text="downgraded")


def test_pad_mode_needs_a_pad_and_a_refused_request_changes_nothing(identities: list[Identity],
                                                                    tmp_path: Path) -> None:
    with pad_pair(identities, tmp_path, 2048, bob_imports=False) as (alice, bob):     # bob never imported his copy
        sid, bsid = connect_all(alice, bob)
        with pytest.raises(UserError, match="no one-time pad"):
            bob.node.pad_mode(bsid, "ask_on")
        alice.node.pad_mode(sid, "ask_on")
        alice.log.wait(PadModeChanged, session=sid, state="off")     # bob's node declined: no such pad
        bob.log.wait(PadModeChanged, session=bsid, state="off")
        alice.node.send_text(sid, "still AES")
        bob.log.wait(MessageReceived, session=bsid, text="still AES")


def test_terminal_chat_switches_to_the_pad_with_slash_pad(identities: list[Identity], tmp_path: Path) -> None:
    """`p2pchat chat`'s loop (run_chat, standard input a pipe): /pad on, the peer agrees, a text goes under the
    pad, /pad shows what is left; every line goes through the terminal's own printer."""
    with pad_pair(identities, tmp_path, 4096) as (alice, bob):
        alice.log.reading = False
        r, w = os.pipe()
        out = io.StringIO()
        failures: list[BaseException] = []

        def user_and_peer() -> None:
            """Alice types (into the pipe) while bob's node answers; run_chat owns the main thread (signals)."""
            try:
                wait_until(lambda: "Chat ready with bob" in out.getvalue(), 15, what="the chat to be ready")
                bsid = bob.log.wait(StepResult, step=Step.AGREE_KEY, ok=True).session
                os.write(w, b"/pad on\n")
                bob.log.wait(PadModeChanged, session=bsid, state="offered")
                bob.node.pad_mode(bsid, "accept")
                wait_until(lambda: "◆ pad mode is on" in out.getvalue(), 10, what="alice's terminal to say so")
                os.write(w, b"under the pad\n/pad\n")
                bob.log.wait(MessageReceived, session=bsid, text="under the pad")
                wait_until(lambda: "pad mode: on; pad left: 1 KiB ↑ / 2 KiB ↓" in out.getvalue(), 10,
                           what="/pad's status line")
            except BaseException as exc:     # re-raised on the test's thread
                failures.append(exc)
            finally:
                os.close(w)      # end of input: run_chat says goodbye once the text is receipted

        thread = threading.Thread(target=user_and_peer, name="test-pad-user")
        with reading_ui(bob.log):
            thread.start()
            try:
                code = run_chat(alice.node, f"{bob.ip}:{bob.node.port}", stdin_fd=r, out=out)
            finally:
                thread.join(60)
                os.close(r)
        if failures:
            raise failures[0]
        assert code == 0, out.getvalue()


def test_a_bot_script_switches_to_the_pad(identities: list[Identity], tmp_path: Path) -> None:
    """`p2pchat bot`'s `pad` command and `pad_mode_changed` events (issue 17)."""
    with pad_pair(identities, tmp_path, 4096) as (alice, bob):
        alice.log.reading = False
        sid, bsid = connect_all(alice, bob)
        out = Lines()
        bot = Bot(alice.node, out)
        bot.on_line(json.dumps({"cmd": "pad", "session": sid, "action": "ask_on", "id": 1}))
        assert out.objects()[-1] == {"reply": 1, "ok": True, "state": "asked", "send_left": 2016, "recv_left": 2048}
        bob.log.wait(PadModeChanged, session=bsid, state="offered")
        bob.node.pad_mode(bsid, "accept")

        def on() -> bool:
            pump(bot)
            return any(o.get("event") == "pad_mode_changed" and o["state"] == "on" for o in out.objects())
        wait_until(on, 10, what=f"pad_mode_changed on: {out.getvalue()}")
        bot.on_line(json.dumps({"cmd": "pad", "session": sid, "action": "maybe", "id": 2}))
        assert out.objects()[-1]["ok"] is False and "'action' must be" in out.objects()[-1]["error"]
