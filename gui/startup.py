"""What the window shows while the app gets ready: making the identity key on a first run, starting the
app's ledger node. The work runs on a worker thread (the key itself is made in other processes, see
:mod:`p2pchat.foundation.keygen`); the Tk loop keeps running and shows an indeterminate bar with the
elapsed time, so the window never freezes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import customtkinter as ctk

log = logging.getLogger(__name__)

T = TypeVar("T")
POLL_MS = 100


class Cancelled(Exception):
    """The user closed the window (or sent SIGINT/SIGTERM) while the app was getting ready."""


class _Job(Generic[T]):
    def __init__(self, work: Callable[[threading.Event], T]) -> None:
        self.work = work
        self.cancel = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="gui-startup")

    def _run(self) -> None:
        try:
            self.result = self.work(self.cancel)
        except BaseException as exc:   # handed to the Tk thread, which re-raises it
            self.error = exc


class StartupView:
    """A small progress view on the Tk root (hidden again when done). ``close_requested()`` says when the
    user wants to quit: the work is then cancelled through its event and :class:`Cancelled` is raised."""

    def __init__(self, root: ctk.CTk, close_requested: Callable[[], bool]) -> None:
        self.root = root
        self._close_requested = close_requested
        self.frame: ctk.CTkFrame | None = None
        self.message: ctk.CTkLabel | None = None
        self.elapsed: ctk.CTkLabel | None = None
        self.bar: ctk.CTkProgressBar | None = None
        self.shown_text = ""
        self._cancel_by_button = False

    def _show(self, text: str) -> None:
        if self.frame is None:
            self.root.title("p2pchat — getting ready")
            self.root.geometry("420x150")
            self.frame = ctk.CTkFrame(self.root, fg_color="transparent")
            self.frame.pack(fill="both", expand=True, padx=24, pady=24)
            self.message = ctk.CTkLabel(self.frame, text="", anchor="w", font=ctk.CTkFont(size=15, weight="bold"))
            self.message.pack(fill="x")
            self.bar = ctk.CTkProgressBar(self.frame, mode="indeterminate")
            self.bar.pack(fill="x", pady=(12, 6))
            self.bar.start()
            self.elapsed = ctk.CTkLabel(self.frame, text="", anchor="w")
            self.elapsed.pack(fill="x")
            self.root.protocol("WM_DELETE_WINDOW", self._on_close_button)
            self.root.deiconify()
        assert self.message is not None
        self.message.configure(text=text)
        self.shown_text = text

    def _on_close_button(self) -> None:
        self._cancel_by_button = True

    def run(self, text: str, work: Callable[[threading.Event], T]) -> T:
        """Show ``text`` and run ``work(cancel_event)`` on a worker thread until it returns; its result, or
        its exception re-raised here."""
        self._show(text)
        job: _Job[T] = _Job(work)
        started = time.monotonic()
        job.thread.start()

        def poll() -> None:
            if self._close_requested() or self._cancel_by_button:
                job.cancel.set()   # the work sees it and ends early (raising Cancelled or its own error)
            if not job.thread.is_alive():
                self.root.quit()
                return
            if self.elapsed is not None:
                self.elapsed.configure(text=f"{time.monotonic() - started:.1f} s")
            self.root.after(POLL_MS, poll)

        self.root.after(POLL_MS, poll)
        try:
            self.root.mainloop()
        finally:
            job.cancel.set()
            job.thread.join()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    @property
    def cancelled(self) -> bool:
        """The user asked to quit while the view was shown."""
        return self._cancel_by_button or self._close_requested()

    def close(self) -> None:
        """Remove the view and hide the root again (the chat window is built on it next)."""
        if self.frame is None:
            return
        if self.bar is not None:
            self.bar.stop()
        self.frame.destroy()
        self.frame = None
        self.root.protocol("WM_DELETE_WINDOW", lambda: None)
        self.root.withdraw()
