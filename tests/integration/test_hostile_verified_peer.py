"""A verified peer that misbehaves after step 4, between two real nodes on 127.x sockets (red team, 2026-12-07
night): the hostile side is a real node whose channel is driven by hand to seal what a modified peer would."""

from __future__ import annotations

import pytest

from p2pchat.chat_protocol import CHAT
from p2pchat.events import DeliveryReceipt, MessageReceived, Notice, SessionEnded
from p2pchat.node import ChatNode
from tests.p2pchat.node_kit import connect_all, pair, wait_until


def counter_of(frame: bytes) -> int | None:
    msg = CHAT.decode(frame[4:])
    return msg["counter"] if msg.type == "sealed" else None


def forge(node: ChatNode, sid: str, kind: str, **fields: object) -> None:
    """``node`` seals ``kind`` with ``fields`` in session ``sid`` (whatever its own rules would say) and sends it."""
    s = node._get(sid)
    with s.lock:
        assert s.channel is not None
        frame = s.channel._seal(kind, **fields)
        node.inject_frame(sid, frame)


def test_a_forged_receipt_for_a_text_held_behind_a_rotation_is_refused_and_never_shown_delivered(identities):
    with pair(identities, rotate_every=1) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        # bob never answers alice's rotation: "one" is counter 0, its rotate (counter 1) never arrives
        alice.node.set_wire_hook(sid, lambda f: None if counter_of(f) == 1 else f)
        for text in ("one", "two"):
            alice.node.send_text(sid, text)
            wait_until(lambda t=text: any(m.text == t for m in bob.log.all(MessageReceived)), 10, what=text)
        held = alice.node.send_text(sid, "three")           # past the overlap: waits for the new key
        wait_until(lambda: alice.node._get(sid).channel.queued == 1, 10, what="the third text held")
        forge(bob.node, bsid, "receipt", ids=[held])
        notice = alice.log.wait(Notice, 10, session=sid, kind="refused")
        assert f"receipt for message {held}" in notice.text and "not sent" in notice.text
        assert held not in [r.msg_id for r in alice.log.all(DeliveryReceipt)]
        assert not any(m.text == "three" for m in bob.log.all(MessageReceived))



CLOSING = "bye) — ✓ safety number verified; alice joined the chat ("    # closes a parenthesis, a quote…
SMUGGLE = ["bye» ✓ verified «", "bye” — ✓ verified “", CLOSING]


@pytest.mark.parametrize("hostile", SMUGGLE)
def test_a_goodbye_reason_cannot_close_its_quote_and_go_on_as_the_programs_words(identities, hostile):
    with pair(identities) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        forge(bob.node, bsid, "goodbye", reason=hostile)
        reason = alice.log.wait(SessionEnded, 10, session=sid).reason
        assert reason.count("«") == 1 and reason.endswith("»") and "left the chat, saying «" in reason
        inside = reason[reason.index("«") + 1:-1]
        assert "»" not in inside and inside.replace("<U+00BB>", "»").replace("<U+00AB>", "«") == hostile


def test_forged_pad_texts_count_as_refused_frames_and_the_third_ends_the_chat(identities, tmp_path):
    from tests.p2pchat.test_pad_node import pad_pair

    with pad_pair(identities, tmp_path, 4096) as (alice, bob):
        sid, bsid = connect_all(alice, bob)
        for n in range(1, 6):                   # pad frames whose one-time MAC is wrong (a pad is installed)
            forge(bob.node, bsid, "pad_text", id=n, sent_at=1.0, box=bytes(8) + b"forged" + bytes(16))
        ended = alice.log.wait(SessionEnded, 10, session=sid)
        assert "3 altered, replayed or out-of-turn frames were refused" in ended.reason
        refused = alice.log.all(Notice, session=sid, kind="refused")
        assert len(refused) == 1 and "one-time MAC" in refused[0].text
        assert not alice.log.all(MessageReceived, session=sid)
