"""Files shared in a group over real chat nodes on loopback: every member is offered the file in the group
conversation over its own chat, answers for itself, a cut transfer resumes by itself, a member offline gets the
offer when it comes back, and a removed member gets no new file."""

from __future__ import annotations

import hashlib
import io
import socket
from pathlib import Path

import pytest

from p2pchat import file_driver
from p2pchat.display import Printer
from p2pchat.events import FileFinished, FileOffer, GroupMessage, GroupNotice
from p2pchat.foundation.identity import Identity
from p2pchat.peer_directory import FixedDirectory
from p2pchat.terminal import ListenView
from tests.conftest import free_loopback_ip
from tests.helpers import wait_until
from tests.p2pchat.node_kit import entry
from tests.p2pchat.test_node_groups import _start


def _file(path: Path, size: int) -> bytes:
    data = hashlib.shake_256(path.name.encode()).digest(size)
    path.write_bytes(data)
    return data


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def _said(member: Identity, name: str, what: str) -> str:
    """The notice the sharer reads about one member's answer (the member named by key, then by given name)."""
    return f"key {member.fingerprint.hex()[:16]} «{name}» {what}"


def test_a_file_shared_in_a_group_is_offered_to_each_member_who_answers_for_itself(
        tmp_path: Path, identities: list[Identity]) -> None:
    directory = FixedDirectory()
    dave_ip = free_loopback_ip()
    dave_port = _free_port(dave_ip)
    directory.add(entry(identities[3], "dave", dave_ip, dave_port))      # registered, not running yet
    peers = [_start(i, identities, directory, tmp_path) for i in range(3)]
    alice, bob, carol = peers
    dave = None
    src = tmp_path / "notes.pdf"
    data = _file(src, 300_000)
    try:
        groups = alice.node.groups
        assert groups is not None
        gid = groups.create("lab", [alice.node.group_member(n) for n in ("bob", "carol", "dave")])
        for p in (bob, carol):
            p.log.wait(GroupNotice, 20, group=gid.hex(), text="you were added to 'lab' (4 members)")
        counter = groups.send_file(gid, str(src))

        for p in (bob, carol):       # an entry in the conversation, then the offer, tagged with the group
            shared = p.log.wait(GroupMessage, 20, group=gid.hex(), counter=counter)
            assert shared.text == "notes.pdf" and shared.size == len(data)
        offer_b = bob.log.wait(FileOffer, 20, group=gid.hex(), counter=counter)
        offer_c = carol.log.wait(FileOffer, 20, group=gid.hex(), counter=counter)
        assert offer_b.group_name == "lab" and offer_b.size == len(data)
        bob.node.answer_file(offer_b.session, offer_b.transfer, True)
        carol.node.answer_file(offer_c.session, offer_c.transfer, False)
        assert bob.log.wait(FileFinished, 20, transfer=offer_b.transfer).ok
        assert (tmp_path / "bob" / "downloads" / "notes.pdf").read_bytes() == data
        alice.log.wait(GroupNotice, 20, group=gid.hex(), text=_said(identities[1], "bob", "saved notes.pdf"))
        alice.log.wait(GroupNotice, 20, group=gid.hex(), text=_said(identities[2], "carol", "declined notes.pdf"))
        assert not (tmp_path / "carol" / "downloads" / "notes.pdf").exists()
        alice_conv = groups.conversation(gid)
        assert [(t.text, t.file is not None) for t in alice_conv] == [("notes.pdf", True)]

        # dave was offline: when he comes up and calls, he gets the entry and then the offer
        dave = _start(3, identities, directory, tmp_path, ip=dave_ip, port=dave_port, register=False)
        dave.node.run_all(dave.node.open_session(f"{alice.ip}:{alice.node.port}"))
        offer_d = dave.log.wait(FileOffer, 30, group=gid.hex(), counter=counter)
        dave.node.answer_file(offer_d.session, offer_d.transfer, True)
        assert dave.log.wait(FileFinished, 20, transfer=offer_d.transfer).ok
        alice.log.wait(GroupNotice, 20, group=gid.hex(), text=_said(identities[3], "dave", "saved notes.pdf"))

        # removed, carol gets no new file; bob does
        groups.remove(gid, carol.identity.fingerprint.hex())
        carol.log.wait(GroupNotice, 20, group=gid.hex(), text="you were removed from 'lab'")
        second = tmp_path / "second.txt"
        _file(second, 1000)
        out_a, out_b = io.StringIO(), io.StringIO()
        view_a, view_b = ListenView(alice.node, Printer(out_a)), ListenView(bob.node, Printer(out_b))
        view_a.on_line(f"/gsend {gid.hex()[:8]} {second}")
        view_a.on_line(f"/gsend {gid.hex()[:8]} {tmp_path / 'missing.txt'}")
        c2 = counter + 1
        view_b.on_event(bob.log.wait(GroupMessage, 20, group=gid.hex(), counter=c2))
        view_b.on_event(bob.log.wait(FileOffer, 20, group=gid.hex(), counter=c2))
        assert "file second.txt (entry 2) offered to every member" in out_a.getvalue()
        assert "! " in out_a.getvalue() and "missing.txt is not a file" in out_a.getvalue()
        assert "[lab] alice: shares the file 'second.txt' (1,000 bytes)" in out_b.getvalue()
        assert "[lab] alice offers the file 'second.txt'" in out_b.getvalue()
        dave.log.wait(FileOffer, 20, group=gid.hex(), counter=c2)
        assert carol.log.all(FileOffer, counter=c2) == [] and carol.log.all(GroupMessage, counter=c2) == []
        assert groups.delivered(gid, c2)[1] == 2
    finally:
        for p in [*peers, *([dave] if dave else [])]:
            p.node.close()


