"""One chat window: identity panel, step bar, chat tabs and the ledger tab, kept up to date from a node's events.

The window lives in a ``CTk`` root or a ``CTkToplevel`` (the demo opens two in one Tk interpreter). Only the
Tk thread touches it: every ``POLL_MS`` an ``after()`` tick drains a bounded batch of node events (at most
``MAX_EVENTS`` or ``TICK_BUDGET`` seconds of work, the rest waits for the next tick), collects the outcomes of
node calls made on the :class:`~gui.worker.CommandWorker`, takes the newest ledger snapshot from the
:class:`~gui.ledger_monitor.LedgerMonitor`, and redraws only what the controller reports as changed.
"""

from __future__ import annotations

import functools
import logging
import queue
import time
import tkinter
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

import customtkinter as ctk

from gui.alert_pacing import AlertPacer, News
from gui.ask_secret import SecretDialogs
from gui.attention import DesktopNotifier, set_urgent
from gui.controller import CONTACT_KEY, LEDGER_TAB, Changes, ChatController, Found, NodeApi, contact_name
from gui.groups import GROUP_KEY, GroupChats, GroupFound, GroupsApi, MemberSource
from gui.groups_ui import GroupsUi
from gui.key_change import KeyChangeDialog
from gui.lag import LagMeter
from gui.ledger_view import LedgerSnapshot, identity_ledger_line
from gui.models import AcceptPrompt, LineKind, tab_peer_rows
from gui.pad_mode import PadRow, add_pad_row, route
from gui.settings import APPEARANCES, SCALINGS, Alerts, load_alerts, save_alerts
from gui.text import count, one_line
from gui.transfers import FileApi, FileTransfers, TransfersUi
from gui.verify import VerifyDialog, add_verify_button
from gui.widgets.accept_dialog import AcceptDialog
from gui.widgets.chat_pane import ChatPane
from gui.widgets.confirm_dialog import ConfirmDialog
from gui.widgets.conversations import ConversationList
from gui.widgets.icon import window_icon
from gui.widgets.identity_panel import IdentityPanel
from gui.widgets.keyboard import tab_stops
from gui.widgets.ledger_panel import LedgerPanel
from gui.widgets.step_bar import StepBar
from gui.widgets.style import BAD, MUTED, Fonts, LabelText
from gui.widgets.visibility import hide, show
from gui.worker import CommandWorker
from p2pchat.contacts import ContactStore
from p2pchat.display import quoted
from p2pchat.events import Event
from p2pchat.foundation.addresses import LEDGER_PORT, format_address, parse_address
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.identity import Identity
from p2pchat.history import HistoryStore
from p2pchat.steps import Step

log = logging.getLogger(__name__)

POLL_MS = 40
MAX_EVENTS = 300
TICK_BUDGET = 0.015       # seconds of event handling per tick before yielding to Tk
SLOW_TICK = 0.25          # typing expiry and similar housekeeping
LEDGER_KEY = "#ledger"    # the ledger tab's key among the session ids


_WINDOWS: weakref.WeakSet[ChatWindow] = weakref.WeakSet()
WM_CLASS = "p2pchat"       # the root's className (gui/app.py creates the root): desktop files match on it
MIN_SIZE = (600, 560)       # at 100 %: the entry, Send and a few transcript lines fit with the steps collapsed


class ChatNodeLike(NodeApi, FileApi, MemberSource, Protocol):
    events: queue.Queue[Event]
    accept_timeout: float
    handshake_timeout: float
    identity: Identity

    @property
    def groups(self) -> GroupsApi | None: ...      # issue 18 (gui/groups.py): None without a data directory

    @property
    def contacts(self) -> ContactStore | None: ...
    @property
    def history(self) -> HistoryStore | None: ...
    def pad_mode(self, session: str, action: str) -> None: ...     # issue 17 (gui/pad_mode.py)


class LedgerFeed(Protocol):
    """What the window needs from :class:`gui.ledger_monitor.LedgerMonitor`."""

    def take(self) -> LedgerSnapshot | None: ...
    def join(self, address: str, done: Callable[[str, bool], None]) -> None: ...
    def drain(self) -> int: ...
    def refresh(self) -> None: ...


@dataclass(frozen=True)
class Me:
    """This user as the identity panel shows them (never the private key)."""

    nickname: str
    address: str
    fingerprint: str


