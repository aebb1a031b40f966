"""The desktop app's composition root: ``p2pchat gui`` (and ``p2pchat`` with a display) call :func:`main`.

:class:`App` owns one Tk root and the chat windows on it (one for ``p2pchat gui``, two for the demo), follows the
system's light/dark mode, restores and remembers each window's size per data directory, and quits the Tk loop
when the windows are closed. :func:`main` loads the identity, attaches the ledger node (starting one in-process
when none runs for this data directory), starts the chat node, runs the window and closes everything in
reverse order when the window closes (or on Ctrl+Q, SIGINT or SIGTERM). With ``--host auto`` all of them follow
this machine's address while the window runs (:mod:`gui.host_move`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tkinter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import customtkinter as ctk

from gui import settings as gui_settings
from gui.first_run import FirstRunChoice, FirstRunView, ReachableNote
from gui.host_move import HostMove
from gui.ledger_actions import LedgerActions
from gui.ledger_monitor import LedgerMonitor
from gui.ledger_runtime import LedgerRuntime, attach_ledger
from gui.settings import Settings
from gui.startup import Cancelled, StartupView
from gui.tk_gc import TkThreadCollector
from gui.window import WM_CLASS, ChatNodeLike, ChatWindow, Me
from ledger.node import default_nickname
from p2pchat.chat_protocol import MAX_ROTATE_EVERY
from p2pchat.display import visible
from p2pchat.foundation.addresses import CHAT_PORT, HOST_AUTO, format_address, normalize_ip
from p2pchat.foundation.datadir import resolve_data_dir
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.host_address import HostWatch
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.node import ChatNode
from p2pchat.vault import Vault

log = logging.getLogger(__name__)

SWITCH_INTERVAL = 0.0005


class App:
    """One Tk root with one or more :class:`~gui.window.ChatWindow` s; the first window is the root itself."""

    def __init__(self, *, appearance: str = "System", scaling: float = 1.0) -> None:
        # Every Tk call gives up the GIL and must take it back; with a CPU-bound thread in the process (the
        # in-process ledger node's miner) each retake waits up to the switch interval (5 ms by default).
        # 0.5 ms keeps a tick of a few dozen Tk calls well inside one frame (bench/gui_lag_bench.py).
        self._old_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        ctk.set_appearance_mode(appearance)
        ctk.set_widget_scaling(scaling)
        self.root = ctk.CTk(className=WM_CLASS)   # the .desktop entry's StartupWMClass matches it
        self.root.withdraw()          # shown by open_window once there is something to show
        self._collector = TkThreadCollector(self.root)     # Tk objects are freed on this thread (gui/tk_gc.py)
        self.windows: list[ChatWindow] = []
        self._settings: dict[int, tuple[Path | None, Settings]] = {}
        self.running = False
        self.close_requested = False

    def open_window(self, node: ChatNodeLike, me: Me, *, ledger: LedgerMonitor | None = None,
                    data_dir: Path | None = None, geometry: str | None = None) -> ChatWindow:
        """A chat window for ``node``; its size is restored from (and saved to) ``data_dir``'s settings."""
        top = self.root if not self.windows else ctk.CTkToplevel(self.root)
        remembered = gui_settings.load(data_dir) if data_dir is not None else Settings()
        window = ChatWindow(top, node, me, ledger=ledger, on_close=self._window_closed,
                            appearance=remembered.appearance, scaling=remembered.scaling, data_dir=data_dir)
        top.geometry(geometry or remembered.geometry)
        if top is self.root:
            self.root.deiconify()
        self._settings[id(window)] = (data_dir, remembered)
        self.windows.append(window)
        if self.close_requested:
            window.request_close()
        return window

    def run(self) -> None:
        """The Tk main loop; returns once every window is closed."""
        self.running = True
        self.root.mainloop()
        self.running = False

    def request_close(self) -> None:
        """Close every window at the next tick (safe from a signal handler, even before a window is open)."""
        self.close_requested = True
        for window in self.windows:
            window.request_close()

    def _window_closed(self, window: ChatWindow) -> None:
        self._remember(window)
        if not self.close_requested and any(not w.closed for w in self.windows):
            # The demo: each window is one user. Closing one ends that user's chats (the other window shows
            # the peer left) and hides it; the app goes on until the last window closes.
            window.end_chats()
            if window.top is self.root:
                self.root.withdraw()      # the root carries the other windows: hidden, not destroyed
            else:
                window.top.destroy()
            return
        # The last window, or the app was asked to quit (a signal): every window closes. The root goes last.
        for other in self.windows:
            if not other.closed:
                self._remember(other)
                other.close()
        self.close()

    def _remember(self, window: ChatWindow) -> None:
        data_dir, old = self._settings.get(id(window), (None, Settings()))
        if data_dir is None:
            return
        try:
            geometry = window.top.geometry()
        except tkinter.TclError as exc:   # the window is already gone: keep the old geometry
            log.debug("no geometry to remember: %s", exc)
            geometry = old.geometry
        new = Settings(old.width, old.height, old.x, old.y, window.scaling, window.appearance)
        try:
            gui_settings.save(data_dir, new.with_geometry(geometry))
        except OSError as exc:
            log.warning("could not save the window settings in %s: %s", data_dir, exc)

    def close(self) -> None:
        """Close every window and destroy the root (the nodes belong to the caller)."""
        for window in self.windows:
            window.close()
        try:
            self.root.quit()
            self.root.destroy()
        except tkinter.TclError as exc:   # the root is already destroyed
            log.debug("root already gone: %s", exc)
        self._collector.close()
        sys.setswitchinterval(self._old_switch_interval)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``p2pchat gui`` (p2pchat.cli hands its arguments to :func:`main`, which parses them here)."""
    parser.add_argument("--data-dir", help="identity, ledger and settings (default: the user's data dir)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind, claim in the ledger and send from "
                                                            "('auto': this machine's address, followed while it runs)")
    parser.add_argument("--port", type=int, default=None, help="chat port (default 8471)")
    parser.add_argument("--nickname", default=None, help="name shown to peers")
    parser.add_argument("--ledger", default=None, help="ledger node to ask (default: HOST:8470; started "
                                                       "in-process when nothing answers there)")
    parser.add_argument("--join", action="append", default=[], metavar="ADDR",
                        help="ledger node to join through when the app starts its own ledger node")
    parser.add_argument("--network", default="p2pchat", help="network name; every peer must use the same one")
    parser.add_argument("--relay", default=None, help="relay ip:port to register at and fall back to")
    parser.add_argument("--no-inbound", action="store_true", help="do not listen (behind NAT; needs --relay)")
    parser.add_argument("--rotate-every", type=int, default=10, help="messages between key rotations")
    parser.add_argument("--difficulty", type=int, default=None, help="proof-of-work bits for a new network")
    parser.add_argument("--passphrase-file", default=None, help="file holding the identity key's passphrase")
    parser.add_argument("-v", "--verbose", action="store_true", help="log network and ledger activity to stderr")
    return parser


def _arg(args: Any, name: str, default: Any = None) -> Any:
    value = getattr(args, name, default)
    return default if value is None else value


def _passphrase(args: Any) -> str | None:
    import os

    path = _arg(args, "passphrase_file")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return _arg(args, "passphrase") or os.environ.get("P2PCHAT_PASSPHRASE") or None


def main(args: argparse.Namespace | Sequence[str] | None = None, *, host_watch: HostWatch | None = None) -> int:
    """Run the desktop app until its window closes; returns the exit status. ``host_watch`` follows the address
    (``--host auto`` makes one reading the kernel's interfaces; tests give one with their own address source)."""
    if args is None or not isinstance(args, argparse.Namespace):
        args = add_arguments(argparse.ArgumentParser(prog="p2pchat gui")).parse_args(args)
    if _arg(args, "verbose", False):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    runtime = node = monitor = app = actions = view = mover = None
    close_on_signals(None)
    try:
        data_dir = resolve_data_dir(_arg(args, "data_dir"))
        remembered = gui_settings.load(data_dir)
        try:
            # The Tk root comes first (hidden until the window is built): without a display nothing starts.
            app = App(appearance=remembered.appearance, scaling=remembered.scaling)
        except tkinter.TclError as exc:
            raise UserError(f"cannot open a window ({exc}); without a display use `p2pchat chat PEER` or "
                            "`p2pchat listen`") from None
        close_on_signals(app)
        watch = host_watch
        if watch is None and _arg(args, "host") == HOST_AUTO:
            watch = HostWatch()     # this machine's address, followed while the window runs (gui/host_move.py)
        host = watch.current if watch is not None else normalize_ip(_arg(args, "host", "127.0.0.1"))
        port = _arg(args, "port", CHAT_PORT)
        network = _arg(args, "network", "p2pchat")
        passphrase = _passphrase(args)
        view = StartupView(app.root, lambda: app is not None and app.close_requested)
        first_run: FirstRunChoice | None = None
        if os.path.lexists(data_dir / KEY_FILE):     # a link to nothing too: refused, not taken for a first run
            identity = Identity.load(data_dir / KEY_FILE, passphrase)
        else:
            if not _arg(args, "nickname"):
                # First run (issue 15): the user chooses the nickname (and maybe a passphrase) before anything is
                # made or published; the passphrase then goes wherever the app's passphrase goes.
                first_run = FirstRunView(app.root, lambda: app is not None and app.close_requested).run()
                args.nickname = first_run.nickname
                passphrase = first_run.passphrase or passphrase
            # The key is made in other processes while the window shows progress (gui/startup.py).
            chosen = passphrase
            identity = view.run("Making your key…", lambda stop: Identity.load_or_create(
                data_dir, chosen, stop=stop))
        nickname = _arg(args, "nickname") or default_nickname(identity.fingerprint)

        def attach(stop: object) -> LedgerRuntime:
            def tick(_elapsed: float) -> None:
                if view is not None and view.cancelled:
                    raise Cancelled()
            return attach_ledger(data_dir=data_dir, identity=identity, host=host, ledger=_arg(args, "ledger"),
                                 network=network, nickname=_arg(args, "nickname"), chat_port=port,
                                 seeds=list(_arg(args, "join", []) or []),
                                 difficulty_bits=_arg(args, "difficulty"), relay=_arg(args, "relay"),
                                 no_inbound=bool(_arg(args, "no_inbound", False)), passphrase=passphrase,
                                 tick=tick)
        runtime = view.run("Starting your ledger node…", attach)
        view.close()
        if view.cancelled:
            raise Cancelled()
        rotate_every = _arg(args, "rotate_every", 10)
        if not 1 <= rotate_every <= MAX_ROTATE_EVERY:
            raise UserError(f"--rotate-every must be between 1 and {MAX_ROTATE_EVERY} (the protocol's maximum)")
        node = ChatNode(identity, host=host, port=port, network=network, nickname=nickname,
                        ledger=runtime.address, relay=_arg(args, "relay"),
                        no_inbound=bool(_arg(args, "no_inbound", False)),
                        rotate_every=rotate_every, data_dir=data_dir, outbox=True,   # messages that wait (issue 16)
                        vault=Vault.open(data_dir, passphrase))   # history and contacts at rest (issue 15)
        node.start()
        monitor = LedgerMonitor(runtime.source).start()
        me = Me(nickname, format_address(host, node.port), identity.short_fingerprint)
        window = app.open_window(node, me, ledger=monitor, data_dir=data_dir)
        actions = LedgerActions(runtime.address, data_dir, passphrase=passphrase, source_ip=host,
                                network=network)
        window.ledger_panel.set_actions(actions)
        if watch is not None:
            mover = HostMove(watch, runtime=runtime, node=node, window=window, actions=actions).start()
        if first_run is not None:
            ReachableNote(window, nickname, me.address)
        app.run()
        return 0
    except UserError as exc:
        print(f"p2pchat: {visible(str(exc))}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Cancelled):
        print("p2pchat: interrupted while starting", file=sys.stderr)
        return 130
    finally:
        # Reverse order of creation; each close joins its threads.
        if mover is not None:
            mover.close()
        if app is not None:
            app.close()
        if actions is not None:
            actions.close()
        if monitor is not None:
            monitor.close()
        if node is not None:
            node.close()
        if runtime is not None:
            runtime.close()


def close_on_signals(app: App | None) -> None:
    """SIGINT/SIGTERM close the windows like their close button: the handler only sets a flag, the next
    ``after()`` tick closes on the Tk thread. Before the app exists (``None``: nodes still starting) they
    interrupt the start-up with KeyboardInterrupt, which unwinds through every ``close()``."""
    def handler(_signum: int, _frame: object) -> None:
        if app is None:
            raise KeyboardInterrupt
        app.request_close()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
