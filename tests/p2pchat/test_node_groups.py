"""Groups over real chat nodes on loopback: create, add, remove, concurrent edits, an offline member catching up."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from p2pchat.events import GroupMessage, GroupNotice, GroupReceipt
from p2pchat.foundation.identity import Identity
from p2pchat.peer_directory import FixedDirectory
from tests.conftest import free_loopback_ip
from tests.helpers import wait_until
from tests.p2pchat.node_kit import Peer, entry, make_peer

NAMES = ("alice", "bob", "carol", "dave", "erin")


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def _start(i: int, identities: list[Identity], directory: FixedDirectory, tmp_path: Path, **kw: object) -> Peer:
    d = tmp_path / NAMES[i]
    d.mkdir(exist_ok=True)
    peer = make_peer(identities[i], NAMES[i], directory, data_dir=d, outbox=True, auto_accept=True, **kw)
    contacts = peer.node.contacts
    assert contacts is not None
    for j, other in enumerate(identities[:len(NAMES)]):      # they chatted before: each knows the others' keys
        if j != i:
            contacts.record_chat(other.public_der, other.fingerprint, nickname=NAMES[j], ip=None, address=None)
    return peer


def _members(peer: Peer, gid: bytes) -> set[str]:
    assert peer.node.groups is not None
    for g, _, members in peer.node.groups.snapshot():
        if g == gid:
            return {m.hex() for m in members}
    return set()


def _texts(peer: Peer) -> list[str]:
    return [e.text for e in peer.log.all(GroupMessage)]


def test_a_group_of_five_creates_adds_removes_converges_and_catches_up(tmp_path: Path,
                                                                         identities: list[Identity]) -> None:
    directory = FixedDirectory()
    erin_ip = free_loopback_ip()
    erin_port = _free_port(erin_ip)
    directory.add(entry(identities[4], "erin", erin_ip, erin_port))     # registered, not running yet
    peers = [_start(i, identities, directory, tmp_path) for i in range(4)]
    alice, bob, carol, dave = peers
    fps = [ident.fingerprint.hex() for ident in identities[:5]]
    erin: Peer | None = None
    try:
        groups = alice.node.groups
        assert groups is not None
        members = [alice.node.group_member(n) for n in ("bob", "carol", "dave")]
        gid = groups.create("class 4b", members)
        for p in (bob, carol, dave):
            p.log.wait(GroupNotice, 20, group=gid.hex(), text="you were added to 'class 4b' (4 members)")
        groups.say(gid, "before erin")
        carol.log.wait(GroupMessage, 10, text="before erin")

        # two members edit at once: bob adds erin (offline), alice removes dave
        assert bob.node.groups is not None
        erin_member = bob.node.group_member("erin")
        edits = [threading.Thread(target=bob.node.groups.add, args=(gid, erin_member)),
                 threading.Thread(target=groups.remove, args=(gid, fps[3]))]
        for t in edits:
            t.start()
        for t in edits:
            t.join()
        want = {fps[0], fps[1], fps[2], fps[4]}
        for p in (alice, bob, carol):
            wait_until(lambda p=p: _members(p, gid) == want, 20, what=f"{p.nickname}'s members converge")
        dave.log.wait(GroupNotice, 20, group=gid.hex(), text="you were removed from 'class 4b'")

        groups.say(gid, "one")
        bob.node.groups.say(gid, "two")
        groups.say(gid, "three")
        for p in (bob, carol):
            wait_until(lambda p=p: {"one", "three"} <= set(_texts(p)), 20, what=f"{p.nickname} gets the texts")
        carol.log.wait(GroupMessage, 10, text="two")

        # erin comes up and calls two members; she gets the log and what was said since she was added, in order
        erin = _start(4, identities, directory, tmp_path, ip=erin_ip, port=erin_port, register=False)
        for target in (alice, bob):
            erin.node.run_all(erin.node.open_session(f"{target.ip}:{target.node.port}"))
        erin.log.wait(GroupNotice, 30, group=gid.hex())
        wait_until(lambda: {"one", "two", "three"} <= set(_texts(erin)), 30, what="erin catches up")
        from_alice = [t for t in _texts(erin) if t in ("one", "three")]
        assert from_alice == ["one", "three"]
        assert "before erin" not in _texts(erin)                 # joined later: no earlier history
        assert erin.node.groups is not None
        assert [t.text for t in erin.node.groups.conversation(gid)] == \
               [t.text for t in carol.node.groups.conversation(gid) if t.text != "before erin"]   # type: ignore[union-attr]
        # receipts: alice's "three" (counter 3) reached bob, carol and erin
        alice.log.wait(GroupReceipt, 20, group=gid.hex(), counter=3, delivered=3, of=3)
        assert groups.delivered(gid, 3) == (3, 3)
        # the removed member got nothing new
        assert _texts(dave) == ["before erin"]
    finally:
        for p in [*peers, *([erin] if erin else [])]:
            p.node.close()


def test_a_member_impersonating_another_is_refused_over_real_channels(tmp_path: Path,
                                                                        identities: list[Identity]) -> None:
    from p2pchat.groups import GROUP_WIRE
    directory = FixedDirectory()
    peers = [_start(i, identities, directory, tmp_path) for i in range(3)]
    alice, bob, carol = peers
    try:
        assert alice.node.groups is not None and bob.node.groups is not None
        gid = alice.node.groups.create("lab", [alice.node.group_member(n) for n in ("bob", "carol")])
        bob.log.wait(GroupNotice, 20, group=gid.hex())
        carol.log.wait(GroupNotice, 20, group=gid.hex())
        session = bob.node.live_session_with(alice.identity.fingerprint.hex())
        assert session is not None
        forged = GROUP_WIRE.encode_body("text", ref=7, group=gid, sender=carol.identity.fingerprint, counter=1,
                                        version=3, lamport=1, sent_at=1.0, text="carol says hi (not really)")
        bob.node.send_group_frame(session, forged)                # bob's channel, carol's name
        alice.log.wait(GroupNotice, 20, text="a group message claiming another member as its sender was refused "
                                              "(each member's messages come over its own channel)")
        assert _texts(alice) == []
    finally:
        for p in peers:
            p.node.close()


def test_listen_creates_a_group_writes_to_it_and_shows_it_with_member_names(tmp_path: Path,
                                                                             identities: list[Identity]) -> None:
    import io

    from p2pchat.display import Printer
    from p2pchat.terminal import ListenView

    directory = FixedDirectory()
    peers = [_start(i, identities, directory, tmp_path) for i in range(3)]
    alice, bob, _carol = peers
    out_a, out_b = io.StringIO(), io.StringIO()
    view_a, view_b = ListenView(alice.node, Printer(out_a)), ListenView(bob.node, Printer(out_b))
    try:
        view_a.on_line('/group create "lab \x1b[31mgroup" bob carol')
        view_a.on_line("/group create x nobody-known")
        assert alice.node.groups is not None
        ((gid, _, _),) = alice.node.groups.snapshot()
        view_a.on_line(f"/gsay {gid.hex()[:8]} hello \x1b[2Jall")
        bob.log.wait(GroupMessage, 20, text="hello \x1b[2Jall")
        for ev in bob.log.all(GroupMessage) + bob.log.all(GroupNotice):
            view_b.on_event(ev)
        view_b.on_line("/group list")
        alice.log.wait(GroupReceipt, 20, counter=1, delivered=2, of=2)
        view_a.on_line(f"/group remove {gid.hex()[:8]} carol")
        view_a.on_line(f"/group show {gid.hex()[:8]}")
        view_a.on_line("/group frobnicate")
        a, b = out_a.getvalue(), out_b.getvalue()
        assert "\x1b" not in a and "\x1b" not in b
        assert "created (id" in a and "with 3 members" in a and "carol removed from" in a
        assert "you: hello" in a and "(delivered to 2 of 2)" in a
        assert "! " in a and "nobody-known" in a and "/group create NAME" in a
        assert "] alice: hello" in b
        assert "you, alice" in b.replace("alice, you", "you, alice") and "carol" in b
    finally:
        for p in peers:
            p.node.close()


def test_group_chat_sends_the_lines_typed_with_no_chat_chosen_to_the_group(tmp_path: Path,
                                                                           identities: list[Identity]) -> None:
    """`p2pchat group chat GROUP` is `listen --group GROUP`: a plain line goes to the group, as /gsay would."""
    import io

    from p2pchat.display import Printer
    from p2pchat.group_cli import as_listen
    from p2pchat.terminal import ListenView

    assert as_listen(["group", "chat", "lab", "--host", "127.0.0.5"]) == ["listen", "--group", "lab", "--host",
                                                                         "127.0.0.5"]
    assert as_listen(["group", "chat", "--help"]) == ["group", "chat", "--help"]    # no group named: group's help
    directory = FixedDirectory()
    alice, bob = (_start(i, identities, directory, tmp_path) for i in range(2))
    try:
        assert alice.node.groups is not None
        gid = alice.node.groups.create("lab", [alice.node.group_member("bob")])
        bob.log.wait(GroupNotice, 20, group=gid.hex())
        out = io.StringIO()
        view = ListenView(alice.node, Printer(out))
        view.group = gid.hex()
        view.on_line("hello lab")
        assert bob.log.wait(GroupMessage, 20, text="hello lab").group == gid.hex()
        assert "message 1 queued for every member" in out.getvalue()
        view.group = None
        view.on_line("to nobody")                      # no group, no chat: said plainly, nothing sent
        assert "no chat is chosen" in out.getvalue()
    finally:
        for p in (alice, bob):
            p.node.close()
