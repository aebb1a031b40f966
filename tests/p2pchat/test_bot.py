"""``p2pchat bot``: JSON lines in and out, driven against real nodes on loopback (issue 17). Peer strings stay
JSON string values; bad command lines get an error reply and the bot goes on."""

from __future__ import annotations

import io
import json
import queue
from typing import Any

from p2pchat.bot import MAX_LINE, Bot
from p2pchat.peer_directory import FixedDirectory
from tests.helpers import wait_until
from tests.p2pchat.node_kit import make_peer


class Lines(io.StringIO):
    def objects(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines()]


def pump(bot: Bot) -> None:
    while True:
        try:
            bot.on_event(bot.node.events.get_nowait())
        except queue.Empty:
            return


def test_a_script_runs_the_four_steps_one_by_one_and_chats(identities):
    directory = FixedDirectory()
    alice = make_peer(identities[0], "alice", directory)
    bob = make_peer(identities[1], "bob", directory, auto_accept=True)
    out = Lines()
    bot = Bot(alice.node, out)
    try:
        bot.hello()
        bot.on_line(json.dumps({"cmd": "open", "peer": f"{bob.ip}:{bob.node.port}", "id": 1}))
        sid = out.objects()[-1]["session"]
        for step in (1, 2, 3, 4):
            bot.on_line(json.dumps({"cmd": "step", "session": sid, "step": step, "id": f"s{step}"}))

            def done(step: int = step) -> bool:
                pump(bot)
                return any(o.get("event") == "step_result" and o["step"] == step and o["ok"] for o in out.objects())
            wait_until(done, 15, what=f"step {step}: {out.getvalue()}")
        bot.on_line(json.dumps({"cmd": "send", "session": sid, "text": "hi \x1b]0;owned\x07", "id": 9}))
        bob_sid = bob.node.sessions()[0].session
        bob.node.send_text(bob_sid, "answer \x1b[31mred\u202e")

        def answered() -> dict[str, Any] | None:
            pump(bot)
            return next((o for o in out.objects() if o.get("event") == "message_received"), None)
        got = wait_until(answered, 15, what="bob's answer")
        assert got["text"] == "answer \x1b[31mred\u202e" and got["session"] == sid
        assert "\x1b" not in out.getvalue() and "\u202e" not in out.getvalue()    # escaped as \u001b, \u202e
        replies = {o["reply"]: o for o in out.objects() if "reply" in o}
        assert replies[1]["ok"] and all(replies[f"s{n}"]["ok"] for n in (1, 2, 3, 4))
        assert replies[9] == {"reply": 9, "ok": True, "msg_id": replies[9]["msg_id"]}
        assert out.objects()[0]["event"] == "ready" and out.objects()[0]["schema"] == 1
        bot.on_line(json.dumps({"cmd": "session", "session": sid, "id": "info"}))
        info = out.objects()[-1]["info"]
        assert info["steps_done"] == [1, 2, 3, 4] and info["peer_nickname"] == "bob"
    finally:
        alice.node.close()
        bob.node.close()


def test_bad_command_lines_are_answered_with_an_error_and_the_bot_goes_on(identities):
    peer = make_peer(identities[0], "alice", FixedDirectory())
    out = Lines()
    bot = Bot(peer.node, out)
    try:
        for line in ["not json", "[1, 2]", '{"id": 3}', '{"cmd": "fly", "id": 4}', '{"cmd": "step", "id": 5}',
                     '{"cmd": "step", "session": "s1", "step": 7, "id": 6}',
                     '{"cmd": "step", "session": "s1", "step": true, "id": 7}',
                     '{"cmd": "send", "session": "nope", "text": "x", "id": 8}',
                     '{"cmd": "sessions", "id": {"nested": 1}}', "x" * (MAX_LINE + 1),
                     '{"cmd": "message", "contact": "nobody", "text": "x", "id": 9}']:
            bot.on_line(line)
        errors = out.objects()
        assert len(errors) == 11 and not any(o["ok"] for o in errors)
        assert [o["reply"] for o in errors] == [None, None, 3, 4, 5, 6, 7, 8, None, None, 9]
        assert "unknown command 'fly'" in errors[3]["error"] and "needs the field 'step'" in errors[4]["error"]
        assert "1, 2, 3 or 4" in errors[5]["error"] and "must be a int" in errors[6]["error"]
        bot.on_line('{"cmd": "sessions", "id": "ok"}')
        assert out.objects()[-1] == {"reply": "ok", "ok": True, "sessions": []}
        bot.on_line('{"cmd": "quit"}')
        assert bot.quit
    finally:
        peer.node.close()


def test_a_script_sends_a_file_and_sees_its_progress_and_end(tmp_path, identities):
    directory = FixedDirectory()
    alice = make_peer(identities[0], "alice", directory)
    bob = make_peer(identities[1], "bob", directory, auto_accept=True, downloads=tmp_path / "in", accept_files=True)
    out = Lines()
    bot = Bot(alice.node, out)
    source = tmp_path / "notes.txt"
    source.write_bytes(b"quokka " * 5000)
    try:
        bot.on_line(json.dumps({"cmd": "open", "peer": f"{bob.ip}:{bob.node.port}", "run_all": True, "id": 1}))
        sid = out.objects()[-1]["session"]

        def ready() -> bool:
            pump(bot)
            return any(o.get("event") == "step_result" and o["step"] == 4 and o["ok"] for o in out.objects())
        wait_until(ready, 15, what="the four steps")
        bot.on_line(json.dumps({"cmd": "send_file", "session": sid, "path": str(source), "id": 2}))
        reply = out.objects()[-1]
        assert reply["reply"] == 2 and reply["ok"] and len(reply["transfer"]) == 32

        def finished() -> dict[str, Any] | None:
            pump(bot)
            bob.log.pump()
            return next((o for o in out.objects() if o.get("event") == "file_finished"), None)
        done = wait_until(finished, 20, what="the transfer's end")
        assert done["ok"] and done["outgoing"] and done["transfer"] == reply["transfer"]
        assert (tmp_path / "in" / "notes.txt").read_bytes() == source.read_bytes()
        bot.on_line(json.dumps({"cmd": "answer_secret", "session": sid, "answer": "x", "id": 3}))
        assert out.objects()[-1]["ok"] is False and out.objects()[-1]["reply"] == 3   # no question asked
    finally:
        alice.node.close()
        bob.node.close()
