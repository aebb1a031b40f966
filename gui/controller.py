"""The presenter behind the window: every chat tab's state, which step buttons are live, and what each node
event shows. No Tk here, so the tests drive it directly.

The window calls the ``user intent`` methods (:meth:`ChatController.click_step`, :meth:`send`, …) and feeds node
events to :meth:`handle`; after each batch it takes a :class:`Changes` with :meth:`take_changes` and redraws
only what changed. Calls into the node go through a :class:`~gui.worker.CommandWorker` so that no node call
runs on the Tk thread (only ``open_session``, which does no IO, is called directly).

Step buttons: the step whose turn has come is styled as the main action, done and running steps are disabled,
and later steps stay pressable. Pressing one of those is passed to the node, which answers with
:class:`~p2pchat.events.StepRefused` naming the step that must come first; the refusal shows beside the button.
Without a session yet (nothing typed or connected), the controller itself refuses steps 2–4.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol, TypeVar

from gui.key_words import step_2_words, window_warning
from gui.models import (
    VERIFIED,
    AcceptPrompt,
    BarView,
    ChatLine,
    LineKind,
    ListRow,
    StepState,
    StepStatus,
    StepView,
    TabState,
    keep_line,
)
from gui.secret_check import SecretCheck
from gui.text import (
    clean,
    clean_name,
    clock_time,
    count,
    fail_text,
    ok_text,
    one_line,
    preview_end,
    seen_when,
    stamp,
)
from gui.waiting import WaitingTexts
from gui.wording import Wording, countdown, plain
from p2pchat.chat_protocol import MAX_TEXT_BYTES
from p2pchat.contacts import Contact
from p2pchat.display import name_in_line
from p2pchat.events import (
    DeliveryReceipt,
    Event,
    IncomingChat,
    KeyChangeStopped,
    MessageReceived,
    NodeError,
    Notice,
    OutboxChanged,
    PeerTyping,
    Presence,
    SecretQuestion,
    SecretResult,
    SessionEnded,
    SessionInfo,
    SessionUpdated,
    StepRefused,
    StepResult,
)
from p2pchat.foundation.addresses import parse_address
from p2pchat.foundation.errors import UserError
from p2pchat.history import ConversationSummary, HistoryMessage
from p2pchat.lookalike import NameIndex
from p2pchat.steps import Step

if TYPE_CHECKING:
    from gui.transfers import FileTransfers

log = logging.getLogger(__name__)
_T = TypeVar("_T")

LEDGER_TAB = "Ledger"
MAX_QUERY_CHARS = 200
TYPING_IDLE = 5.0           # seconds without a keystroke before we tell the peer we stopped typing
PEER_TYPING_SHOWN = 8.0     # a typing indicator without news expires after this long
EARLY_SESSIONS_KEPT = 64    # sessions the window has not shown yet (their IncomingChat has not arrived)
EARLY_EVENTS_KEPT = 8
FAILED_TAB_LINGER = 8.0     # seconds a failed dial's tab stays (its failure shown) before it closes itself
COUNTDOWN_FROM = 90.0       # a timeout closer than this shows a countdown in the step bar
CONTACT_KEY = "contact:"    # a contact's row in the conversation list: CONTACT_KEY + its fingerprint (hex)
HISTORY_SHOWN = 200         # stored messages shown when a contact's chat opens
READ_AFTER = 1.0            # seconds after a message arrived before it is marked read in the store (the node
                            # writes it on a thread of its own: marking sooner could miss it)
CONTACTS_EVERY = 10.0       # seconds between re-reads of the contact store (another process may change it)
PRESENCE_WORDS = {Presence.ONLINE: "online", Presence.CONNECTING: "connecting…", Presence.OFFLINE: "offline"}
AGAIN = "Connected again — the four steps ran by themselves."
NOTICE_MARKS = {"rotation": "↻", "refused": "⚠", "path": "⇄", "info": "ℹ", "ready": "✓", "ended": "■",
                "error": "⚠", "ledgers": "⚠", "key-change": "⚠", "key-stop": "⚠"}


class NodeApi(Protocol):
    """The part of :class:`p2pchat.node.ChatNode` the window uses."""

    def open_session(self, peer_query: str) -> str: ...
    def run_step(self, session: str, step: Step) -> None: ...
    def run_all(self, session: str) -> None: ...
    def accept(self, session: str, accept: bool) -> None: ...
    def send_text(self, session: str, text: str) -> int: ...
    def set_typing(self, session: str, typing: bool) -> None: ...
    def end_session(self, session: str) -> None: ...
    def accept_new_key(self, fingerprint: str, *, override_verified: bool = False) -> None: ...
    def verify_contact(self, session: str, verified: bool = True) -> str: ...
    def ask_secret(self, session: str, question: str, answer: str) -> None: ...
    def answer_secret(self, session: str, answer: str) -> None: ...
    def abort_secret(self, session: str) -> None: ...
    def message_contact(self, fp: str, text: str) -> int: ...
    def cancel_waiting(self, row: int) -> None: ...
    def cancel_waiting_file(self, ref: int) -> None: ...


class ContactsApi(Protocol):
    """The part of :class:`p2pchat.contacts.ContactStore` the conversation list reads."""

    def all(self) -> list[Contact]: ...


class HistoryApi(Protocol):
    """The part of :class:`p2pchat.history.HistoryStore` the window reads (the node writes it)."""

    def messages(self, fp: str, *, limit: int = 200, before_id: int | None = None) -> list[HistoryMessage]: ...
    def conversations(self) -> list[ConversationSummary]: ...
    def mark_read(self, fp: str) -> None: ...
    def search(self, query: str, fp: str | None = None, limit: int = 100) -> list[HistoryMessage]: ...
    def delete(self, fp: str) -> int: ...
    def export_text(self, fp: str, peer_name: str | None = None) -> str: ...


@dataclass(frozen=True)
class Found:
    """One search hit: the contact's row key, who and when (cleaned) and the matching text."""

    key: str
    label: str
    text: str


class Commands(Protocol):
    def submit(self, call: Callable[[], object], done: Callable[[object], None] | None = None,
               failed: Callable[[UserError], None] | None = None) -> None: ...


@dataclass
class Changes:
    """What the window must redraw after a batch of events and user actions."""

    tabs_added: list[str] = field(default_factory=list)
    tabs_removed: list[str] = field(default_factory=list)
    titles: set[str] = field(default_factory=set)
    lines_added: dict[str, list[ChatLine]] = field(default_factory=dict)
    lines_changed: dict[str, list[ChatLine]] = field(default_factory=dict)
    lines_dropped: dict[str, int] = field(default_factory=dict)
    peer: set[str] = field(default_factory=set)
    typing: set[str] = field(default_factory=set)
    chat_input: set[str] = field(default_factory=set)
    bar: bool = False
    prompts: list[AcceptPrompt] = field(default_factory=list)
    prompts_closed: list[str] = field(default_factory=list)
    key_changes: list[str] = field(default_factory=list)     # sessions whose step 2 stopped on a changed key
    select: str | None = None
    status: str | None = None
    contacts: bool = False       # the contact rows of the conversation list

    def __bool__(self) -> bool:
        return any((self.tabs_added, self.tabs_removed, self.titles, self.lines_added, self.lines_changed,
                    self.lines_dropped, self.peer, self.typing, self.chat_input, self.bar, self.prompts,
                    self.prompts_closed, self.key_changes, self.select is not None, self.status is not None,
                    self.contacts))


