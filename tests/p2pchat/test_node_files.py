"""File transfer between two chat nodes in one process (real sockets on 127.0.0.x): offer, accept, chunks under
flow control, texts that overtake chunks, the SHA-256 check, decline, cancel, and a resume after a cut session."""

from __future__ import annotations

import hashlib
import os

from p2pchat.events import FileFinished, FileOffer, FileProgress, MessageReceived
from tests.p2pchat.node_kit import connect_all, pair


def _file(path, size: int, seed: int = 1) -> bytes:
    data = hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)
    path.write_bytes(data)
    return data


class _CutAt:
    """Closes the sender's connection (as kill -9 would) when it first reads its file at ``fraction`` of
    ``size`` or beyond, once :attr:`link` is set (``None``: not armed)."""

    def __init__(self, monkeypatch, size: int, fraction: float = 0.4) -> None:
        from p2pchat import file_driver

        self.link = None
        real_read = file_driver._FileSource.read

        def read(source, offset, n):
            if self.link is not None and offset >= fraction * size:
                self.link, link = None, self.link
                link.close()
            return real_read(source, offset, n)

        monkeypatch.setattr(file_driver._FileSource, "read", read)


def test_a_file_is_offered_accepted_and_saved_byte_for_byte_while_texts_still_flow(identities, tmp_path):
    src = tmp_path / "report.pdf"
    data = _file(src, 3 * 1024 * 1024 + 17)
    with pair(identities, bob={"downloads": tmp_path / "dl"}) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        tid = alice.node.send_file(sid, str(src))
        offer = bob.log.wait(FileOffer, transfer=tid)
        assert offer.name == "report.pdf" and offer.size == len(data) and offer.sender == "alice"
        bob.node.answer_file(bsid, tid, True)
        alice.node.send_text(sid, "while the file travels")
        bob.log.wait(MessageReceived, text="while the file travels")
        done = bob.log.wait(FileFinished, transfer=tid, timeout=30)
        assert done.ok, done.text
        assert (tmp_path / "dl" / "report.pdf").read_bytes() == data
        assert not os.stat(tmp_path / "dl" / "report.pdf").st_mode & 0o111
        sent = alice.log.wait(FileFinished, transfer=tid)
        assert sent.ok and sent.session_bytes == len(data)
        assert alice.log.all(FileProgress, transfer=tid)


def test_a_declined_offer_ends_on_both_sides_and_nothing_is_written(identities, tmp_path):
    src = tmp_path / "a.bin"
    _file(src, 1000)
    with pair(identities, bob={"downloads": tmp_path / "dl"}) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        tid = alice.node.send_file(sid, str(src))
        bob.log.wait(FileOffer, transfer=tid)
        bob.node.answer_file(bsid, tid, False)
        assert alice.log.wait(FileFinished, transfer=tid).state == "declined"
        assert not (tmp_path / "dl").exists() or not any((tmp_path / "dl").iterdir())


def test_a_transfer_cut_at_40_percent_resumes_in_a_new_session_without_sending_verified_bytes_again(
        identities, tmp_path, monkeypatch):
    src = tmp_path / "big.bin"
    data = _file(src, 4 * 1024 * 1024)
    cut = _CutAt(monkeypatch, len(data))
    with pair(identities, bob={"downloads": tmp_path / "dl", "accept_files": True}) as (alice, bob, _):
        sid, _ = connect_all(alice, bob)
        cut.link = alice.node._rt.get(sid).link
        tid = alice.node.send_file(sid, str(src))
        first = bob.log.wait(FileFinished, transfer=tid, timeout=30)
        assert not first.ok and "kept" in first.text, first.text
        assert 0 < first.session_bytes < len(data)
        sid2, _ = connect_all(alice, bob)
        tid2 = alice.node.send_file(sid2, str(src))
        second = bob.log.wait(FileFinished, transfer=tid2, timeout=30)
        assert second.ok, second.text
        assert second.resumed_from == first.session_bytes            # the verified part is not sent again
        assert second.session_bytes == len(data) - first.session_bytes
        assert (tmp_path / "dl" / "big.bin").read_bytes() == data
        assert not any((tmp_path / "dl" / ".p2pchat-partial").iterdir())


