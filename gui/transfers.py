"""Files in the window (issue 16): a "Send file…" button under each chat with the transfer's progress and a
Cancel button, files dropped onto a conversation (:mod:`gui.file_drop`, where Tk can take drops), and a dialog for
each file a peer offers.

:class:`FileTransfers` is the Tk-free presenter (tests drive it directly): it takes the node's file events, keeps
one row per transfer and says what each chat's file bar shows. A file sent in the conversation of a contact that
cannot be reached waits like a text: one own line "📎 name (size)" marked ``(waiting)`` with a cancel link, which
turns to "…" once offered and ✓ once delivered (:class:`~p2pchat.events.FileWaiting`). :class:`TransfersUi` is the
Tk side: one :class:`FileBar` per chat pane, the file chooser and drops, and one offer dialog at a time. Node calls
go through the window's command worker (sending reads the whole file once for its SHA-256, never on the Tk thread).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from tkinter import filedialog
from typing import TYPE_CHECKING, Protocol

import customtkinter as ctk

from gui.file_drop import DropTarget
from gui.models import ChatLine
from gui.text import clean, clean_name
from p2pchat.display import quoted
from p2pchat.downloads import human
from p2pchat.events import Event, FileFinished, FileOffer, FileProgress, FileWaiting
from p2pchat.file_driver import describe
from p2pchat.file_resume import PendingFile
from p2pchat.foundation.errors import UserError

if TYPE_CHECKING:
    from gui.controller import Commands
    from gui.widgets.style import Fonts


class FileApi(Protocol):
    """The part of :class:`p2pchat.node.ChatNode` that moves files."""

    def send_file(self, session: str, path: str) -> str: ...
    def answer_file(self, session: str, transfer: str, accept: bool) -> None: ...
    def cancel_file(self, session: str, transfer: str) -> None: ...
    def send_file_to_contact(self, fp: str, path: str) -> int: ...
    def waiting_files(self, fp: str | None = None) -> list[PendingFile]: ...


class FileLines(Protocol):
    """The transcript lines of files kept for a contact (:class:`gui.controller.ChatController` provides them)."""

    def waiting_contact(self, session: str) -> str | None: ...
    def file_line(self, session: str, text: str) -> ChatLine | None: ...
    def file_line_changed(self, line: ChatLine) -> None: ...
    def contact_file_notice(self, fp: str, text: str) -> None: ...


EARLY_KEPT = 64         # FileWaiting events that came before their line learnt its number
FINISHED_KEPT = 64      # [redrelay] finished transfers whose rows are kept; older ones are forgotten, so a peer that
                        # offers and cancels files without end cannot grow the window's state (or its scans)


@dataclass
class FileRow:
    session: str
    transfer: str
    name: str               # cleaned for display
    outgoing: bool
    size: int = 0
    done: int = 0
    text: str = ""          # the progress line
    finished: bool = False


class FileTransfers:
    """State of every transfer of one window; ``notice(session, text)`` puts a line in a chat's transcript."""

    def __init__(self, node: FileApi, commands: Commands, notice: Callable[[str, str], None],
                 clock: Callable[[], float] = time.monotonic, *, lines: FileLines | None = None) -> None:
        self.node, self.commands, self.notice, self.clock = node, commands, notice, clock
        self.lines = lines
        self.rows: dict[str, FileRow] = {}
        self.offers: list[FileOffer] = []
        self.changed: set[str] = set()          # sessions whose file bar must be redrawn
        self.waiting: dict[int, ChatLine] = {}  # file number -> its transcript line, while it may still change
        self._early: dict[int, FileWaiting] = {}

    def handle(self, event: Event) -> bool:
        """Apply a file event; False for any other event."""
        if isinstance(event, FileWaiting):
            line = self.waiting.get(event.ref)
            if line is None and event.status == "dropped" and self.lines is not None:
                # a file sent in a chat that was cut, found changed when it was to be offered again
                self.lines.contact_file_notice(event.fp, f"⚠ {clean(event.text)}")
            if line is None:
                self._early[event.ref] = event
                while len(self._early) > EARLY_KEPT:
                    self._early.pop(next(iter(self._early)))
            else:
                self._apply(line, event)
            return True
        if isinstance(event, FileOffer) and event.resumes_at is not None:     # accepted before: no question
            self.rows[event.transfer] = FileRow(event.session, event.transfer, clean_name(event.name), False,
                                                event.size, event.resumes_at, text="resuming…")
            self.notice(event.session, f"{clean_name(event.sender)} sends {quoted(clean_name(event.name))} "
                                       f"({human(event.size)}) again: it resumes at byte {event.resumes_at:,}")
        elif isinstance(event, FileOffer):
            self.offers.append(event)
            self.rows[event.transfer] = FileRow(event.session, event.transfer, clean_name(event.name), False,
                                                event.size, text="offered, waiting for your answer")
            self.notice(event.session, f"{clean_name(event.sender)} offers the file {quoted(clean_name(event.name))} "
                                       f"({human(event.size)})")
        elif isinstance(event, FileProgress):
            row = self.rows.setdefault(event.transfer, FileRow(event.session, event.transfer,
                                                               clean_name(event.name), event.outgoing))
            row.size, row.done = event.size, event.done
            row.text = ("sent " if event.outgoing else "received ") + describe(event)
        elif isinstance(event, FileFinished):
            row = self.rows.setdefault(event.transfer, FileRow(event.session, event.transfer,
                                                               clean_name(event.name), event.outgoing))
            row.finished, row.text = True, clean(event.text)
            self.offers = [o for o in self.offers if o.transfer != event.transfer]
            self._forget_finished()
            mark = "✓" if event.ok else "⚠"
            self.notice(event.session, f"{mark} {row.name}: {clean(event.text)}")
        else:
            return False
        self.changed.add(event.session)
        return True

    def _forget_finished(self) -> None:
        """Keep the rows of the last FINISHED_KEPT finished transfers (rows are kept in the order they came)."""
        finished = [t for t, r in self.rows.items() if r.finished]
        for transfer in finished[:-FINISHED_KEPT]:
            del self.rows[transfer]

    def current(self, session: str) -> FileRow | None:
        """The transfer the chat's file bar shows: the latest one still running, else None."""
        live = [r for r in self.rows.values() if r.session == session and not r.finished and r.size >= 0]
        return live[-1] if live else None

    def send(self, session: str, path: str) -> None:
        """Send a file in ``session``: offered in its chat, or kept for its contact when it cannot be reached."""
        fp = self.lines.waiting_contact(session) if self.lines is not None else None
        if fp is not None:
            self._send_waiting(session, fp, path)
            return
        name = clean_name(Path(path).name)
        self.notice(session, f"offering {name}…")
        self.commands.submit(functools.partial(self.node.send_file, session, path),
                             done=functools.partial(self._offered, session, name),
                             failed=lambda exc: self.notice(session, f"⚠ {name} was not sent: {clean(str(exc))}"))

    def _offered(self, session: str, name: str, transfer: object) -> None:
        if isinstance(transfer, str):
            self.rows[transfer] = FileRow(session, transfer, name, True, text="waiting for the peer to accept")
            self.changed.add(session)

    def _send_waiting(self, session: str, fp: str, path: str) -> None:
        assert self.lines is not None
        try:
            size = human(Path(path).stat().st_size)
        except OSError:
            size = "?"
        line = self.lines.file_line(session, f"📎 {clean_name(Path(path).name)} ({size})")
        if line is None:
            return

        def kept(ref: object) -> None:
            if isinstance(ref, int):
                line.file_ref = ref
                self.waiting[ref] = line
                early = self._early.pop(ref, None)
                if early is not None:
                    self._apply(line, early)

        def failed(exc: Exception) -> None:
            line.failed = clean(str(exc))
            assert self.lines is not None
            self.lines.file_line_changed(line)

        self.commands.submit(functools.partial(self.node.send_file_to_contact, fp, path), done=kept, failed=failed)

    def show_kept(self, session: str, fp: str) -> None:
        """The files an earlier run (or another tab) kept for ``fp``, as waiting lines in ``session``."""
        if self.lines is None:
            return
        for f in self.node.waiting_files(fp):
            if f.ref in self.waiting:
                continue
            line = self.lines.file_line(session, f"📎 {clean_name(f.name)} ({human(f.size)})")
            if line is not None:
                line.file_ref = f.ref
                self.waiting[f.ref] = line

    def _apply(self, line: ChatLine, ev: FileWaiting) -> None:
        """A kept file's line follows its state: waiting, … once offered, ✓ delivered, or how it ended."""
        if ev.status == "waiting":
            line.stored = "waiting"
        elif ev.status == "offered":
            line.stored = ""
        elif ev.status == "done":
            line.stored, line.delivered = "", True
        else:                       # ended, cancelled, dropped
            line.stored = ev.status
            if ev.status == "dropped":
                line.failed = clean(ev.text)
        if ev.status in ("done", "ended", "cancelled", "dropped"):
            self.waiting.pop(ev.ref, None)
        if self.lines is not None:
            self.lines.file_line_changed(line)

    def answer(self, offer: FileOffer, accept: bool) -> None:
        self.offers = [o for o in self.offers if o.transfer != offer.transfer]
        row = self.rows.get(offer.transfer)
        if row is not None:
            row.text = "accepted, starting…" if accept else "declined"
            row.finished = not accept
            self.changed.add(offer.session)
        self.commands.submit(functools.partial(self.node.answer_file, offer.session, offer.transfer, accept),
                             failed=lambda exc: self.notice(offer.session, f"⚠ {clean(str(exc))}"))

    def cancel(self, session: str) -> None:
        row = self.current(session)
        if row is not None:
            self.commands.submit(functools.partial(self.node.cancel_file, session, row.transfer),
                                 failed=lambda exc: self.notice(session, f"⚠ {clean(str(exc))}"))

    def forget(self, session: str) -> None:
        self.rows = {t: r for t, r in self.rows.items() if r.session != session}
        self.offers = [o for o in self.offers if o.session != session]


