"""The node's history recorder: texts and receipts written in order on its own thread, in bursts, bounded."""

from __future__ import annotations

from p2pchat import history_recorder
from p2pchat.history import HistoryStore
from p2pchat.history_recorder import HistoryRecorder
from p2pchat.vault import Vault
from tests.helpers import wait_until

FP = "cd" * 32


def test_texts_and_receipts_end_up_with_the_right_status_whatever_the_bursts(tmp_path):
    store = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
    reports: list[str] = []
    rec = HistoryRecorder(store, reports.append)
    rec.sent("s1", 1, FP, "ours 1", 1.0)
    rec.received("s1", 1, FP, "theirs 1", 2.0)      # the peer's message 1 is not our message 1
    rec.delivered("s1", 1)
    rec.sent("s1", 2, FP, "ours 2", 3.0)
    rec.sent("s2", 1, FP, "ours in another session", 4.0)
    rec.close()
    rec = HistoryRecorder(store, reports.append)     # a receipt for a text written in an earlier burst
    rec.sent("s3", 7, FP, "ours 7", 5.0)
    rec.close()
    rec = HistoryRecorder(store, reports.append)
    rec.close()
    got = [(m.direction, m.text, m.status, m.msg_id) for m in store.messages(FP)]
    assert got == [("out", "ours 1", "delivered", "s1:1"), ("in", "theirs 1", "delivered", "s1:1"),
                   ("out", "ours 2", "sent", "s1:2"), ("out", "ours in another session", "sent", "s2:1"),
                   ("out", "ours 7", "sent", "s3:7")]
    assert reports == []
    store.close()


def test_a_receipt_after_the_text_was_written_marks_it_delivered(tmp_path):
    store = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
    rec = HistoryRecorder(store, lambda text: None)
    rec.sent("s1", 1, FP, "hello", 1.0)
    wait_until(lambda: store.messages(FP), 10, what="the text written")
    rec.delivered("s1", 1)
    rec.close()
    assert [m.status for m in store.messages(FP)] == ["delivered"]
    store.close()


def test_past_its_memory_bound_a_text_is_dropped_and_the_user_told_once(tmp_path, monkeypatch):
    monkeypatch.setattr(history_recorder, "MAX_PENDING_BYTES", 100)
    store = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
    reports: list[str] = []
    rec = HistoryRecorder(store, reports.append)
    with store._lock:                                # the disk is busy: nothing is written meanwhile
        for n in range(10):
            rec.received("s1", n, FP, f"{n:02d}" + "x" * 38, float(n))
    rec.close()
    kept = store.messages(FP)
    assert 1 <= len(kept) < 10 and [m.text[:2] for m in kept] == [f"{n:02d}" for n in range(len(kept))]
    assert len(reports) == 1 and "not keeping up" in reports[0]
    store.close()


def test_a_waiting_text_sent_later_keeps_its_row_and_a_deleted_chat_is_no_error(tmp_path):
    store = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
    reports: list[str] = []
    queued = store.append(FP, "out", "written while offline", ts=1.0, status="waiting", msg_id="outbox-1")
    rec = HistoryRecorder(store, reports.append)
    rec.sent("s1", 1, FP, "written while offline", 2.0, row=queued)
    rec.delivered("s1", 1)
    rec.close()
    assert [(m.id, m.status, m.msg_id) for m in store.messages(FP)] == [(queued, "delivered", "outbox-1")]
    rec = HistoryRecorder(store, reports.append)
    rec.sent("s2", 1, FP, "then deleted", 3.0)
    wait_until(lambda: len(store.messages(FP)) == 2, 10, what="the text written")
    store.delete(FP)
    rec.delivered("s2", 1)                          # its row is gone: nothing to mark, nothing to report
    rec.close()
    assert store.messages(FP) == [] and reports == []
    store.close()


def test_what_one_peer_can_make_the_history_keep_is_bounded_and_comes_back_when_its_history_is_deleted(
        tmp_path, monkeypatch):
    monkeypatch.setattr(history_recorder, "MAX_KEPT_PER_PEER", 5_000)
    monkeypatch.setattr(history_recorder, "RECHECK_AFTER", 0.0)   # measured again at every text over it
    other = "ef" * 32
    store = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
    reports: list[str] = []
    rec = HistoryRecorder(store, reports.append)
    for n in range(40):                             # a flood of 40 × 1 KB: about 4 KB of it fits
        rec.received("s1", n, FP, f"{n:02d}" + "x" * 998, float(n))
    rec.received("s2", 1, other, "another peer is not affected", 50.0)
    rec.sent("s1", 99, FP, "ours are always kept", 51.0)
    rec.close()
    kept = [m.text[:2] for m in store.messages(FP, limit=100) if m.direction == "in"]
    assert 2 <= len(kept) < 5 and kept == [f"{n:02d}" for n in range(len(kept))]
    assert store.received_bytes(FP) <= 5_000
    assert [m.text for m in store.messages(other)] == ["another peer is not affected"]
    assert store.messages(FP)[-1].text == "ours are always kept"
    assert len(reports) == 1 and "newer messages from that key are shown but not saved" in reports[0]
    store.delete(FP)                                # the user made room
    rec = HistoryRecorder(store, reports.append)
    rec.received("s3", 1, FP, "kept again", 60.0)
    rec.close()
    assert [m.text for m in store.messages(FP)] == ["kept again"] and len(reports) == 1
    store.close()
