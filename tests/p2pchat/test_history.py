"""The chat history: per-peer transcripts that survive restarts, encrypted at rest, and files it must refuse."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from p2pchat.history import APPLICATION_ID, FILE_NAME, FORMAT, HistoryStore, HistoryStoreError
from p2pchat.vault import Vault

ROOT = Path(__file__).resolve().parents[2]
FAST = 1 << 12
CAROL, DAVE = "ca" * 32, "da" * 32


def grep_dir(folder: Path, needle: bytes) -> list[str]:
    return [p.name for p in folder.iterdir() if p.is_file() and needle in p.read_bytes()]


@pytest.fixture
def store(tmp_path):
    s = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, "pw", scrypt_n=FAST))
    yield s
    s.close()


def test_history_survives_a_restart_in_order(tmp_path):
    s = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, "pw", scrypt_n=FAST))
    for n in range(5):
        s.append(CAROL, "out" if n % 2 else "in", f"message {n}", ts=100 + n)
    s.close()
    again = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, "pw"))
    try:
        got = again.messages(CAROL)
        assert [m.text for m in got] == [f"message {n}" for n in range(5)]
        assert [m.direction for m in got] == ["in", "out", "in", "out", "in"]
        assert [m.text for m in again.messages(CAROL, limit=2)] == ["message 3", "message 4"]
        assert [m.text for m in again.messages(CAROL, limit=2, before_id=got[3].id)] == ["message 1", "message 2"]
        assert again.messages(DAVE) == []
    finally:
        again.close()
    assert stat.S_IMODE((tmp_path / FILE_NAME).stat().st_mode) == 0o600
    db = sqlite3.connect(tmp_path / FILE_NAME)
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert db.execute("PRAGMA user_version").fetchone()[0] == FORMAT
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_with_a_passphrase_the_files_tell_neither_the_words_nor_the_peer(tmp_path):
    s = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, "pw", scrypt_n=FAST))
    s.append(CAROL, "out", "meet me at the zebra crossing", ts=1, msg_id="m-1")
    s.append(CAROL, "in", "Zebra crossing it is", ts=2)
    # open, not closed: the write-ahead log holds the rows too
    for needle in (b"zebra", b"Zebra", CAROL.encode(), bytes.fromhex(CAROL), b"m-1"):
        assert grep_dir(tmp_path, needle) == []
    s.close()
    for needle in (b"zebra", b"Zebra", CAROL.encode(), bytes.fromhex(CAROL)):
        assert grep_dir(tmp_path, needle) == []


def test_without_a_passphrase_the_file_is_plain_and_private(tmp_path):
    s = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
    s.append(CAROL, "out", "plain words", ts=1)
    s.close()
    assert grep_dir(tmp_path, b"plain words")
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in tmp_path.iterdir())


def test_a_plain_history_is_encrypted_once_a_passphrase_is_given(tmp_path):
    s = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
    row = s.append(CAROL, "out", "from before the passphrase", ts=1, status="waiting")
    s.close()
    s = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, "new pw", scrypt_n=FAST))
    assert [m.text for m in s.messages(CAROL)] == ["from before the passphrase"]
    assert [m.id for m in s.waiting()] == [row]
    s.close()
    assert grep_dir(tmp_path, b"from before the passphrase") == []
    assert grep_dir(tmp_path, CAROL.encode()) == []


def test_an_encrypted_history_without_its_passphrase_record_is_refused(tmp_path):
    HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, "pw", scrypt_n=FAST)).close()
    (tmp_path / "vault.json").unlink()
    with pytest.raises(HistoryStoreError, match="encrypted with a passphrase"):
        HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
    with pytest.raises(HistoryStoreError, match="another passphrase record"):
        HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, "other", scrypt_n=FAST))


def test_statuses_and_the_waiting_queue(store):
    a = store.append(CAROL, "out", "one", ts=1, status="waiting", msg_id="x1")
    b = store.append(DAVE, "out", "two", ts=2, status="waiting")
    store.append(CAROL, "out", "three", ts=3)
    assert [m.id for m in store.waiting()] == [a, b]
    assert [m.msg_id for m in store.waiting(CAROL)] == ["x1"]
    store.update_status(a, "delivered")
    store.update_status(b, "cancelled")
    assert store.waiting() == []
    assert [m.status for m in store.messages(CAROL)] == ["delivered", "sent"]
    with pytest.raises(ValueError):
        store.update_status(a, "lost in space")
    with pytest.raises(ValueError):
        store.append(CAROL, "sideways", "x", ts=1)  # type: ignore[arg-type]


def test_conversations_show_the_last_message_and_unread_counts_newest_first(store):
    store.append(CAROL, "in", "hi from carol", ts=10)
    store.append(CAROL, "in", "are you there?", ts=11)
    store.append(DAVE, "out", "hello dave", ts=20)
    store.append(DAVE, "in", "yes?", ts=21, unread=False)
    convs = store.conversations()
    assert [(c.fp, c.last_text, c.unread, c.count) for c in convs] == [
        (DAVE, "yes?", 0, 2), (CAROL, "are you there?", 2, 2)]
    store.mark_read(CAROL)
    assert [c.unread for c in store.conversations()] == [0, 0]


def test_search_is_case_insensitive_within_and_across_chats(store):
    store.append(CAROL, "in", "The ZEBRA is here", ts=1)
    store.append(DAVE, "out", "a zebra crossing", ts=2)
    store.append(DAVE, "out", "nothing", ts=3)
    assert [m.text for m in store.search("zebra")] == ["a zebra crossing", "The ZEBRA is here"]
    assert [m.text for m in store.search("Zebra", fp=CAROL)] == ["The ZEBRA is here"]
    assert len(store.search("zebra", limit=1)) == 1
    assert store.search("") == []


def test_delete_forgets_a_chat_and_leaves_no_trace_in_the_files(tmp_path):
    s = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
    s.append(CAROL, "out", "forget this sentence", ts=1)
    s.append(DAVE, "out", "keep this one", ts=2)
    assert s.delete(CAROL) == 1
    assert s.messages(CAROL) == [] and [c.fp for c in s.conversations()] == [DAVE]
    assert grep_dir(tmp_path, b"forget this sentence") == []
    s.close()


def test_export_neutralises_what_the_peer_wrote(store):
    store.append(CAROL, "in", "evil \x1b]0;title\x07 text\nyou: fake line", ts=1)
    store.append(CAROL, "out", "queued", ts=2, status="waiting")
    text = store.export_text(CAROL, "carol\x1b[2J")
    assert "\x1b" not in text and "\x07" not in text
    lines = text.splitlines()
    assert lines[0].startswith("Chat with carol^[[2J (key caca")
    assert not any(line.startswith("you: fake") for line in lines)
    assert lines[-1].endswith("you: queued (waiting)")


def test_an_altered_entry_is_shown_as_unreadable_and_the_rest_still_reads(tmp_path):
    s = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, "pw", scrypt_n=FAST))
    s.append(CAROL, "out", "first", ts=1)
    s.append(CAROL, "out", "second", ts=2)
    s.close()
    db = sqlite3.connect(tmp_path / FILE_NAME)
    db.execute("UPDATE messages SET direction = 'in' WHERE id = 1")       # a row claiming the other direction
    db.commit()
    db.close()
    s = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, "pw"))
    try:
        first, second = s.messages(CAROL)
        assert not first.intact and "cannot be read" in first.text
        assert second.intact and second.text == "second"
    finally:
        s.close()


def _refused(path: Path) -> str:
    before = path.read_bytes()
    with pytest.raises(HistoryStoreError) as info:
        HistoryStore(path, Vault.open(path.parent, None))
    assert path.read_bytes() == before          # never overwritten
    assert f"mv {path}" in str(info.value)
    return str(info.value)


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path):
    path = tmp_path / FILE_NAME
    path.write_bytes(b"notes\n" * 100)
    assert "is not an SQLite file" in _refused(path)


def test_another_programs_database_is_refused_and_left_alone(tmp_path):
    path = tmp_path / FILE_NAME
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE recipes (name TEXT)")
    db.commit()
    db.close()
    assert "belongs to another program" in _refused(path)


def test_a_history_from_a_newer_version_is_refused_and_left_alone(tmp_path):
    HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, None)).close()
    db = sqlite3.connect(tmp_path / FILE_NAME)
    db.execute(f"PRAGMA user_version = {FORMAT + 1}")
    db.close()
    assert f"newer p2pchat (format {FORMAT + 1}" in _refused(tmp_path / FILE_NAME)


def test_a_damaged_history_is_refused_and_left_alone(tmp_path):
    s = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
    for n in range(400):
        s.append(CAROL if n % 2 else DAVE, "out", f"message number {n} " * 5, ts=n)
    s.close()
    path = tmp_path / FILE_NAME
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    data[2 * 4096:6 * 4096] = b"\xa5" * (4 * 4096)
    path.write_bytes(bytes(data))
    assert "is damaged" in _refused(path)


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from p2pchat.history import HistoryStore
    from p2pchat.vault import Vault
    folder, tag, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    store = HistoryStore.in_data_dir(folder, Vault.open(folder, "pw", scrypt_n=1 << 12))
    print("ready", flush=True)
    for i in range(n):
        row = store.append(tag * 32, "out", f"{tag} says {i}", ts=time.time(), status="waiting")
        store.update_status(row, "sent")
        print(i, flush=True)
    store.close()
""")


