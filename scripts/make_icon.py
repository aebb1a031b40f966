"""Writes packaging/p2pchat.png (the window icon of gui/widgets/icon.py) for the desktop file. Needs a display
(Tk); scripts/setup.sh runs it when it installs the desktop entry."""

from __future__ import annotations

import sys
import tkinter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gui.widgets.icon import window_icon


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "packaging/p2pchat.png"
    root = tkinter.Tk()
    root.withdraw()
    window_icon(root).write(str(out), format="png")
    root.destroy()
    print(out)


if __name__ == "__main__":
    main()
