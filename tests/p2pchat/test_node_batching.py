"""Chat nodes batch the texts a user sends faster than they leave: fewer sealed frames, same messages, same order."""

from __future__ import annotations

from p2pchat.events import DeliveryReceipt, MessageReceived, Notice, PeerTyping, SessionEnded
from tests.p2pchat.node_kit import connect_all, pair, wait_until


def test_texts_sent_in_a_tight_loop_all_arrive_in_order_each_receipted_in_fewer_frames(identities):
    with pair(identities, rotate_every=1000) as (alice, bob, _):
        sid, _ = connect_all(alice, bob)
        frames: list[bytes] = []
        alice.node.set_wire_hook(sid, lambda frame: frames.append(frame) or frame)
        n = 500
        ids = [alice.node.send_text(sid, f"loop {i}") for i in range(n)]
        assert ids == list(range(1, n + 1))
        wait_until(lambda: len(bob.log.all(MessageReceived)) == n, 20, what="every text at bob")
        assert [m.text for m in bob.log.all(MessageReceived)] == [f"loop {i}" for i in range(n)]
        assert [m.msg_id for m in bob.log.all(MessageReceived)] == ids
        wait_until(lambda: alice.node.pending_receipts(sid) == 0, 20, what="every receipt at alice")
        assert sorted(e.msg_id for e in alice.log.all(DeliveryReceipt, session=sid)) == ids
        assert len(frames) < n                    # alice sends texts only here (no rotation at this setting)
        assert not alice.log.all(Notice, kind="refused") and not bob.log.all(Notice, kind="refused")


def test_texts_queued_while_a_write_is_under_way_share_frames_and_rotation_still_counts_texts(identities):
    with pair(identities, rotate_every=10) as (alice, bob, _):
        sid, _ = connect_all(alice, bob)
        frames: list[bytes] = []
        alice.node.set_wire_hook(sid, lambda frame: frames.append(frame) or frame)
        session = alice.node._get(sid)
        with session.send_lock:                   # a writer is busy: the texts wait for it, sealed together
            for i in range(25):
                alice.node.send_text(sid, f"held {i}")
            info = alice.node.session_info(sid)
            assert info.until_rotation == 0 and info.key_epoch == 0
            assert not frames
        wait_until(lambda: len(bob.log.all(MessageReceived)) == 25, 10, what="the held texts at bob")
        assert [m.text for m in bob.log.all(MessageReceived)] == [f"held {i}" for i in range(25)]
        assert len(frames) == 2                   # one batch of 25 texts, then the rotation request
        alice.log.wait(Notice, kind="rotation")
        wait_until(lambda: alice.node.session_info(sid).key_epoch == 1, 10, what="the new epoch")
        wait_until(lambda: alice.node.session_info(sid).until_rotation == 10, 10, what="a fresh count")
        wait_until(lambda: alice.node.pending_receipts(sid) == 0, 10, what="every receipt")


def test_typing_and_a_replayed_frame_after_queued_texts_keep_the_order_the_user_made(identities):
    with pair(identities) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        captured: list[bytes] = []
        alice.node.set_wire_hook(sid, lambda frame: captured.append(frame) or frame)
        first = alice.node.send_text(sid, "first")
        bob.log.wait(MessageReceived, text="first")
        alice.log.wait(DeliveryReceipt, msg_id=first)
        session = alice.node._get(sid)
        with session.send_lock:
            alice.node.send_text(sid, "second")
            alice.node.send_text(sid, "third")
            alice.node.set_typing(sid, True)
            alice.node.send_text(sid, "fourth")
            alice.node.inject_frame(sid, captured[0])        # a replay of "first", after what is queued
            alice.node.send_text(sid, "fifth")
        bob.log.wait(MessageReceived, text="fifth")
        bob.log.wait(Notice, session=bsid, kind="refused")
        order = [(type(e).__name__, getattr(e, "text", None)) for e in bob.log.events
                 if isinstance(e, (MessageReceived, PeerTyping)) or (isinstance(e, Notice) and e.kind == "refused")]
        assert [kind for kind, _ in order] == ["MessageReceived", "MessageReceived", "MessageReceived", "PeerTyping",
                                               "MessageReceived", "Notice", "MessageReceived"]
        assert [text for kind, text in order if kind == "MessageReceived"] == ["first", "second", "third", "fourth",
                                                                               "fifth"]


def test_texts_still_queued_when_the_user_ends_the_chat_arrive_before_the_goodbye(identities):
    with pair(identities) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        session = alice.node._get(sid)
        with session.send_lock:
            for i in range(5):
                alice.node.send_text(sid, f"parting {i}")
            alice.node.end_session(sid)
            alice.log.wait(SessionEnded, session=sid)
        ended = bob.log.wait(SessionEnded, session=bsid)
        assert ended.clean
        assert [m.text for m in bob.log.all(MessageReceived)] == [f"parting {i}" for i in range(5)]


def test_a_text_sent_after_another_frame_sealed_the_queued_ones_does_not_jump_ahead_of_it(identities):
    # Typing seals the texts queued so far and queues its frames behind their placeholder; a text sent next must
    # not be sealed at that placeholder's place, ahead of frames with lower counters (the peer would refuse them).
    with pair(identities) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        session = alice.node._get(sid)
        with session.send_lock:
            alice.node.send_text(sid, "a")
            alice.node.send_text(sid, "b")
            alice.node.set_typing(sid, True)
            alice.node.send_text(sid, "c")
        bob.log.wait(MessageReceived, text="c")
        assert [m.text for m in bob.log.all(MessageReceived)] == ["a", "b", "c"]
        assert bob.log.all(PeerTyping, session=bsid)
        assert not bob.log.all(Notice, kind="refused")