class FileBar(ctk.CTkFrame):
    """Under a chat: "Send file…", and while a file moves its name, progress and Cancel."""

    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts, *, on_send: Callable[[], None],
                 on_cancel: Callable[[], None]) -> None:
        super().__init__(master, fg_color="transparent")
        self.grid_columnconfigure(1, weight=1)
        self.send_button = ctk.CTkButton(self, text="Send file…", width=96, font=fonts.body, command=on_send)
        self.send_button.grid(row=0, column=0, rowspan=2, padx=(0, 6))
        self.label = ctk.CTkLabel(self, text="", font=fonts.small, anchor="w")
        self.label.grid(row=0, column=1, sticky="ew")
        self.progress = ctk.CTkProgressBar(self, height=8)
        self.cancel_button = ctk.CTkButton(self, text="Cancel", width=70, font=fonts.body, command=on_cancel)

    def show(self, row: FileRow | None, enabled: bool) -> None:
        self.send_button.configure(state="normal" if enabled else "disabled")
        if row is None:
            self.label.configure(text="")
            self.progress.grid_remove()
            self.cancel_button.grid_remove()
            return
        self.label.configure(text=f"{row.name}: {row.text}")
        self.progress.grid(row=1, column=1, sticky="ew", pady=(2, 0))
        self.progress.set(row.done / row.size if row.size else 0.0)
        self.cancel_button.grid(row=0, column=2, rowspan=2, padx=(6, 0))


