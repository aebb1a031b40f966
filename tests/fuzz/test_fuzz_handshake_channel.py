"""Fuzzing the sans-IO chat cores with what an attacker on the wire can send: at a random point of a real
handshake one frame is replaced by a random frame, a mutated copy, a replayed earlier frame, or reflected back to
its sender; and an established channel is fed a random mix of genuine, replayed, reordered, mutated and invented
frames. The cores never raise; a handshake that completes agreed on the true keys on both sides; the channel shows
only genuine texts, each once, in order."""

from __future__ import annotations

import copy
import itertools
from functools import cache
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from p2pchat.channel import MAX_REFUSED, Abort, Channel, Goodbye, Receipt, Refused, Rotated, Text, Typing
from p2pchat.chat_protocol import CHAT, PROTOCOL_VERSION, Send
from p2pchat.foundation.codec import HEADER
from p2pchat.foundation.errors import FrameError
from p2pchat.handshake import Established
from p2pchat.steps import Step
from tests.conftest import make_identities
from tests.fuzz.fuzz_kit import bodies_for, framed, fuzz_settings, mutated
from tests.p2pchat.handshake_pair import Pair, established_pair

HANDSHAKE_FRAMES = 12    # frames a complete handshake sends, both sides together


@st.composite
def interference(draw: st.DrawFn) -> tuple[int, str, Any]:
    index = draw(st.integers(min_value=0, max_value=HANDSHAKE_FRAMES - 1))
    kind = draw(st.sampled_from(["random", "mutate", "replay", "reflect", "drop", "duplicate"]))
    payload = draw(bodies_for(CHAT)) if kind == "random" else draw(st.randoms(use_true_random=False))
    return index, kind, payload


def decodable(frame: bytes) -> bool:
    try:
        CHAT.decode(frame[HEADER.size:])
    except FrameError:
        return False   # the IO layer refuses it and closes the connection before any core sees it
    return True


@fuzz_settings(60)
@given(plan=interference(), data=st.data())
def test_a_handshake_with_one_frame_interfered_with_never_raises_and_never_agrees_on_wrong_keys(plan, data):
    ident_i, ident_r = make_identities(2)
    index, kind, payload = plan
    counter = itertools.count()
    history: list[bytes] = []
    cut = [False]
    holder: dict[str, Pair] = {}

    def wire(src: Any, frame: bytes) -> list[bytes]:
        if cut[0]:
            return []
        i = next(counter)
        history.append(frame)
        if i != index:
            return [frame]
        if kind == "random":
            new = framed(payload)
        elif kind == "mutate":
            new = framed(data.draw(mutated(frame[HEADER.size:])))
        elif kind == "replay":
            new = data.draw(st.sampled_from(history))
        elif kind == "reflect":
            holder["pair"].deliver(src, frame)   # back to its own sender, instead of to the peer
            return []
        elif kind == "drop":
            return []
        else:
            return [frame, frame]
        if not decodable(new):
            cut[0] = True
            return []
        return [new]

    pair = Pair(ident_i, ident_r, wire=wire)
    holder["pair"] = pair
    for step in Step:   # as the node does: the next step only once the one before finished on this side
        if pair.i.hs.refusal(step) is not None:
            break
        pair.start(step)
    est_i, est_r = pair.i.established, pair.r.established
    for side, est, peer in ((pair.i, est_i, ident_r), (pair.r, est_r, ident_i)):
        if est is not None:
            # whoever finished talks to the true peer's key, whatever happened on the wire
            assert est.peer_public_der == peer.public_der
            assert side.failed is None or kind in ("duplicate", "replay", "random", "mutate", "reflect")
    if est_i is not None and est_r is not None:
        assert est_i.transcript_hash == est_r.transcript_hash
        assert est_i.send_key == est_r.recv_key and est_i.recv_key == est_r.send_key
    for side in (pair.i, pair.r):
        assert side.failed is None or side.failed.reason   # every failure says why
        if side.failed is not None:
            assert side.hs.receive(CHAT.decode(history[0][HEADER.size:])) == []   # ignored after a failure


@cache
def established() -> tuple[Established, Established]:
    ident_i, ident_r = make_identities(2)
    return established_pair(ident_i, ident_r)


