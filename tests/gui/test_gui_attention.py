"""Never miss a caller: a real window under Xvfb with a window manager (openbox), a private D-Bus session bus
and a test notification server. A call while the window is minimized maps, raises and focuses it with the
accept dialog, sets the urgency hint (read back with xprop), sends a desktop notification, and Enter accepts.
Messages while the window is unfocused count as unread in the title, also in the selected tab."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gui.app import App
from gui.attention import client_window
from p2pchat.demo_world import DemoUser, DemoWorld
from tests.conftest import free_loopback_ip
from tests.gui.driver import Driver, need_xdotool
from tests.gui.helpers import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.timeout(180)]
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def desktop(xvfb):
    """openbox on the private display, a private session bus with a notification server writing to a file."""
    for tool in ("openbox", "dbus-daemon", "xprop", "gdbus"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup.sh --test installs it)")
    if subprocess.run([SYSTEM_PYTHON, "-c", "import gi"], capture_output=True).returncode != 0:
        pytest.skip("python3-gi is not installed")
    procs: list[subprocess.Popen[bytes]] = []
    old_bus = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"notifications-{os.getpid()}.jsonl"
    log.unlink(missing_ok=True)
    try:
        procs.append(subprocess.Popen(["openbox", "--sm-disable"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wait_until(lambda: b"_NET_SUPPORTING_WM_CHECK(WINDOW)" in subprocess.run(
            ["xprop", "-root", "_NET_SUPPORTING_WM_CHECK"], capture_output=True).stdout, 15, what="openbox")
        bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(bus)
        assert bus.stdout is not None
        os.environ["DBUS_SESSION_BUS_ADDRESS"] = bus.stdout.readline().decode().strip()
        procs.append(subprocess.Popen([SYSTEM_PYTHON, str(Path(__file__).with_name("notification_server.py")),
                                       str(log)]))
        wait_until(lambda: log.exists() and "ready" in log.read_text(), 15, what="the notification server")
        yield log
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(10)
        if old_bus is None:
            os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = old_bus
        log.unlink(missing_ok=True)


@pytest.fixture
def world(tmp_path, identities):
    with DemoWorld(root=tmp_path, hosts=(free_loopback_ip(), free_loopback_ip()), nicknames=("alice", "bob"),
                   identities=identities[:2], difficulty=8) as w:
        yield w


def notifications(log: Path) -> list[dict[str, str]]:
    return [n for n in map(json.loads, log.read_text().splitlines()) if "summary" in n]


def urgent(window_id: int) -> bool:
    out = subprocess.run(["xprop", "-id", str(window_id), "WM_HINTS"], capture_output=True, text=True).stdout
    return "urgency hint" in out.lower() or "urgent" in out.lower()


def me(user: DemoUser):
    from gui.window import Me
    return Me(user.nickname, user.chat.address, user.identity.short_fingerprint)


def test_a_call_while_minimized_raises_focuses_flags_and_notifies(desktop, world, monkeypatch):
    import gui.widgets.accept_dialog

    need_xdotool()
    monkeypatch.setattr(gui.widgets.accept_dialog, "ARMING_MS", 600_000)   # armed below, by the test
    app = App(appearance="Light")
    try:
        alice_user, bob_user = world.users
        window = app.open_window(alice_user.chat, me(alice_user), geometry="800x700+0+0")
        d = Driver(app.root)
        d.wait(lambda: app.root.winfo_viewable(), what="the window to be mapped")
        app.root.iconify()
        d.wait(lambda: app.root.state() == "iconic" and not app.root.winfo_viewable(), what="minimized")
        wrapper = client_window(app.root)
        assert not urgent(wrapper)

        bob = bob_user.chat
        session = bob.open_session(alice_user.host)
        bob.run_step(session, __import__("p2pchat.steps", fromlist=["Step"]).Step.CONNECT)
        d.wait(lambda: window._dialog is not None, what="the accept dialog")
        d.wait(lambda: app.root.state() == "normal" and app.root.winfo_viewable(), what="the window to be mapped")
        d.wait(lambda: window._dialog is not None and window._dialog.winfo_viewable(), what="the dialog on screen")
        assert window.urgent and urgent(wrapper), "the urgency hint is set while the caller waits"
        d.screenshot("caller-while-minimized.png")
        d.wait(lambda: notifications(desktop), what="a desktop notification")
        note = notifications(desktop)[0]
        assert note["app"] == "p2pchat" and note["summary"] == "Incoming chat" and "bob" in note["body"]
        # The dialog has the keyboard. An Enter that comes as it takes the keyboard (typed for another program)
        # is not a yes; once armed, Accept has the focus, Enter accepts, and answering clears the urgency hint.
        d.wait(lambda: window.has_focus(), what="the window to have the focus")
        dialog = window._dialog
        d.wait(lambda: str(dialog.focus_get() or "").startswith(str(dialog)), what="the dialog to take focus")
        d.key("Return")
        d.key("space")
        for _ in range(5):
            d.pump()
        assert window._dialog is dialog and not dialog._answered, "an Enter before the dialog was armed accepted"
        dialog._arm()                                   # ARMING_MS passed
        d.wait(lambda: str(dialog.focus_get() or "").startswith(str(dialog.accept_button)), what="Accept focused")
        d.key("Return")
        d.wait(lambda: window._dialog is None, what="the answer")
        tab = next(iter(window.controller.tabs.values()))
        assert not tab.awaiting_answer and tab.answered
        d.wait(lambda: not urgent(wrapper), what="the urgency hint to be cleared")
    finally:
        app.close()


def bob_calls_and_alice_accepts(app: App, world: DemoWorld):
    """Alice's window in ``app``; bob calls and runs the four steps, alice accepts: (window, driver, bob's node,
    bob's session)."""
    alice_user, bob_user = world.users
    window = app.open_window(alice_user.chat, me(alice_user), geometry="800x700+0+0")
    d = Driver(app.root)
    bob = bob_user.chat
    session = bob.open_session(alice_user.host)
    bob.run_all(session)
    d.wait(lambda: window._dialog is not None, what="the accept dialog")
    window._dialog.answer(True)
    d.wait(lambda: any(t.ready for t in window.controller.tabs.values()), 60, what="the chat to be ready")
    return window, d, bob, session


