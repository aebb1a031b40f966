"""One-time-pad mode in the window (issue 17): a row in each chat's peer panel with a "One-time pad" switch, a
"Decline" button while the peer asks, and the "pad left: N KiB ↑ / M KiB ↓" label.

The switch asks for pad mode (or to fall back to AES only) and answers the peer's request; both users must agree
(p2pchat.pad_mode). The switch shows the agreed mode, so it flips back until the peer agrees. Node calls go
through the window's :class:`~gui.worker.CommandWorker`; :func:`route` is the window's one hook for
:class:`~p2pchat.events.PadModeChanged` events. :func:`pad_view` holds the wording (no Tk: tests call it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import customtkinter as ctk

from gui.widgets.style import MUTED, Fonts
from gui.worker import CommandWorker
from p2pchat.events import Event, PadModeChanged
from p2pchat.foundation.errors import UserError

PANEL_ROW = 6            # below the peer panel's rows 0-4 (and a row 5 other features may take)
ON_STATES = frozenset({"on", "asked_off", "offered_off"})
# what flipping the switch means in each state
TOGGLE = {"off": "ask_on", "asked": "ask_off", "offered": "accept", "on": "ask_off", "asked_off": "ask_on",
          "offered_off": "accept"}


class PadNode(Protocol):
    def pad_mode(self, session: str, action: str) -> None: ...


@dataclass(frozen=True)
class PadView:
    switch_on: bool
    label: str
    note: str
    can_decline: bool


def pad_left(ev: PadModeChanged) -> str:
    if ev.send_left is None or ev.recv_left is None:
        return "no pad for this contact (p2pchat pad new / import)"
    return f"pad left: {ev.send_left // 1024:,} KiB ↑ / {ev.recv_left // 1024:,} KiB ↓"


def pad_view(ev: PadModeChanged, last_note: str = "") -> PadView:
    """What the row shows for the newest event (a counts-only event keeps the previous sentence)."""
    return PadView(ev.state in ON_STATES, pad_left(ev), ev.text or last_note, ev.state in ("offered", "offered_off"))


class PadRow:
    """The pad-mode row of one chat tab."""

    def __init__(self, panel: ctk.CTkFrame, fonts: Fonts, node: PadNode, worker: CommandWorker,
                 session: str) -> None:
        self._node, self._worker, self.session = node, worker, session
        self.state = "off"
        self.view = PadView(False, "pad: not known before step 4", "", False)
        frame = ctk.CTkFrame(panel, fg_color="transparent")
        frame.grid(row=PANEL_ROW, column=0, columnspan=6, padx=(10, 8), pady=(2, 4), sticky="ew")
        self.switch = ctk.CTkSwitch(frame, text="One-time pad", font=fonts.small, command=self._toggled)
        self.switch.pack(side="left")
        self.decline = ctk.CTkButton(frame, text="Decline", width=64, height=20, font=fonts.small,
                                     command=lambda: self._ask("decline"))
        self.left = ctk.CTkLabel(frame, text=self.view.label, font=fonts.small, text_color=MUTED)
        self.left.pack(side="left", padx=8)
        self.note = ctk.CTkLabel(frame, text="", font=fonts.small, text_color=MUTED, anchor="w", wraplength=520,
                                 justify="left")
        self.note.pack(side="left", fill="x", expand=True)

    def _toggled(self) -> None:
        self._show(self.view)       # the switch shows the agreed mode, not the click
        self._ask(TOGGLE[self.state])

    def _ask(self, action: str) -> None:
        session = self.session
        self._worker.submit(lambda: self._node.pad_mode(session, action), failed=self._failed)

    def _failed(self, exc: UserError) -> None:
        self.note.configure(text=str(exc))

    def update(self, ev: PadModeChanged) -> None:
        self.state = ev.state
        self._show(pad_view(ev, self.view.note))

    def _show(self, view: PadView) -> None:
        self.view = view
        (self.switch.select if view.switch_on else self.switch.deselect)()
        self.left.configure(text=view.label)
        self.note.configure(text=view.note)
        if view.can_decline:
            self.decline.pack(side="left", padx=(6, 0), after=self.switch)
        else:
            self.decline.pack_forget()


def route(event: Event, rows: dict[str, PadRow]) -> bool:
    """The window's hook: a :class:`PadModeChanged` goes to its tab's row (True: handled here)."""
    if not isinstance(event, PadModeChanged):
        return False
    row = rows.get(event.session)
    if row is not None:
        row.update(event)
    return True


def add_pad_row(panel: ctk.CTkFrame, fonts: Fonts, node: PadNode, worker: CommandWorker,
                session: str) -> PadRow:
    return PadRow(panel, fonts, node, worker, session)


__all__ = ["PadRow", "PadView", "add_pad_row", "pad_left", "pad_view", "route"]