def channels(rotate_every: int) -> tuple[Channel, Channel]:
    est_i, est_r = established()
    return (Channel(copy.copy(est_i), rotate_every=rotate_every),
            Channel(copy.copy(est_r), rotate_every=rotate_every))


ACTIONS = ["genuine", "genuine", "genuine", "batch", "replay", "reorder", "mutate", "random", "drop", "typing",
           "handshake"]


@fuzz_settings(60)
@given(actions=st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=30),
       rotate_every=st.integers(min_value=1, max_value=4), data=st.data())
def test_a_channel_fed_any_mix_of_frames_shows_only_genuine_texts_once_in_order(actions, rotate_every, data):
    sender, receiver = channels(rotate_every)
    sent_texts: dict[int, str] = {}
    seen: list[bytes] = []
    held: list[bytes] = []
    shown: list[Text] = []

    def deliver(frame: bytes) -> None:
        try:
            msg = CHAT.decode(frame[HEADER.size:])
        except FrameError:
            return
        for ev in receiver.receive(msg, now=1.0):
            assert isinstance(ev, (Send, Text, Receipt, Typing, Rotated, Goodbye, Refused, Abort)), ev
            if isinstance(ev, Text):
                shown.append(ev)
            elif isinstance(ev, Send):   # the receiver's receipts and rotation answers go back to the sender
                for back in sender.receive(CHAT.decode(ev.frame[HEADER.size:]), now=1.0):
                    assert not isinstance(back, Text)
                    if isinstance(back, Send):      # texts held during a rotation go out with its ack
                        seen.append(back.frame)
                        deliver(back.frame)

    for n, action in enumerate(actions):
        if sender.closed or receiver.closed:    # the session was ended (too many refusals, a handshake frame)
            assert receiver.refused_count >= MAX_REFUSED or action_ended_it(receiver, actions[:n])
            break
        if action in ("genuine", "drop", "reorder", "mutate"):
            msg_id, frames = sender.send_text(f"message {n}", 1_700_000_000.0 + n)
            sent_texts[msg_id] = f"message {n}"
            seen += frames
            if action == "drop":
                continue
            if action == "reorder":
                held += frames
                continue
            if action == "mutate" and frames:
                frames = [data.draw(mutated(frames[0])), *frames[1:]]
            for frame in frames:
                deliver(frame)
            for frame in held:
                deliver(frame)
            held.clear()
        elif action == "batch":          # several texts queued, sealed together (one ``texts`` frame or more)
            for k in range(data.draw(st.integers(min_value=1, max_value=5))):
                msg_id = sender.queue_text(f"message {n}.{k}", 1_700_000_000.0 + n)
                sent_texts[msg_id] = f"message {n}.{k}"
            frames = sender.seal_queued()
            seen += frames
            for frame in frames:
                deliver(frame)
        elif action == "replay" and seen:
            deliver(data.draw(st.sampled_from(seen)))
        elif action == "random":
            deliver(framed(data.draw(bodies_for(CHAT))))
        elif action == "typing":
            frames = sender.send_typing(data.draw(st.booleans()))
            seen += frames
            for frame in frames:
                deliver(frame)
        elif action == "handshake":
            deliver(CHAT.encode("hello", version=PROTOCOL_VERSION, network="testnet", nickname="x", address=""))
    ids = [t.msg_id for t in shown]
    assert ids == sorted(set(ids)), "a text was shown twice or out of order"
    for t in shown:
        assert sent_texts[t.msg_id] == t.text


def action_ended_it(receiver: Channel, done: list[str]) -> bool:
    """Besides too many refusals, a handshake frame after the handshake (or an unsealed error among the random
    frames) ends a session."""
    return "handshake" in done or "random" in done


def test_a_channel_fuzz_sanity_check_every_genuine_text_arrives():
    sender, receiver = channels(2)
    got = []
    for n in range(7):
        _, frames = sender.send_text(f"t{n}", 1.0)
        for frame in frames:
            for ev in receiver.receive(CHAT.decode(frame[HEADER.size:])):
                if isinstance(ev, Text):
                    got.append(ev.text)
                elif isinstance(ev, Send):
                    sender.receive(CHAT.decode(ev.frame[HEADER.size:]))
    assert got == [f"t{n}" for n in range(7)]
