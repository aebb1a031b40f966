"""Issue 11 in the channel core: after step 4 only sealed frames speak, refusals end a session with one notice,
a rotation cannot be frozen (retried on the channel's timer, then the session ends), the receiver enforces the
rotation interval, and the limits are counted as the spec says (UTF-8 bytes, float send times)."""

from __future__ import annotations

from p2pchat import channel as channel_mod
from p2pchat.channel import MAX_REFUSED, ROTATE_ACK_TIMEOUT, ROTATE_TRIES, Abort, Goodbye, Refused, Rotated, Text
from p2pchat.chat_protocol import CHAT, MAX_ROTATE_EVERY, MAX_TEXT_BYTES, Send
from tests.p2pchat.handshake_pair import decode
from tests.p2pchat.test_channel import Link, one_frame
from tests.p2pchat.test_channel_batching import seal_raw


def strict_link(rotate_every: int = 10) -> Link:
    """A link whose channels keep the product's refusal limit."""
    return Link(rotate_every=rotate_every, max_refused=MAX_REFUSED)


# --- refusals --------------------------------------------------------------------------------------------------

def test_a_sealed_frame_replayed_1200_times_gives_one_notice_and_ends_the_session():
    link = strict_link()
    frame = one_frame(link, "a", "meet at six")
    assert [e.text for e in link.feed("b", frame) if isinstance(e, Text)] == ["meet at six"]
    events: list[object] = []
    for _ in range(1200):
        events += link.ch["b"].receive(decode(frame), 5.0)
    refused = [e for e in events if isinstance(e, Refused)]
    aborts = [e for e in events if isinstance(e, Abort)]
    assert len(refused) == 1 and refused[0].kind == "replayed"
    assert len(aborts) == 1 and f"{MAX_REFUSED} altered, replayed or out-of-turn frames were refused" \
        in aborts[0].reason and not aborts[0].connection_lost
    assert link.ch["b"].closed and link.ch["b"].refused_count == MAX_REFUSED
    # the peer is told, authenticated: a goodbye went out before the keys were erased
    goodbye = [e.frame for e in events if isinstance(e, Send)]
    assert len(goodbye) >= 1
    got = [e for f in goodbye for e in link.ch["a"].receive(decode(f), 5.0)]
    assert any(isinstance(e, Goodbye) and "refused" in e.reason for e in got)


def test_tampered_frames_count_towards_the_same_limit():
    link = strict_link()
    frame = bytearray(one_frame(link, "a", "x"))
    frame[-1] ^= 1
    out = [link.ch["b"].receive(decode(bytes(frame)), 5.0) for _ in range(MAX_REFUSED)]
    assert [type(e).__name__ for e in out[0]] == ["Refused"] and out[0][0].kind == "tampered"
    assert all(ev == [] for ev in out[1:-1])
    assert isinstance(out[-1][-1], Abort)


def test_a_forged_unsealed_error_after_the_handshake_is_a_lost_connection_never_its_text():
    link = strict_link()
    (abort,) = link.feed("b", CHAT.encode("error", reason="alice: wire me the money"))
    assert abort.connection_lost and "wire me" not in abort.reason and link.ch["b"].closed


# --- rotation ------------------------------------------------------------------------------------------------------

def _start_rotation(link: Link) -> bytes:
    """a sends its threshold of texts; returns the rotate frame (delivered texts, rotate left out)."""
    frames = []
    for i in range(link.ch["a"].rotate_every):
        frames += link.ch["a"].send_text(f"t{i}", 1.0)[1]
    *texts, rotate = frames
    for f in texts:
        link.feed("b", f)
    link.queue["a"].clear()     # receipts are not needed here
    assert link.ch["a"].rotating
    return rotate


def test_a_dropped_rotate_frame_is_sent_again_on_the_timer_and_the_rotation_completes():
    link = strict_link(rotate_every=2)
    _start_rotation(link)                                  # the rotate frame is dropped on the way
    for i in range(2):
        link.send("a", f"under the old key while the ack travels {i}")
    link.send("a", "held until the new key")
    assert link.ch["a"].queued == 1 and len(link.queue["b"]) == 2
    assert link.ch["a"].poll(100.0) == []                  # the first tick starts the clock
    assert link.ch["a"].deadline == 100.0 + ROTATE_ACK_TIMEOUT
    assert link.ch["a"].poll(100.0 + ROTATE_ACK_TIMEOUT / 2) == []
    (again,) = link.ch["a"].poll(100.0 + ROTATE_ACK_TIMEOUT)
    assert isinstance(again, Send)
    link.queue["b"].append(again.frame)
    link.flush()             # b answers; "1 message never arrived" is reported (the dropped rotate)
    assert [e.kind for e in link.of("b", Refused)] == ["missing"]
    link.flush()
    assert link.ch["a"].epoch == 1 and link.ch["b"].recv_epoch == 1 and link.ch["a"].deadline is None
    assert link.texts("b")[-1] == "held until the new key"


