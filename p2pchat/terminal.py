"""The terminal user interface: ``p2pchat chat PEER`` and ``p2pchat listen``.

Both loops run on the main thread and multiplex two sources without extra threads: lines from standard input
(read with ``select`` on its file descriptor, so pipes work as well as a terminal) and the node's event queue.
Typed lines become messages; ``/status``, ``/verify`` and ``/quit`` are commands. Lines typed before the chat is
ready are kept and sent as soon as the four steps are done, so a script can pipe a conversation in.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import time
from types import FrameType
from typing import TextIO

from p2pchat.events import (
    DeliveryReceipt,
    Event,
    IncomingChat,
    MessageReceived,
    NodeError,
    Notice,
    PeerTyping,
    SessionEnded,
    SessionInfo,
    SessionUpdated,
    StepRefused,
    StepResult,
)
from p2pchat.foundation.errors import UserError
from p2pchat.node import ChatNode
from p2pchat.steps import Step

POLL_SECONDS = 0.05
RECEIPT_WAIT_SECONDS = 10.0     # at the end of input, how long to wait for the last delivery receipts
HELP = "Type a message and press Enter. Commands: /status, /verify, /quit."


class LineInput:
    """Non-blocking line reader over a file descriptor (a terminal or a pipe)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = b""
        self.eof = False

    def read_lines(self, timeout: float) -> list[str]:
        """Complete lines that arrived within ``timeout`` seconds (the last partial line at end of input)."""
        if self.eof:
            time.sleep(timeout)   # nothing to read any more: just pace the caller's loop
            return []
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        chunk = os.read(self.fd, 65536)
        if not chunk:
            self.eof = True
            rest, self._buf = self._buf, b""
            return [rest.decode("utf-8", "replace")] if rest else []
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        return [line.rstrip(b"\r").decode("utf-8", "replace") for line in lines]


class Printer:
    """Writes what the user sees, flushing every line (stdout is often a pipe)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def step_line(ev: StepResult) -> str:
    return f"{'✓' if ev.ok else '✗'} {ev.step.label} — {ev.detail}"


def status_lines(node: ChatNode, info: SessionInfo) -> list[str]:
    """What ``/status`` shows: both fingerprints, the ledger block, path, key epoch, messages until rotation."""
    me = node.identity.short_fingerprint
    lines = [f"you:    {node.nickname}  {me}  ({node.address})"]
    peer = info.peer_nickname or "?"
    where = info.peer_address or info.peer_query
    lines.append(f"peer:   {peer}  {info.peer_fingerprint or '(key not swapped yet)'}  at {where}")
    if info.ledger_block is not None:
        lines.append(f"ledger: peer's record in block {info.ledger_block}, {info.confirmations} confirmation(s)")
    lines.append(f"path:   {info.path or 'not connected'}")
    done = ", ".join(str(int(s)) for s in info.steps_done) or "none"
    lines.append(f"steps:  done {done}")
    if info.key_epoch is not None:
        lines.append(f"keys:   epoch {info.key_epoch}, {info.until_rotation} message(s) until the next rotation")
    return lines


def verify_lines(info: SessionInfo) -> list[str]:
    if not info.safety_number:
        return ["The safety number is known once step 2 (Swap public keys) is done."]
    return [f"safety number: {info.safety_number}",
            f"Read it to {info.peer_nickname or 'your peer'} over the phone or in person; if their number differs, "
            "someone is in the middle."]


def send_waiting(p: Printer, node: ChatNode, sid: str, waiting: list[str]) -> int:
    """Send typed lines in order, pausing while the sending key is being rotated, so that a burst (e.g. piped
    input) still gets a fresh key every ``rotate_every`` messages. Returns how many were sent."""
    sent = 0
    while waiting and node.session_info(sid).until_rotation != 0:
        text = waiting.pop(0)
        try:
            node.send_text(sid, text)
            sent += 1
        except UserError as exc:
            p.line(f"! not sent: {exc}")
            if node.session_info(sid).key_epoch is None:
                waiting.clear()      # the chat is gone
    return sent


class _Stop:
    """Set by SIGTERM/SIGINT so the loop can say goodbye and exit cleanly."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def _next_event(node: ChatNode, timeout: float) -> Event | None:
    try:
        return node.events.get(timeout=timeout)
    except queue.Empty:
        return None


