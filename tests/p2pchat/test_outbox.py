"""Messages that wait for an offline contact and chats that reconnect by themselves (issue 16), with real nodes on
loopback sockets and the retry schedule on its own."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from p2pchat.events import MessageReceived, OutboxChanged, Presence, SessionEnded, StepResult
from p2pchat.foundation.errors import UsageError
from p2pchat.history import HistoryStore
from p2pchat.history_recorder import HistoryRecorder
from p2pchat.outbox import FIRST_RETRY, MIN_PROBE_INTERVAL, QUICK_RETRIES, RECONNECT_FOR, RetrySchedule
from p2pchat.peer_directory import FixedDirectory
from p2pchat.steps import Step
from p2pchat.vault import Vault
from tests.conftest import free_loopback_ip
from tests.helpers import wait_until
from tests.p2pchat.node_kit import Peer, entry, make_peer

# --- the schedule ------------------------------------------------------------------------------------------


def test_failed_attempts_back_off_then_never_more_than_once_a_minute():
    s = RetrySchedule()
    s.now_please("c", 100.0)
    assert s.next_due() == ("c", 100.0)
    delays = []
    now = 100.0
    for _ in range(8):
        s.attempt_started("c", now)
        delay = s.failed("c", now, still_wanted=True)
        assert delay is not None
        delays.append(delay)
        now += delay
    assert delays[:QUICK_RETRIES] == [FIRST_RETRY, 2 * FIRST_RETRY, 4 * FIRST_RETRY]
    assert all(d >= MIN_PROBE_INTERVAL for d in delays[QUICK_RETRIES:])
    assert delays == sorted(delays)


def test_a_new_text_after_many_failures_waits_for_the_minute_floor():
    s = RetrySchedule()
    now = 0.0
    for _ in range(QUICK_RETRIES + 1):
        s.attempt_started("c", now)
        s.failed("c", now, still_wanted=True)
    s.contacts["c"].due = None
    s.now_please("c", now + 1)
    assert s.next_due() == ("c", now + MIN_PROBE_INTERVAL)


def test_nothing_waiting_and_no_dropped_chat_means_no_more_calls():
    s = RetrySchedule()
    s.attempt_started("c", 0.0)
    assert s.failed("c", 0.0, still_wanted=False) is None
    assert s.next_due() is None


def test_a_dropped_chat_is_redialled_for_a_while_even_with_nothing_waiting():
    s = RetrySchedule()
    s.reconnect("c", 0.0)
    assert s.next_due() == ("c", 0.0)
    s.attempt_started("c", 0.0)
    assert s.failed("c", 1.0, still_wanted=False) == FIRST_RETRY
    assert s.failed("c", RECONNECT_FOR + 1, still_wanted=False) is None


# --- the history recorder: texts of a dropped chat wait again -------------------------------------------------

def test_texts_without_a_receipt_wait_again_when_their_chat_drops(tmp_path: Path):
    store = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
    requeued: list[str] = []
    rec = HistoryRecorder(store, lambda text: None, requeued=requeued.append)
    fp = "ab" * 32
    try:
        rec.sent("s1", 1, fp, "got through", 1.0)
        rec.sent("s1", 2, fp, "lost on the way", 2.0)
        rec.delivered("s1", 1)
        rec.dropped("s1")
        rec.close()
        assert [(m.text, m.status) for m in store.messages(fp)] == [("got through", "delivered"),
                                                                    ("lost on the way", "waiting")]
        assert requeued == [fp]
    finally:
        store.close()


# --- real nodes ------------------------------------------------------------------------------------------------

def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def _alice(tmp_path: Path, identities, directory: FixedDirectory, **kw) -> Peer:
    d = tmp_path / "alice"
    d.mkdir(exist_ok=True)
    return make_peer(identities[0], "alice", directory, data_dir=d, outbox=True, **kw)


def test_texts_typed_while_the_contact_is_down_arrive_in_order_once_it_is_up_even_across_a_restart(
        tmp_path, identities):
    directory = FixedDirectory()
    bob_ip = free_loopback_ip()
    bob_port = _free_port(bob_ip)
    directory.add(entry(identities[1], "bob", bob_ip, bob_port))      # registered, but not running yet
    bob_fp = identities[1].fingerprint.hex()
    alice = _alice(tmp_path, identities, directory)
    try:
        rows = [alice.node.message_contact(bob_fp, f"note {i}") for i in range(3)]
        alice.log.wait(OutboxChanged, fp=bob_fp, presence=Presence.OFFLINE)
        # the next call may already be under way (2 s later): offline or calling again, never online
        assert alice.node.presence(bob_fp) in (Presence.OFFLINE, Presence.CONNECTING)
        alice.node.cancel_waiting(rows[1])
        with pytest.raises(UsageError):
            alice.node.cancel_waiting(rows[1])
    finally:
        alice.node.close()
    # the app restarts; what waited is still waiting
    alice = _alice(tmp_path, identities, directory)
    bob = make_peer(identities[1], "bob", directory, ip=bob_ip, port=bob_port, auto_accept=True, register=False)
    try:
        got = [bob.log.wait(MessageReceived, 20, text=t).text for t in ("note 0", "note 2")]
        assert got == ["note 0", "note 2"]
        assert [e.text for e in bob.log.all(MessageReceived)] == ["note 0", "note 2"]
        history = alice.node.history
        assert history is not None

        def statuses() -> list[str] | None:
            got = [m.status for m in history.messages(bob_fp)]
            return got if got == ["delivered", "cancelled", "delivered"] else None
        wait_until(statuses, 10, what="alice's statuses")
        assert alice.node.presence(bob_fp) is Presence.ONLINE
    finally:
        alice.node.close()
        bob.node.close()


def test_a_contact_that_calls_in_gets_its_waiting_texts_at_once(tmp_path, identities):
    directory = FixedDirectory()
    bob_fp = identities[1].fingerprint.hex()
    directory.add(entry(identities[1], "bob", None))     # bob takes no calls (a caller behind NAT, say)
    alice = _alice(tmp_path, identities, directory, auto_accept=True)
    bob = make_peer(identities[1], "bob", directory, register=False, no_inbound=True)
    try:
        alice.node.message_contact(bob_fp, "when you are back: the keys are under the mat")
        alice.log.wait(OutboxChanged, fp=bob_fp, presence=Presence.OFFLINE)
        sid = bob.node.open_session(f"{alice.ip}:{alice.node.port}")
        bob.node.run_all(sid)
        bob.log.wait(MessageReceived, 15, session=sid, text="when you are back: the keys are under the mat")
    finally:
        alice.node.close()
        bob.node.close()


def test_a_chat_that_loses_its_connection_reconnects_by_itself(tmp_path, identities):
    directory = FixedDirectory()
    alice = _alice(tmp_path, identities, directory)
    bob = make_peer(identities[1], "bob", directory, auto_accept=True)
    bob_fp = identities[1].fingerprint.hex()
    try:
        first = alice.node.message_contact(bob_fp, "first")
        bob.log.wait(MessageReceived, 15, text="first")
        old = alice.node.live_session_with(bob_fp)
        assert old is not None and first > 0
        bob_sid = bob.log.wait(MessageReceived, text="first").session
        link = bob.node._rt.get(bob_sid).link        # the TCP connection is cut under both (no goodbye)
        assert link is not None
        link.close()
        alice.log.wait(SessionEnded, 15, session=old)

        def new_session() -> str | None:
            sid = alice.node.live_session_with(bob_fp)
            return sid if sid not in (None, old) else None
        new = wait_until(new_session, 20, what="alice's new chat with bob")
        alice.log.wait(StepResult, session=new, step=Step.AGREE_KEY, ok=True)
        alice.node.send_text(new, "after the cut")
        bob.log.wait(MessageReceived, 15, text="after the cut")
    finally:
        alice.node.close()
        bob.node.close()


def test_a_node_without_an_outbox_says_so(identities):
    peer = make_peer(identities[0], "alice", FixedDirectory())
    try:
        with pytest.raises(UsageError, match="outbox"):
            peer.node.message_contact("ab" * 32, "hello")
    finally:
        peer.node.close()


def test_listen_queues_lists_and_cancels_texts_for_a_contact_by_name(tmp_path, identities):
    import io

    from p2pchat.display import Printer
    from p2pchat.terminal import ListenView
    from tests.p2pchat.node_kit import connect_all

    directory = FixedDirectory()
    alice = _alice(tmp_path, identities, directory)
    bob = make_peer(identities[1], "bob", directory, auto_accept=True)
    out = io.StringIO()
    view = ListenView(alice.node, Printer(out))
    try:
        connect_all(alice, bob)                       # bob becomes a contact (pinned after step 4)
        wait_until(lambda: alice.node.contacts is not None and alice.node.contacts.all(), 10, what="contact")
        bob.node.close()
        wait_until(lambda: alice.node.live_session_with(identities[1].fingerprint.hex()) is None, 10,
                   what="the chat to end")
        view.on_line("/msg bob see you at the \x1b[31mlab")
        view.on_line("/msg nobody-known hi")
        (tmp_path / "plan.txt").write_text("the plan")
        view.on_line(f"/file bob {tmp_path / 'plan.txt'}")      # a file waits like a text (p2pchat/file_resume.py)
        view.on_line("/waiting")
        (waiting,) = alice.node.outbox.waiting() if alice.node.outbox else []
        view.on_line(f"/cancel {waiting.id}")
        view.on_line("/cancel w1")
        view.on_line("/waiting")
        text = out.getvalue()
        assert f"Message {waiting.id} to bob queued" in text
        assert "! " in text and "nobody-known" in text           # an unknown contact is said plainly
        assert f"  {waiting.id}: to bob since" in text and "\x1b" not in text
        assert "File w1 for bob is kept until delivered" in text and "  w1: file plan.txt (8 bytes) to bob" in text
        assert "File w1 cancelled; it will not be sent." in text and alice.node.waiting_files() == []
        assert f"Message {waiting.id} cancelled" in text
        assert text.rstrip().endswith("No messages or files are waiting.")
    finally:
        alice.node.close()
        bob.node.close()
