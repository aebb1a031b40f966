"""A private Xvfb display for the real-window tests (``@pytest.mark.gui``).

The server picks a free display number itself (``-displayfd``), so parallel runs never collide; it is
terminated when the session ends, and DISPLAY points at it only while a window test module runs. Without Xvfb
the window tests are skipped, except in CI (``CI`` set), where a missing Xvfb fails them loudly.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from gui.worker import CommandWorker
from tests.gui.helpers import Clock

SCREEN = "1280x800x24"


def _start_xvfb() -> tuple[subprocess.Popen[bytes], str]:
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", SCREEN, "-nolisten", "tcp",
                             "-noreset"], pass_fds=(write_fd,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.close(write_fd)
    number = b""
    deadline = time.monotonic() + 15
    try:
        while not number.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise RuntimeError("Xvfb did not start (no display number within 15 s)")
            ready, _, _ = select.select([read_fd], [], [], left)
            if ready:
                chunk = os.read(read_fd, 16)
                if not chunk:
                    raise RuntimeError("Xvfb exited before it told its display number")
                number += chunk
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        os.close(read_fd)
    return proc, f":{number.decode().strip()}"


@pytest.fixture(scope="session")
def xvfb_server() -> Iterator[str]:
    """One private Xvfb for the session. It outlives every Tk interpreter of this process: Tk keeps its display
    connection after the root is destroyed, and a server that went away under a live connection makes Xlib end
    the whole process at the next event."""
    if shutil.which("Xvfb") is None:
        if os.environ.get("CI"):
            pytest.fail("Xvfb is not installed, but CI must run the real-window tests (apt-get install xvfb)")
        pytest.skip("Xvfb is not installed (apt-get install xvfb xdotool)")
    proc, display = _start_xvfb()
    try:
        yield display
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def xvfb(xvfb_server: str) -> Iterator[str]:
    """DISPLAY set to the private server for one test module, restored after it (tests elsewhere decide
    things by whether a display exists)."""
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = xvfb_server
    try:
        yield xvfb_server
    finally:
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    """Every thread a test started (workers, monitors, nodes) is stopped and joined by the end of the test."""
    import threading

    from tests.gui.helpers import wait_until

    before = set(threading.enumerate())
    yield

    def leftovers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in before and t.is_alive()]
    try:
        wait_until(lambda: not leftovers(), 10, interval=0.05, what="the test's threads to end")
    except AssertionError:
        pytest.fail(f"threads left running: {sorted(t.name for t in leftovers())}")


@pytest.fixture(autouse=True)
def earlier_tk_garbage_freed_here(request: pytest.FixtureRequest) -> None:
    """The windows of earlier tests are garbage once their fixtures let go, and much of it sits in reference cycles
    only the collector frees; their fonts, variables and images call Tcl when freed. Freed here, on the Tk thread,
    before this test starts node threads: the interpreter would otherwise collect them in whichever thread
    allocates next, and each Tcl call from there waits a second for a main loop that is not running (a setup
    took 30 s that way under load). While an App runs, gui/tk_gc.py keeps the collector on the Tk thread."""
    import gc

    if "xvfb" in request.fixturenames:       # only window tests make (and leave) Tk objects
        gc.collect()


@pytest.fixture
def worker() -> Iterator[CommandWorker]:
    """A real command worker thread (closed and joined after the test)."""
    w = CommandWorker()
    yield w
    w.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()