def _show_common(p: Printer, ev: Event, prefix: str = "") -> None:
    """Events both commands print the same way."""
    if isinstance(ev, StepResult):
        p.line(prefix + step_line(ev))
    elif isinstance(ev, StepRefused):
        p.line(f"{prefix}✗ {ev.step.label} refused — {ev.reason}")
    elif isinstance(ev, MessageReceived):
        p.line(f"{prefix}[{clock(ev.received_at)}] {ev.sender}: {ev.text}")
    elif isinstance(ev, Notice):
        mark = {"rotation": "·", "refused": "!", "path": "→"}.get(ev.kind, "·")
        p.line(f"{prefix}  {mark} {ev.text}")
    elif isinstance(ev, NodeError):
        p.line(f"{prefix}! {ev.text}")


def run_chat(node: ChatNode, peer: str, *, stdin_fd: int, out: TextIO) -> int:
    """``p2pchat chat PEER``: the four steps, then chat until end of input or ``/quit``. Returns the exit code:
    0 after a goodbye (ours or the peer's), 1 when a step failed or the chat broke."""
    p = Printer(out)
    inp = LineInput(stdin_fd)
    p.line(f"p2pchat — you are {node.nickname} ({node.identity.short_fingerprint}) at {node.host}, "
           f"network {node.network}")
    sid = node.open_session(peer)
    p.line(f"Chatting with {peer}: running the four steps…")
    node.run_all(sid)
    ready = False
    quit_now = False            # /quit or a signal: leave even before the chat is ready
    receipts_deadline: float | None = None
    last_progress: tuple[int, int] | None = None
    ending = False              # end_session was called; waiting for SessionEnded
    waiting: list[str] = []
    sent = delivered = 0
    with _Stop() as stop:
        while True:
            ev = _next_event(node, 0)
            while ev is not None:
                if isinstance(ev, SessionEnded):
                    p.line(f"Chat ended: {ev.reason}")
                    if ready:
                        p.line(f"{sent} message(s) sent, {delivered} delivered.")
                    return 0 if ready and (ending or ev.clean) else 1
                if isinstance(ev, StepResult) and ev.ok and ev.step == Step.AGREE_KEY:
                    ready = True
                    _show_common(p, ev)
                    info = node.session_info(sid)
                    p.line(f"Chat ready with {info.peer_nickname} (path: {info.path}). {HELP}")
                elif isinstance(ev, DeliveryReceipt):
                    delivered += 1
                elif isinstance(ev, IncomingChat):
                    node.accept(ev.session, False)   # this command talks to one peer only
                elif not isinstance(ev, (SessionUpdated, PeerTyping)):
                    _show_common(p, ev)
                ev = _next_event(node, 0)
            for line in inp.read_lines(POLL_SECONDS):
                command = line.strip()
                if command == "/quit":
                    quit_now = True
                elif command == "/status":
                    for text in status_lines(node, node.session_info(sid)):
                        p.line(text)
                elif command == "/verify":
                    for text in verify_lines(node.session_info(sid)):
                        p.line(text)
                elif command in ("/help", "/?"):
                    p.line(HELP)
                elif command.startswith("/") and " " not in command:
                    p.line(f"unknown command {command}. {HELP}")
                elif line and not quit_now:
                    waiting.append(line)
            if ready and waiting:
                sent += send_waiting(p, node, sid, waiting)
            quit_now = quit_now or stop.requested
            if ending:
                continue
            if quit_now and not ready:
                node.end_session(sid)
                ending = True
            elif (quit_now or inp.eof) and ready:
                # Say goodbye once every line is sent and confirmed, or when that stops making progress.
                progress = (len(waiting), node.pending_receipts(sid))
                if progress != last_progress:
                    last_progress = progress
                    receipts_deadline = time.monotonic() + RECEIPT_WAIT_SECONDS
                if progress == (0, 0) or time.monotonic() >= (receipts_deadline or 0):
                    if waiting:
                        p.line(f"! {len(waiting)} line(s) not sent: the peer stopped answering")
                    node.end_session(sid)
                    ending = True


