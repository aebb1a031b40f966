"""Texts that wait for a contact who cannot be reached (issue 16), as the window shows them.

A text typed in a contact's conversation with no live chat goes to ``ChatNode.message_contact``: the node keeps it
in the history as ``waiting`` and sends it by itself once the contact can be reached. This class follows those
texts by their history row: :class:`~p2pchat.events.OutboxChanged` turns a line to sent (then "…") or cancelled,
and the history says when the receipt made it ``delivered`` (✓). It also keeps what the node last said of each
contact's :class:`~p2pchat.events.Presence` (the window never probes by itself). No Tk here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gui.models import ChatLine
from p2pchat.events import OutboxChanged, Presence
from p2pchat.history import HistoryMessage

EARLY_ROWS_KEPT = 256      # statuses of rows whose line the window has not registered yet (the call still returning)
RECHECK_AFTER = 1.0        # seconds after a receipt before the history is read for ✓ (the node writes it on a thread)
RECHECK_FOR = 10.0         # receipts older than this no longer trigger reads


@dataclass
class WaitingTexts:
    """History row -> transcript line of every text that waited, and each contact's presence."""

    changed: Callable[[str, ChatLine], None]          # (session, line) to redraw
    lines: dict[int, tuple[str, ChatLine]] = field(default_factory=dict)
    presence: dict[str, Presence] = field(default_factory=dict)
    _early: dict[int, str] = field(default_factory=dict)
    _recheck: dict[str, tuple[float, float]] = field(default_factory=dict)   # fp -> (next read, last receipt)

    def track(self, session: str, line: ChatLine, row: int) -> None:
        """``line`` shows history row ``row`` (a text queued now, or a kept one still waiting or unconfirmed)."""
        line.row = row
        self.lines[row] = (session, line)
        status = self._early.pop(row, None)
        if status is not None:
            self._set(session, line, status)

    def moved(self, old: str, new: str) -> None:
        """The conversation of session ``old`` now lives in session ``new``."""
        for row, (session, line) in list(self.lines.items()):
            if session == old:
                self.lines[row] = (new, line)

    def forget(self, session: str) -> None:
        for row in [r for r, (s, _ln) in self.lines.items() if s == session]:
            del self.lines[row]

    def handle(self, event: OutboxChanged) -> bool:
        """Apply an outbox event; True when the contact's presence changed (its row must be redrawn)."""
        if event.row is not None and event.status is not None:
            found = self.lines.get(event.row)
            if found is None:
                self._early[event.row] = event.status
                while len(self._early) > EARLY_ROWS_KEPT:
                    self._early.pop(next(iter(self._early)))
            else:
                self._set(*found, event.status)
        before = self.presence.get(event.fp)
        self.presence[event.fp] = event.presence
        return before is not event.presence

    def chat_ended(self, fp: str) -> None:
        """A chat with ``fp`` ended: "online" no longer holds (the node says more once it calls again)."""
        if self.presence.get(fp) is Presence.ONLINE:
            del self.presence[fp]

    def recheck(self, fp: str, now: float) -> None:
        """A receipt came in a chat with ``fp`` for a text the window did not send itself, or that chat ended (texts
        sent without a receipt wait again): read the history soon."""
        if any(ln.row is not None and not ln.delivered and ln.stored in ("", "sent")
               for _s, ln in self.lines.values()):
            self._recheck[fp] = (now + RECHECK_AFTER, now)

    def due(self, now: float) -> list[str]:
        """Contacts whose history should be read now for ✓ marks (each read is rescheduled until RECHECK_FOR)."""
        out = []
        for fp, (at, since) in list(self._recheck.items()):
            if now < at:
                continue
            out.append(fp)
            if now - since < RECHECK_FOR:
                self._recheck[fp] = (now + RECHECK_AFTER, since)
            else:
                del self._recheck[fp]
        return out

    def apply(self, kept: list[HistoryMessage]) -> None:
        """Statuses read from the history: lines that became delivered get their ✓, lines sent in a chat that
        dropped before the receipt show waiting again."""
        for m in kept:
            found = self.lines.get(m.id)
            if found is None or found[1].delivered:
                continue
            if m.status == "delivered" or (m.status == "waiting" and found[1].stored != "waiting"):
                self._set(*found, m.status)
        if not any(not ln.delivered and ln.stored in ("", "sent") for _s, ln in self.lines.values()):
            self._recheck.clear()

    def _set(self, session: str, line: ChatLine, status: str) -> None:
        if status == "sent":
            line.stored = ""          # on its way: "…" until the receipt's ✓
        elif status == "delivered":
            line.stored, line.delivered = "", True
        else:
            line.stored = status      # waiting, cancelled
        if status in ("delivered", "cancelled"):
            self.lines.pop(line.row or -1, None)
        self.changed(session, line)
