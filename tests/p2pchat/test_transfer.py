"""The sans-IO file transfer core and the downloads folder's safe names."""

from __future__ import annotations

import hashlib
import itertools
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pchat.downloads import Downloads, reserve, safe_name
from p2pchat.file_digest import PIECE
from p2pchat.transfer import (
    CHUNK_SIZE,
    MAX_PENDING_OFFERS,
    MAX_WINDOW,
    MIN_CHUNK,
    START_WINDOW,
    Finished,
    Offered,
    Out,
    State,
    TransferCore,
)
from tests.helpers import wait_until


class MemSource:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, offset: int, n: int) -> bytes:
        return self.data[offset:offset + n]

    def close(self) -> None:
        pass


class MemSink:
    def __init__(self, sha: bytes, offset: int = 0, prefix: bytes = b"") -> None:
        self.sha, self.offset, self.buf, self.state = sha, offset, bytearray(prefix), "open"
        self.written = offset

    def write(self, data: bytes) -> None:
        self.buf += data
        self.written += len(data)

    def progress(self) -> int:
        return self.written

    def checkpoint(self) -> None:
        pass

    def finish(self) -> str | None:
        if hashlib.sha256(self.buf).digest() != self.sha:
            self.state = "discarded"
            return None
        self.state = "saved"
        return "/downloads/file"

    def keep(self) -> None:
        self.state = "kept"

    def discard(self) -> None:
        self.state = "discarded"


def _ids():
    counter = itertools.count(1)
    return lambda: next(counter).to_bytes(16, "big")


def _pump(sender: TransferCore, receiver: TransferCore, outs: list, to: TransferCore) -> list:
    """Deliver ``outs`` to ``to``, then messages both ways until quiet; returns the events seen."""
    events = []
    queue = [(to, o) for o in outs if isinstance(o, Out)]
    while queue or sender.has_chunk:
        if not queue:
            queue.append((receiver, sender.next_chunk(0.0)))
        core, out = queue.pop(0)
        other = sender if core is receiver else receiver
        for item in core.receive(out.kind, out.fields, 0.0):
            if isinstance(item, Out):
                queue.append((other, item))
            else:
                events.append(item)
    return events


def test_offer_accept_chunks_acks_and_done_deliver_the_file_within_the_window():
    data = bytes(range(256)) * 4000 + b"tail"
    sha = hashlib.sha256(data).digest()
    a, b = TransferCore(id_factory=_ids()), TransferCore()
    tid, outs = a.offer(MemSource(data), "f.bin", len(data), sha, 0.0)
    offered = b.receive(outs[0].kind, outs[0].fields, 0.0)
    assert offered == [Offered(tid, "f.bin", len(data), sha)]
    sink = MemSink(sha)
    accept = b.accept(tid, sink, 0.0)
    a.receive(accept[0].kind, accept[0].fields, 0.0)
    sent = 0
    while a.has_chunk:          # without acks the sender stops at the window (before any rate is known)
        chunk = a.next_chunk(0.0).fields["data"]
        assert len(chunk) == MIN_CHUNK
        sent += len(chunk)
    assert START_WINDOW - MIN_CHUNK < sent <= START_WINDOW
    a2, b2 = TransferCore(id_factory=_ids()), TransferCore()
    tid, outs = a2.offer(MemSource(data), "f.bin", len(data), sha, 0.0)
    b2.receive(outs[0].kind, outs[0].fields, 0.0)
    sink = MemSink(sha)
    events = _pump(a2, b2, b2.accept(tid, sink, 0.0), a2)
    assert bytes(sink.buf) == data and sink.state == "saved"
    done = [e for e in events if isinstance(e, Finished)]
    assert {(e.outgoing, e.state) for e in done} == {(True, State.DONE), (False, State.DONE)}


def test_a_resume_sends_only_what_the_receiver_has_not_verified():
    data = b"x" * (3 * MIN_CHUNK + 5)
    sha = hashlib.sha256(data).digest()
    a, b = TransferCore(id_factory=_ids()), TransferCore()
    tid, outs = a.offer(MemSource(data), "f", len(data), sha, 0.0)
    b.receive(outs[0].kind, outs[0].fields, 0.0)
    offset = 2 * MIN_CHUNK
    sink = MemSink(sha, offset, data[:offset])
    accept = b.accept(tid, sink, 0.0)
    assert accept[0].fields["offset"] == offset
    a.receive(accept[0].kind, accept[0].fields, 0.0)
    first = a.next_chunk(0.0)
    assert first.fields["offset"] == offset
    events = _pump(a, b, [first], b)
    assert bytes(sink.buf) == data
    fin = next(e for e in events if isinstance(e, Finished) and not e.outgoing)
    assert fin.session_bytes == len(data) - offset and fin.resumed_from == offset


