"""View-models: the plain data the controller keeps for each chat tab and hands to the widgets (no Tk here)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import StrEnum

from gui.text import MORE_CHARS, MORE_LINES, clean_name, count, preview_end
from p2pchat.display import quoted
from p2pchat.events import KeyChangeStopped, SessionInfo
from p2pchat.steps import Step

VERIFIED = "✔"     # beside a contact whose safety number the user compared and marked verified
MAX_LINES = 1000            # per chat or group conversation; older lines leave the transcript in blocks of TRIM_LINES
TRIM_LINES = 100
MAX_KEPT_BYTES = 16 * 1024 * 1024
"""Text one conversation keeps in memory (Python's size of the lines' texts); older lines leave to stay under it.
A peer's 1 MiB texts (up to 3 MiB each once controls are written out visibly) would otherwise keep 1,000 of them."""


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class StepStatus:
    state: StepState = StepState.PENDING
    result: str = ""     # shown beside the button: "✓ detail", "✗ reason", "… working"


@dataclass(frozen=True)
class StepView:
    """One numbered button: ``turn`` means it is the next step to press (styled as the main action);
    ``clickable`` buttons that are not their turn stay pressable so that the user gets told what comes first."""

    step: Step
    label: str
    state: StepState
    result: str
    turn: bool
    clickable: bool


@dataclass(frozen=True)
class BarView:
    """The peer field, the four step buttons and "Connect all", for the selected chat (or a new one)."""

    peer_text: str
    session: str | None
    steps: tuple[StepView, ...]
    connect_all: bool
    hint: str


class LineKind(StrEnum):
    IN = "in"
    OUT = "out"
    NOTICE = "notice"


@dataclass
class ChatLine:
    """One transcript entry. ``text`` is kept whole; ``shown`` characters of it are on screen."""

    line_id: int
    kind: LineKind
    time: str
    sender: str
    text: str
    shown: int
    level: str = ""              # notices: rotation, refused, path, info, ready, ended, error
    msg_id: int | None = None
    delivered: bool = False
    failed: str = ""
    stored: str = ""             # a message from the history: its stored status (sent, delivered, waiting, …)
    row: int | None = None       # its history row, for a text that waited for its contact (issue 16)
    file_ref: int | None = None  # a file kept for its contact (issue 16, gui/transfers.py): its number
    colour: int | None = None    # a group member's colour (gui/widgets/style.py MEMBER_COLORS; issue 18)
    receipt: str = ""            # one's own group message: "delivered to 2 of 3" (issue 18)

    @property
    def hidden(self) -> int:
        return len(self.text) - self.shown

    def show_more(self) -> None:
        """Reveal the next part of a long text ("show more")."""
        self.shown = preview_end(self.text, self.shown, chars=MORE_CHARS, lines=MORE_LINES)

    @property
    def waiting(self) -> bool:
        """A text kept for a contact who cannot be reached yet: it can still be cancelled."""
        return self.kind is LineKind.OUT and self.stored == "waiting" and not self.failed

    @property
    def tick(self) -> str:
        """Delivery mark of an outgoing message: ✓ once the receipt is in, … while on the way."""
        if self.kind is not LineKind.OUT:
            return ""
        if self.receipt and not self.failed:
            return self.receipt
        if self.failed:
            return f"✗ not sent: {self.failed}"
        if self.stored and not self.delivered:
            return "" if self.stored == "sent" else f"({self.stored})"
        return "✓" if self.delivered else "…"


def text_bytes(line: ChatLine) -> int:
    return sys.getsizeof(line.text)


def keep_line(lines: list[ChatLine], line: ChatLine, kept: int) -> tuple[list[ChatLine], list[ChatLine], int]:
    """Append ``line`` to a conversation's ``lines`` whose texts weigh ``kept`` bytes, and let the oldest lines go
    as :data:`MAX_LINES` and :data:`MAX_KEPT_BYTES` say (the newest line always stays): ``(lines, dropped,
    kept)``. The caller keeps ``kept`` beside its lines (0 when it empties them)."""
    lines.append(line)
    kept += text_bytes(line)
    n = TRIM_LINES if len(lines) > MAX_LINES else 0
    freed = sum(text_bytes(old) for old in lines[:n])
    while kept - freed > MAX_KEPT_BYTES and n < len(lines) - 1:
        freed += text_bytes(lines[n])
        n += 1
    if not n:
        return lines, [], kept
    return lines[n:], lines[:n], kept - freed


@dataclass(frozen=True)
class AcceptPrompt:
    session: str
    nickname: str
    address: str
    resembles: str | None = None     # a contact whose name the claimed nickname reads like

    @property
    def question(self) -> str:
        # the nickname is the caller's own claim: only step 2 checks it against the ledger (issue 15)
        # [red team] in guillemets it cannot close: "bob” (key verified ✓), a contact" cannot add words of ours
        asks = (f"Someone at {self.address}, calling itself {quoted(self.nickname)} (not checked yet), wants to chat "
                "with you.")
        if self.resembles is None:
            return asks
        return f"{asks} The name reads like your contact {self.resembles}: step 2 shows whether it is their key."


@dataclass(frozen=True)
class ListRow:
    """One row of the conversation list: a title (name, verified mark, unread count) and a detail line (the last
    message, the chat's state or when the contact was last seen), both cleaned for display."""

    key: str
    title: str
    detail: str