class TransfersUi:
    """The Tk side for one window: a :class:`FileBar` per chat pane, the file chooser and the offer dialogs."""

    def __init__(self, top: ctk.CTkBaseClass, fonts: Fonts, presenter: FileTransfers,
                 ask: Callable[[str, str, str, Callable[[bool], None]], None],
                 ready: Callable[[str], bool]) -> None:
        self.top, self.fonts, self.presenter = top, fonts, presenter
        self.ask = ask              # the window's confirm dialog: (title, question, confirm, then)
        self.ready = ready          # whether a chat can take files now (its four steps are done, or they wait)
        self.bars: dict[str, FileBar] = {}
        self._asking = False
        self.drop = DropTarget(top)  # files dropped onto a conversation (off where tkdnd cannot load)

    def attach(self, session: str, pane: ctk.CTkFrame, row: int) -> None:
        bar = FileBar(pane, self.fonts, on_send=functools.partial(self.choose, session),
                      on_cancel=functools.partial(self.presenter.cancel, session))
        bar.grid(row=row, column=0, columnspan=3, sticky="ew", pady=(4, 0))
        self.bars[session] = bar
        bar.show(None, self.ready(session))
        self.drop.register(pane, functools.partial(self.dropped, session))

    def dropped(self, session: str, paths: list[str]) -> None:
        """Files dropped onto ``session``'s conversation: each is sent like one chosen with "Send file…"."""
        if session not in self.bars:
            return
        if not self.ready(session):
            self.presenter.notice(session, "⚠ not sent: finish the four steps first, then drop the files again")
        else:
            for path in paths:
                if Path(path).is_file():
                    self.presenter.send(session, path)
                else:
                    self.presenter.notice(session, f"⚠ {clean_name(Path(path).name)} was not sent: only files "
                                                   "can be sent, not folders or links to elsewhere")
        self.render()

    def detach(self, session: str) -> None:
        self.bars.pop(session, None)
        self.presenter.forget(session)

    def choose(self, session: str) -> None:
        path = filedialog.askopenfilename(parent=self.top, title="Send a file")
        if path:
            self.presenter.send(session, path)
            self.render()

    def render(self, sessions: set[str] | None = None) -> None:
        """Redraw the bars whose chats changed (and every bar's button state when ``sessions`` is given)."""
        p = self.presenter
        for session in (p.changed | (sessions or set())) & set(self.bars):
            self.bars[session].show(p.current(session), self.ready(session))
        p.changed.clear()
        if p.offers and not self._asking:
            self._ask(p.offers[0])

    def _ask(self, offer: FileOffer) -> None:
        self._asking = True
        # [red team] the peer's names in guillemets they cannot close: "a” (1 KiB) shared in the group “lab"
        # made the question show a size and a group of the peer's choosing before the real ones
        where = f" shared in the group {quoted(clean_name(offer.group_name))}" if offer.group else ""    # issue 18
        question = (f"{clean_name(offer.sender)} offers the file {quoted(clean_name(offer.name))}{where} "
                    f"({human(offer.size)}). "
                    f"Accepted, it is saved in your downloads folder as {quoted(clean_name(offer.saved_as))}.")

        def then(yes: bool) -> None:
            self._asking = False
            try:
                self.presenter.answer(offer, yes)
            except UserError as exc:
                self.presenter.notice(offer.session, f"⚠ {clean(str(exc))}")
            self.render()

        self.ask("Incoming file", question, "Accept", then)


__all__ = ["FileApi", "FileBar", "FileLines", "FileRow", "FileTransfers", "TransfersUi"]
