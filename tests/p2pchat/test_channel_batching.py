"""The channel core's batching: texts queued with ``queue_text`` and sealed together as ``texts`` frames."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from p2pchat.channel import Channel, ChannelError, Goodbye, Receipt, Refused, Rotated, Text, Typing
from p2pchat.chat_protocol import (
    CHAT,
    MAX_BATCH_TEXT_BYTES,
    MAX_BATCH_TEXTS,
    MAX_RECEIPT_IDS,
    MAX_TEXT_BYTES,
    SEALED_CONTENT,
    Send,
    pad,
    sealed_aad,
    sealed_nonce,
    unpad,
)
from p2pchat.foundation import crypto
from p2pchat.foundation.codec import Message
from tests.p2pchat.handshake_pair import decode
from tests.p2pchat.test_channel import Link


def inner(sender: Channel, frame: bytes) -> Message:
    """What ``sender`` sealed in ``frame`` (decrypted with the sender's current key, so call it before a
    rotation completes)."""
    msg = decode(frame)
    side = sender._send
    plain = crypto.open_sealed(side.key, sealed_nonce(msg["counter"]), msg["box"],
                               sealed_aad(sender.session_id, side.direction, msg["epoch"], msg["counter"]))
    return SEALED_CONTENT.decode(unpad(plain))


def kinds(sender: Channel, frames: list[bytes]) -> list[str]:
    return [inner(sender, f).type for f in frames]


def seal_raw(sender: Channel, content: Any) -> bytes:
    """A genuine sealed frame (right key, next counter) around any msgpack content, even one the schema would
    refuse to encode: what a buggy or hostile peer holding the session keys could send."""
    side = sender._send
    counter = side.counter
    box = crypto.seal(side.key, sealed_nonce(counter), pad(msgpack.packb(content, use_bin_type=True)),
                      sealed_aad(sender.session_id, side.direction, side.epoch, counter))
    side.counter += 1
    return CHAT.encode("sealed", epoch=side.epoch, counter=counter, box=box)


def queue(link: Link, name: str, texts: list[str]) -> list[int]:
    ids = [link.ch[name].queue_text(t, 1000.0 + i) for i, t in enumerate(texts)]
    link.sent_texts[name] += texts
    return ids


def seal(link: Link, name: str) -> list[bytes]:
    frames = link.ch[name].seal_queued()
    link.queue[link.peer(name)].extend(frames)
    return frames


# --- sending ------------------------------------------------------------------------------------------------

def test_queued_texts_sealed_together_arrive_as_separate_messages_in_order_with_one_receipt():
    link = Link(rotate_every=1000)
    ids = queue(link, "a", [f"m{i}" for i in range(5)])
    assert ids == [1, 2, 3, 4, 5] and link.ch["a"].queued == 5
    frames = seal(link, "a")
    assert len(frames) == 1 and link.ch["a"].queued == 0
    content = inner(link.ch["a"], frames[0])
    assert content.type == "texts" and [e[0] for e in content["texts"]] == ids
    events = link.feed("b", link.queue["b"].popleft())
    texts = [e for e in events if isinstance(e, Text)]
    assert [(t.msg_id, t.text, t.sent_at) for t in texts] == [(i + 1, f"m{i}", 1000.0 + i) for i in range(5)]
    receipts = [e for e in events if isinstance(e, Send)]
    assert len(receipts) == 1
    link.flush()
    assert [r.msg_id for r in link.of("a", Receipt)] == ids
    assert not link.of("a", Refused) and not link.of("b", Refused)


def test_a_single_queued_text_uses_the_plain_text_kind_and_nothing_queued_seals_nothing():
    link = Link()
    assert link.ch["a"].seal_queued() == []
    queue(link, "a", ["alone"])
    frames = seal(link, "a")
    assert kinds(link.ch["a"], frames) == ["text"]
    link.flush()
    assert link.texts("b") == ["alone"]


def test_send_text_seals_the_queued_texts_with_it_in_order():
    link = Link(rotate_every=1000)
    queue(link, "a", ["q1", "q2"])
    msg_id, frames = link.ch["a"].send_text("direct", 2000.0)
    link.sent_texts["a"].append("direct")
    assert msg_id == 3 and link.ch["a"].queued == 0
    assert [e[0] for e in inner(link.ch["a"], frames[0])["texts"]] == [1, 2, 3] and len(frames) == 1
    link.queue["b"].extend(frames)
    link.flush()
    assert link.texts("b") == ["q1", "q2", "direct"]


@pytest.mark.parametrize("text, now, error, match", [
    ("x" * (MAX_TEXT_BYTES + 1), 1.0, ChannelError, "at most"),
    ("\ud800", 1.0, ChannelError, "lone surrogates"),
    ("ok", float("nan"), ValueError, "not a time"),
    ("ok", -1.0, ValueError, "not a time"),
])
def test_queue_text_refuses_what_send_text_refuses_and_queues_nothing(text, now, error, match):
    link = Link()
    with pytest.raises(error, match=match):
        link.ch["a"].queue_text(text, now)
    with pytest.raises(error, match=match):
        link.ch["a"].send_text(text, now)
    assert link.ch["a"].queued == 0 and link.ch["a"].seal_queued() == []
    assert link.ch["a"].queue_text("fine", 1.0) == 1       # no id was used up by the refusals


def test_queue_text_refuses_after_either_side_said_goodbye():
    link = Link()
    link.ch["a"].send_goodbye()
    with pytest.raises(ChannelError, match="closed"):
        link.ch["a"].queue_text("late", 1.0)
    link2 = Link()
    link2.queue["a"].extend(link2.ch["b"].send_goodbye())
    link2.flush()
    with pytest.raises(ChannelError, match="left"):
        link2.ch["a"].queue_text("late", 1.0)


def test_batches_are_split_at_the_entry_and_size_limits_and_a_big_text_goes_alone():
    link = Link(rotate_every=1000)
    n = 2 * MAX_BATCH_TEXTS + 5
    queue(link, "a", [f"n{i}" for i in range(n)])
    frames = seal(link, "a")
    assert [len(inner(link.ch["a"], f)["texts"]) for f in frames] == [MAX_BATCH_TEXTS, MAX_BATCH_TEXTS, 5]
    chunk = "y" * (MAX_BATCH_TEXT_BYTES // 3)
    queue(link, "a", ["s1", "s2", "z" * MAX_TEXT_BYTES, chunk, chunk, chunk, chunk])
    frames = seal(link, "a")
    contents = [inner(link.ch["a"], f) for f in frames]
    assert [c.type for c in contents] == ["texts", "text", "texts", "text"]
    assert [len(c["texts"]) for c in contents if c.type == "texts"] == [2, 3]
    link.flush()
    assert link.texts("b") == link.sent_texts["a"]
    assert not link.of("b", Refused)


def test_typing_goodbye_and_receipts_after_queued_texts_keep_the_order_the_user_made():
    link = Link(rotate_every=1000)
    queue(link, "a", ["before typing 1", "before typing 2"])
    frames = link.ch["a"].send_typing(True)
    assert kinds(link.ch["a"], frames) == ["texts", "typing"]
    link.queue["b"].extend(frames)
    # b has texts queued when a's texts arrive: its receipt goes out after them.
    queue(link, "b", ["b queued"])
    events = link.feed("b", link.queue["b"].popleft())
    sends = [e.frame for e in events if isinstance(e, Send)]      # feed() put them on their way to a
    assert kinds(link.ch["b"], sends) == ["text", "receipt"]
    link.flush()
    shown = [e for e in link.events["b"] if isinstance(e, (Text, Typing))]
    assert [type(e).__name__ for e in shown] == ["Text", "Text", "Typing"]
    assert link.texts("a") == ["b queued"]
    queue(link, "a", ["last words"])
    frames = link.ch["a"].send_goodbye("bye")
    assert kinds(link.ch["a"], frames) == ["text", "goodbye"]
    link.queue["b"].extend(frames)
    link.flush()
    assert link.texts("b")[-1] == "last words"
    assert isinstance(link.events["b"][-1], Goodbye)
    assert not link.of("a", Refused) and not link.of("b", Refused)


def test_a_rotation_answer_follows_the_texts_queued_before_it():
    link = Link(rotate_every=1)
    link.send("a", "asks to rotate")            # text + rotate
    link.deliver_one("b")                       # the text (b answers with its receipt)
    queue(link, "b", ["b1", "b2"])
    events = link.feed("b", link.queue["b"].popleft())     # the rotate frame
    sends = [e.frame for e in events if isinstance(e, Send)]
    # b's own batch crosses its threshold too: its rotation request follows its texts, then the answer
    assert kinds(link.ch["b"], sends) == ["texts", "rotate", "rotate_ack"]
    link.flush()
    assert link.texts("a") == ["b1", "b2"]
    assert link.ch["a"].epoch == 1 and link.ch["b"].epoch == 1
    assert not link.of("a", Refused) and not link.of("b", Refused)


def test_rotation_happens_every_n_texts_counting_texts_not_frames_when_batches_cross_the_threshold():
    link = Link(rotate_every=4)
    queue(link, "a", ["a", "b", "c"])
    assert link.ch["a"].until_rotation == 1            # queued texts count before they are sealed
    queue(link, "a", ["d", "e", "f"])
    assert link.ch["a"].until_rotation == 0
    frames = seal(link, "a")
    assert kinds(link.ch["a"], frames) == ["texts", "rotate"]
    link.flush()
    assert link.ch["a"].epoch == 1 and link.ch["a"].until_rotation == 4
    for round_ in range(1, 6):
        queue(link, "a", [f"r{round_} {i}" for i in range(round_ + 3)])     # 4, 5, … texts: each crosses it
        frames = seal(link, "a")
        assert kinds(link.ch["a"], frames)[-1] == "rotate"
        link.flush()
        assert link.ch["a"].epoch == round_ + 1
    assert link.texts("b") == link.sent_texts["a"]
    assert [r.epoch for r in link.of("a", Rotated) if r.direction == "send"] == list(range(1, 7))
    # b switches to a's new key on its first frame under it: the last epoch has carried nothing yet
    assert [r.epoch for r in link.of("b", Rotated) if r.direction == "receive"] == list(range(1, 6))
    assert not link.of("a", Refused) and not link.of("b", Refused)


def test_close_forgets_queued_texts_with_the_keys():
    link = Link()
    queue(link, "a", ["never sealed"])
    link.ch["a"].close()
    assert link.ch["a"].queued == 0 and link.ch["a"].seal_queued() == []


# --- receiving ----------------------------------------------------------------------------------------------

def test_a_replayed_batch_frame_is_refused_and_shows_nothing():
    link = Link()
    queue(link, "a", ["one", "two"])
    frame = seal(link, "a")[0]
    link.flush()
    events = link.feed("b", frame)
    assert [e.kind for e in events if isinstance(e, Refused)] == ["replayed"]
    assert not [e for e in events if isinstance(e, Text)]
    assert link.texts("b") == ["one", "two"]


@pytest.mark.parametrize("ids, kind", [
    ([1, 1], "malformed"),         # repeated within the batch
    ([2, 1], "malformed"),         # decreasing within the batch
    ([1, 3, 2], "malformed"),
])
def test_a_batch_with_a_repeated_or_decreasing_id_is_refused_whole(ids, kind):
    link = Link()
    frame = link.ch["a"]._seal("texts", texts=[[i, 1.0, f"t{i}"] for i in ids])
    events = link.feed("b", frame)
    assert [e.kind for e in events if isinstance(e, Refused)] == [kind]
    assert not link.of("b", Text) and not [e for e in events if isinstance(e, Send)]
    link.send("a", "the chat goes on")          # id 1: nothing of the refused batch was taken as seen
    link.flush()
    assert link.texts("b") == ["the chat goes on"]


def test_a_batch_repeating_ids_already_shown_is_refused_as_replayed():
    link = Link()
    link.send("a", "first")
    link.send("a", "second")
    link.flush()
    events = link.feed("b", link.ch["a"]._seal("texts", texts=[[2, 1.0, "again"], [3, 1.0, "new"]]))
    assert [e.kind for e in events if isinstance(e, Refused)] == ["replayed"]
    assert link.texts("b") == ["first", "second"]


@pytest.mark.parametrize("texts", [
    [],                                                            # empty
    [[i, 1.0, "x"] for i in range(1, MAX_BATCH_TEXTS + 2)],        # too many
    [[1, 1.0, "x"], "not an entry"],
    [[1, 1.0]],                                                    # entry too short
    [[1, 1.0, "x", 4]],                                            # entry too long
    [["1", 1.0, "x"]],
    [[True, 1.0, "x"]],
    [[0, 1.0, "x"]],
    [[2**63, 1.0, "x"]],
    [[1, "yesterday", "x"]],
    [[1, 1.0, b"bytes"]],
    [[1, 1.0, None]],
    [[1, 1.0, "x"], [2, float("nan"), "y"]],                       # impossible times
    [[1, float("inf"), "x"], [2, 1.0, "y"]],
    [[1, -1.0, "x"], [2, 1.0, "y"]],
    [[1, 1e300, "x"], [2, 1.0, "y"]],
])
def test_malformed_batches_are_refused_whole_and_show_nothing(texts):
    link = Link()
    events = link.feed("b", seal_raw(link.ch["a"], {"t": "texts", "texts": texts}))
    assert [e.kind for e in events if isinstance(e, Refused)] == ["malformed"]
    assert not link.of("b", Text) and not [e for e in events if isinstance(e, Send)]
    link.send("a", "still fine")
    link.flush()
    assert link.texts("b") == ["still fine"]


def test_send_times_must_be_floats_as_the_spec_says_in_batches_and_single_texts():
    link = Link()
    events = link.feed("b", seal_raw(link.ch["a"], {"t": "texts", "texts": [[1, 5, "x"], [2, 6, "y"]]}))
    assert [e.kind for e in events if isinstance(e, Refused)] == ["malformed"]
    link.feed("b", seal_raw(link.ch["a"], {"t": "text", "id": 1, "sent_at": 5, "text": "x"}))
    assert not link.of("b", Text) and link.ch["b"].refused_count == 2
    link.feed("b", seal_raw(link.ch["a"], {"t": "texts", "texts": [[1, 5.0, "x"], [2, 6.5, "y"]]}))
    assert [(t.msg_id, t.sent_at) for t in link.of("b", Text)] == [(1, 5.0), (2, 6.5)]


def test_receipts_for_many_batches_read_at_once_never_list_more_than_the_limit():
    link = Link(rotate_every=1000)
    per_batch = 60
    frames = []
    for b in range(5):
        queue(link, "a", [f"{b}.{i}" for i in range(per_batch)])
        frames += link.ch["a"].seal_queued()
    sends: list[bytes] = []
    for n, frame in enumerate(frames):
        events = link.ch["b"].receive(decode(frame), 1.0, more_buffered=n < len(frames) - 1)
        sends += [e.frame for e in events if isinstance(e, Send)]
    receipts = [inner(link.ch["b"], f)["ids"] for f in sends]
    assert all(len(ids) <= MAX_RECEIPT_IDS for ids in receipts) and len(receipts) == 2
    assert [i for ids in receipts for i in ids] == list(range(1, 5 * per_batch + 1))
    got: list[Any] = []
    for f in sends:
        got += link.ch["a"].receive(decode(f), 1.0)
    assert [r.msg_id for r in got if isinstance(r, Receipt)] == list(range(1, 5 * per_batch + 1))


def test_a_batch_is_padded_to_a_size_bucket_like_any_sealed_content():
    link = Link()
    queue(link, "a", ["a", "b"])
    frame = link.ch["a"].seal_queued()[0]
    assert len(decode(frame)["box"]) == 256 + crypto.GCM_TAG_LEN


def test_the_channel_counts_the_utf8_bytes_of_queued_texts_until_they_are_sealed_or_dropped():
    link = Link()
    ch = link.ch["a"]
    queue(link, "a", ["abc", "é" * 10, "👋"])
    assert ch.queued_bytes == 3 + 20 + 4
    ch.seal_queued()
    assert ch.queued_bytes == 0
    queue(link, "a", ["held"])
    ch.close()
    assert ch.queued_bytes == 0 and ch.queued == 0
