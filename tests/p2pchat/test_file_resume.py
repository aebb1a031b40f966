"""Files kept for contacts until delivered (issue 16, p2pchat/file_resume.py): a file sent to an offline contact
waits (persisted, sealed under the data directory's passphrase) and goes out when the contact can be reached, even
after the sender's node restarted; a transfer cut by a dropped connection is offered again by itself and resumes
from the receiver's verified offset; a file that changed on disk meanwhile is dropped with a plain message."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from p2pchat.events import FileFinished, FileOffer, FileWaiting
from p2pchat.file_resume import FILE_NAME, PendingFile, PendingFileStore, file_unchanged
from p2pchat.foundation.errors import LocalFault
from p2pchat.foundation.identity import Identity
from p2pchat.peer_directory import FixedDirectory
from p2pchat.vault import Vault
from tests.conftest import free_loopback_ip
from tests.helpers import wait_until
from tests.p2pchat.node_kit import Peer, entry, make_peer

FAST = 1 << 10      # scrypt cost for tests


def _file(path: Path, size: int, seed: int = 1) -> bytes:
    data = hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)
    path.write_bytes(data)
    return data


def _pending(tmp_path: Path, **kw: object) -> PendingFile:
    src = tmp_path / "notes.txt"
    data = _file(src, 1000)
    fields = {"ref": 1, "fp": "ab" * 32, "path": str(src), "name": "notes.txt", "size": len(data),
              "sha256": hashlib.sha256(data).digest(), "mtime_ns": os.stat(src).st_mtime_ns, "queued_at": 1.0}
    return PendingFile(**{**fields, **kw})     # type: ignore[arg-type]


def test_the_waiting_files_are_sealed_under_the_passphrase_and_read_back(tmp_path: Path) -> None:
    f = _pending(tmp_path)
    vault = Vault.open(tmp_path, "pw", scrypt_n=FAST)
    store = PendingFileStore(tmp_path / FILE_NAME, vault)
    store.save(2, [f])
    blob = (tmp_path / FILE_NAME).read_bytes()
    assert b"notes.txt" not in blob and bytes.fromhex(f.fp) not in blob and f.fp.encode() not in blob
    assert oct((tmp_path / FILE_NAME).stat().st_mode & 0o777) == "0o600"
    assert PendingFileStore(tmp_path / FILE_NAME, Vault.open(tmp_path, "pw")).load() == (2, [f])
    (tmp_path / FILE_NAME).write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(LocalFault, match="cannot be read"):
        store.load()
    assert (tmp_path / FILE_NAME).read_bytes() != blob        # refused, and left as it was
    assert PendingFileStore(tmp_path / "none.bin", vault).load() == (1, [])
    plain = Vault(tmp_path / "other", None)
    PendingFileStore(tmp_path / FILE_NAME, plain).save(2, [f])     # a plain list put in a protected directory
    assert PendingFileStore(tmp_path / FILE_NAME, plain).load() == (2, [f])
    with pytest.raises(LocalFault, match="Move it aside"):
        store.load()


def test_a_file_touched_but_unchanged_is_still_sent_and_a_changed_or_missing_one_is_not(tmp_path: Path) -> None:
    f = _pending(tmp_path)
    assert file_unchanged(f) is None
    os.utime(f.path, ns=(f.mtime_ns + 10**9, f.mtime_ns + 10**9))       # touched: the same bytes
    assert file_unchanged(f) is None
    Path(f.path).write_bytes(b"x" * f.size)
    assert file_unchanged(f) == "notes.txt changed on disk since you sent it"
    Path(f.path).write_bytes(b"shorter")
    assert file_unchanged(f) == "notes.txt changed on disk since you sent it"
    os.unlink(f.path)
    assert "notes.txt cannot be read any more" in (file_unchanged(f) or "")


def test_a_file_kept_with_its_root_is_read_back_checked_by_its_root_and_an_older_record_means_sha256(
        tmp_path: Path) -> None:
    import dataclasses

    import msgpack

    from p2pchat.file_digest import file_digest

    f = _pending(tmp_path)
    root = dataclasses.replace(f, ref=2, sha256=file_digest(f.path, True)[1], root=True)
    store = PendingFileStore(tmp_path / FILE_NAME, Vault.open(tmp_path, None))
    store.save(3, [f, root])
    assert store.load() == (3, [f, root])
    os.utime(f.path, ns=(f.mtime_ns + 10**9, f.mtime_ns + 10**9))       # touched: read again, by its own digest
    assert file_unchanged(root) is None and file_unchanged(f) is None
    assert file_unchanged(dataclasses.replace(root, root=False)) == "notes.txt changed on disk since you sent it"
    old = {k: v for k, v in dataclasses.asdict(f).items() if k != "root"}        # written before roots existed
    (tmp_path / FILE_NAME).write_bytes(msgpack.packb({"format": 1, "next": 2, "files": [old]}, use_bin_type=True))
    assert store.load() == (2, [f]) and f.root is False


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


class _World:
    def __init__(self, tmp_path: Path, identities: list[Identity]) -> None:
        self.tmp, self.ids = tmp_path, identities
        self.directory = FixedDirectory()
        self.bob_ip = free_loopback_ip()
        self.bob_port = _free_port(self.bob_ip)
        self.directory.add(entry(identities[1], "bob", self.bob_ip, self.bob_port))   # registered, not running
        self.bob_fp = identities[1].fingerprint.hex()
        self.alice_ip = free_loopback_ip()
        self.peers: list[Peer] = []

    def alice(self) -> Peer:
        d = self.tmp / "alice"
        d.mkdir(exist_ok=True)
        vault = Vault.open(d, "alice's secret", scrypt_n=FAST)
        p = make_peer(self.ids[0], "alice", self.directory, ip=self.alice_ip, data_dir=d, vault=vault, outbox=True,
                      auto_accept=True)
        self.peers.append(p)
        return p

    def bob(self) -> Peer:
        d = self.tmp / "bob"
        d.mkdir(exist_ok=True)
        p = make_peer(self.ids[1], "bob", self.directory, ip=self.bob_ip, port=self.bob_port, register=False,
                      data_dir=d, auto_accept=True, accept_files=True)
        self.peers.append(p)
        return p

    def close(self) -> None:
        for p in self.peers:
            p.node.close()


def test_a_file_for_an_offline_contact_waits_through_a_restart_and_arrives_when_it_comes_up(
        tmp_path: Path, identities: list[Identity]) -> None:
    src = tmp_path / "report.pdf"
    data = _file(src, 300_000)
    w = _World(tmp_path, identities)
    try:
        alice = w.alice()
        ref = alice.node.send_file_to_contact(w.bob_fp.upper(), str(src))
        assert alice.log.wait(FileWaiting, ref=ref).status == "waiting"
        assert [f.name for f in alice.node.waiting_files(w.bob_fp)] == ["report.pdf"]
        alice.node.close()                       # the app stops before bob is ever reachable

        alice = w.alice()                        # … and starts again: the file still waits, and is sent
        assert [f.ref for f in alice.node.waiting_files()] == [ref]
        bob = w.bob()
        got = bob.log.wait(FileFinished, 30, ok=True)
        assert (tmp_path / "bob" / "downloads" / "report.pdf").read_bytes() == data
        assert alice.log.wait(FileFinished, 10, transfer=got.transfer).ok
        wait_until(lambda: alice.node.waiting_files() == [], 10, what="the delivered file to stop waiting")
        assert alice.log.wait(FileWaiting, ref=ref, status="done")
    finally:
        w.close()


@pytest.mark.parametrize("root", [False, True], ids=["sha256", "root"])
def test_a_transfer_cut_by_a_dropped_connection_resumes_by_itself_sending_only_the_missing_bytes(
        tmp_path: Path, identities: list[Identity], monkeypatch: pytest.MonkeyPatch, root: bool) -> None:
    """With ``root``, alice first delivered a small file to bob (his file_accept said he checks roots), so the big
    one is kept and offered again with its root (protocol.md §5.7 "The file's digest")."""
    from p2pchat import file_driver

    src = tmp_path / "big.bin"
    data = _file(src, 4 * 1024 * 1024)
    real_read = file_driver._FileSource.read
    cut = {"armed": True}
    w = _World(tmp_path, identities)

    def read(self: file_driver._FileSource, offset: int, n: int) -> bytes:
        if cut["armed"] and offset >= 0.4 * len(data):
            cut["armed"] = False
            for s in alice.node._rt.all_sessions():
                if s.link is not None:
                    s.link.close()     # the connection dies under the sender
        return real_read(self, offset, n)

    monkeypatch.setattr(file_driver._FileSource, "read", read)
    try:
        bob = w.bob()
        alice = w.alice()
        if root:
            small = tmp_path / "small.bin"
            _file(small, 1000, seed=3)
            alice.node.send_file_to_contact(w.bob_fp, str(small))
            assert bob.log.wait(FileFinished, 30, name="small.bin").ok
            wait_until(lambda: alice.node.waiting_files() == [], 10, what="the small file to stop waiting")
        alice.node.send_file_to_contact(w.bob_fp, str(src))       # bob is up: offered in the chat opened for it
        first = bob.log.wait(FileFinished, 30, name="big.bin")
        assert not first.ok and "kept" in first.text, first.text
        assert 0 < first.session_bytes < len(data)
        second = bob.log.wait(FileFinished, 30, ok=True, name="big.bin")     # nobody sent it again by hand
        assert second.resumed_from == first.session_bytes
        assert second.session_bytes == len(data) - first.session_bytes
        assert (tmp_path / "bob" / "downloads" / "big.bin").read_bytes() == data
        assert len(bob.log.all(FileOffer, name="big.bin")) == 2
        delivered = alice.log.wait(FileFinished, 30, ok=True, name="big.bin")
        assert delivered.text.endswith("against its root" if root else "against its SHA-256"), delivered.text
        wait_until(lambda: alice.node.waiting_files() == [], 10, what="the delivered file to stop waiting")
    finally:
        w.close()


def test_a_waiting_file_that_changed_on_disk_is_dropped_with_a_plain_message_and_never_offered(
        tmp_path: Path, identities: list[Identity]) -> None:
    src = tmp_path / "draft.txt"
    _file(src, 5000)
    w = _World(tmp_path, identities)
    try:
        alice = w.alice()
        ref = alice.node.send_file_to_contact(w.bob_fp, str(src))
        kept = alice.node.send_file_to_contact(w.bob_fp, str(src))
        alice.node.cancel_waiting_file(kept)                      # taken back: never offered
        assert alice.log.wait(FileWaiting, ref=kept, status="cancelled")
        src.write_bytes(b"rewritten")
        bob = w.bob()
        dropped = alice.log.wait(FileWaiting, 30, ref=ref, status="dropped")
        assert dropped.text.startswith("draft.txt changed on disk since you sent it; it was not sent")
        assert alice.node.waiting_files() == []
        assert not bob.log.all(FileOffer)
    finally:
        w.close()


def test_many_files_for_a_contact_go_out_a_few_at_a_time_and_all_arrive(
        tmp_path: Path, identities: list[Identity]) -> None:
    from p2pchat import file_resume

    srcs = []
    for i in range(2 * file_resume.OFFERED_AT_ONCE + 3):       # more than the receiver takes unanswered at once
        srcs.append(tmp_path / f"f{i}.bin")
        _file(srcs[-1], 50_000 + i, seed=i)
    w = _World(tmp_path, identities)
    try:
        alice = w.alice()
        # bob is up first: queueing nine files (each rewrites the sealed list) may outlast the quick retries on a
        # loaded machine, after which the next call would be a minute away (what waits for an offline contact is
        # the restart test's subject, not this one's)
        bob = w.bob()
        for src in srcs:
            alice.node.send_file_to_contact(w.bob_fp, str(src))
        try:
            wait_until(lambda: len(bob.log.all(FileFinished, ok=True)) == len(srcs), 30, what="every file at bob")
        except AssertionError as exc:       # what each side saw, for the record (read at the timeout, not before)
            raise AssertionError(f"{exc}: bob saw {bob.log.kinds()}, alice saw {alice.log.kinds()}, "
                                 f"{len(bob.log.all(FileFinished, ok=True))} of {len(srcs)} files at bob, "
                                 f"waiting at alice: {[f.ref for f in alice.node.waiting_files()]}; bob finished "
                                 f"{[(e.session[:6], e.transfer, e.name, e.path) for e in bob.log.all(FileFinished)]}"
                                 ) from None
        for src in srcs:
            assert (tmp_path / "bob" / "downloads" / src.name).read_bytes() == src.read_bytes()
        assert not [e for e in alice.log.all(FileFinished) if not e.ok]
        wait_until(lambda: alice.node.waiting_files() == [], 10, what="nothing left waiting")
    finally:
        w.close()


def test_a_waiting_file_goes_out_at_once_when_the_contact_calls_in(
        tmp_path: Path, identities: list[Identity], monkeypatch: pytest.MonkeyPatch) -> None:
    from p2pchat import outbox
    from tests.p2pchat.node_kit import connect_all

    monkeypatch.setattr(outbox, "FIRST_RETRY", 3600.0)          # alice's node would not call again for an hour
    src = tmp_path / "photo.jpg"
    data = _file(src, 200_000)
    w = _World(tmp_path, identities)
    try:
        alice = w.alice()
        ref = alice.node.send_file_to_contact(w.bob_fp, str(src))
        wait_until(lambda: alice.node.presence(w.bob_fp).value == "offline", 15, what="alice's call to fail")
        bob = w.bob()
        _, alice_sid = connect_all(bob, alice)                     # bob calls alice
        got = bob.log.wait(FileFinished, 20, ok=True)
        assert (tmp_path / "bob" / "downloads" / "photo.jpg").read_bytes() == data
        offered = alice.log.wait(FileWaiting, ref=ref, status="offered")
        assert offered.text == "a part received before is not sent again"
        assert alice.log.wait(FileFinished, transfer=got.transfer).session == alice_sid
    finally:
        w.close()


class _Host:
    """The node as the waiting files see it: one open chat with bob; every offer gets the next transfer id."""

    def __init__(self) -> None:
        self.offers: list[str] = []

    def live_session_with(self, fp: str) -> str | None:
        return "s1"

    def offer_file(self, session: str, path: str, size: int, sha256: bytes, *, root: bool = False) -> str:
        self.offers.append(Path(path).name)
        return f"t{len(self.offers)}"

    def cancel_file(self, session: str, transfer: str) -> None:
        pass

    def want_contact(self, fp: str) -> None:
        pass


class _MemoryStore:
    def load(self) -> tuple[int, list]:
        return 1, []

    def save(self, next_ref: int, files: list) -> None:
        pass


def test_a_file_whose_transfer_ended_is_never_offered_again_while_another_ends_first(tmp_path: Path) -> None:
    """Two transfers end; their files are forgotten on pool threads, in either order. Before it was forgotten, a
    file that had ended looked like one still waiting to the other end's next offers, and went out twice (bob got
    ``f0 (1).bin``). The pool here runs its jobs when the test says, to make that order."""
    from p2pchat.file_digest import sha256_of
    from p2pchat.file_resume import OFFERED_AT_ONCE, FileResume
    from p2pchat.transfer import State

    jobs: list[tuple] = []
    host = _Host()
    resume = FileResume(host, _MemoryStore(), submit=lambda fn, *a: jobs.append((fn, a)),   # type: ignore[arg-type]
                        emit=lambda ev: None)

    def run_jobs() -> None:
        while jobs:
            fn, args = jobs.pop(0)
            fn(*args)

    fp = "ab" * 32
    for i in range(OFFERED_AT_ONCE + 1):
        src = tmp_path / f"f{i}.bin"
        _file(src, 1000 + i, seed=i)
        resume.queue(fp, str(src), src.stat().st_size, sha256_of(str(src))[1])
    run_jobs()
    assert host.offers == ["f0.bin", "f1.bin"]
    resume.transfer_ended("s1", "t1", State.DONE, False)     # f0's end: its file is forgotten on the pool, later
    resume.transfer_ended("s1", "t2", State.DONE, False)     # f1's end
    finish_f0, finish_f1 = jobs.pop(0), jobs.pop(0)
    jobs.append(finish_f1)                                    # f1's job runs first and offers the next files
    run_jobs()
    jobs.append(finish_f0)
    run_jobs()
    assert host.offers == ["f0.bin", "f1.bin", "f2.bin"]
    assert [f.name for f in resume.waiting()] == ["f2.bin"]        # f0 and f1 forgotten, f2 on its way
