"""Rotation cannot be frozen, over real sockets: a dropped ``rotate`` frame (an observer sees it by its clear
counter) is sent again on the channel's timer and the rotation completes; if every retry is dropped the sender
ends the chat with a reason instead of waiting for ever."""

from __future__ import annotations

from p2pchat import channel as channel_mod
from p2pchat.chat_protocol import CHAT
from p2pchat.events import MessageReceived, Notice, SessionEnded
from tests.p2pchat.node_kit import Peer, connect_all, pair, wait_until


def counter_of(frame: bytes) -> int | None:
    msg = CHAT.decode(frame[4:])
    return msg["counter"] if msg.type == "sealed" else None


def send_one_by_one(alice: Peer, bob: Peer, texts: list[str]) -> None:
    """Each text in a frame of its own (waiting for it at bob), so the rotate frame has a known counter."""
    sid = alice.node.sessions()[-1].session
    for text in texts:
        alice.node.send_text(sid, text)
        wait_until(lambda t=text: any(m.text == t for m in bob.log.all(MessageReceived)), 20, what=text)


def test_a_dropped_rotate_frame_is_retried_and_the_chat_goes_on_under_the_new_key(identities, monkeypatch):
    monkeypatch.setattr(channel_mod, "ROTATE_ACK_TIMEOUT", 0.2)
    with pair(identities, rotate_every=2) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        dropped: list[int] = []

        def drop_the_rotate(frame: bytes) -> bytes | None:
            if counter_of(frame) == 2 and not dropped:      # text 0, text 1, then the rotate frame
                dropped.append(2)
                return None
            return frame

        alice.node.set_wire_hook(sid, drop_the_rotate)
        send_one_by_one(alice, bob, ["one", "two"])          # texts 0 and 1, then the rotate frame (counter 2)
        # up to rotate_every more texts go out under the old key while the ack is due; the next one waits
        texts = ["three (old key)", "four (old key)", "five (waits for the new key)"]
        for text in texts:
            alice.node.send_text(sid, text)
        wait_until(lambda: len(bob.log.all(MessageReceived)) == 5, 20, what="all five texts at bob")
        assert dropped == [2]
        assert [m.text for m in bob.log.all(MessageReceived)] == ["one", "two", *texts]
        wait_until(lambda: alice.node.session_info(sid).key_epoch == 1, 20, what="alice on epoch 1")
        notices = [n.text for n in bob.log.all(Notice, session=bsid)]
        assert any("1 message from the peer never arrived" in t for t in notices)
        assert any("the peer's sending key is now epoch 1" in t for t in notices)
        assert not alice.log.all(SessionEnded) and not bob.log.all(SessionEnded)


def test_a_rotation_whose_every_try_is_dropped_ends_the_chat_with_a_reason_and_nothing_blocks(identities,
                                                                                            monkeypatch):
    monkeypatch.setattr(channel_mod, "ROTATE_ACK_TIMEOUT", 0.2)
    with pair(identities, rotate_every=2) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        alice.node.set_wire_hook(sid, lambda frame: frame if (counter_of(frame) or 0) < 2 else None)
        send_one_by_one(alice, bob, ["one", "two"])          # then every frame from the rotate on is dropped
        alice.node.send_text(sid, "three")
        ended = alice.log.wait(SessionEnded, 30, session=sid)
        assert "did not acknowledge the rotation of our sending key" in ended.reason
        assert f"{channel_mod.ROTATE_TRIES} requests" in ended.reason
        bob_ended = bob.log.wait(SessionEnded, 30, session=bsid)
        assert not bob_ended.clean
        assert [m.text for m in bob.log.all(MessageReceived)] == ["one", "two"]