class ChatWindow:
    """The content of one window; :meth:`close` stops its loop and worker (the caller closes the node)."""

    def __init__(self, top: ctk.CTk | ctk.CTkToplevel, node: ChatNodeLike, me: Me, *,
                 ledger: LedgerFeed | None = None, on_close: Callable[[ChatWindow], None] | None = None,
                 appearance: str = "System", scaling: float = 1.0, data_dir: Path | None = None) -> None:
        self.top = top
        self.data_dir = data_dir
        self.alerts = load_alerts(data_dir) if data_dir is not None else Alerts()
        self.notifier = DesktopNotifier()
        self.pacer = AlertPacer()          # how often the notifier and the bell may be used
        self.urgent = False                # the urgency hint is set (cleared when the user answers or looks)
        self._confirm: ConfirmDialog | None = None
        self.node = node
        self.me = me
        self.ledger = ledger
        self.on_close = on_close
        self.worker = CommandWorker(name=f"gui-commands-{me.nickname}")
        self.controller = ChatController(node, self.worker, nickname=me.nickname,
                                         accept_timeout=node.accept_timeout, handshake_timeout=node.handshake_timeout,
                                         contacts=node.contacts, history=node.history)
        self.lag = LagMeter()
        files = FileTransfers(node, self.worker, self.controller.file_notice,      # issue 16: files
                              lines=self.controller)
        self.controller.files = files
        self.closed = False
        self.close_requested = False
        self.ticks = 0                     # event-pump ticks so far (tests check the loop keeps turning)
        self.panes: dict[str, ChatPane] = {}
        self._dialog: AcceptDialog | None = None
        self.key_dialog: KeyChangeDialog | None = None
        self.verify_dialog: VerifyDialog | None = None
        self.verify_buttons: dict[str, ctk.CTkButton] = {}
        self.pad_rows: dict[str, PadRow] = {}      # issue 17: each chat tab's one-time-pad row
        self._after_id: str | None = None
        self._due = time.perf_counter()
        self._last_slow = 0.0
        self.snapshot: LedgerSnapshot | None = None
        self._moves: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()   # --host auto (address_changed)
        self._title = ""
        self.fonts = Fonts()
        self.secret_dialogs = SecretDialogs(self.top, self.fonts, self.controller,      # gui/ask_secret.py
                                            lambda: self._render(self.controller.take_changes()))
        self.group_chats = GroupChats(node.groups, node, self.worker, me=node.identity.fingerprint.hex(),  # issue 18
                                      nickname=me.nickname, contact=self.controller.contact,
                                      channel=self.controller.channel_state)
        self._build(appearance, scaling)
        self.groups = GroupsUi(top, self.fonts, self.tabs, self.group_chats, self._ask, self._contact_choices,
                               self._render_groups, self.search_all)
        self.transfers = TransfersUi(top, self.fonts, files, self._ask, self._can_send_files)
        top.protocol("WM_DELETE_WINDOW", self.ask_close)
        self._bind_keys()
        top.bind("<FocusIn>", lambda _e: self._focus_changed(), add="+")
        top.bind("<FocusOut>", lambda _e: self.top.after_idle(self._focus_changed), add="+")
        self._focus_changed()
        _WINDOWS.add(self)
        if node.contacts is None:     # the demo's nodes keep nothing
            self.tabs.no_contacts.configure(text="No contacts or history are kept by this window (it has no "
                                                 "data directory).")
        self.controller.refresh_contacts()
        self._render(self.controller.take_changes())
        self._render(Changes(bar=True))
        self.group_chats.load()
        tab_stops(top)
        self._schedule()

    # ---- layout -------------------------------------------------------------------------------------------

    def _build(self, appearance: str, scaling: float) -> None:
        top = self.top
        top.title(f"p2pchat — {self.me.nickname}")
        top.minsize(*MIN_SIZE)
        top.grid_columnconfigure(0, weight=1)
        top.grid_rowconfigure(2, weight=1, minsize=200)
        try:
            self._icon = window_icon(top)
            top.iconphoto(True, self._icon)
        except tkinter.TclError as exc:       # no image support: Tk's own icon stays
            log.info("no window icon: %s", exc)

        head = ctk.CTkFrame(top, fg_color="transparent")
        head.grid(row=0, column=0, sticky="ew", padx=8, pady=(8, 4))
        head.grid_columnconfigure(0, weight=1)
        self.identity = IdentityPanel(head, self.fonts, nickname=self.me.nickname, address=self.me.address,
                                      fingerprint=self.me.fingerprint)
        self.identity.grid(row=0, column=0, sticky="ew")
        options = ctk.CTkFrame(head, fg_color="transparent")
        options.grid(row=0, column=1, sticky="ne")
        self.appearance_menu = ctk.CTkOptionMenu(options, values=list(APPEARANCES), width=96,
                                                 command=self._appearance_chosen, font=self.fonts.small)
        self.appearance_menu.set(appearance)
        self.appearance_menu.grid(row=0, column=0, padx=2, pady=2)
        self.scaling_menu = ctk.CTkOptionMenu(options, values=[f"{int(s * 100)}%" for s in SCALINGS], width=96,
                                              command=self._scaling_chosen, font=self.fonts.small)
        self.scaling_menu.set(f"{int(scaling * 100)}%")
        self.scaling_menu.grid(row=0, column=1, padx=2, pady=2)
        self.alerts_button = ctk.CTkButton(options, text="Alerts ▾", width=96, font=self.fonts.small,
                                           command=self._alerts_menu)
        self.alerts_button.grid(row=0, column=2, padx=2, pady=2)

        self.step_bar = StepBar(top, self.fonts, on_peer_changed=self._peer_changed, on_step=self._step_clicked,
                                on_connect_all=self._connect_all, on_new_chat=self._new_chat)
        self.step_bar.grid(row=1, column=0, sticky="ew", padx=8, pady=4)

        self.tabs = ConversationList(top, self.fonts, on_select=self._tab_chosen, on_contact=self._contact_chosen,
                                     on_search=self.search_all,
                                     on_new_group=self._new_group if self.group_chats.available else None)
        self.tabs.grid(row=2, column=0, sticky="nsew", padx=8, pady=(0, 4))
        ledger_page = self.tabs.add(LEDGER_KEY, LEDGER_TAB, fixed=True)
        self.ledger_panel = LedgerPanel(ledger_page, self.fonts, on_join=self._join_clicked)
        self.ledger_panel.grid(row=0, column=0, sticky="nsew", padx=6, pady=6)
        self.ledger_panel.show(None)

        self.status = ctk.CTkLabel(top, text="", anchor="w", font=self.fonts.small, text_color=MUTED, height=18)
        self.status.grid(row=3, column=0, sticky="ew", padx=12, pady=(0, 6))
        self._status = LabelText(self.status)

    # ---- user actions -------------------------------------------------------------------------------------

    def prefill_peer(self, text: str) -> None:
        """Put ``text`` in the peer field (the demo names the other user for the newcomer)."""
        self.step_bar.peer_entry.delete(0, "end")
        self.step_bar.peer_entry.insert(0, text)
        self._peer_changed(text)

    def _peer_changed(self, text: str) -> None:
        self.controller.peer_text_changed(text)
        self._render(self.controller.take_changes())

    def _step_clicked(self, step: Step) -> None:
        self.controller.click_step(step)
        self._render(self.controller.take_changes())

    def _connect_all(self) -> None:
        self.controller.connect_all()
        self._render(self.controller.take_changes())

    def _new_chat(self) -> None:
        self.controller.new_chat()
        self._render(self.controller.take_changes())
        self.step_bar.peer_entry.focus_set()

    def _tab_chosen(self, key: str) -> None:
        if key == LEDGER_KEY:
            self.ledger_panel.show(self.snapshot)
        group = key.startswith(GROUP_KEY)
        # a group has no four steps of its own: its conversation shows the members' pairwise chats instead
        (hide if group else show)(self.step_bar)
        self.group_chats.select(None)
        if group:
            self.groups.show(key)
            self.controller.select_tab(None)
        else:
            self.controller.select_tab(None if key == LEDGER_KEY else key)
        self._render(self.controller.take_changes())
        self._render_groups()

    # ---- groups (issue 18: gui/groups.py, gui/groups_ui.py) -------------------------------------------------------

    def _new_group(self) -> None:
        self.groups.open_new_group()

    def _contact_choices(self) -> list[tuple[str, str, bool]]:
        """Every contact, most recent first: (fingerprint hex, name, verified)."""
        rows = self.controller.contact_rows()
        contacts = [self.controller.contact(row.key.removeprefix(CONTACT_KEY)) for row in rows]
        return [(c.fp, contact_name(c), c.verified) for c in contacts if c is not None]

    def _render_groups(self) -> None:
        ch = self.group_chats.take_changes()
        if not ch or self.closed:
            return
        self.groups.render(ch)
        if ch.status is not None:
            self._status.show(ch.status, BAD if ch.status.startswith("⚠") else MUTED)
        if ch.select is not None and ch.select in self.tabs.pages:
            self.tabs.select(ch.select)
            self._tab_chosen(ch.select)
        news = {key: sum(1 for ln in lines if ln.kind is LineKind.IN) for key, lines in ch.lines_added.items()}
        if any(news.values()) and not self.group_chats.focused:
            where = tuple(sorted(self.group_chats.name(key) for key, n in news.items() if n))
            self._attention(News("New message", "new message", "in", sum(news.values()), where), raise_window=False)
        self._update_title()

    def _contact_chosen(self, key: str) -> None:
        self.controller.open_contact(key)
        self._render(self.controller.take_changes())

    # ---- the kept history ----------------------------------------------------------------------------------

    def search_all(self, text: str, anchor: tkinter.Misc | None = None) -> None:
        """Search the kept messages of every chat; the hits drop down in a menu (under ``anchor``, else under the
        list's search field), and choosing one opens the chat."""
        hits = self.controller.search(text)
        self._render(self.controller.take_changes())
        found: list[Found | GroupFound] = [*hits, *self.group_chats.search(text)]      # groups: issue 18
        menu = tkinter.Menu(self.top, tearoff=False)
        if not found:
            menu.add_command(label=f"Nothing kept contains “{one_line(text, 40)}”", state="disabled")
        for hit in found:
            menu.add_command(label=f"{hit.label}: {hit.text}",
                             command=functools.partial(self._found_chosen, hit, text.strip()))
        self.found_menu = menu
        self.found = found
        under = anchor if anchor is not None else self.tabs.search_entry
        menu.update_idletasks()
        # right-aligned with a button at the right (All chats), left-aligned with the list's field
        x = (under.winfo_rootx() if anchor is None
             else max(0, under.winfo_rootx() + under.winfo_width() - menu.winfo_reqwidth()))
        menu.tk_popup(x, under.winfo_rooty() + under.winfo_height())

    def _search_from_chat(self, session: str, text: str) -> None:
        pane = self.panes.get(session)
        self.search_all(text, pane.find_all_button if pane is not None else None)

    def _found_chosen(self, hit: Found | GroupFound, text: str) -> None:
        if isinstance(hit, GroupFound):
            if hit.key in self.tabs.pages:
                self.tabs.select(hit.key)
                self._tab_chosen(hit.key)
                self.groups.panes[hit.key].open_find(text)
            return
        session = self.controller.show_found(hit)
        self._render(self.controller.take_changes())
        if session is not None and session in self.panes:
            self.tabs.select(session)
            self._tab_chosen(session)
            self.panes[session].open_find(text)

    def _history_menu(self, session: str) -> None:
        tab = self.controller.tabs.get(session)
        if tab is None or session not in self.panes:
            return
        known = tab.contact is not None
        menu = tkinter.Menu(self.top, tearoff=False)
        state: Literal["normal", "disabled"] = "normal" if known else "disabled"
        menu.add_command(label="Export as text…", state=state, command=functools.partial(self._export, session))
        menu.add_command(label="Delete the kept messages…", state=state,
                         command=functools.partial(self._ask_delete, session))
        if not known:
            menu.add_command(label="(kept once the four steps are done)", state="disabled")
        self.history_menu = menu
        button = self.panes[session].history_button
        menu.tk_popup(button.winfo_rootx(), button.winfo_rooty() + button.winfo_height())

    def _ask_delete(self, session: str) -> None:
        tab = self.controller.tabs.get(session)
        if tab is None:
            return
        n = self.controller.history_count(session)
        self._ask(f"Delete the messages with {tab.peer_name}?",
                  f"{count(n, 'message')} with {tab.peer_name} kept on this computer will be erased; this cannot "
                  f"be undone. {tab.peer_name} keeps their own copy.", "Delete",
                  lambda yes: self._delete_confirmed(session, yes))

    def _delete_confirmed(self, session: str, yes: bool) -> None:
        if yes and not self.closed:
            self.controller.delete_history(session)
            self._render(self.controller.take_changes())

    def _export(self, session: str) -> None:
        tab = self.controller.tabs.get(session)
        if tab is not None and session in self.panes:
            self.panes[session].ask_export("Export the chat as text", f"chat-with-{tab.peer_name[:40]}",
                                           functools.partial(self.export_to, session))

    def export_to(self, session: str, path: Path) -> bool:
        """Write the kept conversation of ``session`` to ``path`` (mode 0600: it is the plain text)."""
        text = self.controller.export_history(session)
        pane = self.panes.get(session)
        return text is not None and pane is not None and pane.save_text(path, text)

    def _answer(self, session: str, accept: bool) -> None:
        self._dialog = None
        if self.urgent:
            self._set_urgent(False)
        self.controller.answer(session, accept)
        self._render(self.controller.take_changes())
        self._next_dialog()

    def _join_clicked(self, text: str) -> None:
        try:
            ip, port = parse_address(text, LEDGER_PORT)
        except UserError as exc:
            self.ledger_panel.show_join_result(f"✗ {exc}", False)
            return
        if self.ledger is None:
            self.ledger_panel.show_join_result("✗ no ledger node is attached to this window", False)
            return
        address = format_address(ip, port)
        self.ledger_panel.show_join_result(f"… asking {address}", True)
        self.ledger.join(address, lambda text, ok: self.ledger_panel.show_join_result(text, ok))

    def _siblings(self) -> list[ChatWindow]:
        """The other open windows of this Tk interpreter (the demo's): appearance and scaling are shared."""
        return [w for w in list(_WINDOWS) if w is not self and not w.closed and w.top.tk is self.top.tk]

    def _appearance_chosen(self, mode: str) -> None:
        ctk.set_appearance_mode(mode)
        for other in self._siblings():     # customtkinter's mode is per process: every menu says what is shown
            other.appearance_menu.set(mode)

    def _scaling_chosen(self, text: str) -> None:
        """Scale the widgets and the window with them, so that nothing is cut off at a larger scale."""
        old = ctk.ScalingTracker.get_widget_scaling(self.top)
        new = int(text.rstrip("%")) / 100
        ctk.set_widget_scaling(new)
        self.apply_scaling(old, new)
        for other in self._siblings():
            other.scaling_menu.set(text)
            other.apply_scaling(old, new)

    def apply_scaling(self, old: float, new: float) -> None:
        screen_w, screen_h = self.top.winfo_screenwidth(), self.top.winfo_screenheight()
        self.top.minsize(min(screen_w, int(MIN_SIZE[0] * new)), min(screen_h, int(MIN_SIZE[1] * new)))
        # customtkinter pins the maximum size to the current one for a second after a scaling change; lift it
        self.top.maxsize(screen_w, screen_h)
        self.top.update_idletasks()
        width, height = self.top.winfo_width(), self.top.winfo_height()
        width = min(screen_w, max(int(width * new / old), int(MIN_SIZE[0] * new)))
        height = min(screen_h, max(int(height * new / old), int(MIN_SIZE[1] * new)))
        self.top.geometry(f"{width}x{height}")

    # ---- alerts -------------------------------------------------------------------------------------------

    def _alerts_menu(self) -> None:
        menu = tkinter.Menu(self.top, tearoff=False)
        self._alert_vars = {}
        for name, label in (("notify", "Desktop notifications"), ("urgent", "Flash the taskbar entry"),
                            ("raise_window", "Raise the window for a caller"), ("sound", "Sound")):
            var = tkinter.BooleanVar(self.top, value=getattr(self.alerts, name))
            self._alert_vars[name] = var
            menu.add_checkbutton(label=label, variable=var, command=functools.partial(self._alert_toggled, name))
        self.alerts_menu = menu
        b = self.alerts_button
        menu.tk_popup(b.winfo_rootx(), b.winfo_rooty() + b.winfo_height())

    def _alert_toggled(self, name: str) -> None:
        self.set_alerts(replace(self.alerts, **{name: self._alert_vars[name].get()}))

    def set_alerts(self, alerts: Alerts) -> None:
        self.alerts = alerts
        if self.data_dir is not None:
            try:
                save_alerts(self.data_dir, alerts)
            except OSError as exc:
                log.warning("could not save the alert settings: %s", exc)

    def has_focus(self) -> bool:
        """This window (or one of its dialogs) has the keyboard focus."""
        try:
            path = str(self.top.tk.call("focus"))
            if not path:
                return False
            top = str(self.top.tk.call("winfo", "toplevel", path))
        except tkinter.TclError:
            return False
        own = str(self.top)
        dialogs = {str(d) for d in (self._dialog, self._confirm) if d is not None}
        return top == own or top in dialogs

    def _watch_focus(self, dialog: tkinter.Misc) -> None:
        """A dialog of this window counts as the window: the focus leaving it may leave the app."""
        dialog.bind("<FocusIn>", lambda _e: self._focus_changed(), add="+")
        dialog.bind("<FocusOut>", lambda _e: self.top.after_idle(self._focus_changed), add="+")

    def _focus_changed(self) -> None:
        if self.closed:
            return
        focused = self.has_focus()
        if focused != self.controller.focused:
            self.controller.set_focused(focused)
            self.group_chats.set_focused(focused)
            if focused and self.urgent and self._dialog is None:
                self._set_urgent(False)
            self._render(self.controller.take_changes())

    def _set_urgent(self, urgent: bool) -> None:
        self.urgent = urgent
        set_urgent(self.top, urgent)

    def _attention(self, news: News, *, raise_window: bool) -> None:
        """Something needs the user: raise (a caller), flag the window, notify and beep as the settings say —
        paced (gui/alert_pacing.py): a flood is one notification, one urgency hint and one bell, not one a tick."""
        away = not self.controller.focused or self.top.state() != "normal"
        if raise_window and self.alerts.raise_window:
            if self.top.state() != "normal":
                self.top.deiconify()      # (not when shown: Tk would map its transient dialogs again at +0+0)
            self.top.lift()
            self.top.focus_force()
            if self._dialog is not None:
                dialog = self._dialog
                dialog.take_focus()
                # customtkinter redraws a new toplevel's decorations after 200 ms (and takes the focus back
                # to the window on the way): focus the dialog again once that has happened
                self.top.after(300, functools.partial(self._refocus, dialog))
        if not away:
            return
        if self.alerts.urgent and not self.urgent:
            self._set_urgent(True)
        body = self.pacer.news(news)
        if self.alerts.notify and body is not None:
            self.notifier.notify(news.summary, body)
        if self.alerts.sound and self.pacer.bell():
            self.top.bell()

    def _held_back_news(self) -> None:
        """On the slow tick: the news the pacer held back, summed, once its gap has passed and if still away."""
        if self.controller.focused and self.top.state() == "normal":
            self.pacer.seen()
            return
        for summary, body in self.pacer.due():
            if self.alerts.notify:
                self.notifier.notify(summary, body)

    @staticmethod
    def _refocus(dialog: AcceptDialog) -> None:
        if dialog.winfo_exists():
            dialog.take_focus()

    # ---- keyboard -----------------------------------------------------------------------------------------

    def _bind_keys(self) -> None:
        keys: dict[str, Callable[[], object]] = {
            "<Control-q>": self.ask_close, "<Control-w>": self._close_current, "<Control-n>": self._new_chat,
            "<Control-f>": self._find, "<Control-Tab>": functools.partial(self._cycle, 1),
            "<Control-ISO_Left_Tab>": functools.partial(self._cycle, -1),
            "<Control-Shift-Tab>": functools.partial(self._cycle, -1),
        }
        for key, action in keys.items():
            self.top.bind(key, functools.partial(self._shortcut, action))

    @staticmethod
    def _shortcut(action: Callable[[], object], _event: object) -> str:
        action()
        return "break"

    def _cycle(self, step: int) -> None:
        keys = list(self.tabs.pages)
        if not keys:
            return
        at = keys.index(self.tabs.current) if self.tabs.current in keys else 0
        key = keys[(at + step) % len(keys)]
        self.tabs.select(key)
        self._tab_chosen(key)

    def _close_current(self) -> None:
        if self.tabs.current in self.panes:
            self._end(self.tabs.current)

    def _find(self) -> None:
        """Ctrl+F: find in the chat on screen (its row also searches all chats); elsewhere, search all chats."""
        if self.tabs.current in self.panes:
            self.panes[self.tabs.current].open_find()
        elif self.tabs.current in self.groups.panes:
            self.groups.panes[self.tabs.current].open_find()
        else:
            self.tabs.search_entry.focus_set()

    @property
    def appearance(self) -> str:
        return self.appearance_menu.get()

    @property
    def scaling(self) -> float:
        return int(self.scaling_menu.get().rstrip("%")) / 100

    # ---- the event pump -----------------------------------------------------------------------------------

    def _schedule(self) -> None:
        self._due = time.perf_counter() + POLL_MS / 1000
        self._after_id = self.top.after(POLL_MS, self._poll)

    def _poll(self) -> None:
        self._after_id = None
        started = time.perf_counter()
        self.lag.record(self._due, started)
        self.ticks += 1
        if self.close_requested:
            self._finish_close()
            return
        try:
            self.pump(started)
        finally:
            if not self.closed:
                self._schedule()

    def pump(self, started: float | None = None) -> int:
        """One tick's work: a bounded batch of node events, node-call outcomes, the ledger snapshot, a redraw."""
        started = time.perf_counter() if started is None else started
        handled = 0
        while handled < MAX_EVENTS and time.perf_counter() - started < TICK_BUDGET:
            try:
                event = self.node.events.get_nowait()
            except queue.Empty:
                break
            if not route(event, self.pad_rows) and not self.group_chats.handle(event):   # issues 17, 18
                self.controller.handle(event)
            handled += 1
        self.worker.drain()
        self._show_moves()
        if self.ledger is not None:
            self.ledger.drain()
            snap = self.ledger.take()
            if snap is not None:
                self._show_ledger(snap)
        if started - self._last_slow >= SLOW_TICK:
            self._last_slow = started
            self.controller.tick()
            self.group_chats.tick()
            self._held_back_news()
        self._render(self.controller.take_changes())
        self._render_groups()
        self.transfers.render()          # file progress changes no chat line
        return handled

    def address_changed(self, address: str, line: str) -> None:
        """``--host auto`` (gui/host_move.py, on its own thread): this user is now at ``address``; the next tick
        shows it in the identity panel and ``line`` in the status line (in red when it starts with ⚠: the move
        failed and is tried again), and asks the ledger node again."""
        self._moves.put((address, line))

    def _show_moves(self) -> None:
        while True:
            try:
                address, line = self._moves.get_nowait()
            except queue.Empty:
                return
            self.me = replace(self.me, address=address)
            self.identity.address.configure(text=address)
            self._status.show(line, BAD if line.startswith("⚠") else MUTED)
            if self.ledger is not None:
                self.ledger.refresh()

    def _show_ledger(self, snap: LedgerSnapshot) -> None:
        self.snapshot = snap
        self.identity.show_ledger(identity_ledger_line(snap), snap.running)
        if self.tabs.current == LEDGER_KEY:     # a hidden ledger tab is drawn when it is chosen
            self.ledger_panel.show(snap)

    # ---- drawing ------------------------------------------------------------------------------------------

    def _render(self, ch: Changes) -> None:
        if not ch or self.closed:
            return
        ctl = self.controller
        for session in ch.tabs_added:
            self._add_tab(session)
        if ch.select is not None and ch.select in self.panes:
            self.tabs.select(ch.select)
            ctl.select_tab(ch.select)
            extra = ctl.take_changes()      # selecting only touches the bar and the tab title
            ch.bar = ch.bar or extra.bar
            ch.titles |= extra.titles
        for session, n in ch.lines_dropped.items():
            if session in self.panes:
                self.panes[session].transcript.drop(n)
        for session, lines in ch.lines_added.items():
            if session in self.panes:
                self.panes[session].transcript.add(lines)
        for session, lines in ch.lines_changed.items():
            if session in self.panes:
                for line in {ln.line_id: ln for ln in lines}.values():
                    self.panes[session].transcript.replace(line)
        for session in ch.peer:
            if session in self.panes and session in ctl.tabs:
                self.panes[session].peer_panel.show(tab_peer_rows(ctl.tabs[session]))
        for session in ch.typing:
            if session in self.panes:
                self.panes[session].set_typing(ctl.typing_text(session))
        self.transfers.render(ch.chat_input)
        for session in ch.chat_input:
            tab = ctl.tabs.get(session)
            if session in self.panes and tab is not None:
                self.panes[session].set_input(ctl.can_type(session), ctl.input_hint(session), tab.ended is not None)
        for session in ch.titles | set(ch.lines_added) | ch.chat_input:
            if session in self.panes and session in ctl.tabs:
                self.tabs.rename(session, ctl.tabs[session].title, ctl.session_detail(session))
        for session in ch.tabs_removed:
            self._remove_tab(session)
        if ch.contacts:
            self.tabs.set_contacts(ctl.contact_rows())
            tab_stops(self.tabs.contacts)
        if ch.contacts or ch.chat_input or ch.tabs_added or ch.tabs_removed:
            self.groups.refresh_members()       # names, ✔ marks and each member's pairwise chat
        if ch.status is not None:
            self._status.show(ch.status, BAD if ch.status.startswith("⚠") else MUTED)
        if ch.bar:
            self.step_bar.show(ctl.bar())
        if ch.prompts_closed and self._dialog is not None and self._dialog.prompt.session in ch.prompts_closed:
            self._dialog.dismiss()
            self._dialog = None
        if ch.prompts or ch.prompts_closed:
            self._next_dialog()
        for prompt in ch.prompts:
            self._attention(News("Incoming chat", "chat request", "from", 1, (quoted(prompt.nickname),),
                                 prompt.question),
                            raise_window=True)
        for session in ch.key_changes:
            self._open_key_change(session)
        self.secret_dialogs.open_answers(ctl.secrets.take_questions())
        news = [(s, ln) for s, lines in ch.lines_added.items() for ln in lines if ln.kind is LineKind.IN]
        if news and not self.controller.focused:
            senders = tuple(sorted({ctl.tabs[s].peer_name for s, _ln in news if s in ctl.tabs}))
            self._attention(News("New message", "new message", "from", len(news), senders), raise_window=False)
        self._update_title()

    def _add_tab(self, session: str) -> None:
        tab = self.controller.tabs[session]
        page = self.tabs.add(session, tab.title)
        pane = ChatPane(page, self.fonts,
                        on_send=functools.partial(self._send, session),
                        on_input=functools.partial(self.controller.input_changed, session),
                        on_more=functools.partial(self._more, session),
                        on_end=functools.partial(self._end, session),
                        on_history=functools.partial(self._history_menu, session),
                        on_search_all=functools.partial(self._search_from_chat, session))
        pane.grid(row=0, column=0, sticky="nsew", padx=6, pady=6)
        tab_stops(pane)
        tab_stops(self.tabs.chats)
        self.panes[session] = pane
        pane.transcript.on_cancel = functools.partial(self._cancel_waiting, session)    # issue 16
        pane.peer_panel.show(tab_peer_rows(tab))
        self.verify_buttons[session] = add_verify_button(pane.peer_panel, self.fonts,
                                                         functools.partial(self.open_verify, session))
        self.transfers.attach(session, pane, row=5)
        self.secret_dialogs.add_button(pane.peer_panel, session)
        pane.set_input(self.controller.can_type(session), self.controller.input_hint(session),
                       tab.ended is not None)
        self.pad_rows[session] = add_pad_row(pane.peer_panel, self.fonts, self.node, self.worker, session)  # issue 17

    def _can_send_files(self, session: str) -> bool:
        tab = self.controller.tabs.get(session)
        ready = tab is not None and tab.ready and tab.ended is None
        return ready or self.controller.waiting_contact(session) is not None     # a file that waits for its contact

    def _remove_tab(self, session: str) -> None:
        self.transfers.detach(session)
        self.panes.pop(session, None)
        self.verify_buttons.pop(session, None)
        self.pad_rows.pop(session, None)
        shown = self.tabs.remove(session)
        if shown is not None and shown.startswith(GROUP_KEY):
            self._tab_chosen(shown)
        elif shown is not None and self.controller.selected != (None if shown == LEDGER_KEY else shown):
            self.controller.select_tab(None if shown == LEDGER_KEY else shown)

    def _update_title(self) -> None:
        unread = self.controller.unread_total() + self.group_chats.unread_total()
        title = f"p2pchat — {self.me.nickname}" + (f" ({unread} unread)" if unread else "")
        if self._title != title:
            self._title = title
            self.top.title(title)

    def _send(self, session: str, text: str) -> str | None:
        error = self.controller.send(session, text)
        self._render(self.controller.take_changes())
        return error

    def _cancel_waiting(self, session: str, line_id: int) -> None:
        self.controller.cancel_waiting(session, line_id)
        self._render(self.controller.take_changes())

    def _more(self, session: str, line_id: int) -> None:
        self.controller.show_more(session, line_id)
        self._render(self.controller.take_changes())

    def _end(self, session: str) -> None:
        """End chat / Close tab (and Ctrl+W): a live chat is only dropped after the user says so."""
        tab = self.controller.tabs.get(session)
        if tab is None:
            return
        if tab.ended is not None:
            self._end_confirmed(session, True)
            return
        kept = (f"Its messages stay in your history (History ▾ deletes them); {tab.peer_name}'s row under "
                "Contacts opens them again." if tab.contact is not None and self.controller.history is not None
                else "Its messages are not kept: the four steps were not done.")
        self._ask(f"End the chat with {tab.peer_name}?", f"{tab.peer_name} is told the chat ended. {kept}",
                  "End chat", lambda yes: self._end_confirmed(session, yes))

    def _end_confirmed(self, session: str, yes: bool) -> None:
        if yes and not self.closed:
            self.controller.close_tab(session)
            self._render(self.controller.take_changes())

    def _ask(self, title: str, question: str, confirm: str, then: Callable[[bool], None]) -> None:
        if self._confirm is not None:
            self._confirm.answer(False)

        def answered(yes: bool) -> None:
            self._confirm = None
            then(yes)
        self._confirm = ConfirmDialog(self.top, self.fonts, title, question, confirm, answered)
        self._watch_focus(self._confirm)
        tab_stops(self._confirm)

    def _next_dialog(self) -> None:
        if self._dialog is not None or self.closed:
            return
        prompts = self.controller.prompts()
        if prompts:
            self._open_dialog(prompts[0])

    def _open_dialog(self, prompt: AcceptPrompt) -> None:
        self._dialog = AcceptDialog(self.top, self.fonts, prompt, self._answer)
        self._watch_focus(self._dialog)
        tab_stops(self._dialog)
        if self.alerts.raise_window:
            self._dialog.take_focus()

    # ---- key continuity and verification (issue 13) ---------------------------------------------------------

    def _open_key_change(self, session: str) -> None:
        tab = self.controller.tabs.get(session)
        if tab is None or tab.key_change is None or self.closed:
            return
        if self.key_dialog is not None and self.key_dialog.winfo_exists():
            self.key_dialog.answer(False)

        def answered(accept: bool) -> None:
            self.key_dialog = None
            (self.controller.accept_key if accept else self.controller.keep_old_key)(session)
            self._render(self.controller.take_changes())
        self.key_dialog = KeyChangeDialog(self.top, self.fonts, tab.key_change.contact, tab.key_change, answered)
        tab_stops(self.key_dialog)

    def open_verify(self, session: str) -> None:
        """The peer panel's "Verify…": the safety number as text and QR code, and the verified mark."""
        tab = self.controller.tabs.get(session)
        if tab is None or self.closed:
            return
        if not tab.ready or tab.info is None or not tab.info.safety_number:
            self.controller.set_verified(session, True)     # says why it cannot be done yet
            self._render(self.controller.take_changes())
            return
        if self.verify_dialog is not None and self.verify_dialog.winfo_exists():
            self.verify_dialog.destroy()

        def answered(verified: bool) -> None:
            self.verify_dialog = None
            self.controller.set_verified(session, verified)
            self._render(self.controller.take_changes())
        self.verify_dialog = VerifyDialog(self.top, self.fonts, tab.peer_name, tab.info.safety_number,
                                          tab.verified_mark, answered)
        tab_stops(self.verify_dialog)

    # ---- closing ------------------------------------------------------------------------------------------

    def live_chats(self) -> int:
        return sum(1 for t in self.controller.tabs.values() if t.ended is None)

    def ask_close(self) -> None:
        """The user closes the window (or presses Ctrl+Q): with open chats, only after confirming."""
        n = self.live_chats()
        if not n:
            self.request_close()
            return
        self._ask("Quit p2pchat?", f"{count(n, 'chat')} {'is' if n == 1 else 'are'} still open; quitting ends "
                  f"{'it' if n == 1 else 'them'}.", "Quit", self._quit_confirmed)

    def _quit_confirmed(self, yes: bool) -> None:
        if yes:
            self.request_close()

    def end_chats(self) -> None:
        """Say goodbye in every open chat (this window closes while the app goes on; no network wait)."""
        for tab in self.controller.tabs.values():
            if tab.ended is None:
                try:
                    self.node.end_session(tab.session)
                except UserError as exc:       # already ended in the node meanwhile
                    log.info("ending chat %s: %s", tab.session, exc)

    def request_close(self) -> None:
        """Ask the window to close (safe from Tk callbacks and signal handlers): the next tick does it."""
        self.close_requested = True

    def _finish_close(self) -> None:
        if self.closed:
            return
        self.close()
        if self.on_close is not None:
            self.on_close(self)

    def close(self) -> None:
        """Stop the event pump and the command worker (the node and ledger belong to the caller)."""
        if self.closed:
            return
        self.closed = True
        if self._after_id is not None:
            self.top.after_cancel(self._after_id)
            self._after_id = None
        if self._dialog is not None:
            self._dialog.dismiss()
            self._dialog = None
        if self._confirm is not None:
            self._confirm.destroy()
            self._confirm = None
        for dialog in (self.key_dialog, self.verify_dialog):
            if dialog is not None and dialog.winfo_exists():
                dialog.destroy()
        self.secret_dialogs.close()
        self.groups.close()
        self.worker.close()
        self.notifier.close()
