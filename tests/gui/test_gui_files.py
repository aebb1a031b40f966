"""Files in the window under Xvfb (issue 16): alice clicks "Send file…" in her chat with bob, bob accepts in the
offer dialog, both transcripts say how it ended, and bob's downloads folder holds the file byte for byte; a
declined offer writes nothing. The file chooser is Tk's own dialog: it is replaced by the path it would return."""

from __future__ import annotations

import hashlib

import pytest

from tests.gui.driver import Driver, need_xdotool
from tests.gui.test_gui_two_windows import app, transcript, world  # noqa: F401 - fixtures

pytestmark = [pytest.mark.gui, pytest.mark.timeout(240)]


def test_send_file_button_offer_dialog_progress_and_the_file_at_the_receiver(app, world, tmp_path,  # noqa: F811
                                                                           monkeypatch):
    need_xdotool()
    d = Driver(app.root)
    alice, bob = app.windows
    d.type(alice.step_bar.peer_entry, world.user("bob").host)
    d.key("Return")
    d.wait(lambda: bob._dialog is not None, what="bob's accept dialog")
    d.click(bob._dialog.accept_button)
    sa = alice.controller.target
    d.wait(lambda: alice.controller.tabs[sa].ready, what="alice's chat with bob")
    sb = bob.controller.selected
    d.wait(lambda: bob.controller.tabs[sb].ready, what="bob's chat")

    src = tmp_path / "report.pdf"
    data = hashlib.shake_256(b"gui").digest(3 * 1024 * 1024 + 5)
    src.write_bytes(data)
    monkeypatch.setattr("gui.transfers.filedialog.askopenfilename", lambda **_kw: str(src))
    bar = alice.transfers.bars[sa]
    d.wait(lambda: bar.send_button.cget("state") == "normal", what="the Send file button")
    d.click(bar.send_button)
    d.wait(lambda: bob._confirm is not None, what="bob's offer dialog")
    question = bob._confirm.question.cget("text")
    assert "alice offers the file «report.pdf» (3.0 MiB)" in question
    d.click(bob._confirm.confirm_button)
    d.wait(lambda: "✓ report.pdf: saved as" in transcript(bob, sb), what="the file saved at bob")
    d.wait(lambda: "✓ report.pdf: delivered" in transcript(alice, sa), what="delivered at alice")
    saved = world.user("bob").data_dir / "downloads" / "report.pdf"
    assert saved.read_bytes() == data
    d.wait(lambda: bar.label.cget("text") == "", what="alice's file bar to go idle")

    d.click(bar.send_button)       # again: bob declines this time
    d.wait(lambda: bob._confirm is not None, what="bob's second offer dialog")
    d.click(bob._confirm.cancel_button)
    d.wait(lambda: "⚠ report.pdf: the receiver declined the file" in transcript(alice, sa), what="the decline")
    assert not (saved.parent / "report (1).pdf").exists()
