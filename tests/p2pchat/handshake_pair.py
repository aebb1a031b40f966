"""In-memory plumbing for the sans-IO chat cores: two Handshake objects wired back to back, with a hook on the
wire so tests can drop, alter, record or inject frames. No sockets, no threads."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p2pchat.chat_protocol import CHAT, FEATURES, Send
from p2pchat.foundation import crypto
from p2pchat.foundation.codec import Message
from p2pchat.foundation.identity import Identity
from p2pchat.handshake import (
    Established,
    Failed,
    Handshake,
    LedgerBinding,
    NeedAccept,
    NeedLookup,
    Ready,
    StepDone,
)
from p2pchat.steps import Step

I_ADDR = "127.0.0.2:8471"
R_ADDR = "127.0.0.3:8471"
I_SEEN_FROM = "127.0.0.2:40001"      # the initiator's source address as the responder sees it


def binding_for(ident: Identity, ip: str, nickname: str, *, height: int = 7, confirmations: int = 3) -> LedgerBinding:
    return LedgerBinding(public_der=ident.public_der, nickname=nickname, ip=ip, port=8471, relay=None,
                         height=height, confirmations=confirmations)


def counting_rng(seed: int) -> Callable[[int], bytes]:
    """Deterministic bytes for tests: SHA-256 of (seed, call number), cut to size."""
    counter = itertools.count()

    def rng(n: int) -> bytes:
        out = b""
        i = next(counter)
        while len(out) < n:
            out += crypto.sha256(b"test-rng", seed.to_bytes(4, "big"), i.to_bytes(4, "big"),
                                 len(out).to_bytes(4, "big"))
        return out[:n]
    return rng


def fixed_ephemerals(*privates: bytes) -> Callable[[], crypto.EphemeralKey]:
    it = iter(privates)
    return lambda: crypto.EphemeralKey(next(it))


@dataclass
class Side:
    name: str
    hs: Handshake
    binding: LedgerBinding | None          # what this side's ledger lookup returns
    lookup_error: str | None = None
    accept: bool = True
    answer_lookups: bool = True
    events: list[Any] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    lookups: list[NeedLookup] = field(default_factory=list)
    prepared: int = 0                       # how often prepare() had work to do

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def failed(self) -> Failed | None:
        f = self.of(Failed)
        return f[0] if f else None

    @property
    def established(self) -> Established | None:
        r = self.of(Ready)
        return r[0].established if r else None

    def steps_done(self) -> list[Step]:
        return [e.step for e in self.of(StepDone)]


Wire = Callable[["Side", bytes], list[bytes]]


class LowOrder:
    """An X25519 'half' a registered peer may send and sign: a low-order point, whose agreement is all zeros."""

    public = bytes(32)

    def agree(self, peer_public: bytes) -> bytes:
        return bytes(32)

    def erase(self) -> None:
        pass


def decode(frame: bytes) -> Message:
    return CHAT.decode(frame[4:])


class Pair:
    """An initiator and a responder handshaking over an in-memory wire.

    ``wire(src, frame)`` may return the frame, a changed frame, nothing (dropped) or several frames.
    ``prepare``: after the events of each core call are handled, call ``prepare()`` when it is due, as the node
    does (the work made ahead: the initiator's X25519 half and signature, both sides' step-4 keys); ``False``
    leaves all of it to be made on the spot. ``background_r``: the responder's background runner (see
    ``Handshake(background=...)``). ``i_features`` / ``r_features``: what each side announces in step 1 (``None``:
    no ``features`` field, as a node built before them).
    """

    def __init__(self, ident_i: Identity, ident_r: Identity, *, network: str = "testnet",
                 i_binding: LedgerBinding | bool | None = True, r_binding: LedgerBinding | bool | None = True,
                 wire: Wire | None = None, rng_i: Callable[[int], bytes] = crypto.random_bytes,
                 rng_r: Callable[[int], bytes] = crypto.random_bytes, eph_i: Any = crypto.EphemeralKey,
                 eph_r: Any = crypto.EphemeralKey, r_network: str | None = None, prepare: bool = True,
                 i_view: Any = None, r_view: Any = None, background_r: Any = None,
                 i_features: tuple[str, ...] | None = FEATURES, r_features: tuple[str, ...] | None = FEATURES) -> None:
        # i_binding: what the initiator's ledger says about the responder (True: the honest record).
        if i_binding is True:
            i_binding = binding_for(ident_r, "127.0.0.3", "bob")
        if r_binding is True:
            r_binding = binding_for(ident_i, "127.0.0.2", "alice")
        self.i = Side("initiator", Handshake(
            initiator=True, identity=ident_i, nickname="alice", network=network, local_address=I_ADDR,
            peer_address=R_ADDR, rng=rng_i, ephemeral_factory=eph_i, ledger_view=i_view, features=i_features),
            i_binding or None)
        self.r = Side("responder", Handshake(
            initiator=False, identity=ident_r, nickname="bob", network=r_network or network,
            local_address=R_ADDR, peer_address=I_SEEN_FROM, rng=rng_r, ephemeral_factory=eph_r, ledger_view=r_view,
            background=background_r, features=r_features),
            r_binding or None)
        self.wire: Wire = wire or (lambda src, frame: [frame])
        self.prepare = prepare
        self.log: list[tuple[str, bytes]] = []      # (sender name, frame) as sent, before the wire hook

    def other(self, side: Side) -> Side:
        return self.r if side is self.i else self.i

    def handle(self, side: Side, events: list[Any]) -> None:
        for ev in events:
            side.events.append(ev)
            if isinstance(ev, Send):
                side.sent.append(ev.frame)
                self.log.append((side.name, ev.frame))
                for frame in self.wire(side, ev.frame):
                    self.deliver(self.other(side), frame)
            elif isinstance(ev, NeedAccept):
                self.handle(side, side.hs.accept(side.accept))
            elif isinstance(ev, NeedLookup):
                side.lookups.append(ev)
                if side.answer_lookups:
                    self.handle(side, side.hs.ledger_answer(side.binding, side.lookup_error))
        if self.prepare and side.hs.prepare_due:       # after the call's frames went out, as the node does
            side.hs.prepare()
            side.prepared += 1

    def deliver(self, side: Side, frame: bytes) -> None:
        self.handle(side, side.hs.receive(decode(frame)))

    def start(self, step: Step) -> None:
        self.handle(self.i, self.i.hs.start(step))

    def run(self, upto: Step = Step.AGREE_KEY) -> Pair:
        for step in Step:
            if step > upto or self.i.failed or self.r.failed:
                break
            self.start(step)
        return self


def established_pair(ident_i: Identity, ident_r: Identity, **kw: Any) -> tuple[Established, Established]:
    pair = Pair(ident_i, ident_r, **kw).run()
    assert pair.i.established is not None and pair.r.established is not None, (pair.i.failed, pair.r.failed)
    return pair.i.established, pair.r.established
