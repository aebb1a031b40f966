"""The look-alike rule both user interfaces mark peers by (p2pchat/lookalike.py), how the terminal names a peer or
contact with it (p2pchat/terminal_names.py, over a real contact store), and the command line's listings: two
contacts whose names read alike are both marked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from p2pchat.cli import main
from p2pchat.contacts import ContactStore
from p2pchat.foundation import crypto
from p2pchat.history import HistoryStore
from p2pchat.lookalike import NameIndex, looks_alike, name_keys
from p2pchat.terminal_names import REREAD_SECONDS, PeerNames, after_step_2, describe_name
from p2pchat.vault import Vault

LOOKALIKE = "b\u043eb"      # "bоb": Cyrillic small o


def key(n: int) -> tuple[bytes, str]:
    der = f"public key {n}".encode()
    return der, crypto.fingerprint(der).hex()


BOB, MALLORY, CAROL = key(1), key(2), key(3)


def spaced(fp: str) -> str:
    """A fingerprint as SessionInfo gives it: the first 8 groups of 4 hex digits."""
    return " ".join(fp[i:i + 4] for i in range(0, 32, 4))


@dataclass(frozen=True)
class Named:
    fp: str
    local_name: str | None
    nickname: str | None


@pytest.mark.parametrize("b", [LOOKALIKE, "BOB", "b\u200bob", " bob ", "B0B", "\uff42\uff4f\uff42"])
def test_names_that_read_like_bob_look_alike(b: str) -> None:
    assert looks_alike("bob", b)


@pytest.mark.parametrize(("a", "b"), [("bob", "rob"), ("bob", ""), (None, None), ("alice", "alicia")])
def test_different_or_empty_names_do_not(a: str | None, b: str | None) -> None:
    assert not looks_alike(a, b)


def test_an_empty_or_invisible_name_has_no_keys_and_a_long_one_is_compared_by_its_start() -> None:
    assert name_keys("") == name_keys("\u200b\u200d") == name_keys(None) == frozenset()
    assert looks_alike("x" * 200 + "tail", "x" * 200 + "other")


def test_the_index_finds_a_contact_on_another_key_and_never_the_key_itself() -> None:
    bob = Named(BOB[1], None, "bob")
    robert = Named(CAROL[1], "Robert", "rob")
    index = NameIndex([bob, robert])
    assert index.twin(LOOKALIKE, MALLORY[1]) is bob
    assert index.twin("bob", spaced(BOB[1])) is None          # the contact itself, by its key's spaced start
    assert index.twin("bob", BOB[1].upper()) is None
    assert index.twin("bob", None) is bob                      # key not known yet: any contact
    assert index.twin("r0bert", MALLORY[1]) is robert          # a local name counts as much as a nickname
    assert index.twin("carol", MALLORY[1]) is None
    assert index.twin_of(bob) is None


@pytest.fixture
def store(tmp_path: Path) -> ContactStore:
    s = ContactStore.in_data_dir(tmp_path)
    s.record_chat(BOB[0], bytes.fromhex(BOB[1]), nickname="bob", ip="127.0.0.3", address="127.0.0.3:8471")
    s.record_chat(CAROL[0], bytes.fromhex(CAROL[1]), nickname="carol", ip="127.0.0.4", address="127.0.0.4:8471")
    return s


def test_a_peer_on_another_key_is_named_with_the_mark_and_its_letters_spelled_out(store: ContactStore) -> None:
    names = PeerNames(store)
    assert names.peer(LOOKALIKE, spaced(MALLORY[1])) == (
        "b\u043eb (not your contact bob; non-ASCII: \u043e=U+043E) \u26a0")
    assert names.peer("BOB", MALLORY[1]) == "BOB (not your contact bob) \u26a0"
    assert names.peer("bob", spaced(BOB[1])) == "bob"           # the contact on its own key: never marked
    assert names.peer(LOOKALIKE, None) == "b\u043eb (non-ASCII: \u043e=U+043E)"    # no key yet: spelled out only
    assert names.peer("mallory", MALLORY[1]) == "mallory"
    assert describe_name("b\u043eb\x1b[2J", twin="bob").startswith("b\u043eb^[[2J (not your contact bob; ")


def test_step_2_warns_of_a_look_alike_and_confirms_a_contact_the_prompt_warned_about(store: ContactStore) -> None:
    names = PeerNames(store)
    twin, line = after_step_2(names, LOOKALIKE, spaced(MALLORY[1]))
    assert twin == "bob" and line is not None
    assert line.startswith("\u26a0 b\u043eb (non-ASCII: \u043e=U+043E) is not your contact bob: the name reads like "
                           "theirs, the key (")
    assert after_step_2(names, "bob", spaced(BOB[1]), warned=True) == (None, "✓ the key is your contact bob's.")
    assert after_step_2(names, "bob", spaced(BOB[1])) == (None, None)
    assert after_step_2(names, "mallory", spaced(MALLORY[1]), warned=True) == (None, None)


def test_the_store_is_read_again_at_most_every_two_seconds_whatever_asks(store: ContactStore) -> None:
    now = [100.0]
    names = PeerNames(store, clock=lambda: now[0])
    assert names.twin("dave", MALLORY[1]) is None
    dave = key(4)
    store.record_chat(dave[0], bytes.fromhex(dave[1]), nickname="dave", ip="127.0.0.6", address="127.0.0.6:8471")
    now[0] += REREAD_SECONDS - 0.1
    assert names.twin("dave", MALLORY[1]) is None and after_step_2(names, "dave", MALLORY[1]) == (None, None)
    now[0] += 0.1
    assert names.twin("dave", MALLORY[1]) == "dave"
    store.rename(dave[1], "Dave Smith")
    now[0] += REREAD_SECONDS
    assert after_step_2(names, "DaveSmith", MALLORY[1])[0] == "Dave Smith"


def test_contacts_whose_names_read_alike_are_both_marked_and_a_stranger_by_its_given_name(
        store: ContactStore) -> None:
    now = [100.0]
    names = PeerNames(store, clock=lambda: now[0])
    assert names.contact_name(BOB[1]) == "bob" and names.looks_like(BOB[1]) == ""
    store.record_chat(MALLORY[0], bytes.fromhex(MALLORY[1]), nickname=LOOKALIKE, ip="127.0.0.9",
                      address="127.0.0.9:8471")
    now[0] += REREAD_SECONDS
    assert names.contact_name(BOB[1]) == "bob \u26a0 looks like b\u043eb (non-ASCII: \u043e=U+043E)"
    assert names.contact_name(MALLORY[1]) == "b\u043eb (non-ASCII: \u043e=U+043E) \u26a0 looks like bob"
    assert names.contact_name(key(5)[1]).startswith("key ")
    assert names.stranger("CAROL", key(5)[1]) == f"CAROL (key {key(5)[1][:16]}, not your contact carol) \u26a0"
    assert names.stranger("dave", key(5)[1]) == f"dave (key {key(5)[1][:16]}, not a contact)"


def test_without_a_contact_store_nothing_is_marked() -> None:
    names = PeerNames(None)
    assert names.peer("bob", MALLORY[1]) == "bob" and names.contact_name(BOB[1]) == f"key {BOB[1][:16]}"


# --- the command line's listings ------------------------------------------------------------------------------

def test_contacts_and_history_listings_mark_two_contacts_whose_names_read_alike(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PCHAT_PASSPHRASE", "lookalike pw")
    vault = Vault.open(tmp_path, "lookalike pw", scrypt_n=1 << 12)
    store = ContactStore.in_data_dir(tmp_path, vault)
    history = HistoryStore.in_data_dir(tmp_path, vault)
    for (der, fp), nick, ip in ((BOB, "bob", "127.0.0.3"), (CAROL, "carol", "127.0.0.4"),
                                (MALLORY, LOOKALIKE, "127.0.0.9")):
        store.record_chat(der, bytes.fromhex(fp), nickname=nick, ip=ip, address=f"{ip}:8471")
        history.append(fp, "in", "it is me", ts=1000)
    store.close()
    history.close()
    assert main(["contacts", "--data-dir", str(tmp_path)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert next(r for r in rows if "127.0.0.3" in r).endswith("\u26a0 looks like b\u043eb (non-ASCII: \u043e=U+043E)")
    assert next(r for r in rows if "127.0.0.9" in r).endswith("\u26a0 looks like bob")
    assert "\u26a0" not in next(r for r in rows if "carol" in r)
    assert main(["contacts", "show", "carol", "--data-dir", str(tmp_path)]) == 0
    assert "\u26a0" not in capsys.readouterr().out
    assert main(["contacts", "show", MALLORY[1][:8], "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("b\u043eb  (not verified) \u26a0 looks like bob")
    assert main(["history", "--data-dir", str(tmp_path)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert any(r.startswith("  bob \u26a0 looks like b\u043eb (non-ASCII: \u043e=U+043E) ") for r in rows), rows
    assert any(r.startswith("  b\u043eb \u26a0 looks like bob ") for r in rows), rows
    assert any(r.startswith("  carol ") and "\u26a0" not in r for r in rows), rows
    assert main(["history", MALLORY[1][:8], "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "b\u043eb \u26a0 looks like bob: another contact's name reads like this one's")


@dataclass
class GroupNodeStandIn:
    """What GroupCommands asks of a node to show a group message: the contact store (groups are not needed)."""

    contacts: ContactStore
    identity: object = None
    groups: object = None

    def group_member(self, query: str) -> tuple[str, bytes, str]:
        raise AssertionError("not used")


def test_group_messages_name_a_look_alike_member_with_the_mark_and_a_contact_member_without(
        store: ContactStore) -> None:
    import io

    from p2pchat.display import Printer
    from p2pchat.events import GroupMessage
    from p2pchat.group_terminal import GroupCommands

    out = io.StringIO()
    ui = GroupCommands(GroupNodeStandIn(store), Printer(out), PeerNames(store))     # type: ignore[arg-type]
    ui.on_event(GroupMessage("ab" * 16, "lab", MALLORY[1], LOOKALIKE, 1, "it is bob", 1.0))
    ui.on_event(GroupMessage("ab" * 16, "lab", BOB[1], "whatever its adder said", 2, "I am bob", 1.0))
    assert out.getvalue().splitlines() == [
        f"[lab] b\u043eb (key {MALLORY[1][:16]}, not your contact bob) \u26a0: it is bob",
        "[lab] bob: I am bob",
    ]