def test_a_rotation_never_acknowledged_ends_the_session_with_a_reason_after_the_last_try():
    link = strict_link(rotate_every=2)
    _start_rotation(link)
    for i in range(2):
        link.send("a", f"under the old key while the ack travels {i}")
    link.send("a", "never sent")
    ch = link.ch["a"]
    assert ch.queued == 1
    now = 0.0
    ch.poll(now)
    sends = 0
    for _ in range(ROTATE_TRIES - 1):
        now += ROTATE_ACK_TIMEOUT
        sends += len([e for e in ch.poll(now) if isinstance(e, Send)])
    assert sends == ROTATE_TRIES - 1 and not ch.closed
    now += ROTATE_ACK_TIMEOUT
    *frames, abort = ch.poll(now)
    assert isinstance(abort, Abort) and "did not acknowledge the rotation" in abort.reason
    assert ch.closed and ch.poll(now + 100) == []
    got = [e for f in frames for e in link.ch["b"].receive(decode(f.frame), 5.0)]   # the peer hears why
    assert any(isinstance(e, Goodbye) for e in got) and not any(isinstance(e, Text) for e in got)


def test_a_repeated_rotate_gets_the_same_answer_and_the_second_answer_is_ignored():
    link = strict_link(rotate_every=2)
    rotate = _start_rotation(link)
    first = link.feed("b", rotate)
    again = link.ch["a"].poll(0.0) + link.ch["a"].poll(ROTATE_ACK_TIMEOUT)    # the ack was slow: a asks again
    second = link.feed("b", again[0].frame)
    acks = [decode(e.frame) for e in first + second if isinstance(e, Send)]
    assert len(acks) == 2
    results = [link.ch["a"].receive(m, 5.0) for m in acks]
    first_kinds = [type(e) for e in results[0] if not (isinstance(e, Refused) and e.kind == "missing")]
    assert first_kinds == [Rotated] and results[1] == []     # (the receipts were left out above: "missing")
    assert link.ch["a"].refused_count == 0 and link.ch["b"].refused_count == 0
    link.send("a", "under epoch 1")
    link.flush()
    assert link.texts("b")[-1] == "under epoch 1" and link.ch["b"].recv_epoch == 1


def test_the_receiver_refuses_a_sender_that_rotates_too_late():
    link = strict_link(rotate_every=MAX_ROTATE_EVERY)
    sender = link.ch["a"]
    sender.rotate_every = MAX_ROTATE_EVERY + 5           # a peer that ignores the protocol's interval
    for i in range(MAX_ROTATE_EVERY):
        link.feed("b", one_frame(link, "a", f"t{i}"))
    assert len(link.texts("b")) == MAX_ROTATE_EVERY
    events = link.feed("b", one_frame(link, "a", "one too many under epoch 0"))
    assert not [e for e in events if isinstance(e, Text)]
    (refused,) = [e for e in events if isinstance(e, Refused)]
    assert f"more than {MAX_ROTATE_EVERY} messages under key epoch 0 without rotating" in refused.reason


def test_rotate_every_is_bounded_by_the_protocol():
    for bad in (0, MAX_ROTATE_EVERY + 1):
        try:
            Link(rotate_every=bad)
        except ValueError as exc:
            assert "between 1 and" in str(exc)
        else:
            raise AssertionError(f"rotate_every={bad} was accepted")


def test_the_ack_timeout_is_read_when_the_rotation_is_timed(monkeypatch):
    monkeypatch.setattr(channel_mod, "ROTATE_ACK_TIMEOUT", 0.5)
    link = strict_link(rotate_every=1)
    _start_rotation(link)
    link.ch["a"].poll(10.0)
    assert link.ch["a"].deadline == 10.5


# --- limits as the spec says -------------------------------------------------------------------------------------

def test_a_text_over_1_mib_of_utf8_is_refused_on_receipt_even_under_1_mib_of_characters():
    link = strict_link()
    text = "é" * (MAX_TEXT_BYTES // 2 + 1)                  # 524,289 characters, 1,048,578 bytes
    frame = seal_raw(link.ch["a"], {"t": "text", "id": 1, "sent_at": 1.0, "text": text})
    events = link.feed("b", frame)
    assert not link.of("b", Text)
    assert "longer than 1,048,576 bytes" in next(e for e in events if isinstance(e, Refused)).reason
    ok = seal_raw(link.ch["a"], {"t": "text", "id": 2, "sent_at": 1.0, "text": "é" * (MAX_TEXT_BYTES // 2)})
    link.feed("b", ok)
    assert [len(t) for t in link.texts("b")] == [MAX_TEXT_BYTES // 2]


def test_a_batch_entry_over_1_mib_of_utf8_makes_the_batch_malformed():
    link = strict_link()
    big = "€" * (MAX_TEXT_BYTES // 3 + 1)
    events = link.feed("b", seal_raw(link.ch["a"], {"t": "texts", "texts": [[1, 1.0, "x"], [2, 1.0, big]]}))
    assert [e.kind for e in events if isinstance(e, Refused)] == ["malformed"] and not link.of("b", Text)
