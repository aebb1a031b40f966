"""A terminal-rendering oracle for the UI tests: a VT emulator (``pyte``) that records every control function the
output invokes, so a test can assert that nothing but printing and line feeds happened."""

from __future__ import annotations

import re
from typing import Any

import pyte

ALLOWED = frozenset({"draw", "linefeed"})
"""What the terminal UI's output may do: print characters and end lines. Anything else (cursor movement, erasing,
titles, OSC, SGR, bells, tabs, carriage returns, charsets) means text became a control sequence."""

_EVENTS = sorted({*pyte.Stream.basic.values(), *pyte.Stream.escape.values(), *pyte.Stream.sharp.values(),
                  *pyte.Stream.csi.values(), "draw", "set_title", "set_icon_name", "define_charset", "debug",
                  "select_other_charset", "write_process_input"})


class RecordingScreen(pyte.Screen):
    """A pyte screen that records the control functions the stream calls (not the ones they call in turn)."""

    def __init__(self, columns: int, lines: int) -> None:
        super().__init__(columns, lines)
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._depth = 0
        for name in _EVENTS:
            method = getattr(self, name, None)
            if method is not None:
                setattr(self, name, self._recorder(name, method))
        self.set_mode(pyte.modes.LNM)     # a line feed also returns the carriage, like a tty's ONLCR
        self.calls.clear()

    def _recorder(self, name: str, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if self._depth == 0:
                self.calls.append((name, args))
            self._depth += 1
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1
        return call

    def forbidden(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [c for c in self.calls if c[0] not in ALLOWED]


def render(output: str, columns: int = 80, lines: int | None = None) -> RecordingScreen:
    """Feed ``output`` (what the UI wrote) to a fresh emulator as the UTF-8 bytes a terminal receives."""
    n = lines or max(24, output.count("\n") + 2)
    screen = RecordingScreen(columns, n)
    stream = pyte.ByteStream(screen)
    stream.feed(output.encode("utf-8", "surrogatepass"))
    return screen


def screen_lines(screen: RecordingScreen) -> list[str]:
    return [line.rstrip() for line in screen.display]


SENDER_LINE = re.compile(r"^(?:\[\d+\] )?\[\d\d:\d\d:\d\d\] (.+?):(?: |$)")
"""A line that shows a message: optional chat tag, clock, sender, colon."""