def test_a_group_file_cut_on_the_way_resumes_by_itself_from_the_verified_offset(
        tmp_path: Path, identities: list[Identity], monkeypatch: pytest.MonkeyPatch) -> None:
    directory = FixedDirectory()
    peers = [_start(i, identities, directory, tmp_path) for i in range(2)]
    alice, bob = peers
    src = tmp_path / "big.bin"
    data = _file(src, 4 * 1024 * 1024)
    real_read = file_driver._FileSource.read
    cut = {"armed": True}

    def read(self: file_driver._FileSource, offset: int, n: int) -> bytes:
        if cut["armed"] and offset >= 0.4 * len(data):
            cut["armed"] = False
            sid = alice.node.live_session_with(bob.identity.fingerprint.hex())
            if sid is not None:
                link = alice.node._rt.get(sid).link
                assert link is not None
                link.close()            # the connection dies under the sender
        return real_read(self, offset, n)

    monkeypatch.setattr(file_driver._FileSource, "read", read)
    try:
        groups = alice.node.groups
        assert groups is not None
        gid = groups.create("pair", [alice.node.group_member("bob")])
        counter = groups.send_file(gid, str(src))
        offer = bob.log.wait(FileOffer, 20, group=gid.hex(), counter=counter)
        bob.node.answer_file(offer.session, offer.transfer, True)
        first = bob.log.wait(FileFinished, 30, transfer=offer.transfer)
        assert not first.ok and 0 < first.session_bytes < len(data)
        # nobody sends it again by hand: alice's node calls bob back and offers it, bob's resumes it unasked
        again = wait_until(lambda: next((e for e in bob.log.all(FileOffer, group=gid.hex(), counter=counter)
                                         if e.transfer != offer.transfer), None), 40, what="the offer again")
        done = bob.log.wait(FileFinished, 30, transfer=again.transfer)
        assert done.ok, done.text
        assert done.resumed_from == first.session_bytes
        assert (tmp_path / "bob" / "downloads" / "big.bin").read_bytes() == data
        alice.log.wait(GroupNotice, 20, group=gid.hex(), text=_said(identities[1], "bob", "saved big.bin"))
    finally:
        for p in peers:
            p.node.close()
