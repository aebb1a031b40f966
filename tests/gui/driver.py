"""Driving real windows under Xvfb: real pointer clicks and key presses through xdotool, the Tk loop pumped
by the test while it waits for a condition, and screenshots with ImageMagick's ``import``.

Screenshots go to ``$P2PCHAT_SCREENSHOTS`` when it is set (docs/screenshots is made that way), else nowhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tkinter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.gui.helpers import wait_until


def need_xdotool() -> None:
    if shutil.which("xdotool") is None:
        if os.environ.get("CI"):
            pytest.fail("xdotool is not installed, but CI must run the real-window tests (apt-get install xdotool)")
        pytest.skip("xdotool is not installed")


def inner(widget: tkinter.Misc, kind: type) -> tkinter.Misc:
    """The plain Tk widget inside a customtkinter one (an Entry in a CTkEntry, a Text in a CTkTextbox)."""
    for child in widget.winfo_children():
        if isinstance(child, kind):
            return child
    raise LookupError(f"no {kind.__name__} inside {widget}")


class Driver:
    """Pumps the Tk loop of ``root`` while waiting, and sends real input to its windows."""

    def __init__(self, root: tkinter.Misc) -> None:
        self.root = root

    def pump(self) -> None:
        self.root.update()

    def wait(self, predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
        wait_until(predicate, timeout, interval=0.01, step=self.pump, what=what)

    def _xdotool(self, *args: str) -> None:
        subprocess.run(["xdotool", *args], check=True, timeout=10)

    def click_at(self, x: int, y: int, times: int = 1) -> None:
        # ``mousemove --sync`` waits for the pointer to move: it never returns when the pointer is already there
        # (two dialogs opened at the same place, clicked one after the other)
        here = subprocess.run(["xdotool", "getmouselocation", "--shell"], capture_output=True, text=True,
                              check=True, timeout=10).stdout
        click = ["click", "--repeat", str(times), "--delay", "1", "1"]     # a double click: both before a pump
        if f"X={x}\nY={y}\n" in here:
            self._xdotool(*click)
        else:
            self._xdotool("mousemove", "--sync", str(x), str(y), *click)
        self.pump()

    def click(self, widget: tkinter.Misc, times: int = 1) -> None:
        """A real left click (``times`` of them at once) in the middle of ``widget``, once it has settled on screen
        (a dialog that is being placed over its parent, raised or given focus moves after it is mapped: clicking
        where it was would miss)."""
        self.pump()
        assert widget.winfo_viewable(), f"{widget} is not on screen"
        seen: list[tuple[int, int, int, int]] = []

        def settled() -> bool:
            seen.append((widget.winfo_rootx(), widget.winfo_rooty(), widget.winfo_width(), widget.winfo_height()))
            return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]

        self.wait(settled, 5, what=f"{widget} to settle on screen")
        x, y, width, height = seen[-1]
        self.click_at(x + width // 2, y + height // 2, times)

    def type(self, entry: tkinter.Misc, text: str) -> None:
        """Click into ``entry`` and type ``text`` key by key."""
        self.click(entry)
        self.wait(lambda: str(entry.focus_get() or "").startswith(str(entry)), 5, what="the entry to get focus")
        self.type_on(text)

    def type_on(self, text: str) -> None:
        """Type ``text`` key by key wherever the keyboard is."""
        self._xdotool("type", "--delay", "2", text)
        self.pump()

    def key(self, name: str) -> None:
        self._xdotool("key", name)
        self.pump()

    def screenshot(self, name: str, widget: tkinter.Misc | None = None) -> Path | None:
        """Save the screen (or one window) as ``$P2PCHAT_SCREENSHOTS/name``; None when not asked to."""
        folder = os.environ.get("P2PCHAT_SCREENSHOTS")
        if not folder or shutil.which("import") is None:
            return None
        for _ in range(5):
            self.pump()
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        args = ["import", "-window", "root"]
        if widget is not None:
            top = widget.winfo_toplevel()
            args += ["-crop", f"{top.winfo_width()}x{top.winfo_height()}+{top.winfo_rootx()}+{top.winfo_rooty()}"]
        subprocess.run([*args, str(path)], check=True, timeout=30)
        return path