@dataclass
class TabState:
    """Everything the window shows about one chat session."""

    session: str
    peer_query: str
    base_title: str
    incoming: bool = False
    named: bool = False              # the title is the peer's nickname (not just what the user typed)
    info: SessionInfo | None = None
    steps: dict[Step, StepStatus] = field(default_factory=lambda: {s: StepStatus() for s in Step})
    lines: list[ChatLine] = field(default_factory=list)
    kept_bytes: int = 0                  # what the lines' texts weigh (keep_line)
    unread: int = 0
    awaiting_answer: bool = False
    ended: str | None = None
    auto: bool = False               # "Connect all" is running the remaining steps
    peer_typing_until: float | None = None
    typing_sent: bool = False
    last_keystroke: float = 0.0
    opened_at: float = 0.0           # when the session started (the node's handshake timeout counts from here)
    waiting_since: float | None = None  # when the caller started waiting for the callee's answer (step 1)
    answered: bool = False           # the user accepted this incoming chat
    close_at: float | None = None    # a failed dial closes itself at this time (after its failure was shown)
    failure: str | None = None       # the node's reason for the last failed step (said once, not again on end)
    key_change: KeyChangeStopped | None = None   # step 2 stopped on a changed key, the user has not answered yet
    key_refused: bool = False        # step 2 refused the ledger's key: the claimed nickname is no identity
    verified: bool | None = None     # the user marked this peer (not) verified in this window

    @property
    def verified_mark(self) -> bool | None:
        """Verified as the user last said in this window, else as the contact store said after step 4."""
        if self.verified is not None:
            return self.verified
        return self.info.peer_verified if self.info else None

    @property
    def nickname_checked(self) -> bool:
        """Step 2 confirmed the peer's nickname from the ledger (before: only what the peer claims)."""
        return self.steps[Step.SWAP_KEYS].state is StepState.DONE and not self.key_refused
    contact: str | None = None       # the contact's fingerprint (hex) once known: opened from it, or step 3 proved it
    contact_verified: bool = False   # that contact's safety number was verified by the user
    lookalike: str | None = None     # the contact whose name this peer's reads like, though its key is another
    automatic: bool = False          # the node opened this chat by itself (waiting texts, or after a drop)
    last_in: float = 0.0             # when the last message arrived (the store marks it read a little later)
    read_marked: float = 0.0         # when the store was last told that this chat was read

    @property
    def ready(self) -> bool:
        """All four steps done and the session still open: the chat entry is enabled."""
        return self.ended is None and all(s.state is StepState.DONE for s in self.steps.values())

    @property
    def running(self) -> Step | None:
        return next((s for s, st in self.steps.items() if st.state is StepState.RUNNING), None)

    @property
    def next_step(self) -> Step | None:
        return next((s for s, st in self.steps.items() if st.state is not StepState.DONE), None)

    @property
    def title(self) -> str:
        mark = f" {VERIFIED}" if self.contact_verified or self.verified_mark else ""
        title = ("✗ " if self.ended is not None else "") + ("⚠ " if self.lookalike else "") + self.base_title + mark
        return f"{title} ({self.unread})" if self.unread else title

    @property
    def peer_name(self) -> str:
        if self.key_refused:
            # step 2 refused the key the ledger names: whatever nickname was claimed is nobody's identity
            return clean_name(self.info.peer_address if self.info and self.info.peer_address else self.peer_query)
        if self.info and self.info.peer_nickname:
            return self.marked(clean_name(self.info.peer_nickname))
        return self.marked(self.base_title)

    def marked(self, name: str) -> str:
        """``name`` (this peer's, as shown) with the look-alike mark when its name reads like a contact's."""
        return f"{name} (not your contact {self.lookalike})" if self.lookalike else name


def peer_label(tab: TabState) -> str:
    """The peer panel's "Peer" value: a nickname is the identity only once step 2 confirmed it (issue 15)."""
    nick = tab.info.peer_nickname if tab.info else None
    if not nick:
        return "not known yet"
    if tab.key_refused:
        return f"not confirmed — step 2 refused the key (it calls itself {clean_name(nick)})"
    if not tab.nickname_checked:
        return f"calls itself {clean_name(nick)}, not checked yet"
    return clean_name(nick) + (" · ✓ verified" if tab.verified_mark else "")


def tab_peer_rows(tab: TabState) -> list[tuple[str, str]]:
    return [(name, peer_label(tab) if name == "Peer" else value) for name, value in peer_rows(tab.info)]


def peer_rows(info: SessionInfo | None) -> list[tuple[str, str]]:
    """The peer panel as label/value rows; values not known yet say which step learns them."""
    info = info or SessionInfo(session="", peer_query="")
    ledger = "after step 2"
    if info.ledger_block is not None:
        ledger = f"block {info.ledger_block}"
        if info.confirmations is not None:
            ledger += f" · {count(info.confirmations, 'confirmation')}"
    return [
        ("Peer", clean_name(info.peer_nickname, "not known yet")),
        ("Address", clean_name(info.peer_address, "after step 1")),
        ("Fingerprint", info.peer_fingerprint or "after step 2"),
        ("Ledger", ledger),
        ("Path", clean_name(info.path, "after step 1")),
        ("Key epoch", "after step 4" if info.key_epoch is None else str(info.key_epoch)),
        ("Next rotation", "after step 4" if info.until_rotation is None
         else f"in {count(info.until_rotation, 'message')}"),
        ("Safety number", info.safety_number or "after step 2"),
    ]