def _receiving(data: bytes, sha: bytes | None = None):
    sha = sha or hashlib.sha256(data).digest()
    b = TransferCore()
    tid = b"\x01" * 16
    b.receive("file_offer", {"id": tid, "name": "f", "size": len(data), "sha256": sha}, 0.0)
    sink = MemSink(sha)
    b.accept(tid, sink, 0.0)
    return b, tid, sink


def test_chunks_out_of_order_or_beyond_the_size_cancel_the_transfer_and_keep_nothing_extra():
    b, tid, sink = _receiving(b"a" * 100)
    out = b.receive("file_chunk", {"id": tid, "offset": 10, "data": b"a"}, 0.0)
    assert out[0].kind == "file_cancel" and out[1].state is State.FAILED and "out of order" in out[1].text
    b, tid, sink = _receiving(b"a" * 100)
    out = b.receive("file_chunk", {"id": tid, "offset": 0, "data": b"a" * 101}, 0.0)
    assert out[0].kind == "file_cancel" and "more data than the size" in out[1].text and not sink.buf


def test_a_sha256_mismatch_discards_the_partial_with_a_plain_message():
    b, tid, sink = _receiving(b"a" * 100, sha=hashlib.sha256(b"other").digest())
    out = b.receive("file_chunk", {"id": tid, "offset": 0, "data": b"a" * 100}, 0.0)
    fin = next(e for e in out if isinstance(e, Finished))
    assert fin.state is State.FAILED and "does not match the SHA-256" in fin.text and sink.state == "discarded"


def test_a_peer_that_stops_mid_transfer_is_timed_out_and_the_partial_kept():
    b, tid, sink = _receiving(b"a" * 1000)
    b.receive("file_chunk", {"id": tid, "offset": 0, "data": b"a" * 10}, 0.0)
    assert b.poll(30.0) == []
    out = b.poll(61.0)
    assert out[0].kind == "file_cancel" and "no progress" in out[1].text and sink.state == "kept"


def test_a_flood_of_offers_is_bounded_each_extra_one_declined():
    b = TransferCore()
    answers = [b.receive("file_offer", {"id": bytes([i]) * 16, "name": "f", "size": 1, "sha256": b"s" * 32}, 0.0)
               for i in range(MAX_PENDING_OFFERS + 3)]
    assert all(isinstance(a[0], Offered) for a in answers[:MAX_PENDING_OFFERS])
    assert all(a[0].kind == "file_decline" for a in answers[MAX_PENDING_OFFERS:])
    assert len(b.pending_offers()) == MAX_PENDING_OFFERS


def test_late_chunks_after_a_cancel_are_ignored_and_a_peer_cancel_keeps_the_partial():
    b, tid, sink = _receiving(b"a" * 1000)
    b.receive("file_chunk", {"id": tid, "offset": 0, "data": b"a" * 10}, 0.0)
    out = b.receive("file_cancel", {"id": tid, "reason": "x"}, 0.0)
    assert out[0].state is State.CANCELLED and sink.state == "kept"
    assert b.receive("file_chunk", {"id": tid, "offset": 10, "data": b"a"}, 0.0) == []


@given(st.text(max_size=300))
def test_safe_name_never_has_a_path_part_a_control_character_or_a_leading_dot(raw):
    name = safe_name(raw)
    assert name and "/" not in name and "\\" not in name and not name.startswith(".")
    assert all(ch.isprintable() or ch == " " for ch in name)
    assert not any("\u202a" <= ch <= "\u202e" or "\u2066" <= ch <= "\u2069" for ch in name)
    assert len(name.encode("utf-8")) <= 200


def test_reserve_never_overwrites_it_numbers_the_copies(tmp_path):
    (tmp_path / "a.txt").write_text("mine")
    assert reserve(tmp_path, "a.txt").name == "a (1).txt"
    assert reserve(tmp_path, "a.txt").name == "a (2).txt"
    assert (tmp_path / "a.txt").read_text() == "mine"


