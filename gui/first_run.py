"""The first run (issue 15): when the data directory has no identity key yet, a short form on the Tk root asks for
a nickname (checked as the ledger checks a record's nickname) and offers a passphrase (entered twice; it encrypts
the identity key and is handed on wherever the app's passphrase goes). Nothing is made or published before the
user presses Continue: the key is made next (gui/startup.py shows progress), then the app's ledger node
registers the chosen nickname. :class:`ReachableNote` then says how long the record takes to be mined and,
plainly, when the user can be reached.
"""

from __future__ import annotations

import tkinter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import customtkinter as ctk

from gui.ledger_view import LedgerSnapshot
from gui.startup import Cancelled
from gui.text import count
from gui.widgets.dialog_parts import place_over
from gui.widgets.style import BAD, GOOD, MUTED
from ledger.records import validate_nickname
from p2pchat.foundation.errors import UserError
from p2pchat.peer_directory import query_kind

MIN_PASSPHRASE = 8
POLL_MS = 500


@dataclass(frozen=True)
class FirstRunChoice:
    nickname: str
    passphrase: str | None     # None: the key file is stored unencrypted (mode 0600)


def check_nickname(text: str) -> str:
    """The nickname typed in the form, or a :class:`UserError` in plain words."""
    nickname = text.strip()
    if not nickname:
        raise UserError("choose a nickname: it is how others find you")
    validate_nickname(nickname)     # a LedgerError (a UserError) says what is wrong, in plain words
    if query_kind(nickname)[0] != "nick":
        # an address or a fingerprint as a nickname would be read as that address or key when others type it
        raise UserError(f"{nickname!r} looks like an address or a key fingerprint; choose a name")
    return nickname


def check_passphrase(first: str, again: str) -> str | None:
    """The passphrase (None when both fields are empty), or a :class:`UserError` in plain words."""
    if not first and not again:
        return None
    if first != again:
        raise UserError("the two passphrases differ; type the same one twice")
    if len(first) < MIN_PASSPHRASE:
        raise UserError(f"a passphrase needs at least {MIN_PASSPHRASE} characters (or leave both fields empty)")
    return first


class FirstRunView:
    """The form on the (otherwise hidden) Tk root. :meth:`show` builds it; :meth:`run` waits in the Tk loop until
    the user presses Continue (the choice) or closes the window (:class:`Cancelled`)."""

    def __init__(self, root: ctk.CTk, close_requested: Callable[[], bool] = lambda: False,
                 nickname: str = "") -> None:
        self.root = root
        self._close_requested = close_requested     # a signal asked the app to quit
        self.choice: FirstRunChoice | None = None
        self.cancelled = False
        self.frame: ctk.CTkFrame | None = None
        self._nickname = nickname

    def show(self) -> None:
        root = self.root
        root.title("p2pchat — welcome")
        root.geometry("460x360")
        self.frame = frame = ctk.CTkFrame(root, fg_color="transparent")
        frame.pack(fill="both", expand=True, padx=24, pady=18)
        ctk.CTkLabel(frame, text="Welcome to p2pchat", font=ctk.CTkFont(size=17, weight="bold")).pack(anchor="w")
        ctk.CTkLabel(frame, text="Choose the nickname others will find you by. It goes into the shared ledger "
                                 "only when you press Continue.", wraplength=410, justify="left",
                     text_color=MUTED).pack(anchor="w", pady=(4, 8))
        self.nickname_entry = ctk.CTkEntry(frame, placeholder_text="Nickname, e.g. carol")
        self.nickname_entry.pack(fill="x")
        if self._nickname:
            self.nickname_entry.insert(0, self._nickname)
        ctk.CTkLabel(frame, text="A passphrase (optional) encrypts your key on this computer; you type it at each "
                                 "start. Without one, the key file is readable by your user account only.",
                     wraplength=410, justify="left", text_color=MUTED).pack(anchor="w", pady=(12, 6))
        self.passphrase_entry = ctk.CTkEntry(frame, show="•", placeholder_text="Passphrase (optional)")
        self.passphrase_entry.pack(fill="x")
        self.again_entry = ctk.CTkEntry(frame, show="•", placeholder_text="The same passphrase again")
        self.again_entry.pack(fill="x", pady=(6, 0))
        self.problem = ctk.CTkLabel(frame, text="", text_color=BAD, wraplength=410, justify="left", anchor="w")
        self.problem.pack(fill="x", pady=(8, 0))
        self.continue_button = ctk.CTkButton(frame, text="Continue", width=120, command=self.confirm)
        self.continue_button.pack(anchor="e", pady=(8, 0))
        for entry in (self.nickname_entry, self.passphrase_entry, self.again_entry):
            entry.bind("<Return>", lambda _e: self.confirm())
        root.protocol("WM_DELETE_WINDOW", self._close_button)
        self.nickname_entry.focus_set()      # Tk gives it the keys as soon as the window has the focus
        root.deiconify()
        root.after(100, self._take_focus)    # once mapped: the first thing to do is to type the nickname

    def _take_focus(self) -> None:
        if self.frame is not None:
            self.root.focus_force()
            self.nickname_entry.focus_set()

    def confirm(self) -> None:
        """Continue: check both fields; on success the form is done (the caller goes on)."""
        try:
            nickname = check_nickname(self.nickname_entry.get())
            passphrase = check_passphrase(self.passphrase_entry.get(), self.again_entry.get())
        except UserError as exc:
            self.problem.configure(text=str(exc))
            return
        self.choice = FirstRunChoice(nickname, passphrase)
        self.root.quit()

    def _close_button(self) -> None:
        self.cancelled = True
        self.root.quit()

    def _poll(self) -> None:
        if self._close_requested():
            self._close_button()
        elif self.frame is not None:
            self.root.after(POLL_MS, self._poll)

    def run(self) -> FirstRunChoice:
        self.show()
        self.root.after(POLL_MS, self._poll)
        while self.choice is None and not self.cancelled:
            self.root.mainloop()
        self.close()
        if self.choice is None:
            raise Cancelled()
        return self.choice

    def close(self) -> None:
        if self.frame is not None:
            self.frame.destroy()
            self.frame = None
        self.root.protocol("WM_DELETE_WINDOW", lambda: None)
        self.root.withdraw()


