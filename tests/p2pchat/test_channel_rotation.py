"""Key rotation without draining the pipeline (issue 12): the sender goes on sealing texts under the old epoch
while its ``rotate_ack`` travels (at most ``rotate_every`` more), the receiver accepts the old epoch until the
first frame under the new one (the switch counter) and refuses it after; replays, reorderings and forgeries
across the boundary are refused; a peer can make us keep at most one old epoch."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from p2pchat.channel import ROTATE_ACK_TIMEOUT, ROTATE_TRIES, Abort, Refused, Rotated, Text
from p2pchat.chat_protocol import CHAT, MAX_BATCH_TEXTS, MAX_ROTATE_EVERY, Send, pad, sealed_aad, sealed_nonce
from p2pchat.foundation import crypto
from tests.p2pchat.handshake_pair import decode
from tests.p2pchat.test_channel import Link, reachable_bytes
from tests.p2pchat.test_channel_batching import seal_raw


def seal_under(link: Link, key: bytes, epoch: int, content: dict[str, Any]) -> bytes:
    """A frame a's side seals with ``key`` under ``epoch`` at its next counter: what a's own code would make if it
    still held that key (only a peer holding the old key can make one)."""
    side = link.ch["a"]._send
    counter = side.counter
    box = crypto.seal(key, sealed_nonce(counter), pad(msgpack.packb(content, use_bin_type=True)),
                      sealed_aad(link.ch["a"].session_id, side.direction, epoch, counter))
    side.counter += 1
    return CHAT.encode("sealed", epoch=epoch, counter=counter, box=box)


def overlap(link: Link) -> dict[str, Any]:
    """a (rotate_every 2) sends a1, a2 + rotate; b answers; a sends a3, a4 under epoch 0 while the ack travels;
    a takes the ack and sends a5 under epoch 1. Nothing of a's reached b beyond the rotate. Returns the frames
    to b and a's old key."""
    for t in ("a1", "a2"):
        link.send("a", t)
    while link.queue["b"]:
        link.deliver_one("b")                     # b: the texts and the rotate; its ack is on its way to a
    old_key = link.ch["a"]._send.key
    link.send("a", "a3")
    link.send("a", "a4")
    in_flight = list(link.queue["b"])             # a3, a4: still under epoch 0
    link.queue["b"].clear()
    while link.queue["a"]:
        link.deliver_one("a")                     # the ack (and receipts): a switches to epoch 1
    assert link.ch["a"].epoch == 1
    link.send("a", "a5")
    (switch,) = list(link.queue["b"])
    link.queue["b"].clear()
    assert [decode(f)["epoch"] for f in in_flight] == [0, 0] and decode(switch)["epoch"] == 1
    return {"a3": in_flight[0], "a4": in_flight[1], "a5": switch, "old_key": old_key}


def refusals(events: list[Any]) -> list[str]:
    return [e.kind for e in events if isinstance(e, Refused)]


def test_old_epoch_frames_are_accepted_until_the_switch_counter_and_the_old_key_is_erased_there():
    link = Link(rotate_every=2)
    f = overlap(link)
    b = link.ch["b"]
    assert b._recv.key == f["old_key"] and b._recv.next_key is not None    # one old epoch, one next
    for name in ("a3", "a4"):
        assert [e.text for e in link.feed("b", f[name]) if isinstance(e, Text)] == [name]
    assert b.recv_epoch == 0 and f["old_key"] in reachable_bytes(b)
    events = link.feed("b", f["a5"])               # the first frame under epoch 1: its counter is the switch
    assert [e.text for e in events if isinstance(e, Text)] == ["a5"] and Rotated(1, "receive") in events
    assert b.recv_epoch == 1 and f["old_key"] not in reachable_bytes(b) and b._recv.next_key is None
    # a genuine frame under the old key with a counter above the switch counter: that key is gone
    late = seal_under(link, f["old_key"], 0, {"t": "text", "id": 6, "sent_at": 1.0, "text": "too late"})
    events = link.feed("b", late)
    assert refusals(events) == ["replayed"] and "erased key epoch 0" in events[0].reason
    assert link.texts("b") == ["a1", "a2", "a3", "a4", "a5"]


