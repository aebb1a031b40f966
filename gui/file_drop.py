"""Files dropped onto a conversation (issue 16), where Tk can take drops.

Tk has no drag and drop of its own; the tkdnd Tcl extension (XDND on X11, OLE on Windows, Cocoa on macOS) adds
it, and the ``tkinterdnd2`` package (an optional dependency: ``pip install 'p2pchat[dnd]'``) ships it built for
the usual platforms. When it is missing or cannot load (another architecture, a Tk it was not built for), the
window says so once in the log and works as before: the "Send file…" button is always there.

A drop target is registered for ``DND_Files`` (``text/uri-list`` on X11); tkdnd turns the dropped URIs into paths
and calls the ``<<Drop:DND_Files>>`` binding with them as a Tcl list.
"""

from __future__ import annotations

import logging
import tkinter
from collections.abc import Callable

log = logging.getLogger(__name__)


def load_tkdnd(widget: tkinter.Misc) -> str | None:
    """Load tkdnd into ``widget``'s Tcl interpreter; its version, or None (and why, in the log) when it cannot."""
    try:
        if widget.tk.call("info", "commands", "::tkdnd::drop_target"):
            return str(widget.tk.call("package", "present", "tkdnd"))
        from tkinterdnd2 import TkinterDnD  # its own loader finds the build for this platform

        return str(TkinterDnD._require(widget))
    except (ImportError, RuntimeError, tkinter.TclError) as exc:
        log.info("dropping files onto a chat is off (tkdnd: %s); use the Send file… button", exc or type(exc))
        return None


class DropTarget:
    """Registers widgets of one window as targets for dropped files (nothing happens when tkdnd is missing)."""

    def __init__(self, top: tkinter.Misc) -> None:
        self.version = load_tkdnd(top)

    @property
    def available(self) -> bool:
        return self.version is not None

    def register(self, widget: tkinter.Misc, on_files: Callable[[list[str]], None]) -> bool:
        """Files dropped on ``widget`` or anything inside it go to ``on_files`` (paths, in the order given)."""
        if self.version is None:
            return False

        def dropped(data: str) -> str:
            try:
                paths = [str(p) for p in widget.tk.splitlist(data) if str(p)]
            except tkinter.TclError:
                paths = []
            if paths:
                on_files(paths)
            return "copy"

        command = widget.register(dropped)
        widget.tk.call("tkdnd::drop_target", "register", widget, "DND_Files")
        widget.tk.call("bind", widget, "<<Drop:DND_Files>>", f"{command} %D")
        return True


__all__ = ["DropTarget", "load_tkdnd"]
