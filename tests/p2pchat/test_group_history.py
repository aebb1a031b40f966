"""Group conversations in ``p2pchat history``: listed with the chats, shown, searched, exported, deleted — read
from the real group store, sealed under the data directory's passphrase."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pchat.cli import main
from p2pchat.contacts import ContactStore
from p2pchat.events import GroupMessage
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.group_service import GroupService
from p2pchat.group_store import FILE_NAME, GroupStore
from p2pchat.history import HistoryStore
from p2pchat.vault import Vault
from tests.helpers import wait_until
from tests.p2pchat.test_group_service import Host, Wire

PW = "group history pw"


def _service(wire: Wire, ident: Identity, d: Path) -> GroupService:
    fp = ident.fingerprint.hex()
    events = wire.events.setdefault(fp, [])
    svc = GroupService(Host(wire, fp), GroupStore.in_data_dir(d, Vault.open(d, PW, scrypt_n=2**10)), ident,
                       events.append)
    wire.services[fp] = svc
    return svc


@pytest.fixture
def alice_dir(tmp_path: Path, identities: list[Identity], monkeypatch: pytest.MonkeyPatch) -> Path:
    """alice's data directory: bob is a contact, carol is not; a group 'lab' of the three with a few messages,
    one of them a shared file, and a one-to-one chat with bob."""
    monkeypatch.setenv("P2PCHAT_PASSPHRASE", PW)
    alice, bob, carol = identities[:3]
    dirs = {n: tmp_path / n for n in ("alice", "bob", "carol")}
    for d in dirs.values():
        d.mkdir()
    vault = Vault.open(dirs["alice"], PW, scrypt_n=2**10)
    alice.save(dirs["alice"] / KEY_FILE, PW)
    contacts = ContactStore.in_data_dir(dirs["alice"], vault)
    contacts.record_chat(bob.public_der, bob.fingerprint, nickname="bob", ip=None, address=None)
    contacts.close()
    history = HistoryStore.in_data_dir(dirs["alice"], vault)
    history.append(bob.fingerprint.hex(), "in", "a private word", ts=1000)
    history.close()
    wire = Wire()
    svcs = [_service(wire, ident, dirs[n]) for ident, n in zip((alice, bob, carol), dirs, strict=True)]
    try:
        gid = svcs[0].create("lab", [(bob.fingerprint.hex(), bob.public_der, "bob"),
                                     (carol.fingerprint.hex(), carol.public_der, "carol \x1b[31mred")])
        svcs[0].say(gid, "the lighthouse at six")
        wait_until(lambda: any(isinstance(e, GroupMessage) for e in wire.events[bob.fingerprint.hex()]), 10,
                   what="bob has alice's message")
        svcs[1].say(gid, "Lighthouse? \x1b[2J ok")
        svcs[2].say(gid, "carol here")
        (tmp_path / "map.png").write_bytes(b"\x89PNG" * 100)
        svcs[1].send_file(gid, str(tmp_path / "map.png"))
        wait_until(lambda: len(svcs[0].conversation(gid)) == 4, 10, what="alice has all four entries")
    finally:
        for s in svcs:
            s.close()
    return dirs["alice"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["history", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_list_shows_groups_beside_chats_with_unread_counts(alice_dir: Path, capsys) -> None:
    code, out, _ = run(capsys, "--data-dir", str(alice_dir))
    assert code == 0 and "\x1b" not in out
    line = next(x for x in out.splitlines() if "group lab" in x)
    assert " 3  " in line and "bob: [file] map.png (400 bytes)" in line
    assert any("bob" in x and "a private word" in x for x in out.splitlines())


def test_a_group_transcript_in_causal_order_with_names_then_marked_read(alice_dir: Path, capsys) -> None:
    code, out, _ = run(capsys, "--group", "lab", "--data-dir", str(alice_dir))
    assert code == 0 and "\x1b" not in out
    lines = out.splitlines()
    assert lines[0].endswith("you: the lighthouse at six")
    assert lines[1].endswith("bob: Lighthouse? ^[[2J ok")
    assert "carol ^[[31mred (key " in lines[2] and lines[2].endswith(": carol here")   # not a contact: marked
    assert lines[3].endswith("bob: [file] map.png (400 bytes)")
    listing = run(capsys, "--data-dir", str(alice_dir))[1]
    assert " 3  " not in next(x for x in listing.splitlines() if "group lab" in x)
    assert run(capsys, "lab", "--data-dir", str(alice_dir))[1] == out      # a CONTACT naming a group


def test_search_finds_group_and_chat_messages_and_export_writes_the_transcript(alice_dir: Path, capsys,
                                                                              tmp_path_factory) -> None:
    code, out, _ = run(capsys, "--search", "LIGHTHOUSE", "--data-dir", str(alice_dir))
    assert code == 0 and out.count("group lab · ") == 2
    out = run(capsys, "--group", "lab", "--search", "private", "--data-dir", str(alice_dir))[1]
    assert "No message contains" in out
    target = tmp_path_factory.mktemp("export") / "lab.txt"
    assert run(capsys, "--group", "lab", "--export", str(target), "--data-dir", str(alice_dir))[0] == 0
    text = target.read_text()
    assert text.startswith("Group lab (id ") and "you: the lighthouse at six" in text and "\x1b" not in text


def test_delete_forgets_the_transcript_but_the_numbering_continues(alice_dir: Path, capsys,
                                                                  identities: list[Identity]) -> None:
    code, _, err = run(capsys, "--group", "lab", "--delete", "--data-dir", str(alice_dir))
    assert code == 1 and "--yes" in err
    code, out, _ = run(capsys, "--group", "lab", "--delete", "--yes", "--data-dir", str(alice_dir))
    assert code == 0 and "Forgot 4 messages of the group lab" in out
    assert "No messages of the group lab" in run(capsys, "--group", "lab", "--data-dir", str(alice_dir))[1]
    raw = (alice_dir / FILE_NAME).read_bytes() + (alice_dir / (FILE_NAME + "-wal")).read_bytes() \
        if (alice_dir / (FILE_NAME + "-wal")).exists() else (alice_dir / FILE_NAME).read_bytes()
    assert b"lighthouse" not in raw            # sealed, and erased
    # the group itself stays, and alice's next message is number 2 (bob would drop a second number 1)
    store = GroupStore.in_data_dir(alice_dir, Vault.open(alice_dir, PW))
    svc = GroupService(Host(Wire(), "x"), store, identities[0], lambda ev: None)
    try:
        (gid, name, members), = svc.snapshot()
        assert name == "lab" and len(members) == 3
        assert svc.say(gid, "after the delete") == 2
    finally:
        svc.close()
    code, _, err = run(capsys, "nobody", "--data-dir", str(alice_dir))
    assert code == 1 and "names no contact and no group" in err
