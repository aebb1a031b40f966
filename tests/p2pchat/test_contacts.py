"""The contact store: pins per address and nickname, key replacements, and files it must refuse (issue 13)."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from p2pchat.contacts import APPLICATION_ID, FILE_NAME, FORMAT, ContactNotFound, ContactStore, ContactStoreError
from p2pchat.foundation import crypto
from p2pchat.foundation.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]


def key(n: int) -> tuple[bytes, bytes]:
    der = f"public key {n}".encode()
    return der, crypto.fingerprint(der)


@pytest.fixture
def store(tmp_path: Path):
    s = ContactStore.in_data_dir(tmp_path)
    yield s
    s.close()


def test_a_new_store_is_private_in_wal_mode_and_marked_as_a_contact_store(tmp_path):
    ContactStore.in_data_dir(tmp_path).close()
    path = tmp_path / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert db.execute("PRAGMA user_version").fetchone()[0] == FORMAT
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_a_chat_pins_its_key_for_the_address_and_the_nickname(store):
    der, fp = key(1)
    store.record_chat(der, fp, nickname="carol", ip="127.0.0.5", address="127.0.0.5:8471", now=100)
    for kind, value in (("ip", "127.0.0.5"), ("nick", "carol")):
        pinned = store.pinned_for(kind, value)
        assert pinned is not None and pinned.fp == fp.hex() and pinned.public_der == der
    assert store.pinned_for("ip", "127.0.0.6") is None and store.pinned_for("nick", "dave") is None
    store.record_chat(der, fp, nickname="carol", ip="127.0.0.5", address="127.0.0.5:8471", now=200)
    (c,) = store.all()
    assert (c.first_seen, c.last_seen, c.nicknames, c.ips) == (100, 200, ("carol",), ("127.0.0.5",))


def test_the_key_most_recently_seen_at_an_address_is_its_pin(store):
    (der1, fp1), (der2, fp2) = key(1), key(2)
    store.record_chat(der1, fp1, nickname="carol", ip="127.0.0.5", address=None, now=100)
    store.record_chat(der2, fp2, nickname="dave", ip="127.0.0.5", address=None, now=200)
    assert store.pinned_for("ip", "127.0.0.5").fp == fp2.hex()
    assert store.pinned_for("nick", "carol").fp == fp1.hex()


def test_a_replaced_key_hands_its_name_addresses_and_pins_to_the_new_key(store):
    (der1, fp1), (der2, fp2) = key(1), key(2)
    store.record_chat(der1, fp1, nickname="carol", ip="127.0.0.5", address="127.0.0.5:8471", now=100)
    store.rename(fp1.hex(), "Carol from school")
    store.set_verified(fp1.hex(), True, now=150)
    store.replace_key(fp1.hex(), der2, fp2, decision="rotated", detail="proven", keep_verified=True, now=200)
    pinned = store.pinned_for("ip", "127.0.0.5")
    assert pinned is not None and pinned.fp == fp2.hex()
    assert pinned.local_name == "Carol from school" and pinned.verified and "carol" in pinned.nicknames
    assert store.get(fp1).replaced_by == fp2.hex() and store.get(fp1).local_name is None
    assert [d.decision for d in store.decisions(fp1.hex())] == ["verified", "rotated"]
    assert [d.decision for d in store.decisions(fp2.hex())] == ["rotated"]
    (der3, fp3) = key(3)
    store.replace_key(fp2.hex(), der3, fp3, decision="accepted", detail="user", keep_verified=False, now=300)
    pinned = store.pinned_for("nick", "carol")
    assert pinned.fp == fp3.hex() and not pinned.verified      # an accepted, unproven key starts unverified


def test_contacts_are_found_by_local_name_fingerprint_prefix_or_nickname(store):
    (der1, fp1), (der2, fp2) = key(1), key(2)
    store.record_chat(der1, fp1, nickname="carol", ip="127.0.0.5", address=None)
    store.record_chat(der2, fp2, nickname="dave", ip="127.0.0.6", address=None)
    store.rename(fp2.hex(), "D")
    assert store.resolve("D").fp == fp2.hex()
    assert store.resolve("carol").fp == fp1.hex()
    assert store.resolve(crypto.format_fingerprint(fp1, 2)).fp == fp1.hex()
    with pytest.raises(ContactNotFound, match="no contact called erin"):
        store.resolve("erin")
    with pytest.raises(UsageError, match="already called D"):
        store.rename(fp1.hex(), "D")
    with pytest.raises(UsageError, match="look like a fingerprint"):
        store.rename(fp1.hex(), "abcd ef01")
    store.forget(fp1.hex())
    assert store.pinned_for("ip", "127.0.0.5") is None and [c.fp for c in store.all()] == [fp2.hex()]
    assert store.decisions(fp1.hex())[-1].decision == "forgotten"


def _refused(path: Path) -> str:
    before = path.read_bytes()
    with pytest.raises(ContactStoreError) as info:
        ContactStore(path)
    assert path.read_bytes() == before                      # never overwritten
    message = str(info.value)
    assert f"mv {path} {path}.bad-" in message
    return message


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path):
    path = tmp_path / FILE_NAME
    path.write_bytes(b"my notes about carol\n" * 50)
    assert "is not an SQLite file" in _refused(path)


def test_another_programs_database_is_refused_and_left_alone(tmp_path):
    path = tmp_path / FILE_NAME
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE recipes (name TEXT)")
    db.commit()
    db.close()
    assert "belongs to another program" in _refused(path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA application_id = 1234")
    db.close()
    assert "belongs to another program" in _refused(path)


def test_a_store_from_a_newer_version_is_refused_and_left_alone(tmp_path):
    ContactStore.in_data_dir(tmp_path).close()
    path = tmp_path / FILE_NAME
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {FORMAT + 1}")
    db.close()
    assert f"newer p2pchat (format {FORMAT + 1}" in _refused(path)


def test_a_damaged_store_is_refused_and_left_alone(tmp_path):
    s = ContactStore.in_data_dir(tmp_path)
    for n in range(300):
        der, fp = key(n)
        s.record_chat(der, fp, nickname=f"peer{n}", ip=f"127.0.{n // 250}.{n % 250 + 1}", address=None)
    s.close()
    path = tmp_path / FILE_NAME
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    data[2 * 4096:6 * 4096] = b"\xa5" * (4 * 4096)         # scribble over b-tree pages, keep the header
    path.write_bytes(bytes(data))
    assert "is damaged" in _refused(path)


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from p2pchat.contacts import ContactStore
    from p2pchat.foundation import crypto
    tag, n = sys.argv[2], int(sys.argv[3])
    store = ContactStore.in_data_dir(Path(sys.argv[1]))
    for i in range(n):
        der = f"{tag} key {i}".encode()
        fp = crypto.fingerprint(der)
        store.record_chat(der, fp, nickname=f"{tag}{i}", ip="127.0.0.9", address=None)
        if i % 10 == 0:
            store.rename(fp.hex(), f"{tag}-{i}")
            store.set_verified(fp.hex(), True)
    store.close()
""")