def _recording_offers(monkeypatch) -> list[dict]:
    """Every ``file_offer`` a node of this process receives (its fields), in order."""
    from p2pchat.file_driver import FileDriver

    seen: list[dict] = []
    real = FileDriver.on_message

    def on_message(self, session, kind, fields):
        if kind == "file_offer":
            seen.append(dict(fields))
        return real(self, session, kind, fields)

    monkeypatch.setattr(FileDriver, "on_message", on_message)
    return seen


def _as_built_before_features(monkeypatch, identity) -> None:
    """Make the node of ``identity`` announce nothing in step 1, as a node built before ``features`` (it still says
    ``root: true`` in its file_accept, as the version before this one did)."""
    from p2pchat import handshake_driver

    real = handshake_driver.Handshake

    def make(**kw):
        return real(**kw, features=None) if kw["identity"] is identity else real(**kw)

    monkeypatch.setattr(handshake_driver, "Handshake", make)


def test_the_first_file_to_a_peer_that_announced_roots_in_step_1_goes_with_a_root_and_resumes_under_it(
        identities, tmp_path, monkeypatch):
    """Bob's hello says ``file-root`` (protocol.md §3.1), so alice offers even her first file to him with its root
    (hashed on every core) — no plain SHA-256 first; one cut at 40 % resumes under that root."""
    import json

    big_src = tmp_path / "big.bin"
    data = _file(big_src, 6 * 1024 * 1024 + 3, seed=2)
    cut = _CutAt(monkeypatch, len(data))
    offers = _recording_offers(monkeypatch)
    with pair(identities, bob={"downloads": tmp_path / "dl", "accept_files": True}) as (alice, bob, _):
        sid, _ = connect_all(alice, bob)
        bob_fp = alice.node._rt.get(sid).peer_fp
        assert alice.node._rt.files.takes_root(bob_fp)          # known from step 1, before any offer
        cut.link = alice.node._rt.get(sid).link
        tid = alice.node.send_file(sid, str(big_src))
        first = bob.log.wait(FileFinished, transfer=tid, timeout=30)
        assert not first.ok and "kept" in first.text, first.text
        assert 0 < first.session_bytes < len(data)
        assert offers[0].get("root") is not None and offers[0].get("sha256") is None
        states = [json.loads(p.read_text()) for p in (tmp_path / "dl" / ".p2pchat-partial").glob("*.json")]
        assert [set(s) & {"root", "sha256"} for s in states] == [{"root"}]
        sid2, _ = connect_all(alice, bob)
        tid2 = alice.node.send_file(sid2, str(big_src))
        second = bob.log.wait(FileFinished, transfer=tid2, timeout=30)
        assert second.ok, second.text
        assert second.resumed_from == first.session_bytes            # the verified part is not sent again
        assert (tmp_path / "dl" / "big.bin").read_bytes() == data
        assert "root" in alice.log.wait(FileFinished, transfer=tid2).text


def test_a_receiver_built_before_step_1_features_gets_the_first_file_with_sha256_then_roots_after_its_accept(
        identities, tmp_path, monkeypatch):
    """Bob announces nothing in step 1 (a node of the version before): the four steps complete, the first file goes
    with its plain SHA-256 as before, and once bob's file_accept said ``root: true`` the next ones with a root; a
    file cut while it went with its SHA-256 is offered again with it, so it resumes."""
    first_src, big_src = tmp_path / "first.bin", tmp_path / "big.bin"
    data = _file(big_src, 4 * 1024 * 1024, seed=3)
    _file(first_src, 1000)
    _as_built_before_features(monkeypatch, identities[1])
    cut = _CutAt(monkeypatch, len(data))
    offers = _recording_offers(monkeypatch)
    with pair(identities, bob={"downloads": tmp_path / "dl", "accept_files": True}) as (alice, bob, _):
        sid, _ = connect_all(alice, bob)
        files, bob_fp = alice.node._rt.files, alice.node._rt.get(sid).peer_fp
        assert not files.takes_root(bob_fp)
        cut.link = alice.node._rt.get(sid).link
        tid = alice.node.send_file(sid, str(big_src))
        first = bob.log.wait(FileFinished, transfer=tid, timeout=30)
        assert not first.ok and "kept" in first.text, first.text
        assert offers[0].get("sha256") is not None and offers[0].get("root") is None
        assert files.takes_root(bob_fp)                         # bob's file_accept said root: true
        sid2, _ = connect_all(alice, bob)
        tid2 = alice.node.send_file(sid2, str(big_src))        # not delivered yet: SHA-256 again, so it resumes
        second = bob.log.wait(FileFinished, transfer=tid2, timeout=30)
        assert second.ok and second.resumed_from == first.session_bytes, second.text
        assert offers[1].get("sha256") is not None and offers[1].get("root") is None
        tid3 = alice.node.send_file(sid2, str(first_src))
        assert bob.log.wait(FileFinished, transfer=tid3, timeout=30).ok
        assert offers[2].get("root") is not None and offers[2].get("sha256") is None


