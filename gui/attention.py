"""Getting the user's attention for an incoming chat or message while the window is minimized or unfocused:
a freedesktop desktop notification over D-Bus, the window's urgency hint, and a sound (off by default).

Notifications go through ``gdbus`` (part of GLib, present wherever a freedesktop desktop runs) in a thread of
their own, so a slow or missing notification server never stalls the window; without ``gdbus`` or a session bus
nothing is sent and nothing is said (the title and the urgency hint still show the news). At most
``MAX_IN_FLIGHT`` notifications are under way at once; more are dropped (a flood of callers is a flood).

The urgency hint is the ``XUrgencyHint`` flag of the window's ``WM_HINTS`` property (ICCCM 4.1.2.4), set through
Xlib with ctypes: Tk 8.6 has no ``wm attributes -urgent`` on X11, and Xlib is there wherever Tk draws on X11.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import subprocess
import threading
import tkinter

log = logging.getLogger(__name__)

APP_NAME = "p2pchat"
NOTIFY_TIMEOUT = 10.0       # seconds gdbus may take before the notification is given up
MAX_IN_FLIGHT = 4
EXPIRE_MS = 8000


def _markup_escaped(text: str) -> str:
    # servers may render a subset of HTML in the body: a nickname is hostile text, never markup
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _gvariant_string(text: str) -> str:
    """``text`` as a GVariant text-format string literal (what ``gdbus call`` parses)."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class DesktopNotifier:
    """Sends ``org.freedesktop.Notifications.Notify``; owns its sender threads (:meth:`close` joins them)."""

    def __init__(self, gdbus: str | None = None) -> None:
        self.gdbus = gdbus if gdbus is not None else shutil.which("gdbus")
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.sent = 0          # notifications the server accepted (tests and the log read it)

    @property
    def available(self) -> bool:
        return bool(self.gdbus) and bool(os.environ.get("DBUS_SESSION_BUS_ADDRESS"))

    def notify(self, summary: str, body: str) -> bool:
        """Start sending one notification; False when there is no notification service or too many are under
        way (quietly: the window shows the news itself)."""
        if not self.available:
            return False
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            if len(self._threads) >= MAX_IN_FLIGHT:
                return False
            thread = threading.Thread(target=self._send, args=(summary, _markup_escaped(body)),
                                      name="gui-notify", daemon=True)
            self._threads.append(thread)
        thread.start()
        return True

    def _send(self, summary: str, body: str) -> None:
        assert self.gdbus is not None
        args = [self.gdbus, "call", "--session", "--dest", "org.freedesktop.Notifications",
                "--object-path", "/org/freedesktop/Notifications",
                "--method", "org.freedesktop.Notifications.Notify",
                _gvariant_string(APP_NAME), "0", _gvariant_string(APP_NAME), _gvariant_string(summary),
                _gvariant_string(body), "[]", "{}", str(EXPIRE_MS)]
        try:
            done = subprocess.run(args, capture_output=True, timeout=NOTIFY_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.info("desktop notification not sent: %s", exc)
            return
        if done.returncode != 0:
            log.info("desktop notification not sent: %s", done.stderr.decode(errors="replace").strip()[:200])
            return
        with self._lock:
            self.sent += 1

    def close(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(NOTIFY_TIMEOUT + 1)


# ---- the urgency hint ---------------------------------------------------------------------------------------

X_URGENCY_HINT = 1 << 8


class _XWMHints(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("input", ctypes.c_int), ("initial_state", ctypes.c_int),
                ("icon_pixmap", ctypes.c_ulong), ("icon_window", ctypes.c_ulong), ("icon_x", ctypes.c_int),
                ("icon_y", ctypes.c_int), ("icon_mask", ctypes.c_ulong), ("window_group", ctypes.c_ulong)]


class _Xlib:
    def __init__(self) -> None:
        name = ctypes.util.find_library("X11")
        if name is None:
            raise OSError("libX11 not found")
        x = ctypes.cdll.LoadLibrary(name)
        x.XOpenDisplay.restype = ctypes.c_void_p
        x.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x.XCloseDisplay.argtypes = [ctypes.c_void_p]
        x.XGetWMHints.restype = ctypes.POINTER(_XWMHints)
        x.XGetWMHints.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        x.XAllocWMHints.restype = ctypes.POINTER(_XWMHints)
        x.XSetWMHints.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(_XWMHints)]
        x.XFree.argtypes = [ctypes.c_void_p]
        x.XFlush.argtypes = [ctypes.c_void_p]
        x.XQueryTree.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong),
                                 ctypes.POINTER(ctypes.c_ulong), ctypes.POINTER(ctypes.c_void_p),
                                 ctypes.POINTER(ctypes.c_uint)]
        self.x = x


_xlib: _Xlib | None = None


def client_window(top: tkinter.Misc) -> int:
    """The X window that carries a Tk toplevel's ``WM_HINTS``: Tk's wrapper, the parent of ``winfo_id``."""
    global _xlib
    if _xlib is None:
        _xlib = _Xlib()
    x = _xlib.x
    display = x.XOpenDisplay(top.winfo_screen().encode())
    if not display:
        raise OSError("cannot open the X display")
    try:
        root, parent, children, n = ctypes.c_ulong(), ctypes.c_ulong(), ctypes.c_void_p(), ctypes.c_uint()
        x.XQueryTree(display, top.winfo_id(), ctypes.byref(root), ctypes.byref(parent), ctypes.byref(children),
                     ctypes.byref(n))
        if children:
            x.XFree(children)
        return int(parent.value)
    finally:
        x.XCloseDisplay(display)


def set_urgent(top: tkinter.Misc, urgent: bool) -> bool:
    """Set or clear the urgency hint of ``top``; False where that cannot be done (not X11, no Xlib)."""
    global _xlib
    if top.tk.call("tk", "windowingsystem") != "x11":
        return False
    try:
        window = client_window(top)
        assert _xlib is not None
        x = _xlib.x
        display = x.XOpenDisplay(top.winfo_screen().encode())
        if not display:
            return False
        try:
            hints = x.XGetWMHints(display, window)
            owned = bool(hints)
            if not owned:
                hints = x.XAllocWMHints()
            if urgent:
                hints.contents.flags |= X_URGENCY_HINT
            else:
                hints.contents.flags &= ~X_URGENCY_HINT
            x.XSetWMHints(display, window, hints)
            x.XFree(hints)
            x.XFlush(display)
        finally:
            x.XCloseDisplay(display)
    except (OSError, tkinter.TclError) as exc:
        log.info("urgency hint not set: %s", exc)
        return False
    return True
