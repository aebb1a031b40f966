#!/usr/bin/env python3
"""What a peer's very long line costs the window when it is scrolled: a 1 MiB text without a space, ``--shown``
characters of it revealed ("show more"), in the real transcript widget (lines broken at gui/text.py LONG_LINE)
and, as the same run's baseline, the same widget given the characters as one line (what the window gave Tk
before; 200,000 characters took 21 s a scroll there). Prints the first draw and the slowest of ten scrolls of
each, and their ratio. Needs a display: uses $DISPLAY, else starts its own Xvfb.

    python3 bench/long_line_bench.py [--shown 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
import tkinter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gui_lag_bench import start_display  # noqa: E402


def scrolls(root: tkinter.Misc, text: tkinter.Text) -> tuple[float, float]:
    """(first draw, slowest of ten scrolls) in seconds."""
    started = time.perf_counter()
    root.update()
    first = time.perf_counter() - started
    worst = 0.0
    for k in range(10):
        started = time.perf_counter()
        text.yview_moveto(k / 10)
        root.update()
        worst = max(worst, time.perf_counter() - started)
    return first, worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shown", type=int, default=100_000, help="characters of the long line revealed")
    args = parser.parse_args()
    display = start_display()
    try:
        import customtkinter as ctk

        from gui.models import ChatLine, LineKind
        from gui.widgets.style import Fonts
        from gui.widgets.transcript import Transcript

        root = ctk.CTk()
        root.geometry("800x600")
        body = "".join(chr(0x41 + i % 26) for i in range(1024 * 1024))
        around = [ChatLine(i, LineKind.IN, "12:00", "bob", f"message {i}", 11) for i in range(2, 100)]

        import gui.text

        def drawn(long_line: int) -> tuple[float, float]:
            gui.text.LONG_LINE = long_line
            transcript = Transcript(root, Fonts(), on_more=lambda _line_id: None)
            transcript.pack(fill="both", expand=True)
            transcript.add([*around[:50], ChatLine(1, LineKind.IN, "12:00", "bob", body, args.shown),
                            *around[50:]])
            try:
                return scrolls(root, transcript._text)
            finally:
                transcript.destroy()
                root.update()

        broken = drawn(gui.text.LONG_LINE)
        one_line = drawn(10**9)          # the baseline: the window before, one Tk line however long
        root.destroy()
    finally:
        if display is not None:
            display.terminate()
            display.wait(10)
    print(f"{args.shown:,} characters of a line without spaces revealed")
    print(f"  {'':28} {'first draw':>12} {'slowest scroll':>15}")
    print(f"  {'one Tk line (baseline)':28} {one_line[0] * 1000:10.1f} ms {one_line[1] * 1000:12.1f} ms")
    print(f"  {'the window (LONG_LINE)':28} {broken[0] * 1000:10.1f} ms {broken[1] * 1000:12.1f} ms")
    print(f"  slowest scroll: the window takes {broken[1] / one_line[1]:.3f} of the baseline's time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