def check_peer_query(text: str) -> str:
    """The peer field's text, trimmed, or a :class:`UserError` saying what is wrong with it."""
    query = text.strip()
    if not query:
        raise UserError("type the peer's IP address, nickname or fingerprint first")
    if len(query) > MAX_QUERY_CHARS:
        raise UserError(f"that is {len(query)} characters; a peer's address, nickname or fingerprint is "
                        f"at most {MAX_QUERY_CHARS}")
    if clean(query) != query:
        raise UserError("the peer field contains control characters")
    if all(c.isdigit() or c in ".:[]" for c in query) and any(c in ".:" for c in query):
        parse_address(query, 1)   # raises AddressError with a message for a person
    return query


def contact_name(contact: Contact) -> str:
    """What the user calls a contact: the local name they gave, else its latest nickname, else its fingerprint."""
    return clean_name(contact.local_name or contact.nickname, contact.fp[:16])


def _newest(history: HistoryApi, fp: str) -> list[HistoryMessage]:
    return history.messages(fp, limit=HISTORY_SHOWN)


class ChatController:
    """State of every chat tab and of the step bar; see the module docstring."""

    def __init__(self, node: NodeApi, commands: Commands, *, nickname: str,
                 clock: Callable[[], float] = time.time, max_message_bytes: int = MAX_TEXT_BYTES,
                 accept_timeout: float = 120.0, handshake_timeout: float = 120.0,
                 contacts: ContactsApi | None = None, history: HistoryApi | None = None) -> None:
        self.node = node
        self.contacts = contacts
        self.history = history
        self._stored: dict[str, ConversationSummary] = {}     # fingerprint -> its stored conversation
        self._contacts: dict[str, Contact] = {}     # fingerprint (hex) -> contact, current keys only
        self._names: NameIndex[Contact] = NameIndex(())     # the contacts by look-alike key (p2pchat.lookalike)
        self._contacts_read = -CONTACTS_EVERY
        self.commands = commands
        self.nickname = clean_name(nickname)
        self.clock = clock
        self.max_message_bytes = max_message_bytes
        self.accept_timeout = accept_timeout          # the node's: a caller waits this long for an answer
        self.handshake_timeout = handshake_timeout    # the node's: the four steps must be done this long after 1
        self.focused = True                  # the window has the keyboard focus (else every message is unread)
        self._countdown_shown = ""
        self.tabs: dict[str, TabState] = {}
        self.selected: str | None = None     # the chat tab on screen (None: the ledger tab or no tab)
        self.target: str | None = None       # the session the step bar drives (None: a new chat)
        self.peer_text = ""
        self.draft_results: dict[Step, str] = {}
        self.status = ""
        self._changes = Changes()
        self._next_line = 1
        self._lines_by_msg: dict[tuple[str, int], ChatLine] = {}
        self._early_receipts: set[tuple[str, int]] = set()
        self._prompts: list[AcceptPrompt] = []
        self._early: dict[str, list[SessionUpdated | Notice]] = {}
        self.files: FileTransfers | None = None     # file transfers (gui/transfers.py), set by the window
        self.waiting = WaitingTexts(self._line_changed)      # texts that wait for a contact (gui/waiting.py)
        self.secrets = SecretCheck(self.tabs, node, lambda call, session: self.commands.submit(    # gui/ask_secret.py
            call, failed=functools.partial(self._session_error, session)), self._notice)

    # ---- what the window reads ----------------------------------------------------------------------------

    def take_changes(self) -> Changes:
        changes, self._changes = self._changes, Changes()
        return changes

    def bar(self) -> BarView:
        """The step bar for the current target: a live session, or a new chat to the typed peer."""
        tab = self.tabs.get(self.target) if self.target else None
        if tab is None:
            typed = bool(self.peer_text.strip())
            steps = tuple(StepView(s, s.label, StepState.PENDING, self.draft_results.get(s, ""),
                                   turn=typed and s is Step.CONNECT, clickable=True) for s in Step)
            hint = ("Press 1 Connect (or Connect all) to start a chat" if typed
                    else "Type an IP address, nickname or fingerprint")
            return BarView(self.peer_text, None, steps, connect_all=typed, hint=hint)
        running = tab.running
        # In an incoming chat the caller runs the steps: none is "ours" to press (a press gets the node's answer).
        waiting = tab.ended is not None or tab.awaiting_answer or tab.incoming
        turn = None if (running or waiting) else tab.next_step
        views = []
        for s in Step:
            st = tab.steps[s]
            if tab.ended is not None:
                clickable = s is Step.CONNECT      # starts a new chat with the same peer
            else:
                clickable = not tab.awaiting_answer and st.state not in (StepState.DONE, StepState.RUNNING)
            views.append(StepView(s, s.label, st.state, st.result, turn=s is turn, clickable=clickable))
        left = self.time_left(tab)
        if tab.ended is not None:
            hint = ("This chat could not start; this tab closes by itself. Press 1 Connect to try again."
                    if tab.close_at is not None else "This chat has ended. Press 1 Connect to start a new one.")
        elif tab.awaiting_answer:
            hint = f"{tab.peer_name} wants to chat: accept or reject"
        elif tab.ready:
            hint = "Connected and encrypted: chat below"
        elif tab.incoming:
            hint = f"Waiting for {tab.peer_name} to run the next step; each result shows here"
        elif running is Step.CONNECT and tab.waiting_since is not None:
            hint = f"Waiting for {tab.peer_name} to accept your chat request"
        elif running:
            hint = f"Running {running.label}…"
        else:
            hint = f"Next: {turn.label}" if turn else ""
        if left is not None and left[0] <= COUNTDOWN_FROM:
            hint += f" ({countdown(left[0])} {left[1]})"
        connect_all = not waiting and not tab.ready and running is None
        return BarView(self.peer_text, tab.session, tuple(views), connect_all, hint)

    def time_left(self, tab: TabState) -> tuple[float, str] | None:
        """Seconds until the node gives up on an unfinished handshake, and who it waits on; None when no
        timeout runs (a ready or ended chat, or one still being dialled)."""
        if tab.ended is not None or tab.ready:
            return None
        now = self.clock()
        if tab.awaiting_answer:
            return tab.opened_at + self.accept_timeout - now, "left to answer"
        if tab.waiting_since is not None and not tab.incoming:
            return tab.waiting_since + self.accept_timeout - now, f"left for {tab.peer_name} to answer"
        if tab.steps[Step.CONNECT].state is not StepState.DONE:
            return None
        if tab.incoming:
            return tab.opened_at + self.handshake_timeout - now, f"left for {tab.peer_name} to finish"
        if tab.running is not None:
            return None
        return tab.opened_at + self.handshake_timeout - now, "left to finish the steps"

    def unread_total(self) -> int:
        """Unread messages in the open chats, and stored ones of contacts without an open chat."""
        live = {t.contact for t in self.tabs.values() if t.ended is None}
        return (sum(t.unread for t in self.tabs.values())
                + sum(c.unread for fp, c in self._stored.items() if fp not in live and fp in self._contacts))

    def set_focused(self, focused: bool) -> None:
        """The window gained or lost the keyboard focus; the chat on screen is read once it has it again."""
        self.focused = focused
        if focused and self.selected in self.tabs:
            tab = self.tabs[self.selected]
            if tab.unread:
                tab.unread = 0
                self._changes.titles.add(tab.session)

    def contact_rows(self) -> list[ListRow]:
        """The contacts of the conversation list, most recent first: a verified one is marked, unread stored
        messages counted, then the last message and when (or when the contact was last seen)."""
        rows = []
        now = self.clock()
        for c in self._contacts.values():
            live = any(t.contact == c.fp and t.ended is None for t in self.tabs.values())
            stored = self._stored.get(c.fp)
            unread = stored.unread if stored is not None and not live else 0
            title = contact_name(c) + (f" {VERIFIED}" if c.verified else "") + (f" ({unread})" if unread else "")
            twin = self._lookalike(c.local_name or c.nickname, c.fp)
            if twin is not None:
                title += f" ⚠ looks like {twin}"
            if live:
                ready = any(t.contact == c.fp and t.ready for t in self.tabs.values())
                detail = ("online · " if ready else "") + "in a chat now"
            elif stored is not None:
                said = ("you: " if stored.last_direction == "out" else "") + one_line(stored.last_text, 40)
                detail = f"{said} · {seen_when(stored.last_ts, now)}"
            else:
                detail = f"last seen {seen_when(c.last_seen, now)}"
            presence = self.waiting.presence.get(c.fp)
            if not live and presence is not None and presence is not Presence.UNKNOWN:
                detail = f"{PRESENCE_WORDS[presence]} · {detail}"
            last = max(c.last_seen, stored.last_ts if stored is not None else 0.0)
            rows.append((last, ListRow(CONTACT_KEY + c.fp, title, detail)))
        return [row for _last, row in sorted(rows, key=lambda r: -r[0])]

    def _lookalike(self, name: str | None, fp: str | None) -> str | None:
        """The name of a contact whose key is not ``fp`` (hex, or its start; None: not known yet, any contact)
        that ``name`` reads like, if any."""
        twin = self._names.twin(name, fp)
        return contact_name(twin) if twin is not None else None

    def contact(self, fp: str) -> Contact | None:
        """The contact with this fingerprint (hex), as last read from the store."""
        return self._contacts.get(fp)

    def channel_state(self, fp: str) -> str:
        """How this computer's pairwise chat with ``fp`` stands, in a few words (a group member's line)."""
        tabs = [t for t in self.tabs.values() if t.contact == fp and t.ended is None]
        if any(t.ready for t in tabs):
            return "online · four steps done"
        if tabs:
            done = max(sum(1 for st in t.steps.values() if st.state is StepState.DONE) for t in tabs)
            return f"connecting · {done} of 4 steps done"
        presence = self.waiting.presence.get(fp)
        if presence is not None and presence is not Presence.UNKNOWN:
            return PRESENCE_WORDS[presence]
        return "not connected"

    def session_detail(self, session: str) -> str:
        """A chat row's second line: its last message, or where the chat stands."""
        tab = self.tabs[session]
        last = next((ln for ln in reversed(tab.lines) if ln.kind is not LineKind.NOTICE), None)
        waiting = sum(1 for ln in tab.lines if ln.waiting)
        if waiting and not tab.ready:
            return f"{count(waiting, 'message')} waiting to be sent"
        if tab.ended is not None:
            return "could not start" if tab.close_at is not None else "ended"
        if tab.awaiting_answer:
            return "wants to chat with you"
        if last is not None:
            return ("you: " if last.kind is LineKind.OUT else "") + one_line(last.text)
        if tab.ready:
            return "connected and encrypted"
        done = sum(1 for st in tab.steps.values() if st.state is StepState.DONE)
        return f"{done} of 4 steps done"

    def prompts(self) -> list[AcceptPrompt]:
        """Incoming chats still waiting for an answer, oldest first."""
        return list(self._prompts)

    def typing_text(self, session: str) -> str:
        tab = self.tabs.get(session)
        if tab is None or tab.peer_typing_until is None:
            return ""
        return f"{tab.peer_name} is typing…"

    def can_type(self, session: str) -> bool:
        """The chat entry takes text: the chat is ready, or the text can wait for the contact (issue 16)."""
        tab = self.tabs[session]
        return tab.ready or self._can_wait(tab)

    def _can_wait(self, tab: TabState) -> bool:
        """A text typed here is kept waiting for the tab's contact: no live chat with it (none started, its
        connect failed, or it ended), or a chat the node is opening by itself."""
        if tab.contact is None or tab.ready or tab.awaiting_answer:
            return False
        if tab.ended is not None or tab.automatic:
            return True
        return not tab.incoming and tab.steps[Step.CONNECT].state in (StepState.PENDING, StepState.FAILED)

    def cancel_waiting(self, session: str, line_id: int) -> None:
        """Take back a text that still waits for its contact (the node refuses once it has gone out)."""
        tab = self.tabs.get(session)
        line = next((ln for ln in tab.lines if ln.line_id == line_id), None) if tab else None
        if line is None or not line.waiting:
            return
        ref = line.file_ref
        if ref is not None:          # a file kept for the contact (gui/transfers.py)
            self.commands.submit(lambda: self.node.cancel_waiting_file(ref),
                                 failed=lambda exc: self._session_error(session, exc))
            return
        row = line.row
        if row is None:
            self._set_status("⚠ that message is still being put in the outbox; try again in a moment")
            return
        self.commands.submit(lambda: self.node.cancel_waiting(row),
                             failed=lambda exc: self._session_error(session, exc))

    def input_hint(self, session: str) -> str:
        """The line under the chat entry: why it is off, or how to send."""
        tab = self.tabs[session]
        if tab.ended is not None and not self._can_wait(tab):
            return "This chat has ended" if tab.close_at is None else "This chat could not start"
        if tab.awaiting_answer:
            return "Accept the chat first"
        if not tab.ready and tab.incoming:
            return f"Waiting for {tab.peer_name} to finish the four steps"
        if self._can_wait(tab):
            return (f"{tab.peer_name} is not connected: press Enter to keep the message waiting; it is sent by "
                    "itself when they can be reached")
        if not tab.ready:
            nxt = tab.next_step
            return f"Finish the four steps first (next: {nxt.label})" if nxt else "Finishing the handshake…"
        return "Type a message and press Enter"

    # ---- user intents -------------------------------------------------------------------------------------

    def peer_text_changed(self, text: str) -> None:
        """The user edited the peer field: typing another peer starts a new chat in the step bar."""
        if text == self.peer_text:
            return
        self.peer_text = text
        self.draft_results.clear()
        tab = self.tabs.get(self.target) if self.target else None
        if tab is not None and text.strip() != tab.peer_query:
            self.target = None
        self._changes.bar = True

    def new_chat(self) -> None:
        """Clear the peer field for a new chat (the open tabs stay)."""
        self.target = None
        self.peer_text = ""
        self.draft_results.clear()
        self._changes.bar = True

    def select_tab(self, session: str | None) -> None:
        """The user switched tabs (``None``: the ledger tab). A chat tab becomes the step bar's target."""
        self.selected = session
        tab = self.tabs.get(session) if session else None
        if tab is None:
            return
        if tab.unread and self.focused:
            tab.unread = 0
            self._changes.titles.add(tab.session)
            self._mark_read(tab, self.clock())
        if self.target != session:
            self.target = session
            self.peer_text = tab.peer_query
            self.draft_results.clear()
            self._changes.bar = True

    def open_contact(self, key: str, *, connect: bool = True) -> None:
        """The user picked a contact: show its live chat if there is one, else open a chat with it (by its
        fingerprint, so the ledger says where it is now) and, with ``connect``, press 1 Connect; the other three
        steps stay to be pressed one by one (or with Connect all)."""
        fp = key.removeprefix(CONTACT_KEY)
        contact = self._contacts.get(fp)
        if contact is None:
            self._set_status("⚠ that contact is no longer in the contact store")
            return
        live = next((t for t in self.tabs.values() if t.contact == fp and t.ended is None), None)
        if live is not None:
            self._changes.select = live.session
            return
        for old in [t for t in self.tabs.values() if t.contact == fp]:
            self.close_tab(old.session)     # an ended chat with this contact gives way to the new one
        tab = self._open(fp, name=contact_name(contact))
        if tab is None:
            return
        tab.contact, tab.contact_verified, tab.named = fp, contact.verified, True
        self._load_history(tab)
        self._changes.contacts = True
        if connect:
            self.click_step(Step.CONNECT)

    def refresh_contacts(self) -> None:
        """Read the contact store again (the node pins a key after step 4; another process may change it)."""
        self._contacts_read = self.clock()
        if self.contacts is None:
            return
        try:
            found = {c.fp: c for c in self.contacts.all() if c.replaced_by is None}
        except UserError as exc:
            self._set_status(f"⚠ {exc}")
            return
        stored = self._read_history(lambda h: {c.fp: c for c in h.conversations()}, self._stored)
        if found != self._contacts or stored != self._stored:
            self._contacts, self._stored = found, stored
            self._names = NameIndex(found.values())
            self._changes.contacts = True
            for tab in self.tabs.values():
                contact = found.get(tab.contact) if tab.contact else None
                if contact is not None and contact.verified != tab.contact_verified:
                    tab.contact_verified = contact.verified
                    self._changes.titles.add(tab.session)

    def _identify(self, tab: TabState) -> None:
        """Step 4 is done, so step 3 proved the peer's key and the node pinned it: name the tab's contact."""
        self.refresh_contacts()
        shown = (tab.info.peer_fingerprint or "").replace(" ", "") if tab.info else ""
        match = [fp for fp in self._contacts if shown and fp.startswith(shown)]
        if len(match) == 1 and tab.contact != match[0]:
            first = tab.contact is None
            tab.contact = match[0]
            tab.contact_verified = self._contacts[match[0]].verified
            self._changes.titles.add(tab.session)
            if first:
                self._load_history(tab)
        self._changes.contacts = True

    def _mark_read(self, tab: TabState, now: float) -> None:
        """Tell the store that the messages of a chat the user has read are read (once the node has written
        them: READ_AFTER after the last one came)."""
        fp = tab.contact
        if (fp is None or tab.unread or tab.read_marked >= tab.last_in or now - tab.last_in < READ_AFTER
                or self.history is None):
            return
        tab.read_marked = now
        self._read_history(lambda h: h.mark_read(fp), None)

    # ---- the kept history -------------------------------------------------------------------------------

    def search(self, query: str, limit: int = 50) -> list[Found]:
        """Stored messages of every contact that contain ``query``, newest first (Ctrl+F, "All chats")."""
        query = query.strip()
        if not query:
            return []
        none: list[HistoryMessage] = []
        hits = self._read_history(lambda h: h.search(query, limit=limit), none)
        now = self.clock()
        found = []
        for m in hits:
            contact = self._contacts.get(m.fp)
            name = contact_name(contact) if contact is not None else m.fp[:16]
            who = "you" if m.direction == "out" else name
            found.append(Found(CONTACT_KEY + m.fp, f"{name} · {stamp(m.ts, now)} · {who}", one_line(m.text, 60)))
        return found

    def show_found(self, found: Found) -> str | None:
        """Open the chat with the contact of a search hit (without dialling); returns its session."""
        self.open_contact(found.key, connect=False)
        fp = found.key.removeprefix(CONTACT_KEY)
        tab = next((t for t in self.tabs.values() if t.contact == fp and t.ended is None), None)
        return tab.session if tab is not None else None

    def history_count(self, session: str) -> int:
        """How many messages with this chat's contact are kept (0 when the contact is not known yet)."""
        tab = self.tabs.get(session)
        fp = tab.contact if tab is not None else None
        if fp is None:
            return 0
        stored = self._read_history(lambda h: {c.fp: c for c in h.conversations()}, self._stored).get(fp)
        return stored.count if stored is not None else 0

    def delete_history(self, session: str) -> int:
        """Erase the kept messages with this chat's contact (the user confirmed); the transcript is emptied."""
        tab = self.tabs.get(session)
        fp = tab.contact if tab is not None else None
        if tab is None or fp is None or self.history is None:
            return 0
        try:
            n = self.history.delete(fp)
        except UserError as exc:
            self._notice(tab, "error", f"The history could not be deleted: {exc}")
            return 0
        dropped = len(tab.lines)
        self._changes.lines_dropped[session] = self._changes.lines_dropped.get(session, 0) + dropped
        self._changes.lines_added.pop(session, None)
        for line in tab.lines:
            if line.msg_id is not None:
                self._lines_by_msg.pop((session, line.msg_id), None)
        tab.lines, tab.kept_bytes = [], 0
        self._notice(tab, "info", f"Deleted {count(n, 'kept message')} with {tab.peer_name} from this computer.")
        self.refresh_contacts()
        self._changes.titles.add(session)
        return n

    def export_history(self, session: str) -> str | None:
        """The kept conversation with this chat's contact as plain text (None: nothing kept for it)."""
        tab = self.tabs.get(session)
        fp = tab.contact if tab is not None else None
        if tab is None or fp is None:
            return None
        return self._read_history(lambda h: h.export_text(fp, tab.peer_name), None)

    def _read_history(self, read: Callable[[HistoryApi], _T], fallback: _T) -> _T:
        """``read(history)``, or ``fallback`` when there is no history or it cannot be read (said once in the
        status line)."""
        if self.history is None:
            return fallback
        try:
            return read(self.history)
        except UserError as exc:
            self._set_status(f"⚠ the chat history could not be read: {exc}")
            return fallback

    def _load_history(self, tab: TabState) -> None:
        """Show the stored conversation with the tab's contact above what comes next."""
        fp = tab.contact
        if fp is None:
            return
        none: list[HistoryMessage] = []
        kept = self._read_history(lambda h: h.messages(fp, limit=HISTORY_SHOWN), none)
        if not kept:
            if self.files is not None:
                self.files.show_kept(tab.session, fp)      # files that still wait for this contact
            return
        now = self.clock()
        self._notice(tab, "info", f"Your earlier messages with {tab.peer_name} ({count(len(kept), 'message')} "
                                  "shown), kept on this computer:")
        for m in kept:
            out = m.direction == "out"
            line = self._add_line(tab, LineKind.OUT if out else LineKind.IN, self.nickname if out else tab.peer_name,
                                  clean(m.text), m.ts)
            line.time = stamp(m.ts, now)
            line.stored = m.status if out else ""
            line.delivered = out and m.status == "delivered"
            if out and m.status in ("waiting", "sent"):
                self.waiting.track(tab.session, line, m.id)
        self._notice(tab, "info", "End of the kept messages.")
        if self.files is not None:
            self.files.show_kept(tab.session, fp)          # files that still wait for this contact

    def click_step(self, step: Step) -> None:
        tab = self.tabs.get(self.target) if self.target else None
        if tab is None or (tab.ended is not None and step is Step.CONNECT):
            if step is not Step.CONNECT:
                self.draft_results = {step: fail_text(f"{Step.CONNECT.label} must come first")}
                self._changes.bar = True
                return
            tab = self._open(tab.peer_query if tab else self.peer_text)
            if tab is None:
                return
        if tab.ended is not None:
            self._set_result(tab, step, fail_text("this chat has ended; press 1 Connect to start a new one"))
            return
        if tab.awaiting_answer:
            self._set_result(tab, step, fail_text("accept or reject the chat first"))
            return
        st = tab.steps[step]
        if st.state in (StepState.DONE, StepState.RUNNING):
            return
        if tab.running is None and tab.next_step is step:
            st.state, st.result = StepState.RUNNING, "… working"
            if step is Step.CONNECT:
                tab.waiting_since = self.clock()
        # Out-of-turn presses go to the node too: it holds the real session state and answers StepRefused.
        self._changes.bar = True
        session = tab.session
        self.commands.submit(lambda: self.node.run_step(session, step),
                             failed=lambda exc: self._step_failed(session, step, exc))

    def connect_all(self) -> None:
        tab = self.tabs.get(self.target) if self.target else None
        if tab is None or tab.ended is not None:
            tab = self._open(tab.peer_query if tab else self.peer_text, for_step=None)
            if tab is None:
                return
        if tab.awaiting_answer or tab.ready or tab.running is not None:
            return
        tab.auto = True
        nxt = tab.next_step
        if nxt is not None:
            tab.steps[nxt].state, tab.steps[nxt].result = StepState.RUNNING, "… working"
            if nxt is Step.CONNECT:
                tab.waiting_since = self.clock()
        self._changes.bar = True
        session = tab.session
        self.commands.submit(lambda: self.node.run_all(session),
                             failed=lambda exc: self._step_failed(session, nxt or Step.CONNECT, exc))

    def answer(self, session: str, accept: bool) -> None:
        """The user's answer to an incoming chat."""
        tab = self.tabs.get(session)
        self._prompts = [p for p in self._prompts if p.session != session]
        if tab is None or not tab.awaiting_answer:
            return
        tab.awaiting_answer = False
        tab.answered = accept
        self.commands.submit(lambda: self.node.accept(session, accept),
                             failed=lambda exc: self._session_error(session, exc))
        if accept:
            self._notice(tab, "info", f"You accepted the chat with {tab.peer_name}.")
            self._changes.select = session
            self._changes.chat_input.add(session)
            self._changes.bar = True
        else:
            self._remove(session)

    def send(self, session: str, text: str) -> str | None:
        """Send a chat message. Returns ``None`` when it is on its way (clear the entry), or why it was not sent."""
        tab = self.tabs.get(session)
        if tab is None:
            return "no such chat"
        waits = self._can_wait(tab)
        if not tab.ready and not waits:
            return self.input_hint(session)
        if not text.strip():
            return "the message is empty"
        data = text.encode("utf-8", "replace")   # a lone surrogate (pasted binary junk) becomes "?"
        size = len(data)
        if size > self.max_message_bytes:
            return (f"the message is {count(size, 'byte')} long; the limit is "
                    f"{count(self.max_message_bytes, 'byte')}")
        text = data.decode("utf-8")
        line = self._add_line(tab, LineKind.OUT, self.nickname, clean(text), self.clock())
        if waits and tab.contact is not None:
            fp = tab.contact
            line.stored = "waiting"
            self.commands.submit(lambda: self.node.message_contact(fp, text),
                                 done=lambda row: self._queued(line, row),
                                 failed=lambda exc: self._not_sent(session, line, exc))
            return None
        tab.typing_sent = False   # the text itself ends the typing state on both sides
        self.commands.submit(lambda: self.node.send_text(session, text),
                             done=lambda msg_id: self._sent(session, line, msg_id),
                             failed=lambda exc: self._not_sent(session, line, exc))
        return None

    def input_changed(self, session: str, text: str) -> None:
        """The chat entry changed: tell the peer when we start or stop typing (the node debounces further)."""
        tab = self.tabs.get(session)
        if tab is None or not tab.ready:
            return
        tab.last_keystroke = self.clock()
        typing = bool(text.strip())
        if typing != tab.typing_sent:
            tab.typing_sent = typing
            self.commands.submit(lambda: self.node.set_typing(session, typing))

    def show_more(self, session: str, line_id: int) -> None:
        """Reveal the next part of a long message."""
        tab = self.tabs.get(session)
        line = next((ln for ln in tab.lines if ln.line_id == line_id), None) if tab else None
        if line is None or not line.hidden:
            return
        line.show_more()
        self._changes.lines_changed.setdefault(session, []).append(line)

    def close_tab(self, session: str) -> None:
        """Close a chat tab, saying goodbye to the peer if the chat is still open."""
        tab = self.tabs.get(session)
        if tab is None:
            return
        if tab.ended is None:
            self.commands.submit(lambda: self.node.end_session(session))
        keep = None
        if self.target == session and tab.close_at is not None:
            # A failed dial closes itself: the step bar keeps what happened, so the failure stays in sight.
            keep = {s: st.result for s, st in tab.steps.items() if st.state is StepState.FAILED}
        self._prompts = [p for p in self._prompts if p.session != session]
        self._remove(session)
        if keep:
            self.draft_results = keep

    def tick(self) -> None:
        """Called every few hundred ms: expire typing indicators, tell peers we stopped typing, close failed
        dials whose failure has been shown, and count down the handshake's timeouts."""
        now = self.clock()
        for tab in self.tabs.values():
            self._mark_read(tab, now)
        if now - self._contacts_read >= CONTACTS_EVERY:
            self.refresh_contacts()
        for fp in self.waiting.due(now):
            self.waiting.apply(self._read_history(functools.partial(_newest, fp=fp), []))
        for tab in [t for t in self.tabs.values() if t.close_at is not None and now >= t.close_at]:
            self.close_tab(tab.session)
        target = self.tabs.get(self.target) if self.target else None
        left = self.time_left(target) if target is not None else None
        shown = countdown(left[0]) if left is not None and left[0] <= COUNTDOWN_FROM else ""
        if shown != self._countdown_shown:
            self._countdown_shown = shown
            self._changes.bar = True
        for tab in self.tabs.values():
            if tab.peer_typing_until is not None and now >= tab.peer_typing_until:
                tab.peer_typing_until = None
                self._changes.typing.add(tab.session)
            if tab.typing_sent and now - tab.last_keystroke >= TYPING_IDLE:
                tab.typing_sent = False
                self.commands.submit(functools.partial(self.node.set_typing, tab.session, False))

    # ---- node events --------------------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """Apply one node event to the state (on the Tk thread)."""
        if self.files is not None and self.files.handle(event):
            return
        if isinstance(event, IncomingChat):
            self._incoming(event)
            return
        if isinstance(event, OutboxChanged):
            if self.waiting.handle(event):
                self._changes.contacts = True
            return
        if isinstance(event, NodeError):
            self._set_status(f"⚠ {clean(event.text)}")
            tab = self.tabs.get(event.session) if event.session else None
            if tab is not None:
                self._notice(tab, "error", event.text)
            return
        session = event.info.session if isinstance(event, SessionUpdated) else getattr(event, "session", None)
        if not isinstance(session, str):
            log.debug("ignoring an event this window does not know: %r", type(event).__name__)
            return
        tab = self.tabs.get(session)
        if (tab is None and isinstance(event, SessionUpdated) and event.info.automatic
                and Step.CONNECT in event.info.steps_done):
            # only once connected: the node's attempts that find nobody leave the window alone
            tab = self._adopt(session, event.info)
        if tab is None and isinstance(event, SessionUpdated | Notice):
            # An incoming session reports what it learnt (and how it came, e.g. through a relay) before it asks
            # the user; keep that for the IncomingChat that follows.
            early = self._early.setdefault(session, [])
            early.append(event)
            del early[:-EARLY_EVENTS_KEPT]
            while len(self._early) > EARLY_SESSIONS_KEPT:
                self._early.pop(next(iter(self._early)))
            return
        if tab is None:
            # A session we closed or rejected, still winding down in the node.
            log.debug("event for a closed chat tab: %r", type(event).__name__)
            return
        if isinstance(event, KeyChangeStopped):
            self._key_change_stopped(tab, event)
        elif isinstance(event, StepResult):
            self._step_result(tab, event)
        elif isinstance(event, StepRefused):
            st = tab.steps[event.step]
            if st.state is StepState.RUNNING:
                st.state = StepState.PENDING
            tab.auto = False
            self._set_result(tab, event.step, fail_text(clean(event.reason)))
        elif isinstance(event, SessionUpdated):
            self._updated(tab, event.info)
        elif isinstance(event, MessageReceived):
            self._received(tab, event)
        elif isinstance(event, DeliveryReceipt):
            line = self._lines_by_msg.get((session, event.msg_id))
            if line is None:
                self._early_receipts.add((session, event.msg_id))
                if tab.contact is not None:
                    self.waiting.recheck(tab.contact, self.clock())   # perhaps a text that waited
            elif not line.delivered:
                line.delivered = True
                self._changes.lines_changed.setdefault(session, []).append(line)
        elif isinstance(event, PeerTyping):
            tab.peer_typing_until = self.clock() + PEER_TYPING_SHOWN if event.typing else None
            self._changes.typing.add(session)
        elif isinstance(event, Notice):
            self._notice(tab, event.kind, clean(event.text))
        elif isinstance(event, SessionEnded):
            self._ended(tab, event)
        elif isinstance(event, SecretQuestion | SecretResult):
            self.secrets.handle(tab, event)

    # ---- key continuity and verification (issue 13; the dialogs are gui/key_change.py and gui/verify.py) -------

    def accept_key(self, session: str) -> None:
        """The user accepted the changed key named by ``session``'s step 2 (the dialog asked twice for a verified
        contact): the node lets the next chat with that key go on, and records the decision once it succeeds."""
        tab = self.tabs.get(session)
        stop = tab.key_change if tab is not None else None
        if tab is None or stop is None:
            return
        fp, override = stop.new_fingerprint, stop.verified
        self.commands.submit(lambda: self.node.accept_new_key(fp, override_verified=override),
                             failed=lambda exc: self._session_error(session, exc))
        tab.key_change = None
        self._notice(tab, "key-change", f"You accepted the new key of {stop.contact}. Press 1 Connect to try "
                                        "again: the decision is recorded once the four steps succeed"
                     + (", and the verified mark is removed until you compare the new safety number."
                        if override else "."))

    def keep_old_key(self, session: str) -> None:
        tab = self.tabs.get(session)
        stop = tab.key_change if tab is not None else None
        if tab is None or stop is None:
            return
        tab.key_change = None
        self._notice(tab, "key-change", f"You kept the old key of {stop.contact}: nothing was sent to the key the "
                                        "ledger now names.")

    def set_verified(self, session: str, verified: bool) -> None:
        """Mark the peer of a ready chat verified (after comparing the safety number) or not."""
        tab = self.tabs.get(session)
        if tab is None:
            return
        if not tab.ready:
            self._notice(tab, "error", "Compare the safety number once the four steps are done.")
            return
        self.commands.submit(lambda: self.node.verify_contact(session, verified),
                             done=lambda _fp: self._verified(session, verified),
                             failed=lambda exc: self._session_error(session, exc))

    def _verified(self, session: str, verified: bool) -> None:
        tab = self.tabs.get(session)
        if tab is None:
            return
        tab.verified = verified
        self._changes.peer.add(session)
        self._notice(tab, "ready" if verified else "info",
                     f"{tab.peer_name} is now a verified contact: a change of their key will be a hard stop."
                     if verified else f"{tab.peer_name} is no longer marked verified.")

    def _key_change_stopped(self, tab: TabState, event: KeyChangeStopped) -> None:
        event = replace(event, contact=clean_name(event.contact, tab.peer_name))
        tab.key_change = event
        tab.key_refused = True
        self._changes.key_changes.append(tab.session)
        self._changes.peer.add(tab.session)
        if event.verified:
            self._notice(tab, "key-stop", f"STOP — the key of {event.contact}, a contact you VERIFIED, has changed. "
                                          "Nothing was signed or sent. Do not go on until you have asked them in "
                                          "person or by phone.")

    # FileLines (gui/transfers.py): a file for a contact that cannot be reached waits like a text

    def waiting_contact(self, session: str) -> str | None:
        """The contact a file sent in ``session`` would wait for (no live chat with it), or None."""
        tab = self.tabs.get(session)
        return tab.contact if tab is not None and self._can_wait(tab) else None

    def file_line(self, session: str, text: str) -> ChatLine | None:
        """An own line in ``session``'s transcript for a file kept for its contact (shown "waiting")."""
        tab = self.tabs.get(session)
        if tab is None:
            return None
        line = self._add_line(tab, LineKind.OUT, self.nickname, text, self.clock())
        line.stored = "waiting"
        return line

    def contact_file_notice(self, fp: str, text: str) -> None:
        """A line about a file kept for ``fp`` with no line of its own: in the contact's conversation, else the
        status bar."""
        tab = next((t for t in self.tabs.values() if t.contact == fp), None)
        if tab is not None:
            self._notice(tab, "error", text)
        else:
            self._set_status(text)

    def file_line_changed(self, line: ChatLine) -> None:
        session = self._session_of(line)
        if session is not None:
            self._line_changed(session, line)

    def file_notice(self, session: str, text: str) -> None:
        """A line about a file in ``session``'s transcript (gui/transfers.py)."""
        tab = self.tabs.get(session)
        if tab is not None:
            self._notice(tab, "info", text)

    # ---- internals ----------------------------------------------------------------------------------------

    def _open(self, text: str, for_step: Step | None = Step.CONNECT, name: str | None = None) -> TabState | None:
        try:
            query = check_peer_query(text)
            session = self.node.open_session(query)
        except UserError as exc:
            self.target = None
            self.draft_results = {for_step or Step.CONNECT: fail_text(str(exc))}
            self._changes.bar = True
            return None
        for old in [t for t in self.tabs.values() if t.close_at is not None and t.peer_query == query]:
            self.close_tab(old.session)     # a failed dial to the same peer is replaced, not kept beside
        tab = self._new_tab(session, query, clean_name(name or query))
        self.target = session
        self.peer_text = query
        self.draft_results.clear()
        self._changes.select = session
        return tab

    def _unique_title(self, name: str, session: str | None = None) -> str:
        taken = {t.base_title for t in self.tabs.values() if t.session != session} | {LEDGER_TAB}
        title, n = name, 2
        while title in taken:
            title, n = f"{name} {n}", n + 1
        return title

    def _new_tab(self, session: str, query: str, name: str, incoming: bool = False) -> TabState:
        tab = TabState(session=session, peer_query=query, base_title=self._unique_title(name), incoming=incoming,
                       named=incoming, info=SessionInfo(session=session, peer_query=query, incoming=incoming),
                       opened_at=self.clock())
        self.tabs[session] = tab
        self._changes.tabs_added.append(session)
        self._changes.peer.add(session)
        self._changes.chat_input.add(session)
        return tab

    def _remove(self, session: str) -> None:
        gone = self.tabs.pop(session, None)
        if gone is not None and gone.contact is not None:
            self._changes.contacts = True
            self.refresh_contacts()      # its row shows the last kept message again
        for key in [k for k in self._lines_by_msg if k[0] == session]:
            del self._lines_by_msg[key]
        self.waiting.forget(session)
        self._early_receipts = {k for k in self._early_receipts if k[0] != session}
        self._changes.tabs_removed.append(session)
        self._changes.prompts_closed.append(session)
        if self.target == session:
            self.target = None
            self.draft_results.clear()
        if self.selected == session:
            self.selected = None
        self._changes.bar = True

    def _incoming(self, event: IncomingChat) -> None:
        address = clean_name(event.peer_address)
        nickname = clean_name(event.nickname, address)
        # The caller's source port is ephemeral: calling back goes to its IP (and the port in its record).
        try:
            query = parse_address(event.peer_address, 1)[0]
        except UserError:
            query = address
        tab = self._new_tab(event.session, query, nickname, incoming=True)
        tab.awaiting_answer = True
        tab.info = SessionInfo(session=event.session, peer_query=query, peer_address=address,
                               peer_nickname=event.nickname, incoming=True)
        for early in self._early.pop(event.session, []):
            if isinstance(early, SessionUpdated):
                tab.info = early.info
            else:
                self._notice(tab, early.kind, clean(early.text))
        prompt = AcceptPrompt(event.session, nickname, address, self._lookalike(event.nickname, None))
        self._prompts.append(prompt)
        self._changes.prompts.append(prompt)
        self._notice(tab, "info", prompt.question)
        if self.target is None and not self.peer_text.strip():
            self.target = event.session
            self.peer_text = query
        self._changes.bar = True

    def _step_result(self, tab: TabState, event: StepResult) -> None:
        st = tab.steps[event.step]
        detail = clean(event.detail)
        if event.step is Step.CONNECT:
            tab.waiting_since = None
        if event.ok:
            st.state, st.result = StepState.DONE, ok_text(detail)
            nxt = tab.next_step
            if tab.auto and nxt is not None and tab.running is None:
                tab.steps[nxt].state, tab.steps[nxt].result = StepState.RUNNING, "… working"
            if tab.ready:
                tab.auto = False
                self._identify(tab)
                if tab.automatic:
                    self._notice(tab, "ready", AGAIN)     # one compact line; the step bar shows each step
                else:
                    self._notice(tab, "ready", f"All four steps done: messages with {tab.peer_name} are "
                                               "end-to-end encrypted. Compare the safety number with them to be sure.")
                self._changes.chat_input.add(tab.session)
        else:
            words = plain(detail, tab.peer_name)
            if event.step is Step.SWAP_KEYS and tab.key_change is not None:
                stop = tab.key_change
                words = Wording(step_2_words(stop.contact), window_warning(detail, stop.contact, stop.verified))
            st.state, st.result = StepState.FAILED, fail_text(words.plain)
            tab.auto = False
            tab.failure = detail
            for later in Step:
                if later > event.step and tab.steps[later].state is StepState.RUNNING:
                    tab.steps[later].state, tab.steps[later].result = StepState.PENDING, ""
            self._notice(tab, "error", f"{event.step.label} failed: {words.plain}", detail=words.detail)
        self._changes.bar = True
        self._changes.chat_input.add(tab.session)

    def _updated(self, tab: TabState, info: SessionInfo) -> None:
        tab.info = info
        if info.peer_nickname and info.peer_fingerprint:
            # step 2 showed the key: a name that reads like a contact's, on another key, is a look-alike
            lookalike = self._lookalike(info.peer_nickname, info.peer_fingerprint.replace(" ", ""))
            if lookalike != tab.lookalike:
                tab.lookalike = lookalike
                self._changes.titles.add(tab.session)
        if info.peer_nickname and not tab.named and Step.SWAP_KEYS in info.steps_done:
            # The tab was named after what the user typed; now step 2 confirmed the peer's name from the ledger
            # (before that it is only what the peer claims in its hello).
            tab.named = True
            tab.base_title = self._unique_title(clean_name(info.peer_nickname), tab.session)
            self._changes.titles.add(tab.session)
        for s in info.steps_done:
            st = tab.steps[s]
            if st.state is not StepState.DONE:
                st.state, st.result = StepState.DONE, st.result if st.result.startswith("✓") else ok_text("")
                self._changes.bar = True
        self._changes.peer.add(tab.session)
        self._changes.chat_input.add(tab.session)

    def _received(self, tab: TabState, event: MessageReceived) -> None:
        # [red team] a nickname holding ": " is quoted: "bob: I quit; carol" cannot read as bob saying the rest
        sender = tab.marked(name_in_line(clean_name(event.sender, tab.peer_name))) if event.sender else tab.peer_name
        self._add_line(tab, LineKind.IN, sender, clean(event.text), event.received_at)
        if tab.peer_typing_until is not None:
            tab.peer_typing_until = None
            self._changes.typing.add(tab.session)
        tab.last_in = self.clock()
        if tab.session != self.selected or not self.focused:
            tab.unread += 1
            self._changes.titles.add(tab.session)

    def _ended(self, tab: TabState, event: SessionEnded) -> None:
        if tab.ended is not None:
            return
        if tab.contact is not None:
            self._changes.contacts = True
            self.waiting.recheck(tab.contact, self.clock())   # texts sent without a receipt wait again
            self.waiting.chat_ended(tab.contact)
        reason = clean(event.reason)
        was_ready = tab.ready
        tab.ended = reason
        tab.auto = False
        tab.peer_typing_until = None
        for st in tab.steps.values():
            if st.state is StepState.RUNNING:
                st.state, st.result = StepState.PENDING, ""
        if tab.awaiting_answer:
            tab.awaiting_answer = False
            self._prompts = [p for p in self._prompts if p.session != tab.session]
            self._changes.prompts_closed.append(tab.session)
        if tab.automatic and not was_ready:
            pass    # an attempt of the node's own that did not get through (a failed step said why): it tries again
        elif tab.failure is not None and (tab.failure == reason or reason in tab.failure or tab.failure in reason):
            pass    # the failed step has said it, beside its button and in the transcript: once is enough
        else:
            self._notice(tab, "ended", *self._end_words(tab, reason, event.clean, was_ready))
        if not tab.incoming and tab.contact is None and tab.steps[Step.CONNECT].state is not StepState.DONE:
            # A dial that never connected leaves no tab behind; a contact's stays: texts typed there wait for it.
            tab.close_at = self.clock() + FAILED_TAB_LINGER
        self._changes.titles.add(tab.session)
        self._changes.typing.add(tab.session)
        self._changes.chat_input.add(tab.session)
        self._changes.bar = True

    def _end_words(self, tab: TabState, reason: str, clean_end: bool, was_ready: bool) -> tuple[str, str | None]:
        """Why the chat ended, blaming the right side: a callee who accepted is never told it did not answer,
        a caller left idle between steps is told it was its own turn."""
        peer = tab.peer_name
        minutes = countdown(self.handshake_timeout)
        if "you did not accept or reject" in reason and tab.answered:
            return (f"You accepted, but {peer} did not go on with the next step within "
                    f"{countdown(self.accept_timeout)}, so the chat request expired.", reason)
        if "left the handshake unfinished" in reason or "handshake took too long" in reason:
            if tab.incoming:
                return f"{peer} did not finish the four steps within {minutes}, so the chat request expired.", reason
            return (f"The four steps were not finished within {minutes} (it was your turn), so the chat request "
                    "expired. Press 1 Connect to start again.", reason)
        words = plain(reason, peer)
        if clean_end:
            return f"{peer} ended the chat." + (f" {words.plain}" if words.detail or words.plain != reason else
                                                 f" ({reason})" if reason else ""), None
        if re.search(r"declined|rejected|said no", reason, re.IGNORECASE):
            return words.plain, words.detail
        if was_ready:
            return f"Connection lost: {words.plain}", words.detail
        return f"The chat could not start: {words.plain}", words.detail

    def _notice(self, tab: TabState, kind: str, text: str, detail: str | None = None) -> None:
        mark = NOTICE_MARKS.get(kind, "ℹ")
        # cleaned here too (idempotent): every notice may quote a peer, whatever its caller did
        line = self._add_line(tab, LineKind.NOTICE, "", f"{mark} {clean(text)}", self.clock(), level=kind)
        if detail:
            # the node's own words are one click away: hidden behind the line's "show more" link
            line.text += "\nDetails: " + clean(detail)
            line.shown = len(f"{mark} {clean(text)}")

    def _add_line(self, tab: TabState, kind: LineKind, sender: str, text: str, ts: float,
                  level: str = "") -> ChatLine:
        line = ChatLine(self._next_line, kind, clock_time(ts), sender, text, preview_end(text), level=level)
        self._next_line += 1
        self._changes.lines_added.setdefault(tab.session, []).append(line)
        tab.lines, dropped, tab.kept_bytes = keep_line(tab.lines, line, tab.kept_bytes)
        if dropped:
            for old in dropped:
                if old.msg_id is not None:
                    self._lines_by_msg.pop((tab.session, old.msg_id), None)
            added = self._changes.lines_added[tab.session]
            # Lines added and dropped in the same batch never reach the screen.
            gone = {old.line_id for old in dropped}
            still_new = [ln for ln in added if ln.line_id not in gone]
            self._changes.lines_dropped[tab.session] = (self._changes.lines_dropped.get(tab.session, 0)
                                                        + len(dropped) - (len(added) - len(still_new)))
            self._changes.lines_added[tab.session] = still_new
        return line

    def _sent(self, session: str, line: ChatLine, msg_id: object) -> None:
        if session not in self.tabs or not isinstance(msg_id, int):
            return
        line.msg_id = msg_id
        self._lines_by_msg[(session, msg_id)] = line
        if (session, msg_id) in self._early_receipts:
            self._early_receipts.discard((session, msg_id))
            line.delivered = True
            self._changes.lines_changed.setdefault(session, []).append(line)

    def _session_of(self, line: ChatLine) -> str | None:
        """The session whose tab shows ``line`` now (a contact's tab moves to the chat the node opened)."""
        return next((t.session for t in self.tabs.values() if any(ln is line for ln in t.lines)), None)

    def _queued(self, line: ChatLine, row: object) -> None:
        session = self._session_of(line)
        if session is not None and isinstance(row, int):
            self.waiting.track(session, line, row)

    def _line_changed(self, session: str, line: ChatLine) -> None:
        if session in self.tabs:
            self._changes.lines_changed.setdefault(session, []).append(line)
            self._changes.titles.add(session)

    def _adopt(self, session: str, info: SessionInfo) -> TabState | None:
        """A chat the node opened by itself (to deliver waiting texts or after a drop) and that connected continues
        the contact's conversation: the tab of that contact moves to the new session rather than a second row
        appearing."""
        fp = info.peer_query.lower()
        if fp not in self._contacts:
            self.refresh_contacts()
        contact = self._contacts.get(fp)
        if contact is None:
            return None
        mine = [t for t in self.tabs.values() if t.contact == fp]
        if any(t.ended is None and not self._can_wait(t) for t in mine):
            return None       # the user's own chat with it is open or being opened: that one is shown
        old = mine[-1] if mine else None
        if old is None:
            tab = self._new_tab(session, fp, contact_name(contact))
            tab.contact, tab.contact_verified, tab.named, tab.automatic, tab.info = (
                fp, contact.verified, True, True, info)
            self._load_history(tab)
            self._changes.contacts = True
            return tab
        if old.ended is None:
            self.commands.submit(functools.partial(self.node.end_session, old.session))
        was = old.session
        del self.tabs[was]
        for key in [k for k in self._lines_by_msg if k[0] == was]:
            del self._lines_by_msg[key]
        self.waiting.moved(was, session)
        if was in self._changes.tabs_added:
            self._changes.tabs_added.remove(was)
        else:
            self._changes.tabs_removed.append(was)
        for pending in (self._changes.lines_added, self._changes.lines_changed, self._changes.lines_dropped):
            pending.pop(was, None)
        old.session, old.info, old.automatic, old.incoming = session, info, True, False
        old.steps = {s: StepStatus() for s in Step}
        old.ended = old.failure = old.close_at = old.waiting_since = None
        old.auto, old.opened_at = False, self.clock()
        self.tabs[session] = old
        self._changes.tabs_added.append(session)
        self._changes.lines_added[session] = list(old.lines)
        self._changes.peer.add(session)
        self._changes.chat_input.add(session)
        if self.selected == was:
            self._changes.select = session
        if self.target == was:
            self.target = session
            self._changes.bar = True
        return old

    def _not_sent(self, session: str, line: ChatLine, exc: UserError) -> None:
        if session not in self.tabs:
            return
        line.failed = clean(str(exc))
        self._changes.lines_changed.setdefault(session, []).append(line)

    def _step_failed(self, session: str, step: Step, exc: UserError) -> None:
        """The node refused a step by raising instead of with an event."""
        tab = self.tabs.get(session)
        if tab is None:
            return
        st = tab.steps[step]
        if st.state is StepState.RUNNING:
            st.state = StepState.PENDING
        tab.auto = False
        self._set_result(tab, step, fail_text(clean(str(exc))))

    def _session_error(self, session: str, exc: UserError) -> None:
        tab = self.tabs.get(session)
        if tab is not None:
            self._notice(tab, "error", clean(str(exc)))
        else:
            self._set_status(f"⚠ {clean(str(exc))}")

    def _set_result(self, tab: TabState, step: Step, text: str) -> None:
        tab.steps[step].result = text
        self._changes.bar = True

    def _set_status(self, text: str) -> None:
        text = clean(text).replace("\n", " ")     # one line; may quote a peer
        self.status = text
        self._changes.status = text