def test_messages_in_the_selected_tab_count_as_unread_while_unfocused(desktop, world):
    need_xdotool()
    app = App(appearance="Light")
    try:
        window, d, bob, session = bob_calls_and_alice_accepts(app, world)
        tab = next(iter(window.controller.tabs.values()))
        assert window.controller.selected == tab.session
        # Another X client takes the focus: alice's window is not focused, her chat tab stays selected.
        other = subprocess.Popen([sys.executable, "-c", "import tkinter; r = tkinter.Tk(); r.title('other'); "
                                  "r.after(100, r.focus_force); r.mainloop()"])
        try:
            d.wait(lambda: not window.controller.focused, what="alice's window to lose the focus")
            bob.send_text(session, "are you there?")
            d.wait(lambda: "(1 unread)" in app.root.title(), what="the unread count in the title")
            d.wait(lambda: any("New message" == n["summary"] for n in notifications(desktop)), what="a notification")
            assert not any("are you there" in n["body"] for n in notifications(desktop)), "no message text leaves"
        finally:
            other.terminate()
            other.wait(10)
        app.root.focus_force()
        d.wait(lambda: window.controller.focused, what="alice's window to get the focus back")
        d.wait(lambda: "unread" not in app.root.title(), what="the title without an unread count")
    finally:
        app.close()


def test_a_hostile_nickname_reaches_the_notification_server_as_plain_text(desktop):
    from gui.attention import DesktopNotifier
    before = len(notifications(desktop))
    notifier = DesktopNotifier()
    try:
        assert notifier.notify("Incoming chat", 'mal"lory\' \\ <b>boss</b> & {x} [1] wants to chat')
    finally:
        notifier.close()
    assert notifier.sent == 1
    note = notifications(desktop)[before]
    assert note["body"] == 'mal"lory\' \\ &lt;b&gt;boss&lt;/b&gt; &amp; {x} [1] wants to chat'