def test_two_processes_writing_one_store_at_once_lose_nothing(tmp_path):
    """Both create the file (neither finds one) and then write in parallel: every row of both survives."""
    n = 150
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), tag, str(n)], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    store = ContactStore.in_data_dir(tmp_path)
    try:
        contacts = store.all()
        assert len(contacts) == 2 * n
        assert sum(c.verified for c in contacts) == 2 * ((n + 9) // 10)
        assert {c.local_name for c in contacts if c.local_name} == {f"{t}-{i}" for t in "ab" for i in range(0, n, 10)}
    finally:
        store.close()
    db = sqlite3.connect(tmp_path / FILE_NAME)
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    assert not os.path.exists(tmp_path / f"{FILE_NAME}.bad")


def test_the_contacts_command_refuses_a_damaged_store_with_the_command_to_move_it(tmp_path, capsys):
    from p2pchat.cli import main

    (tmp_path / FILE_NAME).write_bytes(b"\x00garbage" * 100)
    assert main(["contacts", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "is not an SQLite file" in err and f"mv {tmp_path / FILE_NAME}" in err and "Traceback" not in err


def test_chat_by_an_unknown_fingerprint_prefix_is_refused_before_any_network(tmp_path, capsys):
    from p2pchat.cli import main

    assert main(["chat", "3f2a9c01", "--data-dir", str(tmp_path), "--host", "127.0.0.1"]) == 1
    assert "no contact called 3f2a9c01" in capsys.readouterr().err


def test_the_contacts_command_lists_renames_verifies_and_forgets(tmp_path, capsys):
    from p2pchat.cli import main

    store = ContactStore.in_data_dir(tmp_path)
    der, fp = key(7)
    store.record_chat(der, fp, nickname="carol\x1b[31m", ip="127.0.0.5", address="127.0.0.5:8471")
    store.close()
    assert main(["contacts", "rename", fp.hex()[:8], "Carol", "--data-dir", str(tmp_path)]) == 0
    assert main(["contacts", "verify", "Carol", "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["contacts", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "Carol" in line)
    assert row.startswith("✓ Carol") and "127.0.0.5:8471" in row and "\x1b" not in out   # shown escaped
    assert main(["contacts", "forget", "Carol", "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["contacts", "--data-dir", str(tmp_path)]) == 0
    assert "No contacts yet" in capsys.readouterr().out


# --- encrypted at rest (issue 15) ------------------------------------------------------------------------------

FAST = 1 << 12


def _fill(s: ContactStore) -> tuple[bytes, bytes, bytes, bytes]:
    (der1, fp1), (der2, fp2) = key(1), key(2)
    s.record_chat(der1, fp1, nickname="carolyn", ip="127.0.0.57", address="127.0.0.57:8471", now=100)
    s.rename(fp1.hex(), "Carolyn from school")
    s.set_verified(fp1.hex(), True, now=150)
    s.replace_key(fp1.hex(), der2, fp2, decision="rotated", detail="carolyn rotated at 127.0.0.57",
                  keep_verified=True, now=200)
    return der1, fp1, der2, fp2


def _check_filled(s: ContactStore, fp1: bytes, fp2: bytes) -> None:
    pinned = s.pinned_for("ip", "127.0.0.57")
    assert pinned is not None and pinned.fp == fp2.hex() and pinned.verified
    assert pinned.local_name == "Carolyn from school" and pinned.nicknames == ("carolyn",)
    assert pinned.last_address == "127.0.0.57:8471" and pinned.first_seen == 100
    assert s.pinned_for("nick", "carolyn").fp == fp2.hex()
    assert s.resolve("Carolyn from school").fp == fp2.hex() and s.resolve(fp1.hex()[:6]).fp == fp1.hex()
    assert s.get(fp1).replaced_by == fp2.hex()
    assert [(d.decision, d.detail) for d in s.decisions(fp1.hex())] == [
        ("verified", "the user compared the safety number"), ("rotated", "carolyn rotated at 127.0.0.57")]


def _encrypted_and_intact(folder: Path, fp1: bytes, fp2: bytes) -> None:
    """Opened with a (first) passphrase, the store has everything and the files none of it in the clear."""
    from p2pchat.vault import Vault

    s = ContactStore.in_data_dir(folder, Vault.open(folder, "pw", scrypt_n=FAST))
    try:
        _check_filled(s, fp1, fp2)
    finally:
        s.close()
    assert _grep(folder, b"carolyn", b"Carolyn", b"127.0.0.57", fp1.hex().encode()) == []


def _grep(folder: Path, *needles: bytes) -> list[tuple[str, bytes]]:
    return [(p.name, n) for p in folder.iterdir() if p.is_file() for n in needles if n in p.read_bytes()]


def test_with_a_passphrase_the_files_name_no_nickname_address_local_name_or_key(tmp_path):
    from p2pchat.vault import Vault

    s = ContactStore.in_data_dir(tmp_path, Vault.open(tmp_path, "pw", scrypt_n=FAST))
    der1, fp1, der2, fp2 = _fill(s)
    needles = (b"carolyn", b"Carolyn", b"127.0.0.57", der1, der2, fp1.hex().encode(), fp2.hex().encode(), fp1, fp2)
    assert _grep(tmp_path, *needles) == []         # open: the write-ahead log too
    s.close()
    assert _grep(tmp_path, *needles) == []
    again = ContactStore.in_data_dir(tmp_path, Vault.open(tmp_path, "pw"))
    try:
        _check_filled(again, fp1, fp2)
    finally:
        again.close()


def test_a_format_1_store_is_converted_and_encrypted_with_nothing_lost(tmp_path):

    path = tmp_path / FILE_NAME
    db = sqlite3.connect(path)                    # a store as issue 13's format 1 wrote it
    db.executescript(FORMAT_1_SCHEMA)
    (der1, fp1), (der2, fp2) = key(1), key(2)
    db.execute("INSERT INTO contacts VALUES (?, ?, NULL, 100, 200, NULL, NULL, ?)", (fp1.hex(), der1, fp2.hex()))
    db.execute("INSERT INTO contacts VALUES (?, ?, 'Carolyn from school', 100, 200, '127.0.0.57:8471', 150, NULL)",
               (fp2.hex(), der2))
    for fp in (fp1, fp2):
        db.execute("INSERT INTO nicknames VALUES (?, 'carolyn', 100, 200)", (fp.hex(),))
        db.execute("INSERT INTO addresses VALUES (?, '127.0.0.57', 100, 200)", (fp.hex(),))
    db.execute("INSERT INTO decisions (at, old_fp, new_fp, decision, detail) VALUES "
               "(150, NULL, ?, 'verified', 'the user compared the safety number')", (fp1.hex(),))
    db.execute("INSERT INTO decisions (at, old_fp, new_fp, decision, detail) VALUES "
               "(200, ?, ?, 'rotated', 'carolyn rotated at 127.0.0.57')", (fp1.hex(), fp2.hex()))
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    _encrypted_and_intact(tmp_path, fp1, fp2)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == FORMAT == 2
    db.close()


def test_a_plain_store_is_encrypted_once_a_passphrase_is_given(tmp_path):

    s = ContactStore.in_data_dir(tmp_path)
    _der1, fp1, _der2, fp2 = _fill(s)
    s.close()
    assert _grep(tmp_path, b"carolyn")
    _encrypted_and_intact(tmp_path, fp1, fp2)


def test_a_protected_store_is_refused_without_its_passphrase(tmp_path):
    from p2pchat.vault import PassphraseNeeded, Vault

    ContactStore.in_data_dir(tmp_path, Vault.open(tmp_path, "pw", scrypt_n=FAST)).close()
    with pytest.raises(PassphraseNeeded, match="--passphrase-file"):
        ContactStore.in_data_dir(tmp_path)


FORMAT_1_SCHEMA = """
CREATE TABLE contacts (fp TEXT PRIMARY KEY, public_der BLOB NOT NULL, local_name TEXT UNIQUE,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, last_address TEXT, verified_at REAL, replaced_by TEXT);
CREATE TABLE nicknames (fp TEXT NOT NULL REFERENCES contacts(fp) ON DELETE CASCADE, nickname TEXT NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, PRIMARY KEY (fp, nickname));
CREATE TABLE addresses (fp TEXT NOT NULL REFERENCES contacts(fp) ON DELETE CASCADE, ip TEXT NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, PRIMARY KEY (fp, ip));
CREATE INDEX addresses_ip ON addresses(ip);
CREATE INDEX nicknames_nick ON nicknames(nickname);
CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, old_fp TEXT, new_fp TEXT,
    decision TEXT NOT NULL, detail TEXT NOT NULL);
"""


def test_the_contacts_and_chat_commands_open_a_protected_store_with_its_passphrase(tmp_path, capsys, monkeypatch):
    from p2pchat.cli import main
    from p2pchat.vault import Vault

    store = ContactStore.in_data_dir(tmp_path, Vault.open(tmp_path, "contacts pw", scrypt_n=FAST))
    der, fp = key(8)
    store.record_chat(der, fp, nickname="harbour-master", ip="127.0.0.58", address="127.0.0.58:8471")
    store.close()
    monkeypatch.delenv("P2PCHAT_PASSPHRASE", raising=False)
    assert main(["contacts", "--data-dir", str(tmp_path)]) == 1
    assert "protected by a passphrase" in capsys.readouterr().err
    monkeypatch.setenv("P2PCHAT_PASSPHRASE", "contacts pw")
    assert main(["contacts", "--data-dir", str(tmp_path)]) == 0
    assert "harbour-master" in capsys.readouterr().out
    assert main(["chat", "3f2a9c01", "--data-dir", str(tmp_path), "--host", "127.0.0.1"]) == 1
    assert "no contact called 3f2a9c01" in capsys.readouterr().err


def test_a_tampered_contact_is_refused_not_guessed_around(tmp_path):
    from p2pchat.vault import Vault

    s = ContactStore.in_data_dir(tmp_path, Vault.open(tmp_path, "pw", scrypt_n=FAST))
    _fill(s)
    s.close()
    db = sqlite3.connect(tmp_path / FILE_NAME)
    db.execute("UPDATE nicknames SET box = (SELECT box FROM addresses LIMIT 1)")   # another column's sealed value
    db.commit()
    db.close()
    s = ContactStore.in_data_dir(tmp_path, Vault.open(tmp_path, "pw"))
    try:
        with pytest.raises(ContactStoreError, match="fails authentication"):
            s.pinned_for("ip", "127.0.0.57")
    finally:
        s.close()
