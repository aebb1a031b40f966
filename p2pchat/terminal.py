"""The terminal user interface: ``p2pchat chat PEER`` and ``p2pchat listen``.

Everything is written through one :class:`~p2pchat.display.Printer`: no string from the network reaches the
terminal as a control sequence, and a peer's text never starts a line of its own (see :mod:`p2pchat.display`).

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

from p2pchat.display import LINE_MARKS, Printer, name_in_line, one_line
from p2pchat.downloads import human
from p2pchat.events import (
    DeliveryReceipt,
    Event,
    FileFinished,
    FileOffer,
    FileProgress,
    FileWaiting,
    GroupMessage,
    GroupNotice,
    GroupReceipt,
    IncomingChat,
    MessageReceived,
    NodeError,
    Notice,
    OutboxChanged,
    PadModeChanged,
    PeerTyping,
    Presence,
    SessionEnded,
    SessionInfo,
    SessionUpdated,
    StepRefused,
    StepResult,
)
from p2pchat.file_driver import describe
from p2pchat.foundation.errors import UsageError, UserError
from p2pchat.group_terminal import GROUP_HELP, GroupCommands  # [groups, issue 18]
from p2pchat.node import ChatNode
from p2pchat.steps import Step
from p2pchat.terminal_files import FILE_HELP, WaitingFileCommands, waiting_ref
from p2pchat.terminal_names import MARK, PeerNames, after_step_2, describe_name
from p2pchat.terminal_secret import SecretCommands, secret_line

POLL_SECONDS = 0.05
RECEIPT_WAIT_SECONDS = 10.0     # at the end of input, how long to wait for the last delivery receipts
HELP = ("Type a message and press Enter. Commands: /status, /verify (then /verify yes), /ask QUESTION, "
        "/answer TEXT, /send PATH, /accept, /decline, /cancel, /pad (one-time pad), /quit.")
PROGRESS_LINE_EVERY = 2.0       # seconds between two progress lines of one transfer


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


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def step_line(ev: StepResult) -> str:
    return f"{'✓' if ev.ok else '✗'} {ev.step.label} — {ev.detail}"


def status_lines(node: ChatNode, info: SessionInfo, twin: str | None = None) -> list[str]:
    """What ``/status`` shows: both fingerprints, the ledger block, path, key epoch, messages until rotation
    (``twin``: the contact the peer's name reads like though its key is another)."""
    me = node.identity.short_fingerprint
    lines = [f"you:    {node.nickname}  {me}  ({node.address})"]
    peer = describe_name(info.peer_nickname, "?", twin)
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
    who = info.peer_nickname or "your peer"
    return [f"safety number: {info.safety_number}",
            f"Read it to {who} over the phone or in person; if their number differs, someone is in the middle.",
            f"When all 60 digits match, type /verify yes to mark {who} verified: a later change of their key is "
            "then a hard stop."]


def mark_verified(node: ChatNode, sid: str, answer: str) -> list[str]:
    """``/verify yes`` (or ``/verify no``): mark the peer of ``sid`` verified (or not) in the contact store."""
    if answer not in ("yes", "no"):
        return [f"/verify shows the safety number; /verify yes marks the contact verified, /verify no removes the "
                f"mark (not {one_line(answer)})"]
    info = node.session_info(sid)
    who = info.peer_nickname or "your peer"
    try:
        node.verify_contact(sid, answer == "yes")
    except UserError as exc:
        return [f"! {exc}"]
    if answer == "yes":
        return [f"✓ {who} ({info.peer_fingerprint}) is now a verified contact: if the ledger ever names another "
                "key for them, p2pchat stops before anything is signed."]
    return [f"{who} is no longer marked verified."]


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


# --- one-time-pad mode (issue 17) ----------------------------------------------------------------------------

PAD_HELP = ("/pad shows the one-time pad left each way; /pad on asks the peer to switch to the pad, /pad off to "
            "fall back to AES only; /pad yes or /pad no answers the peer's request. Both must agree.")
_PAD_ACTIONS = {"on": "ask_on", "off": "ask_off", "yes": "accept", "no": "decline"}


def pad_lines(node: ChatNode, sid: str, arg: str) -> list[str]:
    """``/pad [on|off|yes|no]`` in chat ``sid``."""
    arg = arg.strip().lower()
    if arg in _PAD_ACTIONS:
        try:
            node.pad_mode(sid, _PAD_ACTIONS[arg])
        except UserError as exc:
            return [f"! {exc}"]
        return []           # the PadModeChanged event says what happened
    if arg:
        return [f"unknown /pad {one_line(arg)}. {PAD_HELP}"]
    st = node.pad_status(sid)
    if st is None:
        return ["The chat is not ready yet (or this node keeps no data directory, so it has no pads)."]
    if st.send_left is None or st.recv_left is None:
        return [f"pad mode: {st.state}; no one-time pad is installed for this contact. {PAD_HELP}"]
    return [f"pad mode: {st.state}; {pad_left(st)}", PAD_HELP]


def pad_left(ev: PadModeChanged) -> str:
    """``pad left: N KiB ↑ / M KiB ↓`` (or that there is no pad)."""
    if ev.send_left is None or ev.recv_left is None:
        return "no pad for this contact"
    return f"pad left: {ev.send_left // 1024:,} KiB ↑ / {ev.recv_left // 1024:,} KiB ↓"


class Stop:
    """Set by SIGTERM/SIGINT so the loop can say goodbye and exit cleanly."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> Stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def next_event(node: ChatNode, timeout: float) -> Event | None:
    try:
        return node.events.get(timeout=timeout)
    except queue.Empty:
        return None


def _show_common(p: Printer, ev: Event, prefix: str = "", twin: str | None = None) -> None:
    """Events both commands print the same way (every string goes through the Printer's escaping); ``twin``: the
    contact whose name the peer's reads like though its key is another (its messages' sender is marked)."""
    if isinstance(ev, StepResult):
        p.line(prefix + step_line(ev))
    elif isinstance(ev, StepRefused):
        p.line(f"{prefix}✗ {ev.step.label} refused — {ev.reason}")
    elif isinstance(ev, MessageReceived):
        sender = describe_name(ev.sender, "?", twin) if twin is not None else name_in_line(ev.sender)
        p.line(f"{prefix}[{clock(ev.received_at)}] {sender}: {ev.text}")
    elif isinstance(ev, Notice):
        mark = {"rotation": "·", "refused": "!", "path": "→", "key-change": "!", "ledgers": "!"}.get(ev.kind, "·")
        p.line(f"{prefix}  {mark} {ev.text}")
    elif isinstance(ev, NodeError):
        p.line(f"{prefix}! {ev.text}")
    elif (secret := secret_line(ev)) is not None:      # the shared-secret check (p2pchat/terminal_secret.py)
        p.line(prefix + secret)
    elif isinstance(ev, PadModeChanged) and ev.text:     # issue 17; count-only updates are not printed
        p.line(f"{prefix}  ◆ {ev.text} ({pad_left(ev)})")


class FileCommands:
    """``/send PATH``, ``/accept [F]``, ``/decline [F]``, ``/cancel [F]`` and the lines about files; transfers are
    numbered F1, F2, … in the order they appear (a peer's file name is shown through the Printer's escaping)."""

    def __init__(self, node: ChatNode, p: Printer, names: PeerNames) -> None:
        self.node, self.p, self.names = node, p, names
        self.numbers: dict[str, int] = {}
        self.by_number: dict[int, tuple[str, str]] = {}     # F number -> (session, transfer)
        self.offers: list[int] = []                         # numbers of offers waiting for an answer
        self.active: set[int] = set()
        self._shown: dict[int, float] = {}

    def number(self, session: str, transfer: str) -> int:
        n = self.numbers.get(transfer)
        if n is None:
            n = self.numbers[transfer] = len(self.numbers) + 1
            self.by_number[n] = (session, transfer)
        return n

    def _sender(self, ev: FileOffer) -> str:
        """The peer offering a file, marked when its name reads like a contact's on another key."""
        try:
            fp = self.node.session_info(ev.session).peer_fingerprint
        except UserError:        # the chat is gone already
            fp = None
        return self.names.peer(ev.sender, fp)

    def on_event(self, ev: Event, prefix: str = "") -> bool:
        """Print a file event; False for any other event."""
        p = self.p
        if isinstance(ev, FileOffer) and ev.resumes_at is not None:     # [file resume] accepted before
            n = self.number(ev.session, ev.transfer)
            p.line(f"{prefix}F{n}: {self._sender(ev)} offers the file {one_line(ev.name)!r} "
                   f"({human(ev.size)}) again; you accepted it before: it resumes at byte {ev.resumes_at:,}")
        elif isinstance(ev, FileOffer):
            n = self.number(ev.session, ev.transfer)
            self.offers.append(n)
            where = f"[{one_line(ev.group_name)}] " if ev.group else ""        # [groups, issue 18]
            p.line(f"{prefix}F{n}: {where}{self._sender(ev)} offers the file {one_line(ev.name)!r} "
                   f"({human(ev.size)}); it would be saved as {one_line(ev.saved_as)!r}. /accept F{n} or "
                   f"/decline F{n}")
        elif isinstance(ev, FileProgress):
            n = self.number(ev.session, ev.transfer)
            self.active.add(n)
            if n in self.offers:
                self.offers.remove(n)
            now = time.monotonic()
            if ev.done < ev.size and now - self._shown.get(n, 0.0) < PROGRESS_LINE_EVERY:
                return True
            self._shown[n] = now
            verb = "sent" if ev.outgoing else "received"
            p.line(f"{prefix}  F{n} {one_line(ev.name)}: {verb} {describe(ev)}")
        elif isinstance(ev, FileFinished):
            n = self.number(ev.session, ev.transfer)
            self.active.discard(n)
            if n in self.offers:
                self.offers.remove(n)
            mark = "✓" if ev.ok else "✗"
            extra = f" (resumed at byte {ev.resumed_from:,}; {ev.session_bytes:,} bytes moved now)" \
                if ev.resumed_from else f" ({ev.session_bytes:,} bytes moved)" if ev.ok else ""
            p.line(f"{prefix}{mark} F{n} {one_line(ev.name)}: {ev.text}{extra}")
        else:
            return False
        return True

    def on_line(self, command: str, session: str | None) -> bool:
        """Handle ``/send``, ``/accept``, ``/decline``, ``/cancel``; False for any other line."""
        word, _, arg = command.strip().partition(" ")
        arg = arg.strip()
        if word not in ("/send", "/accept", "/decline", "/cancel"):
            return False
        try:
            if word == "/send":
                if session is None:
                    self.p.line("Choose a chat first (/to N), then /send PATH.")
                elif not arg:
                    self.p.line("Say which file: /send PATH")
                else:
                    tid = self.node.send_file(session, os.path.expanduser(arg))
                    n = self.number(session, tid)
                    self.active.add(n)
                    self.p.line(f"F{n}: offered {one_line(os.path.basename(arg))}; waiting for the peer to accept")
                return True
            pool = self.offers if word in ("/accept", "/decline") else sorted(self.active)
            n = int(arg.lstrip("Ff")) if arg.lstrip("Ff").isdigit() else (pool[-1] if pool and not arg else 0)
            if n not in pool:
                what = "file offer" if word != "/cancel" else "file transfer under way"
                self.p.line(f"There is no {what} {one_line(arg) or 'waiting'}.")
                return True
            sid, tid = self.by_number[n]
            if word == "/cancel":
                self.node.cancel_file(sid, tid)
            else:
                self.offers.remove(n)
                self.node.answer_file(sid, tid, word == "/accept")
        except UserError as exc:
            self.p.line(f"! {exc}")
        return True


def _lookalike_after_step_2(p: Printer, names: PeerNames, info: SessionInfo, prefix: str = "",
                            warned: bool = False) -> str | None:
    """Step 2 showed the peer's key: print :func:`~p2pchat.terminal_names.after_step_2`'s line, if any; returns
    the contact the peer's name reads like though its key is another."""
    twin, line = after_step_2(names, info.peer_nickname, info.peer_fingerprint, warned)
    if line is not None:
        p.line(prefix + line)
    return twin


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
    failed_reason: str | None = None
    sent = delivered = 0
    names = PeerNames(node.contacts)
    twin: str | None = None     # the contact the peer's name reads like though its key is another (after step 2)
    files = FileCommands(node, p, names)
    secret = SecretCommands(node, p)
    with Stop() as stop:
        while True:
            ev = next_event(node, 0)
            while ev is not None:
                if isinstance(ev, SessionEnded):
                    # a long reason (a key-change warning) was just shown with the failed step: not twice
                    p.line(f"Chat ended: {ev.reason}" if "\n" not in ev.reason or ev.reason != failed_reason
                           else "Chat ended (the reason is above).")
                    if ready:
                        p.line(f"{sent} message(s) sent, {delivered} delivered.")
                    return 0 if ready and (ending or ev.clean) else 1
                if isinstance(ev, StepResult) and not ev.ok:
                    failed_reason = ev.detail
                if isinstance(ev, StepResult) and ev.ok and ev.step == Step.SWAP_KEYS:
                    _show_common(p, ev)
                    twin = _lookalike_after_step_2(p, names, node.session_info(sid))
                elif isinstance(ev, StepResult) and ev.ok and ev.step == Step.AGREE_KEY:
                    ready = True
                    _show_common(p, ev)
                    info = node.session_info(sid)
                    p.line(f"Chat ready with {names.peer(info.peer_nickname, info.peer_fingerprint)} "
                           f"(path: {info.path}). {HELP}")
                elif isinstance(ev, DeliveryReceipt):
                    delivered += 1
                elif isinstance(ev, IncomingChat):
                    node.accept(ev.session, False)   # this command talks to one peer only
                elif files.on_event(ev):
                    pass
                elif not isinstance(ev, (SessionUpdated, PeerTyping)):
                    _show_common(p, ev, twin=twin)
                ev = next_event(node, 0)
            for line in inp.read_lines(POLL_SECONDS):
                command = line.strip()
                if command == "/quit":
                    quit_now = True
                elif secret.on_line(sid, line):
                    pass
                elif command == "/status":
                    for text in status_lines(node, node.session_info(sid), twin):
                        p.line(text)
                elif command == "/verify":
                    for text in verify_lines(node.session_info(sid)):
                        p.line(text)
                elif command.startswith("/verify "):
                    for text in mark_verified(node, sid, command.split(None, 1)[1].strip().lower()):
                        p.line(text)
                elif command == "/pad" or command.startswith("/pad "):     # issue 17
                    for text in pad_lines(node, sid, command[4:]):
                        p.line(text)
                elif command in ("/help", "/?"):
                    p.line(HELP)
                elif command.startswith("/") and files.on_line(command, sid if ready else None):
                    pass
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
PRESENCE_WORDS = {Presence.ONLINE: "online", Presence.CONNECTING: "calling it now",
                  Presence.OFFLINE: "cannot be reached now", Presence.UNKNOWN: "calling it now"}
LISTEN_HELP = ("Commands: /list (the chats), /to N (write to chat N), /accept N, /reject N, /status, /verify, "
               "/ask QUESTION, /answer TEXT (a question only they can answer), "
               "/msg CONTACT TEXT (to a contact, now or when it can be reached), /waiting, /cancel ID (a waiting "
               "message), /send PATH, /accept FN, /decline FN, /cancel FN (files), /pad, /quit. Lines you type go "
               "only to the chat you chose with /to.")


class _Chat:
    """One chat as ``listen`` shows it: its number (never reused), the peer's name, where it stands."""

    def __init__(self, number: int, session: str) -> None:
        self.number = number
        self.session = session
        self.name = ""
        self.address = ""
        self.state = "connecting"      # asking | connecting | ready | ended
        self.waiting: list[str] = []   # lines typed for this chat before it was ready
        self.warned = False            # the accept prompt said the claimed name reads like a contact's
        self.twin: str | None = None   # the contact the peer's name reads like though its key is another

    def who(self) -> str:
        """The peer by its name (its address before it gave one), marked when it is a look-alike of a contact."""
        return describe_name(self.name, self.address or "an unnamed peer", self.twin)

    def label(self) -> str:
        return f"chat {self.number} ({self.who()})"


class ListenView:
    """``p2pchat listen``'s state: numbered chats, the questions waiting for an answer, and the one chat typed
    lines go to. That target changes only by the user's ``/to N``: a chat that starts, becomes ready or ends
    never moves it (a look-alike peer connecting mid-conversation gets nothing the user did not address to it)."""

    def __init__(self, node: ChatNode, p: Printer) -> None:
        self.node = node
        self.p = p
        self.chats: dict[str, _Chat] = {}
        self.by_number: dict[int, _Chat] = {}
        self.questions: list[IncomingChat] = []
        self.early_answers: list[str] = []   # y/n typed (or piped) before any question appeared
        self.target: _Chat | None = None
        self.names = PeerNames(node.contacts)     # look-alikes of contacts are marked (p2pchat/terminal_names.py)
        self.files = FileCommands(node, p, self.names)
        self.secret = SecretCommands(node, p)
        self.group_ui = GroupCommands(node, p, self.names)     # [groups, issue 18]
        self.group: str | None = None    # lines typed with no chat chosen go to this group (`group chat GROUP`)
        self.waiting_files = WaitingFileCommands(node, p, self.contact_name)   # [file resume, issue 16]

    def chat(self, sid: str) -> _Chat:
        c = self.chats.get(sid)
        if c is None:
            c = _Chat(len(self.by_number) + 1, sid)
            self.chats[sid] = c
            self.by_number[c.number] = c
        return c

    def tag(self, sid: str) -> str:
        return f"[{self.chat(sid).number}] "

    # --- events --------------------------------------------------------------------------------------------

    def on_event(self, ev: Event) -> None:
        p = self.p
        if self._quiet(ev):
            return
        if isinstance(ev, OutboxChanged):
            self.on_outbox(ev)
        elif isinstance(ev, FileWaiting):
            self.waiting_files.on_event(ev)
        elif isinstance(ev, IncomingChat):
            c = self.chat(ev.session)
            c.name, c.address, c.state = ev.nickname, ev.peer_address, "asking"
            twin = self.names.twin(ev.nickname, None)     # the key is not known before step 2: any contact
            c.warned = twin is not None
            warning = f"{MARK} The name reads like your contact {twin}: step 2 shows whether it is their key. " \
                if twin is not None else ""
            # an unchecked claim amid the sentence: quoted if it holds a space too ("bob at 10.0.0.1")
            claimed = describe_name(ev.nickname, marks=LINE_MARKS | {" "})
            p.line(f"Chat {c.number}: incoming chat from {claimed} at {one_line(ev.peer_address)}. "
                   f"{warning}Accept? [y/n] (or /accept {c.number}, /reject {c.number})")
            self.questions.append(ev)
            if self.early_answers and len(self.questions) == 1:
                self.answer(self.questions[0], self.early_answers.pop(0))
        elif isinstance(ev, SessionEnded):
            c = self.chat(ev.session)
            c.state = "ended"
            self.questions = [q for q in self.questions if q.session != ev.session]
            p.line(f"{self.tag(ev.session)}Chat {c.number} with {c.who()} ended: "
                   f"{ev.reason}")
            if c.waiting:
                p.line(f"! {len(c.waiting)} line(s) typed for chat {c.number} were not sent")
                c.waiting.clear()
            if self.target is c:
                p.line(f"Lines you type now go nowhere: choose a chat with /to N ({self.ready_list()}).")
                self.target = None
        elif isinstance(ev, StepResult) and ev.ok and ev.step == Step.SWAP_KEYS:
            c = self.chat(ev.session)
            _show_common(p, ev, self.tag(ev.session))
            info = self.node.session_info(ev.session)
            c.name = info.peer_nickname or c.name
            c.twin = _lookalike_after_step_2(p, self.names, info, self.tag(ev.session), c.warned)
        elif isinstance(ev, StepResult) and ev.ok and ev.step == Step.AGREE_KEY:
            c = self.chat(ev.session)
            _show_common(p, ev, self.tag(ev.session))
            c.state = "ready"
            info = self.node.session_info(ev.session)
            c.name = info.peer_nickname or c.name
            c.address = info.peer_address or c.address
            if info.peer_fingerprint:          # a quiet chat's step 2 was not shown
                c.twin = self.names.twin(c.name, info.peer_fingerprint)
            who = c.who()
            p.line(f"{self.tag(ev.session)}Chat {c.number} with {who} is ready (path: {one_line(info.path)}, "
                   f"key {one_line(info.peer_fingerprint)}).")
            if self.target is c:
                self.send_waiting(c)
            elif self.target is None:
                p.line(f"Type /to {c.number} to write to {who}.")
            else:
                p.line(f"Lines you type still go to {self.target.label()}; /to {c.number} writes to {who}.")
        elif isinstance(ev, Notice) and ev.session == "":
            p.line(f"  → {ev.text}")
        elif isinstance(ev, (FileOffer, FileProgress, FileFinished)):
            self.files.on_event(ev, self.tag(ev.session))
        elif isinstance(ev, (GroupMessage, GroupNotice, GroupReceipt)):     # [groups, issue 18]
            self.group_ui.on_event(ev)
        elif not isinstance(ev, (SessionUpdated, PeerTyping, DeliveryReceipt)):
            sid = getattr(ev, "session", None)
            _show_common(p, ev, self.tag(sid) if sid else "", self.chat(sid).twin if sid else None)

    def _quiet(self, ev: Event) -> bool:
        """A chat the node opened by itself (waiting texts, a reconnect) shows as one line once it is ready; its
        steps and failed attempts are summed up by the outbox's lines instead."""
        sid = ev.info.session if isinstance(ev, SessionUpdated) else getattr(ev, "session", None)
        if not sid or sid in self.chats:
            return False
        return self.opened_by_node(sid) and not (isinstance(ev, StepResult) and ev.ok and ev.step == Step.AGREE_KEY)

    def opened_by_node(self, sid: str) -> bool:
        """The node opened this chat by itself (to deliver waiting texts, or to reconnect), not a person."""
        try:
            return self.node.session_info(sid).automatic
        except UserError:
            return False

    def ready_list(self) -> str:
        ready = [str(c.number) for c in self.by_number.values() if c.state == "ready"]
        return "ready: " + ", ".join(ready) if ready else "none is ready"

    # --- typed lines -------------------------------------------------------------------------------------------

    def answer(self, question: IncomingChat, reply: str) -> None:
        yes = reply.strip().lower().startswith("y")
        self.questions = [q for q in self.questions if q is not question]
        c = self.chat(question.session)
        if c.state == "asking":
            c.state = "connecting" if yes else "ended"
        self.node.accept(question.session, yes)
        self.p.line(("Accepted" if yes else "Rejected") + f" {c.label()}.")

    def _numbered(self, arg: str) -> _Chat | None:
        c = self.by_number.get(int(arg)) if arg.isdigit() else None
        if c is None:
            self.p.line(f"There is no chat {one_line(arg)}; /list shows the chats.")
        return c

    def on_line(self, line: str) -> bool:
        """Handle one typed line; False for ``/quit``."""
        command = line.strip()
        word, _, arg = command.partition(" ")
        arg = arg.strip()
        if self.secret.on_line(self.target.session if self.target is not None else None, line):
            pass        # the shared-secret check: /ask, /answer, /ask-stop, or the answer /ask prompted for
        elif command.lower() in ANSWERS and (self.questions or self.target is None):
            if len(self.questions) == 1:
                self.answer(self.questions[0], command)
            elif self.questions:
                numbers = ", ".join(str(self.chat(q.session).number) for q in self.questions)
                self.p.line(f"{len(self.questions)} chats are asking ({numbers}): answer one with /accept N or "
                            "/reject N.")
            else:
                self.early_answers.append(command)     # typed ahead: answers the next single question
        elif command == "/quit":
            return False
        elif word in ("/accept", "/decline") and (arg[:1] in ("F", "f") or not arg) and self.files.offers:
            self.files.on_line(command, None)
        elif word == "/file" or (word == "/cancel" and waiting_ref(arg) is not None):     # [file resume]
            try:
                ref = waiting_ref(arg)
                if ref is None:
                    self.waiting_files.send(arg)
                else:
                    self.waiting_files.cancel(ref)
            except UserError as exc:
                self.p.line(f"! {exc}")
        elif word in ("/send", "/decline") or (word == "/cancel" and not arg.isdigit()):
            self.files.on_line(command, self.target.session if self.target and self.target.state == "ready"
                               else None)
        elif word in ("/accept", "/reject"):
            c = self._numbered(arg)
            if c is not None:
                question = next((q for q in self.questions if q.session == c.session), None)
                if question is None:
                    self.p.line(f"Chat {c.number} is not asking for an answer.")
                else:
                    self.answer(question, "y" if word == "/accept" else "n")
        elif word == "/to":
            c = self._numbered(arg)
            if c is not None:
                if c.state == "ended":
                    self.p.line(f"Chat {c.number} has ended; /list shows the others.")
                else:
                    self.target = c
                    self.p.line(f"Lines you type now go to {c.label()}."
                                + ("" if c.state == "ready" else " They are kept until it is ready."))
                    if c.state == "ready":
                        self.send_waiting(c)
        elif word == "/list":
            self.show_list()
        elif word in ("/msg", "/waiting", "/cancel"):
            try:
                if word == "/msg":
                    self.message_contact(arg)
                elif word == "/waiting":
                    self.show_waiting()
                else:
                    self.cancel_waiting(arg)
            except UserError as exc:
                self.p.line(f"! {exc}")
        elif word == "/verify" and arg.lower() in ("yes", "no"):
            if self.target is None:
                self.p.line("Choose a chat first (/to N), compare its safety number (/verify), then /verify yes.")
                return True
            for text in mark_verified(self.node, self.target.session, arg.lower()):
                self.p.line(text)
        elif word in ("/status", "/verify"):
            c = self._numbered(arg) if arg else self.target
            if c is None:
                if not arg:
                    self.p.line("Choose a chat first: /status N, or /to N then /status.")
                return True
            info = self.node.session_info(c.session)
            for text in (status_lines(self.node, info, c.twin) if word == "/status" else verify_lines(info)):
                self.p.line(text)
        elif word == "/pad":     # issue 17
            if self.target is None:
                self.p.line("Choose a chat first (/to N), then /pad on.")
                return True
            for text in pad_lines(self.node, self.target.session, arg):
                self.p.line(text)
        elif word in ("/group", "/gsay", "/gsend"):               # [groups, issue 18]
            try:
                self.group_ui.command(word, arg)
            except UserError as exc:
                self.p.line(f"! {exc}")
        elif command in ("/help", "/?"):
            self.p.line(LISTEN_HELP)
            if self.node.resume is not None:
                self.p.line(FILE_HELP)
            if self.node.groups is not None:
                self.p.line(GROUP_HELP)
        elif command.startswith("/") and " " not in command:
            self.p.line(f"unknown command {one_line(command)}. {LISTEN_HELP}")
        elif line and self.target is None and self.group is not None:     # [groups] `p2pchat group chat GROUP`
            try:
                self.group_ui.command("/gsay", f"{self.group} {line}")
            except UserError as exc:
                self.p.line(f"! {exc}")
        elif line:
            if self.target is None:
                self.p.line("! not sent: no chat is chosen. Type /to N to choose one (/list shows the chats).")
            else:
                self.target.waiting.append(line)
                if self.target.state == "ready":
                    self.send_waiting(self.target)
        return True

    # --- texts for contacts (the node's outbox, issue 16) --------------------------------------------------

    def contact_name(self, fp: str) -> str:
        return self.names.contact_name(fp)

    def message_contact(self, arg: str) -> None:
        who, _, text = arg.partition(" ")
        if not who or not text.strip():
            self.p.line("Say whom and what: /msg CONTACT TEXT (CONTACT as `p2pchat contacts list` shows it).")
            return
        store = self.node.contacts
        if store is None:
            self.p.line("! not sent: this node has no contact store (no data directory).")
            return
        contact = store.resolve(who)        # UsageError: shown once by the caller
        row = self.node.message_contact(contact.fp, text.strip())
        self.p.line(f"Message {row} to {self.contact_name(contact.fp)} queued; it goes out as soon as the chat "
                    "is ready.")

    def show_waiting(self) -> None:
        waiting = self.node.outbox.waiting() if self.node.outbox is not None else []
        files = self.waiting_files.show()
        if not waiting and not files:
            self.p.line("No messages or files are waiting.")
            return
        for m in waiting:
            self.p.line(f"  {m.id}: to {self.contact_name(m.fp)} since {clock(m.ts)}: {one_line(m.text)[:60]}")
        self.p.line("/cancel ID (or wN, a file) takes one back.")

    def cancel_waiting(self, arg: str) -> None:
        if not arg.isdigit():
            self.p.line("Say which message: /cancel ID (/waiting lists them).")
            return
        self.node.cancel_waiting(int(arg))
        self.p.line(f"Message {arg} cancelled; it will not be sent.")

    def on_outbox(self, ev: OutboxChanged) -> None:
        name = self.contact_name(ev.fp)
        if ev.status == "waiting" and ev.presence is not Presence.ONLINE:
            self.p.line(f"  · message {ev.row} waits for {name} ({PRESENCE_WORDS[ev.presence]})")
        elif ev.status == "sent":
            self.p.line(f"  → message {ev.row} sent to {name}")
        elif ev.status is None and ev.presence is Presence.OFFLINE:
            self.p.line(f"  · {name} cannot be reached now; waiting messages go out when it can "
                        "(tried again with growing pauses, at once when it calls)")

    def send_waiting(self, c: _Chat) -> None:
        if c.state == "ready" and c.waiting:
            send_waiting(self.p, self.node, c.session, c.waiting)

    def show_list(self) -> None:
        if not self.by_number:
            self.p.line("No chats yet.")
            return
        self.p.line("Chats:")
        for c in self.by_number.values():
            info = self.node.session_info(c.session) if c.state != "asking" else None
            key = f", key {one_line(info.peer_fingerprint)}" if info and info.peer_fingerprint else ""
            mark = "  ← lines you type go here" if c is self.target else ""
            where = one_line(c.address or (info.peer_address if info else None), "?")
            self.p.line(f"  {c.number}  {describe_name(c.name, twin=c.twin)} at {where}{key} — {c.state}{mark}")


def run_listen(node: ChatNode, *, stdin_fd: int, out: TextIO, accept_all: bool, once: bool = False,
               group: str | None = None) -> int:
    """``p2pchat listen``: wait for chats, ask accept/reject (or accept all), show messages, send typed lines to
    the chat the user chose with ``/to N`` (``group``: else to that group, as ``/gsay GROUP`` would). Runs until
    ``/quit``, Ctrl-C or SIGTERM (``once``: until the first chat ends, not counting the chats the node opens by
    itself to deliver waiting texts). Returns the exit code."""
    p = Printer(out)
    inp = LineInput(stdin_fd)
    where = node.address if node.listen else f"relay {node.relay} only"
    p.line(f"p2pchat — you are {node.nickname} ({node.identity.short_fingerprint}), listening on {where}, "
           f"network {node.network}")
    p.line("Waiting for chats" + (" (accepting all)" if accept_all else "") + ". " + LISTEN_HELP)
    view = ListenView(node, p)
    if group is not None:
        if node.groups is None:
            raise UsageError("this node keeps no groups (they need a data directory)")
        gid = node.groups.find(group)          # a UsageError names what is wrong
        view.group = gid.hex()
        view.group_ui.command("/group", f"show {gid.hex()}")
        p.line("Lines you type go to this group (/to N chooses a pairwise chat instead, /quit ends).")
    with Stop() as stop:
        while not stop.requested:
            ev = next_event(node, 0 if not inp.eof else POLL_SECONDS)
            while ev is not None:
                view.on_event(ev)
                if once and isinstance(ev, SessionEnded) and not view.opened_by_node(ev.session):
                    return 0        # the first chat a person had; not the node's own call to deliver waiting texts
                ev = next_event(node, 0)
            for line in inp.read_lines(0 if inp.eof else POLL_SECONDS):
                if not view.on_line(line):
                    return 0
            if view.target is not None:
                view.send_waiting(view.target)
    return 0


def run_send(node: ChatNode, peer: str, path: str, *, out: TextIO) -> int:
    """``p2pchat send PEER PATH``: the four steps, offer the file, show progress until the receiver reports it
    verified (or declines, cancels, or the chat breaks), then say goodbye. 0 once delivered, 1 otherwise."""
    p = Printer(out)
    names = PeerNames(node.contacts)
    files = FileCommands(node, p, names)
    sid = node.open_session(peer)
    p.line(f"Sending {one_line(os.path.basename(path))} to {one_line(peer)}: running the four steps…")
    node.run_all(sid)
    transfer: str | None = None
    result: FileFinished | None = None
    with Stop() as stop:
        while not stop.requested:
            ev = next_event(node, POLL_SECONDS)
            if ev is None:
                continue
            if isinstance(ev, SessionEnded):
                p.line(f"Chat ended: {ev.reason}")
                return 0 if result is not None and result.ok else 1
            if isinstance(ev, StepResult) and ev.ok and ev.step == Step.SWAP_KEYS:
                _show_common(p, ev)
                _lookalike_after_step_2(p, names, node.session_info(sid))
            elif isinstance(ev, StepResult) and ev.ok and ev.step == Step.AGREE_KEY:
                _show_common(p, ev)
                try:
                    transfer = node.send_file(sid, path)
                except UserError as exc:
                    p.line(f"! {exc}")
                    node.end_session(sid)
                    continue
                p.line("Offered; waiting for the receiver to accept…")
                files.number(sid, transfer)
            elif isinstance(ev, IncomingChat):
                node.accept(ev.session, False)
            elif files.on_event(ev):
                if isinstance(ev, FileFinished) and ev.transfer == transfer:
                    result = ev
                    node.end_session(sid)
            elif not isinstance(ev, (SessionUpdated, PeerTyping, DeliveryReceipt)):
                _show_common(p, ev)
        if transfer is not None and result is None:
            node.cancel_file(sid, transfer)
        node.end_session(sid)
    return 130