ANSWERS = ("y", "yes", "n", "no")


def answer(p: Printer, node: ChatNode, question: IncomingChat, reply: str) -> None:
    yes = reply.strip().lower().startswith("y")
    node.accept(question.session, yes)
    p.line(("Accepted" if yes else "Rejected") + f" the chat from {question.nickname or question.peer_address}.")


def run_listen(node: ChatNode, *, stdin_fd: int, out: TextIO, accept_all: bool, once: bool = False) -> int:
    """``p2pchat listen``: wait for chats, ask accept/reject (or accept all), show messages, send typed lines to
    the chat that became ready most recently. Runs until ``/quit``, Ctrl-C or SIGTERM (``once``: until the
    first chat ends). Returns the exit code."""
    p = Printer(out)
    inp = LineInput(stdin_fd)
    where = node.address if node.listen else f"relay {node.relay} only"
    p.line(f"p2pchat — you are {node.nickname} ({node.identity.short_fingerprint}), listening on {where}, "
           f"network {node.network}")
    p.line("Waiting for chats" + (" (accepting all)" if accept_all else "") + ". Lines you type go to the latest "
           "chat; /status, /verify, /quit.")
    questions: list[IncomingChat] = []
    ready: list[str] = []           # established sessions, latest last
    names: dict[str, str] = {}
    waiting: list[str] = []
    chats_ended = 0
    multi = False

    def tag(sid: str) -> str:
        return f"[{names.get(sid, sid)}] " if multi else ""

    with _Stop() as stop:
        while not stop.requested:
            ev = _next_event(node, 0 if not inp.eof else POLL_SECONDS)
            while ev is not None:
                if isinstance(ev, IncomingChat):
                    names[ev.session] = ev.nickname or ev.peer_address
                    p.line(f"Incoming chat from {ev.nickname or 'an unnamed peer'} at {ev.peer_address}. "
                           "Accept? [y/n]")
                    questions.append(ev)
                    if waiting and waiting[0].strip().lower() in ANSWERS:
                        # typed ahead (or piped in) before the question appeared
                        answer(p, node, questions.pop(0), waiting.pop(0))
                elif isinstance(ev, SessionEnded):
                    if ev.session in ready:
                        ready.remove(ev.session)
                    questions = [q for q in questions if q.session != ev.session]
                    p.line(f"{tag(ev.session)}Chat with {names.get(ev.session, ev.session)} ended: {ev.reason}")
                    chats_ended += 1
                    if once:
                        return 0
                elif isinstance(ev, StepResult) and ev.ok and ev.step == Step.AGREE_KEY:
                    _show_common(p, ev, tag(ev.session))
                    ready.append(ev.session)
                    multi = multi or len(ready) > 1
                    info = node.session_info(ev.session)
                    names[ev.session] = info.peer_nickname or ev.session
                    p.line(f"{tag(ev.session)}Chat ready with {names[ev.session]} (path: {info.path}).")
                elif isinstance(ev, Notice) and ev.session == "":
                    p.line(f"  → {ev.text}")
                elif not isinstance(ev, (SessionUpdated, PeerTyping, DeliveryReceipt)):
                    _show_common(p, ev, tag(getattr(ev, "session", "") or ""))
                ev = _next_event(node, 0)
            for line in inp.read_lines(0 if inp.eof else POLL_SECONDS):
                command = line.strip()
                if questions and command.lower() in ANSWERS:
                    answer(p, node, questions.pop(0), command)
                elif command == "/quit":
                    return 0
                elif command in ("/status", "/verify"):
                    if not ready:
                        p.line("No chat is ready yet.")
                        continue
                    info = node.session_info(ready[-1])
                    for text in (status_lines(node, info) if command == "/status" else verify_lines(info)):
                        p.line(text)
                elif command in ("/help", "/?"):
                    p.line(HELP)
                elif line:
                    waiting.append(line)
            if ready and waiting:
                send_waiting(p, node, ready[-1], waiting)
    return 0

