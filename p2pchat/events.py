"""Events a chat node reports to its user interface (terminal or GUI) through a queue.

The node's threads put these on ``ChatNode.events``; a UI drains the queue on its own thread (the GUI with
Tk's ``after()``), so no network thread ever touches the UI. Every event names the session it belongs to.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from p2pchat.steps import Step


@dataclass(frozen=True)
class SessionInfo:
    """What a UI shows about the peer of a session (fields are None until the step that learns them)."""

    session: str
    peer_query: str                  # what the user typed (IP, nickname or fingerprint) or the caller's address
    peer_address: str | None = None  # "ip:port" actually connected to / from
    peer_nickname: str | None = None
    peer_fingerprint: str | None = None     # formatted in short groups
    ledger_block: int | None = None         # height of the block holding the peer's record
    confirmations: int | None = None
    path: str | None = None                 # "direct" or "relay ip:port"
    key_epoch: int | None = None
    until_rotation: int | None = None       # messages this side sends before the next key rotation
    safety_number: str | None = None
    steps_done: tuple[Step, ...] = ()
    incoming: bool = False
    automatic: bool = False                 # opened by the node itself: to deliver waiting texts or to reconnect
    peer_verified: bool | None = None       # after step 4: the user marked this key verified (None: no contacts)


@dataclass(frozen=True)
class StepResult:
    session: str
    step: Step
    ok: bool
    detail: str          # "✓ detail" / "✗ reason" is the UI's job; this is the plain sentence


@dataclass(frozen=True)
class StepRefused:
    """A step was asked for out of order; ``reason`` names the step that must come first."""

    session: str
    step: Step
    reason: str


@dataclass(frozen=True)
class IncomingChat:
    """Someone connected (step 1 on their side); the user must accept or reject with ``ChatNode.accept``."""

    session: str
    peer_address: str
    nickname: str


@dataclass(frozen=True)
class SessionUpdated:
    info: SessionInfo


@dataclass(frozen=True)
class MessageReceived:
    session: str
    msg_id: int
    text: str
    sender: str
    sent_at: float       # sender's clock, seconds since the epoch
    received_at: float


@dataclass(frozen=True)
class DeliveryReceipt:
    session: str
    msg_id: int


@dataclass(frozen=True)
class PeerTyping:
    session: str
    typing: bool


@dataclass(frozen=True)
class Notice:
    """Something the user should see in the chat pane: ``kind`` is ``rotation``, ``refused`` (a tampered,
    replayed or out-of-order frame that was dropped), ``path``, ``key-change``, ``ledgers`` (the two sides'
    ledgers disagree about final history: p2pchat.handshake_driver.disagreement_text) or ``info``."""

    session: str
    kind: str
    text: str


@dataclass(frozen=True)
class SessionEnded:
    session: str
    reason: str
    clean: bool = False   # True for a goodbye, False for errors and vanished peers


@dataclass(frozen=True)
class KeyChangeStopped:
    """Step 2 stopped because the ledger names another key than the one pinned for this peer (issue 13).
    ``reason`` is the full warning (what was expected, what the ledger says, since when, what may be happening);
    ``new_fingerprint`` (64 hex digits) is what :meth:`ChatNode.accept_new_key` takes; ``verified``: the pinned
    key was verified, so accepting needs ``override_verified``. The failed :class:`StepResult` follows."""

    session: str
    reason: str
    new_fingerprint: str
    old_fingerprint: str
    verified: bool
    contact: str = ""            # the name the user knows the pinned contact by (local name or nickname)


@dataclass(frozen=True)
class FileOffer:
    """The peer offers a file (:mod:`p2pchat.transfer`); answer with ``ChatNode.answer_file``. ``name`` comes from
    the network: display it through ``visible()``; ``saved_as`` is the safe name it would be stored under.
    ``resumes_at`` (not None): the user accepted this very file from this sender before and the node takes it by
    itself, resuming at that verified byte; nothing to answer. ``group`` (hex id; else empty): the file the peer
    shared in that group as its entry ``counter`` — show the offer in the group's conversation."""
    session: str
    transfer: str        # hex id, what answer_file/cancel_file take
    name: str
    saved_as: str
    size: int
    sender: str
    resumes_at: int | None = None
    group: str = ""      # [groups, issue 18]
    group_name: str = ""
    counter: int = 0


@dataclass(frozen=True)
class FileProgress:
    session: str
    transfer: str
    outgoing: bool
    name: str
    done: int            # bytes through, from the start of the file
    size: int
    session_bytes: int   # bytes moved in this session (after a resume, not the earlier part)
    elapsed: float       # seconds since this session's part began


@dataclass(frozen=True)
class FileFinished:
    session: str
    transfer: str
    outgoing: bool
    name: str
    ok: bool
    state: str           # done, declined, cancelled, failed
    text: str            # one plain sentence (our own words)
    path: str | None = None
    session_bytes: int = 0
    resumed_from: int = 0