class HasSnapshot(Protocol):
    top: tkinter.Misc
    closed: bool

    @property
    def snapshot(self) -> LedgerSnapshot | None: ...


def reach_text(snap: LedgerSnapshot | None, nickname: str, address: str) -> tuple[str, bool]:
    """What :class:`ReachableNote` says for a ledger snapshot, and whether the user can be reached now."""
    if snap is not None and snap.own_height is not None:
        return (f"You can be reached now: others can chat with you as {nickname} or at {address} (your record is "
                f"in block {snap.own_height}).", True)
    if snap is None or not snap.running:
        return "Starting your ledger node…", False
    if snap.difficulty_bits is not None and snap.hashrate > 0:
        seconds = max(1, round(2 ** snap.difficulty_bits / snap.hashrate))
        return (f"Your record is being mined: you can be reached in about {count(seconds, 'second')} "
                "(an estimate: mining is a lottery).", False)
    return "Your record is waiting to be mined; the estimate follows once mining has started.", False


class ReachableNote(ctk.CTkToplevel):
    """A small note over the first window: the mining estimate, then "You can be reached now"."""

    def __init__(self, window: HasSnapshot, nickname: str, address: str) -> None:
        super().__init__(window.top)
        self.window = window
        self.nickname, self.address = nickname, address
        self.reachable = False
        self.title("p2pchat — almost ready")
        self.resizable(False, False)
        self.transient(window.top.winfo_toplevel())
        self.text = ctk.CTkLabel(self, text="", wraplength=380, justify="left", anchor="w")
        self.text.pack(padx=20, pady=(16, 6), fill="x")
        self.bar = ctk.CTkProgressBar(self, mode="indeterminate")
        self.bar.pack(padx=20, pady=4, fill="x")
        self.bar.start()
        self.ok_button = ctk.CTkButton(self, text="OK", width=90, command=self.destroy)
        self.ok_button.pack(padx=20, pady=(6, 14), anchor="e")
        self.bind("<Escape>", lambda _e: self.destroy())
        self.bind("<Return>", lambda _e: self.destroy())
        place_over(self, window.top.winfo_toplevel())
        self._poll()

    def _poll(self) -> None:
        if not self.winfo_exists() or self.window.closed:
            return
        text, reachable = reach_text(self.window.snapshot, self.nickname, self.address)
        self.text.configure(text=text, text_color=GOOD if reachable else ("gray10", "gray90"))
        if reachable and not self.reachable:
            self.reachable = True
            self.bar.stop()
            self.bar.pack_forget()
            self.ok_button.focus_set()
        if not reachable:
            self.after(POLL_MS, self._poll)