def test_downloads_refuses_files_over_the_limit_or_the_free_space(tmp_path):
    import pytest

    from p2pchat.foundation.errors import UserError

    d = Downloads(tmp_path, max_size=1000)
    with pytest.raises(UserError, match="over your limit"):
        d.check(1001)
    d = Downloads(tmp_path, max_size=2**62)
    with pytest.raises(UserError, match="free"):
        d.check(2**61)


def test_the_window_and_chunks_follow_the_acknowledged_rate_fast_path_grows_slow_path_stays_small():
    from p2pchat.transfer import MIN_WINDOW, TARGET_DELAY, Pace

    fast, slow = Pace(), Pace()
    t = 0.0
    for _ in range(40):             # 150 MB/s acknowledged: chunks of the largest size (10 ms of the rate)
        t += 0.01
        fast.acked(1_500_000, t)
        slow.acked(40_000, t)       # 4 MB/s (a relay's default rate limit)
    assert fast.window == min(MAX_WINDOW, int(fast.rate * TARGET_DELAY)) > 2_000_000
    assert fast.chunk == CHUNK_SIZE
    assert 3_500_000 < slow.rate < 4_500_000
    assert slow.window == MIN_WINDOW and slow.chunk == MIN_CHUNK     # a text waits ~33 ms behind it at 4 MB/s


