"""One-time-pad mode of a chat (issue 17): the request/accept exchange that switches a session's texts to the
pad and back, and the pad's use for the session's texts.

Both users must agree, each way: ``on?`` asks for pad mode, ``on!`` accepts, ``no`` declines (or withdraws a
request), ``off?`` asks to fall back to AES only, ``off!`` accepts. The states and their transitions are the
table :data:`TRANSITIONS`; anything else from the peer is ignored with a notice. While pad mode is on (states
``on``, ``asked_off``, ``offered_off``) every text we send is a pad frame, and a text from the peer that is not
is refused (a downgrade). Each ``pad_mode`` frame names the pad's id; ``on?``/``on!`` for another pad than ours
is declined.

Everything here runs with the session's lock held (the node's threads own the IO); the pad's record of spent
bytes is written to disk before a frame that uses them is handed to the writer (:mod:`p2pchat.pad`).
"""

from __future__ import annotations

import enum
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from p2pchat.events import PadModeChanged
from p2pchat.foundation.codec import Frame
from p2pchat.foundation.errors import UserError
from p2pchat.pad import Pad, PadError

if TYPE_CHECKING:
    from p2pchat.channel import Channel
    from p2pchat.session import Session


class PadState(enum.Enum):
    OFF = "off"
    ASKED = "asked"              # we asked for pad mode
    OFFERED = "offered"          # the peer asked for pad mode; our user answers
    ON = "on"
    ASKED_OFF = "asked_off"      # pad mode on; we asked to fall back to AES only
    OFFERED_OFF = "offered_off"  # pad mode on; the peer asked to fall back; our user answers


S = PadState
PAD_REQUIRED = frozenset({S.ON, S.ASKED_OFF, S.OFFERED_OFF})

# (state, input) -> (next state, op to send or None). Inputs: the user's "ask_on", "ask_off", "accept", "decline";
# the peer's ops "on?", "on!", "no", "off?", "off!".
TRANSITIONS: dict[tuple[PadState, str], tuple[PadState, str | None]] = {
    (S.OFF, "ask_on"): (S.ASKED, "on?"),
    (S.OFFERED, "ask_on"): (S.ON, "on!"),
    (S.OFFERED, "accept"): (S.ON, "on!"),
    (S.OFFERED, "decline"): (S.OFF, "no"),
    (S.ASKED, "ask_off"): (S.OFF, "no"),            # withdraw our request
    (S.ON, "ask_off"): (S.ASKED_OFF, "off?"),
    (S.OFFERED_OFF, "ask_off"): (S.OFF, "off!"),
    (S.OFFERED_OFF, "accept"): (S.OFF, "off!"),
    (S.OFFERED_OFF, "decline"): (S.ON, "no"),
    (S.ASKED_OFF, "ask_on"): (S.ON, "no"),           # withdraw our request to fall back
    # the peer's ops
    (S.OFF, "on?"): (S.OFFERED, None),
    (S.ASKED, "on?"): (S.ON, "on!"),                 # both asked at once
    (S.ASKED, "on!"): (S.ON, None),
    (S.ASKED, "no"): (S.OFF, None),
    (S.OFFERED, "no"): (S.OFF, None),                # the peer withdrew
    (S.ON, "on!"): (S.ON, None),                     # the answer to both asking at once
    (S.ON, "off?"): (S.OFFERED_OFF, None),
    (S.ASKED_OFF, "off?"): (S.OFF, "off!"),          # both asked at once
    (S.ASKED_OFF, "off!"): (S.OFF, None),
    (S.ASKED_OFF, "no"): (S.ON, None),
    (S.OFFERED_OFF, "no"): (S.ON, None),
    (S.OFF, "off!"): (S.OFF, None),                  # the answer to both asking at once
    (S.OFF, "no"): (S.OFF, None),
}

_SAY = {
    S.OFF: "pad mode is off: texts are protected by AES-256-GCM only",
    S.ASKED: "you asked for pad mode; waiting for the peer to agree",
    S.OFFERED: "the peer asks to switch to the one-time pad: /pad yes to agree, /pad no to decline",
    S.ON: "pad mode is on: texts are encrypted with the one-time pad (and still travel inside AES)",
    S.ASKED_OFF: "you asked to fall back to AES only; pad mode stays on until the peer agrees",
    S.OFFERED_OFF: "the peer asks to fall back to AES only: /pad yes to agree, /pad no to keep the pad",
}


class PadModeError(UserError):
    """The user asked for something pad mode cannot do now (no pad, nothing to answer)."""


@dataclass
class _Link:
    state: PadState = PadState.OFF
    pad: Pad | None = None


