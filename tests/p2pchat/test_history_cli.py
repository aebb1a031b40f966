"""``p2pchat history``: list, show, search, export and delete a transcript, with the data directory's passphrase."""

from __future__ import annotations

import stat

import pytest

from p2pchat.cli import main
from p2pchat.contacts import ContactStore
from p2pchat.foundation import crypto
from p2pchat.history import HistoryStore
from p2pchat.vault import Vault

FAST = 1 << 12
DER = b"carol's public key"
FP = crypto.fingerprint(DER).hex()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("P2PCHAT_PASSPHRASE", "history pw")
    vault = Vault.open(tmp_path, "history pw", scrypt_n=FAST)
    contacts = ContactStore.in_data_dir(tmp_path, vault)
    contacts.record_chat(DER, bytes.fromhex(FP), nickname="carol", ip="127.0.0.5", address="127.0.0.5:8471")
    contacts.close()
    history = HistoryStore.in_data_dir(tmp_path, vault)
    history.append(FP, "out", "see you at the lighthouse", ts=1000)
    history.append(FP, "in", "Lighthouse at six \x1b[2J", ts=1001)
    history.close()
    return tmp_path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["history", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_list_shows_each_conversation_with_its_unread_count(data_dir, capsys):
    code, out, _ = run(capsys, "--data-dir", str(data_dir))
    assert code == 0 and "carol" in out and "Lighthouse at six ^[[2J" in out and "\x1b" not in out
    assert " 1  " in out


def test_a_contacts_transcript_is_shown_neutralised_and_then_marked_read(data_dir, capsys):
    code, out, _ = run(capsys, "carol", "--data-dir", str(data_dir))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("you: see you at the lighthouse")
    assert lines[1].endswith("carol: Lighthouse at six ^[[2J")
    _, listing, _ = run(capsys, "--data-dir", str(data_dir))
    assert " 1  " not in listing


def test_search_across_chats_and_export_to_a_private_file(data_dir, capsys, tmp_path_factory):
    code, out, _ = run(capsys, "--search", "LIGHTHOUSE", "--data-dir", str(data_dir))
    assert code == 0 and out.count("carol · ") == 2
    target = tmp_path_factory.mktemp("export") / "carol.txt"
    assert run(capsys, "carol", "--export", str(target), "--data-dir", str(data_dir))[0] == 0
    text = target.read_text()
    assert "see you at the lighthouse" in text and "\x1b" not in text
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    code, _, err = run(capsys, "carol", "--export", str(target), "--data-dir", str(data_dir))
    assert code == 1 and "exists already" in err


def test_delete_needs_confirmation_off_a_terminal_and_then_forgets(data_dir, capsys):
    code, _, err = run(capsys, "carol", "--delete", "--data-dir", str(data_dir))
    assert code == 1 and "--yes" in err
    code, out, _ = run(capsys, "carol", "--delete", "--yes", "--data-dir", str(data_dir))
    assert code == 0 and "Forgot 2 messages" in out
    assert "No chat history yet" in run(capsys, "--data-dir", str(data_dir))[1]


def test_a_wrong_or_missing_passphrase_is_refused_in_one_plain_sentence(data_dir, capsys, monkeypatch):
    monkeypatch.setenv("P2PCHAT_PASSPHRASE", "not it")
    code, _, err = run(capsys, "--data-dir", str(data_dir))
    assert code == 1 and "wrong passphrase" in err and "Traceback" not in err
    monkeypatch.delenv("P2PCHAT_PASSPHRASE")
    code, _, err = run(capsys, "--data-dir", str(data_dir))
    assert code == 1 and "--passphrase-file" in err
