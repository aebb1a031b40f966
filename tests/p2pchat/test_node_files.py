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
