"""``p2pchat demo`` with a display: two chat windows side by side beside a local ledger network.

:class:`p2pchat.demo_world.DemoWorld` starts a two-node ledger network on 127.0.0.2 and 127.0.0.3 (low
proof-of-work difficulty), waits until both users' records are mined, and starts alice's and bob's chat nodes.
Then alice's window (left) and bob's (right) open on one Tk root, alice's peer field already holding bob's
address: click 1 Connect, accept in bob's window, click 2, 3 and 4, and chat. Closing one window ends that user's chats
(the other window shows the peer left) and leaves the other running; closing the last one ends the demo: the
chat nodes, the ledger nodes and the temporary data directory close.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gui.app import App, close_on_signals
from gui.ledger_monitor import LedgerMonitor, NodeSource
from gui.window import Me
from p2pchat.demo_world import DEMO_HOSTS, DemoWorld
from p2pchat.foundation.errors import UserError

MAX_WIDTH, MAX_HEIGHT = 700, 820


def place_windows(screen_width: int, screen_height: int, count: int = 2) -> list[str]:
    """Tk geometries for ``count`` windows side by side, each at most MAX_WIDTH × MAX_HEIGHT."""
    width = min(MAX_WIDTH, screen_width // count - 8)
    height = min(MAX_HEIGHT, screen_height - 60)
    left = max(0, (screen_width - count * (width + 8)) // 2)
    return [f"{width}x{height}+{left + i * (width + 8)}+20" for i in range(count)]


def run_windows(world: DemoWorld, app: App | None = None) -> App:
    """Open one window per demo user and run the Tk loop until every window is closed (the world stays open)."""
    app = app or App()
    close_on_signals(app)
    monitors: list[LedgerMonitor] = []
    try:
        geometries = place_windows(app.root.winfo_screenwidth(), app.root.winfo_screenheight(), len(world.users))
        windows = []
        for user, geometry in zip(world.users, geometries, strict=True):
            assert user.chat is not None
            monitor = LedgerMonitor(NodeSource(user.ledger_node)).start()
            monitors.append(monitor)
            me = Me(user.nickname, user.chat.address, user.identity.short_fingerprint)
            windows.append(app.open_window(user.chat, me, ledger=monitor, geometry=geometry))
        # Alice's peer field already names bob: the newcomer's first click is "1 Connect".
        windows[0].prefill_peer(world.users[1].host)
        print("p2pchat demo: the windows are open. In alice's window press 1 Connect, accept in bob's, then "
              "2, 3 and 4, and chat. Close both windows to end the demo.", file=sys.stderr, flush=True)
        app.run()
    finally:
        app.close()
        for monitor in monitors:
            monitor.close()
    return app


def main(keep: bool = False, hosts: Sequence[str] = DEMO_HOSTS) -> int:
    """Run the two-window demo until a window closes; returns the exit status."""
    print("p2pchat demo: starting a ledger network for alice and bob on this machine…", file=sys.stderr,
          flush=True)
    close_on_signals(None)
    try:
        with DemoWorld(hosts=tuple(hosts), keep=keep,
                       say=lambda text: print(f"  {text}", file=sys.stderr, flush=True)) as world:
            run_windows(world)
    except UserError as exc:
        print(f"p2pchat demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("p2pchat demo: interrupted while starting", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