def test_a_new_file_starts_with_slow_start_doubling_per_round_trip_until_the_rate_stops_growing():
    from p2pchat.transfer import START_WINDOW, Pace

    p = Pace()
    assert p.starting and p.window == START_WINDOW and p.chunk == MIN_CHUNK    # nothing known: small, small chunks
    t, acked = 0.0, 0
    while p.window < MAX_WINDOW:    # each round trip (2 ms) acknowledges the whole window: it doubles
        n = p.window
        t += 0.002
        p.acked(n, t)
        acked += n
        assert p.starting and p.window == min(MAX_WINDOW, START_WINDOW + acked)
        assert p.chunk == min(CHUNK_SIZE, max(1, p.window // 4 // 65536) * 65536 - 128)
    assert t <= 0.012 and p.chunk == CHUNK_SIZE         # 256 KiB to 8 MiB in five round trips
    while p.starting:               # the path is full at 300 MB/s: the first sample that did not grow ends it
        t += 0.002
        p.acked(600_000, t)
    assert p.rate == pytest.approx(300e6, rel=0.01) and t < 0.08
    assert p.window == int(p.rate * 0.025) < MAX_WINDOW      # rate × TARGET_DELAY from here on


def test_slow_start_on_a_slow_path_ends_after_two_samples_having_added_what_the_path_acknowledged():
    from p2pchat.transfer import MIN_WINDOW, START_WINDOW, Pace

    p = Pace()
    t = 0.0
    while p.starting:               # 4 MB/s (a relay's default rate limit): 40 KB every 10 ms
        assert p.window <= START_WINDOW + 200_000
        t += 0.01
        p.acked(40_000, t)
    assert t < 0.07 and 3.5e6 < p.rate < 4.5e6 and p.window == MIN_WINDOW and p.chunk == MIN_CHUNK


def test_a_higher_rate_is_taken_at_once_and_a_lower_one_only_halfway():
    from p2pchat.transfer import Pace

    p = Pace(rate=100e6)
    p.acked(1, 0.0)
    p.acked(4_000_000, 0.02)            # 200 MB/s
    assert p.rate == pytest.approx(200e6)
    p.acked(1_000_000, 0.04)            # 50 MB/s: one slow sample halves the distance
    assert p.rate == pytest.approx(125e6)


def test_the_next_file_of_a_session_starts_at_the_rate_the_last_one_measured():
    data = b"y" * (3 * MIN_CHUNK)
    sha = hashlib.sha256(data).digest()
    a = TransferCore(id_factory=_ids())
    first, _ = a.offer(MemSource(data), "a", len(data), sha, 0.0)
    _fast_sender(a, first)
    a.receive("file_accept", {"id": first, "offset": 0, "max_chunk": CHUNK_SIZE}, 0.0)
    a.next_chunk(0.0)
    a.receive("file_ack", {"id": first, "offset": MIN_CHUNK}, 0.1)
    second, _ = a.offer(MemSource(data), "b", len(data), sha, 0.2)
    t = a.get(second)
    assert t is not None and t.pace.rate == a.get(first).pace.rate > 50e6
    assert t.pace.window == a.get(first).pace.window > 1_000_000 and t.pace.chunk == CHUNK_SIZE


def test_a_full_disk_ends_the_transfer_with_a_plain_message_and_keeps_the_partial_for_a_resume():
    from p2pchat.transfer import SinkError

    class FullSink(MemSink):
        def write(self, data: bytes) -> None:
            if len(self.buf) + len(data) > 50:
                raise SinkError("the disk is full")
            super().write(data)

    data = b"a" * 100
    b = TransferCore()
    tid = b"\x02" * 16
    b.receive("file_offer", {"id": tid, "name": "f", "size": 100, "sha256": hashlib.sha256(data).digest()}, 0.0)
    sink = FullSink(hashlib.sha256(data).digest())
    b.accept(tid, sink, 0.0)
    assert b.receive("file_chunk", {"id": tid, "offset": 0, "data": data[:40]}, 0.0)[0].kind == "file_ack"
    out = b.receive("file_chunk", {"id": tid, "offset": 40, "data": data[40:]}, 0.0)
    assert out[0].kind == "file_cancel" and "disk" in out[0].fields["reason"]
    assert out[1].state is State.FAILED and out[1].text.startswith("the disk is full; the part received is kept")
    assert sink.state == "kept" and bytes(sink.buf) == data[:40]


def test_partial_downloads_resume_from_their_verified_offset_and_a_torn_record_starts_over(tmp_path):
    data = bytes(range(256)) * 100
    sha = hashlib.sha256(data).digest()
    d = Downloads(tmp_path, max_size=10**9)
    part = d.open("fp", "../x.bin", sha, len(data))
    part.write(data[:10_000])
    part.checkpoint()
    part.keep()
    with open(part.path, "ab") as fh:       # on disk but not recorded: the program was killed in between
        fh.write(data[10_000:12_000])
    assert (tmp_path / ".p2pchat-partial" / f"{part.key}.part").stat().st_size == 12_000
    assert d.resume_offset("fp", sha, len(data)) == 10_000
    assert d.resume_offset("other sender", sha, len(data)) is None
    again = d.open("fp", "../x.bin", sha, len(data))
    assert again.offset == 10_000
    again.write(data[10_000:])
    assert again.finish() == str(tmp_path / "x.bin")
    assert (tmp_path / "x.bin").read_bytes() == data
    torn = d.open("fp", "y", sha, len(data))
    torn.write(data[:500])
    torn.checkpoint()
    torn.keep()
    state = next(tmp_path.glob(".p2pchat-partial/*.json"))
    state.write_bytes(state.read_bytes()[:40])
    assert d.resume_offset("fp", sha, len(data)) is None


class _FillingFile:
    """A download's file on a disk that fills up after ``room`` bytes (a full disk cannot be made here)."""

    def __init__(self, fh, room: int) -> None:
        self.fh, self.room = fh, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            import errno
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name: str):
        return getattr(self.fh, name)


def _writer_threads() -> list[str]:
    import threading
    return [t.name for t in threading.enumerate() if t.name == "download-writer"]


def test_a_download_is_written_by_its_own_thread_which_every_end_joins(tmp_path):
    data = bytes(range(256)) * 4000
    sha = hashlib.sha256(data).digest()
    d = Downloads(tmp_path, max_size=10**9)
    before = len(_writer_threads())
    part = d.open("fp", "a.bin", sha, len(data))
    for i in range(0, len(data), 100_000):
        part.write(data[i:i + 100_000])
    part.checkpoint()                       # everything written so far is on disk and recorded
    assert d.resume_offset("fp", sha, len(data)) == len(data)
    assert part.finish() == str(tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == data
    kept = d.open("fp", "b.bin", sha, len(data))
    kept.write(data[:300_000])
    kept.keep()                             # what was queued is written and recorded before it closes
    assert d.resume_offset("fp", sha, len(data)) == 300_000
    gone = d.open("fp", "b.bin", sha, len(data))
    gone.write(data[300_000:400_000])
    gone.discard()
    assert d.resume_offset("fp", sha, len(data)) is None and not list(tmp_path.glob(".p2pchat-partial/*"))
    assert len(_writer_threads()) == before


def test_a_disk_that_fills_up_under_the_writer_thread_fails_the_transfer_and_keeps_the_verified_part(tmp_path):
    data = bytes(range(256)) * 1000
    sha = hashlib.sha256(data).digest()
    d = Downloads(tmp_path, max_size=10**9)
    a = TransferCore(id_factory=lambda: b"\x01" * 16)
    b = TransferCore()
    tid, offer = a.offer(MemSource(data), "f.bin", len(data), sha, 0.0)
    b.receive("file_offer", offer[0].fields, 0.0)
    reported = threading.Event()
    sink = d.open("fp", "f.bin", sha, len(data), on_progress=reported.set)
    sink._fh = _FillingFile(sink._fh, 100_000)      # type: ignore[assignment]
    b.accept(tid, sink, 0.0)
    out: list = []

    def cancel_in(events: list) -> list:
        return [m for m in events if getattr(m, "kind", None) == "file_cancel"]
    for offset in range(0, len(data), 50_000):
        out = b.receive("file_chunk", {"id": tid, "offset": offset, "data": data[offset:offset + 50_000]}, 0.0)
        if cancel_in(out):
            break
    # the writer thread reports the full disk (the next chunk raises it too): the transfer is cancelled with
    # the reason when the IO layer asks the core about the sink's progress
    while not cancel_in(out):
        wait_until(reported.is_set, timeout=10, what="the writer to report")
        reported.clear()
        out = b.sink_progressed(tid, 0.0)
    cancels = cancel_in(out)
    assert "disk" in cancels[0].fields["reason"]
    acks = [m.fields["offset"] for m in out if getattr(m, "kind", None) == "file_ack"]
    assert all(offset <= 100_000 for offset in acks)        # never more than was written
    finished = [m for m in out if isinstance(getattr(m, "state", None), State)]
    assert finished[0].state is State.FAILED and finished[0].text.startswith("the disk is full; the part received "
                                                                            "is kept")
    assert d.resume_offset("fp", sha, len(data)) == 100_000
    assert not _writer_threads()


def _fast_sender(core: TransferCore, tid: bytes) -> None:
    """Make a sending transfer's pace see 300 MB/s of acknowledgements (as on a fast loopback)."""
    t = core.get(tid)
    assert t is not None
    for i in range(5):
        t.pace.acked(3_000_000, 0.01 * i)


def _accepted_pair(data: bytes, *, receiver: TransferCore, drop_max_chunk: bool = False):
    sha = hashlib.sha256(data).digest()
    a = TransferCore(id_factory=_ids())
    tid, outs = a.offer(MemSource(data), "f.bin", len(data), sha, 0.0)
    receiver.receive(outs[0].kind, outs[0].fields, 0.0)
    sink = MemSink(sha)
    accept = receiver.accept(tid, sink, 0.0)[0]
    fields = dict(accept.fields)
    if drop_max_chunk:              # what a receiver of the first version sends
        fields["max_chunk"] = None
    a.receive(accept.kind, fields, 0.0)
    _fast_sender(a, tid)
    return a, tid, sink, accept


def test_a_receiver_announces_the_largest_chunk_it_takes_and_a_fast_sender_uses_it():
    from p2pchat.chat_protocol import MAX_CHUNK

    data = bytes(range(256)) * 20_000          # 5.1 MB
    b = TransferCore()
    a, _, sink, accept = _accepted_pair(data, receiver=b)
    assert accept.fields["max_chunk"] == MAX_CHUNK == CHUNK_SIZE == 16 * 65536 - 128
    sizes = []
    while a.has_chunk:
        out = a.next_chunk(0.0)
        sizes.append(len(out.fields["data"]))
        replies = b.receive(out.kind, out.fields, 0.0)
        for r in replies:
            if isinstance(r, Out):
                a.receive(r.kind, r.fields, 0.0)
    assert sizes[0] == CHUNK_SIZE and max(sizes) == CHUNK_SIZE
    assert bytes(sink.buf) == data and sink.state == "saved"


def test_a_receiver_that_announces_no_max_chunk_gets_chunks_of_the_first_version_at_most():
    from p2pchat.chat_protocol import BASE_CHUNK

    data = b"y" * (3 * CHUNK_SIZE)
    b = TransferCore()
    a, _, sink, _ = _accepted_pair(data, receiver=b, drop_max_chunk=True)
    sizes = []
    while a.has_chunk:
        out = a.next_chunk(0.0)
        sizes.append(len(out.fields["data"]))
        for r in b.receive(out.kind, out.fields, 0.0):
            if isinstance(r, Out):
                a.receive(r.kind, r.fields, 0.0)
    assert max(sizes) == BASE_CHUNK == 262_016
    assert bytes(sink.buf) == data


def test_a_chunk_larger_than_the_receiver_announced_ends_the_transfer_with_a_plain_message():
    from p2pchat.chat_protocol import BASE_CHUNK

    data = b"z" * (2 * CHUNK_SIZE)
    b = TransferCore(max_chunk=BASE_CHUNK)
    a, tid, sink, accept = _accepted_pair(data, receiver=b)
    assert accept.fields["max_chunk"] == BASE_CHUNK
    a.get(tid).chunk_limit = CHUNK_SIZE         # a sender that ignores what the receiver announced
    out = a.next_chunk(0.0)
    assert len(out.fields["data"]) == CHUNK_SIZE
    replies = b.receive(out.kind, out.fields, 0.0)
    cancel = [r for r in replies if isinstance(r, Out)]
    fin = [r for r in replies if isinstance(r, Finished)]
    assert [c.kind for c in cancel] == ["file_cancel"]
    assert fin[0].state is State.FAILED and "more than the 262,016 this side announced" in fin[0].text
    assert sink.state == "kept" and not sink.buf


def test_file_accept_with_and_without_max_chunk_decodes_and_a_too_small_one_is_malformed():
    import msgpack
    import pytest

    from p2pchat.chat_protocol import BASE_CHUNK, SEALED_CONTENT
    from p2pchat.foundation.errors import FrameError

    tid = bytes(16)
    old = SEALED_CONTENT.decode(SEALED_CONTENT.encode_body("file_accept", id=tid, offset=5))
    assert old["max_chunk"] is None
    new = SEALED_CONTENT.decode(SEALED_CONTENT.encode_body("file_accept", id=tid, offset=5, max_chunk=CHUNK_SIZE))
    assert new["max_chunk"] == CHUNK_SIZE
    small = msgpack.packb({"t": "file_accept", "id": tid, "offset": 0, "max_chunk": BASE_CHUNK - 1})
    with pytest.raises(FrameError, match="max_chunk"):
        SEALED_CONTENT.decode(small)




class HeldSink(MemSink):
    """A sink whose writer is behind: what it is handed waits until the test lets it be written."""

    def __init__(self, sha: bytes) -> None:
        super().__init__(sha)
        self.waiting: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.waiting.append(bytes(data))

    def drain(self, chunks: int) -> None:
        for data in self.waiting[:chunks]:
            super().write(data)
        del self.waiting[:chunks]


def test_acknowledgements_follow_what_the_sink_has_written_not_what_it_was_handed():
    data = bytes(range(256)) * 2000
    sha = hashlib.sha256(data).digest()
    b = TransferCore()
    tid = b"\x03" * 16
    b.receive("file_offer", {"id": tid, "name": "f", "size": len(data), "sha256": sha}, 0.0)
    sink = HeldSink(sha)
    b.accept(tid, sink, 0.0)
    ends = []
    for offset in range(0, len(data), 100_000):
        chunk = data[offset:offset + 100_000]
        assert b.receive("file_chunk", {"id": tid, "offset": offset, "data": chunk}, 0.0) == []   # not written yet
        ends.append(offset + len(chunk))
    assert b.sink_progressed(tid, 0.0) == []            # the writer reported nothing new: no acknowledgement
    sink.drain(2)
    out = b.sink_progressed(tid, 1.0)
    assert [(o.kind, o.fields["offset"]) for o in out if isinstance(o, Out)] == [("file_ack", ends[1])]
    progress = [e for e in out if not isinstance(e, Out)]
    assert progress[0].done == ends[1] and progress[0].session_bytes == ends[1]
    assert b.sink_progressed(tid, 1.0) == []            # each byte is acknowledged once
    sink.drain(len(sink.waiting))
    out = b.sink_progressed(tid, 2.0)                   # the last bytes: acknowledged and the file checked at once
    assert [o.kind for o in out if isinstance(o, Out)] == ["file_ack", "file_done"]
    assert out[0].fields["offset"] == len(data) and sink.state == "saved"


def test_a_sink_writing_on_the_spot_is_acknowledged_with_the_chunk():
    b, tid, _ = _receiving(b"a" * 1000)
    out = b.receive("file_chunk", {"id": tid, "offset": 0, "data": b"a" * 10}, 0.0)
    assert [(o.kind, o.fields["offset"]) for o in out if isinstance(o, Out)] == [("file_ack", 10)]


def test_a_sender_that_ignores_the_window_is_refused_and_the_partial_kept():
    from p2pchat.transfer import MAX_UNACKED

    data = b"w" * (MAX_UNACKED + 2 * CHUNK_SIZE)
    sha = hashlib.sha256(data).digest()
    b = TransferCore()
    tid = b"\x04" * 16
    b.receive("file_offer", {"id": tid, "name": "f", "size": len(data), "sha256": sha}, 0.0)
    sink = HeldSink(sha)                                # a stalled disk: nothing is acknowledged
    b.accept(tid, sink, 0.0)
    offset, out = 0, []
    while not out:
        out = b.receive("file_chunk", {"id": tid, "offset": offset, "data": data[offset:offset + CHUNK_SIZE]}, 0.0)
        offset += CHUNK_SIZE
    assert offset > MAX_UNACKED                         # everything flow control allows was taken
    assert sum(map(len, sink.waiting)) <= MAX_UNACKED   # and no more waits for the disk
    cancel, fin = out
    assert cancel.kind == "file_cancel" and "flow-control window" in cancel.fields["reason"]
    assert fin.state is State.FAILED and fin.text.startswith("the sender ignored flow control")
    assert "are kept and resume" in fin.text and sink.state == "kept"


def test_a_disk_that_stalls_is_named_when_the_transfer_times_out():
    b, tid, _ = _receiving(b"a" * 1000)
    b.get(tid).sink = sink = HeldSink(b.get(tid).sink.sha)
    b.receive("file_chunk", {"id": tid, "offset": 0, "data": b"a" * 10}, 0.0)
    out = b.poll(61.0)
    assert "the disk of the downloads folder made no progress" in out[1].text and sink.state == "kept"


def test_a_partial_never_makes_the_caller_wait_for_the_disk_and_bounds_what_waits(tmp_path):
    from p2pchat.transfer import SinkError

    data = bytes(range(256)) * 4096                    # 1 MiB
    sha = hashlib.sha256(data * 12).digest()
    d = Downloads(tmp_path, max_size=10**9)
    gate, reports = threading.Event(), []
    part = d.open("fp", "slow.bin", sha, 12 * len(data), on_progress=lambda: reports.append(part.progress()))
    real_write = part._fh.write

    def held_write(view):
        gate.wait(10)
        return real_write(view)
    part._fh.write = held_write                         # type: ignore[method-assign]
    part._max_queued = 10 * len(data)
    for _ in range(10):                                 # far beyond a few chunks: none of these waits
        part.write(data)
    assert part.progress() == 0
    try:
        part.write(data)
        raise AssertionError("more than max_queued was taken")
    except SinkError as exc:
        assert "ignored flow control" in str(exc)
    gate.set()
    wait_until(lambda: part.progress() == 10 * len(data), timeout=10, what="the writer to catch up")
    wait_until(lambda: reports and reports[-1] == 10 * len(data), timeout=10, what="the last report")
    assert reports == sorted(reports) and len(reports) < 10     # reports cover ACK_EVERY chunks while more wait
    part.keep()
    assert d.resume_offset("fp", sha, 12 * len(data)) == 10 * len(data)


# --- the offer's digest: the plain SHA-256 or the root (protocol.md §5.7 "The file's digest") ----------------------

class RootSink(MemSink):
    """A sink that checks the root, as a receiver does for an offer that carries one."""

    def finish(self) -> str | None:
        from p2pchat.file_digest import RootHasher

        h = RootHasher(len(self.buf))
        h.update(bytes(self.buf))
        if h.digest() != self.sha:
            self.state = "discarded"
            return None
        self.state = "saved"
        return "/downloads/file"


def test_an_offer_with_a_root_is_checked_against_it_and_every_accept_says_the_receiver_checks_roots():
    from p2pchat.file_digest import PIECE, RootHasher

    data = bytes(range(256)) * (PIECE // 128) + b"tail"        # two pieces and a bit
    h = RootHasher(len(data))
    h.update(data)
    root = h.digest()
    a, b = TransferCore(id_factory=_ids()), TransferCore()
    tid, outs = a.offer(MemSource(data), "f.bin", len(data), root, 0.0, root=True)
    assert "root" in outs[0].fields and "sha256" not in outs[0].fields
    assert b.receive(outs[0].kind, outs[0].fields, 0.0) == [Offered(tid, "f.bin", len(data), root, True)]
    sink = RootSink(root)
    accept = b.accept(tid, sink, 0.0)
    assert accept[0].fields["root"] is True
    events = _pump(a, b, accept, a)
    assert bytes(sink.buf) == data and sink.state == "saved"
    assert {(e.outgoing, e.state) for e in events if isinstance(e, Finished)} == {(True, State.DONE),
                                                                                   (False, State.DONE)}
    assert "root" in next(e for e in events if isinstance(e, Finished) and e.outgoing).text
    # a plain-SHA-256 offer is answered with root: true too (that is how a sender learns it)
    tid, outs = a.offer(MemSource(data), "g.bin", len(data), hashlib.sha256(data).digest(), 0.0)
    assert b.receive(outs[0].kind, outs[0].fields, 0.0)[0].root is False
    assert b.accept(tid, MemSink(hashlib.sha256(data).digest()), 0.0)[0].fields["root"] is True


def test_a_root_mismatch_discards_the_partial_with_a_plain_message_naming_the_root():
    data = b"hello root" * 1000
    a, b = TransferCore(id_factory=_ids()), TransferCore()
    tid, outs = a.offer(MemSource(data), "f", len(data), b"\x01" * 32, 0.0, root=True)
    b.receive(outs[0].kind, outs[0].fields, 0.0)
    sink = RootSink(b"\x01" * 32)
    events = _pump(a, b, b.accept(tid, sink, 0.0), a)
    mine = next(e for e in events if isinstance(e, Finished) and not e.outgoing)
    assert mine.state is State.FAILED and "root" in mine.text and sink.state == "discarded"


def test_an_offer_with_neither_digest_is_declined_and_one_with_both_is_checked_by_its_root():
    from p2pchat.chat_protocol import SEALED_CONTENT

    b = TransferCore()
    neither = SEALED_CONTENT.decode(SEALED_CONTENT.encode_body("file_offer", id=b"n" * 16, name="f", size=3))
    out = b.receive("file_offer", neither.fields, 0.0)
    assert out[0].kind == "file_decline" and "neither a SHA-256 nor a root" in out[0].fields["reason"]
    both = SEALED_CONTENT.decode(SEALED_CONTENT.encode_body("file_offer", id=b"b" * 16, name="f", size=3,
                                                            sha256=b"s" * 32, root=b"r" * 32))
    offered = b.receive("file_offer", both.fields, 0.0)
    assert offered == [Offered(b"b" * 16, "f", 3, b"r" * 32, True)]


@pytest.mark.parametrize("cut", [12_345, PIECE + 12_345, 4 * PIECE + 1])
def test_a_partial_of_a_root_offer_resumes_from_its_verified_offset_and_is_kept_apart_from_a_plain_one(
        tmp_path, cut):
    """Cut in the first piece, in the second, or after four (their digests hashed again on several threads)."""
    from p2pchat.file_digest import RootHasher

    data = bytes(range(256)) * (PIECE // 64) + b"end"       # four pieces and a bit
    h = RootHasher(len(data))
    h.update(data)
    root = h.digest()
    d = Downloads(tmp_path, max_size=10**9)
    part = d.open("fp", "r.bin", root, len(data), root=True)
    part.write(data[:cut])
    part.checkpoint()
    part.keep()
    assert d.resume_offset("fp", root, len(data), root=True) == cut
    assert d.resume_offset("fp", root, len(data)) is None     # the same bytes as a plain SHA-256: another file
    again = d.open("fp", "r.bin", root, len(data), root=True)
    assert again.offset == cut                                 # the kept prefix hashed again, piece by piece
    again.write(data[cut:])
    assert again.finish() == str(tmp_path / "r.bin")
    assert (tmp_path / "r.bin").read_bytes() == data
    wrong = d.open("fp", "w.bin", b"\x00" * 32, len(data), root=True)
    wrong.write(data)
    assert wrong.finish() is None and not any(tmp_path.glob(".p2pchat-partial/*.part"))