class PadModes:
    """The pad mode of every session of a node (``data_dir``'s pads, our fingerprint ``me``)."""

    def __init__(self, data_dir: Path, me: bytes, emit: Callable[[PadModeChanged], None]) -> None:
        self.data_dir = data_dir
        self.me = me
        self._emit = emit
        self._links: weakref.WeakKeyDictionary[Session, _Link] = weakref.WeakKeyDictionary()

    def _link(self, session: Session) -> _Link:
        link = self._links.get(session)
        if link is None:
            link = self._links[session] = _Link()
            if session.peer_fp is not None:
                try:
                    link.pad = Pad.open(self.data_dir, self.me, bytes.fromhex(session.peer_fp))
                except PadError:
                    link.pad = None        # an unusable pad is reported when pad mode is asked for
        return link

    def state(self, session: Session) -> PadState:
        return self._link(session).state

    def pad_required(self, session: Session) -> bool:
        return session in self._links and self._links[session].state in PAD_REQUIRED

    def status_event(self, session: Session, text: str) -> PadModeChanged:
        link = self._link(session)
        st = link.pad.status() if link.pad is not None else None
        return PadModeChanged(session.id, link.state.value, st.send_left if st else None,
                              st.recv_left if st else None, text)

    def changed(self, session: Session, text: str) -> None:
        self._emit(self.status_event(session, text))

    # --- the user's side ---------------------------------------------------------------------------------

    def user(self, session: Session, channel: Channel, action: str) -> list[Frame]:
        """``action``: ``ask_on``, ``ask_off``, ``accept`` or ``decline``; returns the frames to send."""
        link = self._link(session)
        if action == "ask_on" and link.state is S.OFF:
            if session.peer_fp is not None:
                link.pad = Pad.open(self.data_dir, self.me, bytes.fromhex(session.peer_fp))   # errors say why
            if link.pad is None:
                raise PadModeError("no one-time pad is installed for this contact: make one with p2pchat pad new, "
                                   "carry it over in person, and both run p2pchat pad import")
        step = TRANSITIONS.get((link.state, action))
        if step is None:
            raise PadModeError(f"nothing to do: {_SAY[link.state]}")
        assert link.pad is not None
        link.state, op = step
        frames = channel.send_pad_control(op, link.pad.pad_id) if op is not None else []
        self.changed(session, _SAY[link.state])
        return frames

    def seal_text(self, session: Session, channel: Channel, text: str) -> tuple[int, list[Frame]]:
        """A text in pad mode: pad bytes are spent (on disk) first, then the frame is made."""
        link = self._link(session)
        assert link.pad is not None and link.state in PAD_REQUIRED
        now = time.time()
        box = link.pad.seal(text)          # PadExhausted: said plainly, nothing sent
        out = channel.send_pad_text(box, now)
        self.changed(session, "")
        return out

    # --- the peer's side -----------------------------------------------------------------------------------

    def peer_op(self, session: Session, channel: Channel, op: str, pad_id: bytes) -> tuple[list[Frame], str]:
        """The peer's ``pad_mode`` op: the frames to answer with and a sentence (empty: nothing to say)."""
        link = self._link(session)
        if op in ("on?", "on!") and (link.pad is None or link.pad.pad_id != pad_id):
            if link.state in (S.OFF, S.ASKED):
                link.state = S.OFF
                frames = channel.send_pad_control("no", pad_id)
                self.changed(session, "the peer asked for pad mode with a pad that is not installed here "
                                      f"(id {pad_id.hex()}); it was declined")
                return frames, ""
            return [], "the peer named another pad in a pad-mode request; ignored"
        step = TRANSITIONS.get((link.state, op))
        if step is None:
            return [], f"the peer sent a pad-mode request out of turn ({op} while {link.state.value}); ignored"
        before = link.state
        link.state, reply = step
        frames = channel.send_pad_control(reply, pad_id) if reply is not None else []
        if link.state is not before:
            text = _SAY[link.state]
            if op == "no":
                text = "the peer declined: " + text
            self.changed(session, text)
        return frames, ""

    def open_text(self, session: Session, box: bytes) -> str:
        """A pad text from the peer, checked and decrypted (its pad bytes recorded as spent); raises
        :class:`~p2pchat.pad.PadRefused` or :class:`PadModeError`."""
        link = self._link(session)
        if link.pad is None:
            raise PadModeError("the peer sent a text encrypted with a one-time pad, but no pad is installed for "
                               "this contact; it cannot be read")
        text = link.pad.open_frame(box)
        self.changed(session, "")
        return text


__all__ = ["PAD_REQUIRED", "TRANSITIONS", "PadModeError", "PadModes", "PadState"]
