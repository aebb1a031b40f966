#!/usr/bin/env python3
"""The window's cost per group message (issue 18): a real chat window on a real ChatNode with a group of
``--members`` (default 16) on screen takes ``--messages`` group messages from the other members (node events, as
the group service emits them) and draws them — handled, named, coloured and inserted into the transcript by the
window's own event pump. Baseline, same run, same window: as many messages of one pairwise chat on screen.
Prints the microseconds per message of each and their ratio (median of ``--runs``). Needs a display: uses
$DISPLAY, else starts its own Xvfb.

    python3 bench/group_gui_bench.py [--members 16] [--messages 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gui_lag_bench import start_display  # noqa: E402

from p2pchat.events import GroupMessage, IncomingChat, MessageReceived  # noqa: E402
from p2pchat.foundation.identity import Identity  # noqa: E402
from p2pchat.node import ChatNode  # noqa: E402
from p2pchat.peer_directory import FixedDirectory  # noqa: E402

SESSION = "bench-pairwise"


def drain(window: object, node: ChatNode) -> float:
    """Seconds the window's pump takes until every queued event is handled and drawn."""
    started = time.perf_counter()
    while not node.events.empty():
        window.pump()            # type: ignore[attr-defined]
    window.top.update_idletasks()       # type: ignore[attr-defined]
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    display = start_display()
    from gui.app import App
    from gui.groups import GROUP_KEY
    from gui.window import Me

    print(f"making {args.members} keys…", file=sys.stderr)
    people = [Identity.generate() for _ in range(args.members)]
    me, others = people[0], people[1:]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "me"
        data_dir.mkdir(mode=0o700)
        # members nobody can look up: the outbox's calls to them fail at once (a few, then once a minute)
        node = ChatNode(me, host="127.77.3.2", port=0, nickname="me", directory=FixedDirectory(), data_dir=data_dir,
                        outbox=True)
        node.start()
        app = None
        try:
            assert node.groups is not None
            gid = node.groups.create("bench", [(p.fingerprint.hex(), p.public_der, f"member{i}")
                                               for i, p in enumerate(others, start=1)])
            app = App(appearance="Light")
            window = app.open_window(node, Me("me", node.address, me.short_fingerprint), geometry="1000x780+0+0")
            key = GROUP_KEY + gid.hex()
            node.events.put(IncomingChat(SESSION, "127.77.3.9:40000", "peer"))
            deadline = time.monotonic() + 10
            while (key not in window.tabs.pages or SESSION not in window.panes) and time.monotonic() < deadline:
                window.pump()
                app.root.update()
            if window._dialog is not None:
                window._dialog.dismiss()
            fps = [p.fingerprint.hex() for p in others]
            group_times, pair_times = [], []
            counter = 0
            for run in range(args.runs):
                window.tabs.select(key)
                window._tab_chosen(key)
                app.root.update()
                now = time.time()
                for i in range(args.messages):
                    counter += 1
                    node.events.put(GroupMessage(gid.hex(), "bench", fps[i % len(fps)], f"member{i % len(fps)}",
                                                 counter, f"group message {counter} of run {run}", now))
                group_times.append(drain(window, node) / args.messages)
                window.tabs.select(SESSION)
                window._tab_chosen(SESSION)
                app.root.update()
                for i in range(args.messages):
                    node.events.put(MessageReceived(SESSION, i, f"pairwise message {i} of run {run}", "peer", now,
                                                    now))
                pair_times.append(drain(window, node) / args.messages)
            group, pair = statistics.median(group_times), statistics.median(pair_times)
            print(f"{args.members}-member group on screen, {args.messages} messages a run, {args.runs} runs:")
            print(f"  group message:    {group * 1e6:8.1f} µs each (runs: "
                  f"{', '.join(f'{t * 1e6:.0f}' for t in group_times)})")
            print(f"  pairwise message: {pair * 1e6:8.1f} µs each (runs: "
                  f"{', '.join(f'{t * 1e6:.0f}' for t in pair_times)})")
            print(f"  ratio group / pairwise: {group / pair:.2f}")
        finally:
            if app is not None:
                app.close()
            node.close()
            if display is not None:
                display.terminate()
                display.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
