"""``p2pchat bot``: the chat node driven by JSON lines, for scripts and other programs (issue 17).

Commands arrive on standard input, one JSON object a line; events and replies leave on standard output, one JSON
object a line (the schema is docs/bot.md). Nothing else is ever written to standard output: progress and logs go
to standard error. Every string a peer supplied (nicknames, texts, reasons) is a JSON string value, written with
``ensure_ascii``, so no byte of it can reach a reader's terminal as a control sequence.

A command may carry ``"id"``: its reply echoes it. A line that is not a JSON object, an unknown command, a missing
or mistyped field, or a command the node refuses is answered ``{"reply": ID, "ok": false, "error": "…"}`` and
the bot goes on; only ``quit`` and the end of standard input stop it (after a goodbye in every chat).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import Any, TextIO

from p2pchat.events import Event
from p2pchat.foundation.errors import UsageError, UserError
from p2pchat.node import ChatNode
from p2pchat.steps import Step

MAX_LINE = 1024 * 1024          # characters of one command line
SCHEMA_VERSION = 1


class BadCommand(UsageError):
    """A command line the bot cannot carry out as written."""


def _camel_to_snake(name: str) -> str:
    return "".join(f"_{ch.lower()}" if ch.isupper() and i else ch.lower() for i, ch in enumerate(name))


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value if not isinstance(value, Step) else int(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def event_json(event: Event) -> dict[str, Any]:
    """An event as the bot writes it: ``{"event": "step_result", …its fields…}``."""
    assert is_dataclass(event)
    fields = {k: _plain(v) for k, v in asdict(event).items()}
    return {"event": _camel_to_snake(type(event).__name__), **fields}


def _field(cmd: dict[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    value = cmd.get(name, default)
    if value is ...:
        raise BadCommand(f"the command {cmd.get('cmd')!r} needs the field {name!r}")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadCommand(f"the field {name!r} must be a {kind.__name__}")
    return value


class Bot:
    """Carries out command objects on ``node`` and writes JSON lines to ``out``."""

    def __init__(self, node: ChatNode, out: TextIO) -> None:
        self.node = node
        self.out = out
        self.quit = False
        self._commands: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "open": self._open, "step": self._step, "run_all": self._run_all, "accept": self._accept,
            "send": self._send, "message": self._message, "cancel": self._cancel, "typing": self._typing,
            "end": self._end, "sessions": self._sessions, "session": self._session, "verify": self._verify,
            "accept_new_key": self._accept_new_key, "quit": self._quit,
            "send_file": self._send_file, "answer_file": self._answer_file, "cancel_file": self._cancel_file,
            "ask_secret": self._ask_secret, "answer_secret": self._answer_secret, "abort_secret": self._abort_secret,
        }
        self._commands["pad"] = self._pad        # issue 17: one-time-pad mode

    def write(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, ensure_ascii=True, separators=(",", ":"), sort_keys=False) + "\n")
        self.out.flush()

    def hello(self) -> None:
        self.write({"event": "ready", "schema": SCHEMA_VERSION, "nickname": self.node.nickname,
                    "fingerprint": self.node.identity.fingerprint.hex(), "address": self.node.hello_address})

    def on_event(self, event: Event) -> None:
        self.write(event_json(event))

    def on_line(self, line: str) -> None:
        """Carry out one command line; always writes exactly one reply."""
        line = line.strip()
        if not line:
            return
        rid: Any = None
        try:
            if len(line) > MAX_LINE:
                raise BadCommand(f"a command line may be at most {MAX_LINE} characters")
            try:
                cmd = json.loads(line)
            except ValueError as exc:
                raise BadCommand(f"not a JSON object: {exc}") from None
            if not isinstance(cmd, dict):
                raise BadCommand("each line must be a JSON object such as {\"cmd\": \"sessions\"}")
            rid = cmd.get("id")
            if rid is not None and not isinstance(rid, str | int):
                rid = None
                raise BadCommand("the field 'id' must be a string or an integer")
            name = _field(cmd, "cmd", str)
            handler = self._commands.get(name)
            if handler is None:
                raise BadCommand(f"unknown command {name!r}; the commands are {', '.join(sorted(self._commands))}")
            result = handler(cmd)
        except UserError as exc:
            self.write({"reply": rid, "ok": False, "error": str(exc)})
            return
        self.write({"reply": rid, "ok": True, **result})

    # --- the commands ---------------------------------------------------------------------------------------

    def _open(self, cmd: dict[str, Any]) -> dict[str, Any]:
        sid = self.node.open_session(_field(cmd, "peer", str))
        if _field(cmd, "run_all", bool, False):
            self.node.run_all(sid)
        return {"session": sid}

    def _step(self, cmd: dict[str, Any]) -> dict[str, Any]:
        number = _field(cmd, "step", int)
        if number not in (1, 2, 3, 4):
            raise BadCommand("the field 'step' must be 1, 2, 3 or 4")
        self.node.run_step(_field(cmd, "session", str), Step(number))
        return {}

    def _run_all(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.node.run_all(_field(cmd, "session", str))
        return {}

    def _accept(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.node.accept(_field(cmd, "session", str), _field(cmd, "accept", bool, True))
        return {}

    def _send(self, cmd: dict[str, Any]) -> dict[str, Any]:
        msg_id = self.node.send_text(_field(cmd, "session", str), _field(cmd, "text", str))
        return {"msg_id": msg_id}

    def _message(self, cmd: dict[str, Any]) -> dict[str, Any]:
        contact = _field(cmd, "contact", str)
        if self.node.contacts is None:
            raise BadCommand("this node has no contact store (no data directory)")
        fp = self.node.contacts.resolve(contact).fp
        return {"row": self.node.message_contact(fp, _field(cmd, "text", str)), "fingerprint": fp}

    def _cancel(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.node.cancel_waiting(_field(cmd, "row", int))
        return {}

    def _typing(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.node.set_typing(_field(cmd, "session", str), _field(cmd, "typing", bool))
        return {}

    def _end(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.node.end_session(_field(cmd, "session", str))
        return {}

    def _sessions(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return {"sessions": [_plain(asdict(info)) for info in self.node.sessions()]}

    def _session(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return {"info": _plain(asdict(self.node.session_info(_field(cmd, "session", str))))}

    def _verify(self, cmd: dict[str, Any]) -> dict[str, Any]:
        fp = self.node.verify_contact(_field(cmd, "session", str), _field(cmd, "verified", bool, True))
        return {"fingerprint": fp}

    def _accept_new_key(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.node.accept_new_key(_field(cmd, "fingerprint", str),
                                 override_verified=_field(cmd, "override_verified", bool, False))
        return {}

    def _send_file(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return {"transfer": self.node.send_file(_field(cmd, "session", str), _field(cmd, "path", str))}

    def _answer_file(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.node.answer_file(_field(cmd, "session", str), _field(cmd, "transfer", str),
                              _field(cmd, "accept", bool, True))
        return {}

    def _cancel_file(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.node.cancel_file(_field(cmd, "session", str), _field(cmd, "transfer", str))
        return {}

    def _ask_secret(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.node.ask_secret(_field(cmd, "session", str), _field(cmd, "question", str), _field(cmd, "answer", str))
        return {}

    def _answer_secret(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.node.answer_secret(_field(cmd, "session", str), _field(cmd, "answer", str))
        return {}

    def _abort_secret(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.node.abort_secret(_field(cmd, "session", str))
        return {}
    def _pad(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Issue 17: ``action`` ``ask_on``, ``ask_off``, ``accept``, ``decline`` or ``status`` (the default)."""
        sid, action = _field(cmd, "session", str), _field(cmd, "action", str, "status")
        if action not in ("ask_on", "ask_off", "accept", "decline", "status"):
            raise BadCommand("the field 'action' must be ask_on, ask_off, accept, decline or status")
        if action != "status":
            self.node.pad_mode(sid, action)
        st = self.node.pad_status(sid)
        return {"state": None, "send_left": None, "recv_left": None} if st is None else {
            "state": st.state, "send_left": st.send_left, "recv_left": st.recv_left}

    def _quit(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.quit = True
        return {}


def run_bot(node: ChatNode, *, stdin_fd: int, out: TextIO) -> int:
    """The bot's loop: events out as they come, commands in as they arrive, until ``quit``, end of input,
    SIGTERM or Ctrl-C. Returns the exit code (0). Events that come while a command runs wait in the node's
    queue: a script that stops reading holds its peers back (the queue's bounds), never grows memory."""
    from p2pchat.terminal import POLL_SECONDS, LineInput, Stop, next_event

    bot = Bot(node, out)
    bot.hello()
    inp = LineInput(stdin_fd)
    with Stop() as stop:
        while not stop.requested and not bot.quit and not inp.eof:
            ev = next_event(node, 0)
            while ev is not None:
                bot.on_event(ev)
                ev = next_event(node, 0)
            for line in inp.read_lines(POLL_SECONDS):
                bot.on_line(line)
                if bot.quit:
                    break
    return 0                              # the caller closes the node: a goodbye in every chat


__all__ = ["Bot", "event_json", "run_bot"]