@pytest.mark.parametrize("name", ["a4", "a3", "a5"])
def test_frames_replayed_or_reordered_across_the_epoch_boundary_are_refused(name):
    link = Link(rotate_every=2)
    f = overlap(link)
    link.feed("b", f["a3"])
    events = link.feed("b", f["a5"])               # a4 held back by the attacker: reported missing, b switches
    assert refusals(events) == ["missing"] and link.ch["b"].recv_epoch == 1
    events = link.feed("b", f[name])               # the held-back frame, or a replay of either epoch
    assert refusals(events) == ["replayed"] and not [e for e in events if isinstance(e, Text)]
    assert link.texts("b") == ["a1", "a2", "a3", "a5"] and link.ch["b"].recv_epoch == 1


def _relabelled(frame: bytes, epoch: int) -> bytes:
    msg = decode(frame)
    return CHAT.encode("sealed", epoch=epoch, counter=msg["counter"], box=msg["box"])


def _flipped(frame: bytes) -> bytes:
    out = bytearray(frame)
    out[-1] ^= 1
    return bytes(out)


@pytest.mark.parametrize(("forge", "kind"), [
    (lambda f: _flipped(f["a5"]), "tampered"),              # the first frame of the new epoch, altered
    (lambda f: _relabelled(f["a3"], 1), "tampered"),        # an old-epoch frame labelled as the new epoch
    (lambda f: _relabelled(f["a5"], 0), "tampered"),        # a new-epoch frame labelled as the old one
    (lambda f: _relabelled(f["a5"], 2), "unexpected"),      # an epoch never agreed
])
def test_forged_frames_at_the_boundary_are_refused_and_change_nothing(forge, kind):
    link = Link(rotate_every=2)
    f = overlap(link)
    b = link.ch["b"]
    assert refusals(link.feed("b", forge(f))) == [kind]
    assert b.recv_epoch == 0 and b._recv.key == f["old_key"] and b._recv.next_key is not None   # nothing moved
    for name in ("a3", "a4", "a5"):
        link.feed("b", f[name])
    assert link.texts("b")[-3:] == ["a3", "a4", "a5"] and b.recv_epoch == 1


def test_a_peer_that_never_acks_gets_at_most_rotate_every_more_texts_under_the_old_key():
    link = Link(rotate_every=3)
    a = link.ch["a"]
    for i in range(3):
        link.send("a", f"t{i}")
    assert a.rotating
    for i in range(3, 10):
        link.send("a", f"t{i}")
    epochs = [decode(fr)["epoch"] for fr in link.queue["b"]]
    assert epochs == [0] * 7                         # 3 texts, the rotate, 3 more texts while the ack travels
    assert a.queued == 4 and a.queued_bytes == 8 and a.until_rotation == 0
    assert a.seal_queued() == []                     # held until the ack: nothing more under the old key
    # queued texts sealed in one go stop at the same cap (a batch may not start past it)
    link2 = Link(rotate_every=3)
    ids = [link2.ch["a"].queue_text(f"q{i}", 1.0) for i in range(20)]
    frames = link2.ch["a"].seal_queued()
    kinds = [CHAT.decode(fr[4:])["epoch"] for fr in frames]
    assert len(ids) == 20 and len(frames) == 2 and kinds == [0, 0]    # one batch of 20 (crosses 3), the rotate
    assert link2.ch["a"].queued == 0
    # the timer still ends a session whose rotation is never answered; held texts are not sent
    now = 0.0
    a.poll(now)
    out: list[Any] = []
    for _ in range(ROTATE_TRIES):
        now += ROTATE_ACK_TIMEOUT
        out += a.poll(now)
    assert isinstance(out[-1], Abort) and a.closed and a.queued == 0