@dataclass(frozen=True)
class NodeError:
    """An error not tied to one session (e.g. the listening port is taken)."""

    text: str
    session: str | None = None


class Presence(enum.Enum):
    """What the node knows of whether a contact can be reached (shown beside the contact)."""

    ONLINE = "online"            # a chat with it is open (step 4 done)
    CONNECTING = "connecting"    # a call is under way
    OFFLINE = "offline"          # the last call failed; the next is scheduled
    UNKNOWN = "unknown"          # nothing tried since the node started


@dataclass(frozen=True)
class OutboxChanged:
    """A text waiting for a contact changed (``status``: waiting, sent, cancelled; ``row`` its history row) or
    the contact's :class:`Presence` did (``row`` and ``status`` None). Not tied to a session."""

    fp: str
    row: int | None
    status: str | None
    presence: Presence


@dataclass(frozen=True)
class FileWaiting:
    """A file kept for a contact changed (issue 16, :mod:`p2pchat.file_resume`): ``status`` is ``waiting`` (kept,
    to be offered when the contact can be reached), ``offered`` (offered in a chat, by itself after a cut),
    ``done``, ``ended`` (declined, cancelled or failed: ``text`` names which), ``cancelled`` (by this user) or
    ``dropped`` (the file changed or went away; ``text`` says so). ``ref`` is its number (``w3``)."""

    fp: str
    ref: int
    name: str           # the file's base name on this computer (display through the UI's escaping)
    size: int
    status: str
    text: str


@dataclass(frozen=True)
class SecretQuestion:
    """The peer asks a question for the shared-secret check; answer with ``ChatNode.answer_secret``.
    ``question`` is the peer's text (at most 200 characters): display it as data."""

    session: str
    question: str


@dataclass(frozen=True)
class SecretResult:
    """A shared-secret check ended: ``matched`` (then the contact is marked verified), else why not
    (``reason``: our own sentence, never the peer's text)."""

    session: str
    matched: bool
    reason: str


# --- issue 17: one-time-pad mode -------------------------------------------------------------------------
@dataclass(frozen=True)
class PadModeChanged:
    """A session's pad mode or pad changed (p2pchat.pad_mode): ``state`` (``off``, ``asked``, ``offered``,
    ``on``, ``asked_off``, ``offered_off``), pad bytes left to send and to receive (``None``: no pad for this
    contact) and a sentence for the chat pane (empty when only the counts changed)."""

    session: str
    state: str
    send_left: int | None
    recv_left: int | None
    text: str


# --- [groups, issue 18] -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GroupMessage:
    """A group message to show (``sender_name``: as the member who added it named it, "" for the creator or a
    former member; never shown without ``sender``, never trusted for more);
    ``gap``: messages from this sender before it that never arrived. ``size`` set: a file the sender shared
    (``text`` is its name); its offer follows as a :class:`FileOffer` tagged with this group and counter."""

    group: str            # the group id, hex
    group_name: str
    sender: str           # the sender's key fingerprint, 64 hex digits (the channel's authenticated peer)
    sender_name: str
    counter: int
    text: str
    sent_at: float
    gap: int = 0
    size: int | None = None


@dataclass(frozen=True)
class GroupNotice:
    """Something happened to a group (joined, removed, a frame refused); ``group`` None: not tied to one."""

    group: str | None
    group_name: str
    text: str
    membership: bool = False     # [groupgui] the members changed (the window redraws them from the log)
    warning: bool = False        # [groupgui] something was refused or waits (shown as a warning, not as news)


@dataclass(frozen=True)
class GroupReceipt:
    """My message ``counter`` has reached ``delivered`` of the ``of`` other members."""

    group: str
    group_name: str
    counter: int
    delivered: int
    of: int


Event = (StepResult | StepRefused | IncomingChat | SessionUpdated | MessageReceived | DeliveryReceipt
         | PeerTyping | Notice | SessionEnded | NodeError | KeyChangeStopped | OutboxChanged | FileOffer
         | FileProgress | FileFinished | SecretQuestion | SecretResult | PadModeChanged | GroupMessage | GroupNotice
         | GroupReceipt | FileWaiting)

__all__ = [
    "DeliveryReceipt", "Event", "FileFinished", "FileOffer", "FileProgress", "FileWaiting", "GroupMessage",
    "GroupNotice",
    "GroupReceipt", "IncomingChat", "KeyChangeStopped", "MessageReceived", "NodeError", "Notice", "OutboxChanged",
    "PadModeChanged", "PeerTyping", "Presence", "SecretQuestion", "SecretResult", "SessionEnded", "SessionInfo",
    "SessionUpdated", "StepRefused", "StepResult",
]