def test_an_offer_named_with_a_path_lands_in_the_downloads_folder_under_a_safe_name(identities, tmp_path):
    from p2pchat.file_driver import _FileSource

    src = tmp_path / "x"
    data = _file(src, 5000)
    with pair(identities, bob={"downloads": tmp_path / "dl", "accept_files": True}) as (alice, bob, _):
        sid, _bsid = connect_all(alice, bob)
        s = alice.node._rt.get(sid)
        with s.writer.deferred():       # what a hostile sender can put in an offer
            digest = hashlib.sha256(data).digest()
            tid, out = alice.node._rt.files.core(s).offer(_FileSource(str(src)), "../../\u202eevil\x1b.sh",
                                                           len(data), digest, 0.0)
            alice.node._rt.files._send(s, out)
        done = bob.log.wait(FileFinished, transfer=tid.hex(), timeout=20)
        assert done.ok, done.text
        assert [p.name for p in (tmp_path / "dl").iterdir() if p.is_file()] == ["evil.sh"]
        assert not (tmp_path / "evil.sh").exists()
        assert not os.stat(tmp_path / "dl" / "evil.sh").st_mode & 0o111


def test_texts_arrive_while_the_receivers_disk_holds_every_chunk_and_the_sender_waits_for_its_acks(
        identities, tmp_path, monkeypatch):
    import threading

    from p2pchat import downloads

    src = tmp_path / "big.bin"
    data = _file(src, 6 * 1024 * 1024)
    gate, entered = threading.Event(), threading.Event()
    real_append = downloads.Partial._append

    def held_append(self, chunk):                   # a disk that takes nothing until the test lets it
        entered.set()
        gate.wait(30)
        real_append(self, chunk)

    monkeypatch.setattr(downloads.Partial, "_append", held_append)
    with pair(identities, bob={"downloads": tmp_path / "dl", "accept_files": True}) as (alice, bob, _):
        try:
            sid, bsid = connect_all(alice, bob)
            tid = alice.node.send_file(sid, str(src))
            assert entered.wait(20), "the receiver never started writing"
            for i in range(5):
                alice.node.send_text(sid, f"text {i} while the disk is stuck")
            for i in range(5):
                bob.log.wait(MessageReceived, text=f"text {i} while the disk is stuck", timeout=10)
            assert not gate.is_set()                # delivered while the sink is still blocked
            sender = alice.node._rt.get(sid)
            with sender.lock:
                t = sender.files.get(bytes.fromhex(tid))
                assert t.acked == 0 and 0 < t.sent < len(data)      # nothing written, nothing acknowledged: it waits
            receiver = bob.node._rt.get(bsid)
            with receiver.lock:
                assert receiver.files.get(bytes.fromhex(tid)).acked == 0
        finally:
            gate.set()                              # (a failed check must not leave the writer waiting)
        done = bob.log.wait(FileFinished, transfer=tid, timeout=30)
        assert done.ok, done.text
        assert (tmp_path / "dl" / "big.bin").read_bytes() == data
        assert alice.log.wait(FileFinished, transfer=tid).ok