def test_the_overlap_never_passes_the_protocols_limit_per_epoch():
    link = Link(rotate_every=MAX_ROTATE_EVERY)
    a = link.ch["a"]
    for i in range(MAX_ROTATE_EVERY):
        a.queue_text(f"t{i}", 1.0)
    frames = a.seal_queued()
    assert a.rotating and decode(frames[-1])["epoch"] == 0
    a.queue_text("after the limit", 1.0)
    assert a.seal_queued() == [] and a.queued == 1   # no overlap left: it waits for the new key


def test_the_receiver_keeps_at_most_one_old_epoch():
    link = Link(rotate_every=2)
    for t in ("a1", "a2"):
        link.send("a", t)
    while link.queue["b"]:
        link.deliver_one("b")                       # b answered: it holds epoch 0 and the next key (epoch 1)
    b = link.ch["b"]
    held = {k for k in reachable_bytes(b) if len(k) == 32} - {b.session_id}
    assert b._recv.rotation is not None
    secret = held - set(b._recv.rotation[1:])      # the two public halves of the rotation are not secrets
    # own send key + chain; the receive key of epoch 0; the next key + chain of epoch 1; nothing older
    assert secret == {b._send.key, b._send.chain, b._recv.key, b._recv.next_key, b._recv.chain}
    # another rotation before the switch (to epoch 2, or to epoch 1 again with another half) is out of turn
    for n, epoch in enumerate((2, 1), start=1):
        hostile = seal_raw(link.ch["a"], {"t": "rotate", "epoch": epoch, "pub": crypto.EphemeralKey().public})
        events = link.feed("b", hostile)
        assert b.refused_count == n and not [e for e in events if isinstance(e, Send)]     # no second answer
    assert "out of turn" in next(e for e in link.events["b"] if isinstance(e, Refused)).reason
    assert {k for k in reachable_bytes(b) if len(k) == 32} - {b.session_id} == held and b.recv_epoch == 0


def test_a_sender_that_never_switches_is_refused_past_the_limit_per_epoch():
    link = Link(rotate_every=2)
    for t in ("a1", "a2"):
        link.send("a", t)
    while link.queue["b"]:
        link.deliver_one("b")                       # b answered: it holds epoch 0 and epoch 1
    a, next_id = link.ch["a"], 3
    sent = 2
    while sent < MAX_ROTATE_EVERY:                   # a ignores the ack and keeps the old key, in full batches
        n = min(MAX_BATCH_TEXTS, MAX_ROTATE_EVERY - sent)
        batch = [[next_id + i, 1.0, "x"] for i in range(n)]
        assert not refusals(link.feed("b", seal_raw(a, {"t": "texts", "texts": batch})))
        next_id, sent = next_id + n, sent + n
    events = link.feed("b", seal_raw(a, {"t": "text", "id": next_id, "sent_at": 1.0, "text": "one too many"}))
    assert refusals(events) == ["unexpected"] and "the protocol's limit per key" in events[0].reason
    assert len(link.texts("b")) == MAX_ROTATE_EVERY and link.ch["b"].recv_epoch == 0


def test_texts_sent_before_the_receiver_read_the_rotate_cross_its_ack_and_all_arrive():
    """The sender's overlap texts and the receiver's ack cross on the wire; the next text is the switch."""
    link = Link(rotate_every=2)
    for t in ("a1", "a2"):
        link.send("a", t)
    link.send("a", "a3")                             # sent before b even read the rotate
    assert [decode(f)["epoch"] for f in link.queue["b"]] == [0, 0, 0, 0]     # a1, a2, rotate, a3
    link.flush()
    assert link.texts("b") == ["a1", "a2", "a3"] and link.ch["a"].epoch == 1 and link.ch["b"].recv_epoch == 0
    link.send("a", "a4")
    link.flush()
    assert link.texts("b")[-1] == "a4" and link.ch["b"].recv_epoch == 1 and link.ch["b"]._recv.next_key is None
    assert not link.of("b", Refused) and not link.of("a", Refused)
