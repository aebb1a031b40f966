"""While the app gets ready (first-run key, ledger node start) the window shows an indeterminate bar with what
it is doing and the elapsed time, and its event loop keeps running; closing it cancels the work."""

from __future__ import annotations

import threading

import pytest

from gui.startup import Cancelled, StartupView
from p2pchat.foundation.errors import IdentityError
from p2pchat.foundation.identity import KEY_FILE, Identity

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]


@pytest.fixture
def app(xvfb):
    from gui.app import App

    application = App(appearance="Light")
    yield application
    application.close()


def test_the_view_shows_progress_and_the_loop_keeps_running_while_the_work_runs(app):
    view = StartupView(app.root, lambda: app.close_requested)
    release = threading.Event()
    seen: dict[str, object] = {}
    polls = []

    def look() -> None:
        polls.append(1)
        assert view.message is not None and view.elapsed is not None and view.bar is not None
        seen["message"] = view.message.cget("text")
        seen["elapsed"] = view.elapsed.cget("text")
        seen["mode"] = view.bar.cget("mode")
        seen["viewable"] = bool(app.root.winfo_viewable())
        if len(polls) >= 5 and str(seen["elapsed"]).endswith(" s"):
            release.set()   # the work ends only after the loop has run callbacks while it waited
        else:
            app.root.after(50, look)

    app.root.after(50, look)
    result = view.run("Making your key…", lambda stop: release.wait(60) and "made")
    assert result == "made"
    assert seen["message"] == "Making your key…" and seen["mode"] == "indeterminate" and seen["viewable"]
    assert len(polls) >= 5
    view.close()
    assert not app.root.winfo_viewable()


def test_a_real_first_run_key_is_made_behind_the_view(app, tmp_path):
    view = StartupView(app.root, lambda: app.close_requested)
    identity = view.run("Making your key…", lambda stop: Identity.load_or_create(tmp_path, stop=stop))
    view.close()
    assert Identity.load(tmp_path / KEY_FILE).fingerprint == identity.fingerprint


def test_closing_the_window_while_the_key_is_made_cancels_it(app, tmp_path):
    view = StartupView(app.root, lambda: app.close_requested)
    app.request_close()     # as SIGTERM would: the first tick of the view cancels the search
    with pytest.raises(IdentityError, match="cancelled"):
        view.run("Making your key…", lambda stop: Identity.load_or_create(tmp_path, stop=stop))
    assert view.cancelled
    assert not (tmp_path / KEY_FILE).exists()


def test_work_that_sees_the_cancel_raises_cancelled(app):
    view = StartupView(app.root, lambda: app.close_requested)
    app.root.after(100, app.request_close)

    def work(stop: threading.Event) -> None:
        stop.wait(60)
        raise Cancelled()

    with pytest.raises(Cancelled):
        view.run("Starting your ledger node…", work)