def test_without_a_session_bus_nothing_is_sent_and_nothing_fails(monkeypatch):
    from gui.attention import DesktopNotifier
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    notifier = DesktopNotifier()
    assert not notifier.available and notifier.notify("Incoming chat", "bob wants to chat") is False
    assert DesktopNotifier(gdbus="").notify("x", "y") is False


def test_the_desktop_file_matches_the_window_class():
    from gui.window import WM_CLASS
    entry = (Path(__file__).parents[2] / "packaging" / "p2pchat.desktop").read_text()
    assert f"StartupWMClass={WM_CLASS}\n" in entry and "Exec=@EXEC@ gui\n" in entry


def _install_entry(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = Path(__file__).parents[2] / "scripts" / "install-desktop-entry.sh"
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_CURRENT_DESKTOP", "DESKTOP_SESSION")}
    return subprocess.run(["bash", str(script)], env={**clean, "XDG_DATA_HOME": str(tmp_path), **env},
                          capture_output=True, text=True, timeout=60, check=True)


def test_the_menu_entry_is_installed_only_with_a_desktop(xvfb, tmp_path):
    _install_entry(tmp_path)
    assert not (tmp_path / "applications").exists(), "nothing is written without a desktop session"
    _install_entry(tmp_path, DISPLAY=xvfb, XDG_CURRENT_DESKTOP="test")
    entry = (tmp_path / "applications" / "p2pchat.desktop").read_text()
    assert "StartupWMClass=p2pchat\n" in entry and "@" not in entry
    exec_line = next(line for line in entry.splitlines() if line.startswith("Exec="))
    assert exec_line.endswith("/.venv/bin/p2pchat gui")
    icon = tmp_path / "icons" / "hicolor" / "64x64" / "apps" / "p2pchat.png"
    assert icon.read_bytes().startswith(b"\x89PNG") and "Icon=p2pchat\n" in entry


def test_a_flood_of_texts_while_unfocused_is_one_notification_and_one_urgency_hint(desktop, world, monkeypatch):
    """A verified peer sends 200 texts in bursts while the window is not focused: the user is told once (one
    notification naming the sender and the count, the urgency hint set once), not once per tick of the loop —
    each notification is a gdbus process and a popup, each hint two X connections. What came after the first
    notification waits for the pacing gap (made longer than the test here) and is summed into one."""
    import gui.window
    from gui.alert_pacing import AlertPacer

    need_xdotool()
    hints: list[bool] = []
    real_set_urgent = gui.window.set_urgent
    monkeypatch.setattr(gui.window, "set_urgent", lambda top, on: (hints.append(on), real_set_urgent(top, on))[1])
    before = len(notifications(desktop))
    app = App(appearance="Light")
    try:
        window, d, bob, session = bob_calls_and_alice_accepts(app, world)
        window.pacer = AlertPacer(gap=3600.0)
        tab = next(iter(window.controller.tabs.values()))
        other = subprocess.Popen([sys.executable, "-c", "import tkinter; r = tkinter.Tk(); r.title('other'); "
                                  "r.after(100, r.focus_force); r.mainloop()"])
        try:
            d.wait(lambda: not window.controller.focused, what="alice's window to lose the focus")
            ticks = window.ticks
            for burst in range(20):
                for i in range(10):
                    bob.send_text(session, f"flood {burst * 10 + i}")
                d.wait(lambda b=burst: tab.unread >= (b + 1) * 10, what="the burst to arrive")
            assert window.ticks - ticks >= 20          # many ticks brought news: each could have notified
        finally:
            other.terminate()
            other.wait(10)
    finally:
        app.close()                                    # joins the notifier's threads
    flood = [n for n in notifications(desktop)[before:] if n["summary"] == "New message"]
    assert len(flood) == 1, flood
    assert "from bob" in flood[0]["body"] and "flood" not in flood[0]["body"]
    assert hints.count(True) == 1, hints