def _writer(folder: Path, tag: str, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(folder), tag, str(n)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_writing_one_history_at_once_lose_nothing(tmp_path):
    """Both create the passphrase record and the file (neither finds one), then write in parallel."""
    n = 150
    procs = [_writer(tmp_path, tag, n) for tag in ("a1", "b2")]
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    s = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, "pw"))
    try:
        for tag in ("a1", "b2"):
            got = s.messages(tag * 32, limit=1000)
            assert [m.text for m in got] == [f"{tag} says {i}" for i in range(n)]
            assert {m.status for m in got} == {"sent"}
    finally:
        s.close()


def test_a_writer_killed_mid_write_leaves_a_readable_history(tmp_path):
    p = _writer(tmp_path, "c3", 100_000)
    assert p.stdout is not None
    for _ in range(50):               # let it get well into its writes, then kill it without warning
        assert p.stdout.readline()
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    p.stdout.close()
    p.stderr.close() if p.stderr else None
    s = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, "pw"))
    try:
        got = s.messages("c3" * 32, limit=10_000)
        assert len(got) >= 49
        assert [m.text for m in got] == [f"c3 says {i}" for i in range(len(got))]
        assert all(m.intact for m in got)
    finally:
        s.close()
    db = sqlite3.connect(tmp_path / FILE_NAME)
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()


def test_a_process_without_the_passphrase_cannot_add_plain_rows_once_another_encrypted_the_file(tmp_path):
    plain = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
    plain.append(CAROL, "out", "before", ts=1)
    sealed = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, "pw", scrypt_n=FAST))   # encrypts the file
    try:
        with pytest.raises(HistoryStoreError, match="encrypted with a passphrase"):
            plain.append(CAROL, "out", "after, in the clear", ts=2)
        with pytest.raises(HistoryStoreError, match="encrypted with a passphrase"):
            plain.messages(CAROL)
        assert [m.text for m in sealed.messages(CAROL)] == ["before"]
    finally:
        plain.close()
        sealed.close()
    assert grep_dir(tmp_path, b"after, in the clear") == [] and grep_dir(tmp_path, b"before") == []
