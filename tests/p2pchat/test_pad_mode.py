"""The pad-mode switch (p2pchat.pad_mode) over two real channels in memory: the table, and a peer's ops out of
turn, for another pad, or unknown (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pchat.channel import Channel, PadControl, PadText, Refused, Text
from p2pchat.chat_protocol import CHAT, SEALED_CONTENT, Send, pad, sealed_aad, sealed_nonce
from p2pchat.events import PadModeChanged
from p2pchat.foundation import crypto
from p2pchat.foundation.identity import Identity
from p2pchat.pad import create_pad, import_pad
from p2pchat.pad_mode import PadModeError, PadModes, PadState
from tests.p2pchat.handshake_pair import decode, established_pair


class FakeSession:
    def __init__(self, sid: str, peer_fp: str) -> None:
        self.id, self.peer_fp = sid, peer_fp


class Side:
    def __init__(self, channel: Channel, data_dir: Path, me: Identity, peer: Identity) -> None:
        self.channel = channel
        self.events: list[PadModeChanged] = []
        self.modes = PadModes(data_dir, me.fingerprint, self.events.append)
        self.session = FakeSession(me.short_fingerprint, peer.fingerprint.hex())
        self.said: list[str] = []
        self.texts: list[str] = []

    @property
    def state(self) -> PadState:
        return self.modes.state(self.session)  # type: ignore[arg-type]

    def receive(self, frames: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for frame in frames:
            for ev in self.channel.receive(decode(frame)):
                if isinstance(ev, Send):
                    out.append(ev.frame)
                elif isinstance(ev, PadControl):
                    replies, said = self.modes.peer_op(self.session, self.channel, ev.op, ev.pad_id)  # type: ignore[arg-type]
                    out += replies
                    self.said += [said] if said else []
                elif isinstance(ev, PadText):
                    self.texts.append(self.modes.open_text(self.session, ev.box))  # type: ignore[arg-type]
                elif isinstance(ev, Refused):
                    self.said.append(ev.reason)
                elif isinstance(ev, Text):
                    self.texts.append(ev.text)
        return out


@pytest.fixture
def sides(identities: list[Identity], tmp_path: Path) -> tuple[Side, Side]:
    a, b = identities[0], identities[1]
    _, mine, theirs = create_pad(a.fingerprint, b.fingerprint, 4096, tmp_path / "usb")
    import_pad(mine, tmp_path / "a", a.fingerprint)
    import_pad(theirs, tmp_path / "b", b.fingerprint)
    ei, er = established_pair(a, b)
    return (Side(Channel(ei, max_refused=100), tmp_path / "a", a, b),
            Side(Channel(er, max_refused=100), tmp_path / "b", b, a))


def user(side: Side, action: str) -> list[bytes]:
    return side.modes.user(side.session, side.channel, action)  # type: ignore[arg-type]


def exchange(sender: Side, receiver: Side, frames: list[bytes]) -> None:
    """``sender``'s frames to ``receiver``, then the answers back and forth until none is left."""
    while frames:
        frames = sender.receive(receiver.receive(frames))


def test_both_asking_at_once_turns_pad_mode_on_for_both(sides: tuple[Side, Side]) -> None:
    a, b = sides
    fa, fb = user(a, "ask_on"), user(b, "ask_on")       # the two requests cross on the wire
    ra, rb = a.receive(fb), b.receive(fa)
    exchange(b, a, rb)
    exchange(a, b, ra)
    assert a.state is b.state is PadState.ON
    _, frames = a.modes.seal_text(a.session, a.channel, "both on")  # type: ignore[arg-type]
    b.receive(frames)
    assert b.texts == ["both on"] and not a.said and not b.said


def test_ops_out_of_turn_or_for_another_pad_change_nothing(sides: tuple[Side, Side]) -> None:
    a, b = sides
    pad_id = a.modes._link(a.session).pad.pad_id  # type: ignore[arg-type, union-attr]
    b.receive(a.channel.send_pad_control("on!", pad_id))              # never asked
    b.receive(a.channel.send_pad_control("off?", pad_id))             # not on
    assert b.state is PadState.OFF and len(b.said) == 2 and "out of turn" in b.said[0]
    replies = b.receive(a.channel.send_pad_control("on?", bytes(16)))   # another pad: declined at once
    a.receive(replies)
    assert b.state is PadState.OFF and b.events[-1].text.startswith("the peer asked for pad mode with a pad")
    with pytest.raises(PadModeError, match="nothing to do"):
        user(b, "accept")
    # an op outside the five is malformed (sealed under the real key, so only its content is wrong)
    ch = a.channel
    body = SEALED_CONTENT.encode_body("pad_mode", op="on", pad_id=pad_id)
    side = ch._send
    box = crypto.seal(side.key, sealed_nonce(side.counter), pad(body),  # type: ignore[arg-type]
                      sealed_aad(ch.session_id, side.direction, side.epoch, side.counter))
    b.receive([CHAT.encode("sealed", epoch=side.epoch, counter=side.counter, box=box)])
    side.counter += 1
    assert "unknown pad-mode request" in b.said[-1]


def test_falling_back_to_aes_needs_both_and_a_decline_keeps_the_pad(sides: tuple[Side, Side]) -> None:
    a, b = sides
    exchange(a, b, user(a, "ask_on"))
    exchange(b, a, user(b, "accept"))
    assert a.state is b.state is PadState.ON
    assert b.modes.pad_required(b.session)  # type: ignore[arg-type]
    exchange(a, b, user(a, "ask_off"))
    assert a.state is PadState.ASKED_OFF and b.state is PadState.OFFERED_OFF
    exchange(b, a, user(b, "decline"))
    assert a.state is b.state is PadState.ON
    exchange(a, b, user(a, "ask_off"))
    exchange(b, a, user(b, "accept"))
    assert a.state is b.state is PadState.OFF and not b.modes.pad_required(b.session)  # type: ignore[arg-type]
