"""The four-step chat handshake as a sans-IO state machine (no sockets, threads or clocks).

One :class:`Handshake` per connection and side. The IO layer feeds it decoded frames (:meth:`Handshake.receive`),
the local user's decisions (:meth:`Handshake.start` for the initiator's step buttons, :meth:`Handshake.accept` for
the responder's accept/reject) and ledger lookups (:meth:`Handshake.ledger_answer`); every call returns a list of
events, which the IO layer handles in order:

- ``Send(frame)``                 — write these bytes to the peer (imported from :mod:`p2pchat.chat_protocol`)
- ``NeedAccept(nickname, address, claimed_address)`` — responder: ask the user, then call ``accept(yes)``
- ``NeedLookup(query, by)``       — look the peer up in the ledger (``by`` is ``"address"``: the peer's IP,
  ``"query"``: what the user asked for, or ``"fingerprint"``: hex SHA-256 of the key the peer sent), then call
  ``ledger_answer(binding)`` or ``ledger_answer(None, error)``
- ``StepDone(step, detail)``      — a step finished on this side (both sides report every step)
- ``Failed(step, reason)``        — the handshake is over; close the connection after sending queued frames
- ``Ready(established)``          — keys agreed; hand ``established`` to :class:`p2pchat.channel.Channel`
- ``LedgersDisagree(...)``        — step 3 verified a peer whose ledger's final history disagrees with ours: warn
  the user (the handshake goes on) and report the peer's position to our ledger node

Each side makes exactly one RSA signature per handshake, over the whole transcript (as TLS 1.3's
CertificateVerify does). The responder makes it only after the initiator's own signature verified, so a peer that
proves nothing never costs the responder a private-key operation. Work that the next step needs is made ahead,
while the peer works or the frames travel: whenever ``prepare_due`` is true the IO layer calls
:meth:`Handshake.prepare` *after* writing the frames of the call that made it due, which makes it and sends
nothing (each result goes out with its own step). The initiator prepares its X25519 half from step 1 on, its one
signature as soon as the transcript is complete on its side (the responder's ``key`` frame arrived and matched the
ledger; the responder may still be checking ours), and its step-4 keys once ``auth`` is sent; the responder
prepares its X25519 half once it accepted the chat (its ``welcome`` is out), and its step-4 keys only once the
initiator's ``auth`` verified — never its signature.

API::

    Handshake(*, initiator, identity, nickname, network, local_address, peer_address, via_relay=False,
              peer_query=None, rng=crypto.random_bytes, ephemeral_factory=crypto.EphemeralKey, ledger_view=None,
              features=FEATURES)
    .start(step) -> list[HsEvent]          # initiator only; raises StepOrderError when out of order
    .refusal(step) -> str | None           # the StepOrderError text start(step) would raise, or None
    .receive(msg: Message) -> list[HsEvent]  # never raises for anything a peer sends
    .accept(yes: bool) -> list[HsEvent]    # responder only, after NeedAccept
    .ledger_answer(binding, error=None) -> list[HsEvent]   # after NeedLookup
    .prepare_due: bool; .prepare() -> None  # make ahead what the next step needs (no frames, no events); above
    .close() -> None                       # the connection ended early: erase the X25519 private half
    .phase: Phase; .done: set[Step]; .next_step: Step | None; .in_progress: Step | None; .failed: str | None
    .established: Established | None; .peer_nickname; .peer_public_der; .peer_binding; .peer_features

``identity`` is anything with ``public_der`` and ``sign(context, data)`` (:class:`Signer`;
:class:`p2pchat.foundation.identity.Identity` in the product).

Steps (docs/protocol.md has the byte-level spec and test vectors):
1. Connect: ``hello`` → ``welcome`` | ``decline`` | ``error`` (version/network mismatch). Each carries this
   node's ``features`` (optional abilities, e.g. checking a file offer's root); they enter the transcript only
   when both frames carry the field, so a peer built before it (which sends none and ignores ours) agrees on T2,
   and a man in the middle who strips or adds the field on one frame breaks both step-3 signatures.
2. Swap public keys: ``key`` ↔ ``key`` (identity key, a fresh 32-byte nonce, a fresh X25519 public half and the
   sender's ledger position — final block and tip, from ``ledger_view``, all zero without one),
   each side checks the peer's key against the ledger (byte for byte) and sends ``key_ok``; the step is done on a
   side when its own check passed, the peer's ``key_ok`` arrived and the key parsed as a usable RSA key. The
   transcript (hellos, both key fingerprints, both nonces, both X25519 halves, both ledger positions) is then
   complete: its hash T2. With it each side fixes its verdict on the peer's final block (:func:`judge_checkpoint`).
3. Authenticate: ``auth`` (initiator's signature) → ``auth_reply`` (responder's signature, made only once the
   initiator's verified) → ``auth_ok``; each signature is RSA-PSS under context ``chat-auth`` over
   ``role | 0x00 | T2 | 0x00 | verdict``, the verdict travelling in the frame (``ledgers``).
4. Agree AES key: ``confirm`` → ``confirm_reply``; X25519(own private, peer half) then HKDF-SHA256(shared,
   salt=T2) gives the keys; the HMAC-SHA256 tags over ``role | 0x00 | T2`` confirm both sides derived the same
   keys (initiator's first).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Protocol

from p2pchat.chat_protocol import (
    CHAT,
    FEATURES,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    VERDICTS,
    Send,
    Transcript,
    encode_features,
)
from p2pchat.display import quote_peer
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import format_address, parse_address
from p2pchat.foundation.codec import Message
from p2pchat.foundation.errors import AddressError, CryptoError, ProtocolError
from p2pchat.safety import safety_number
from p2pchat.steps import Step

AUTH_CONTEXT = "chat-auth"
KEYS_INFO = b"p2pchat/chat-keys/v1"
ROLE_INITIATOR = b"initiator"
ROLE_RESPONDER = b"responder"

LookupBy = Literal["address", "query", "fingerprint"]


# --- errors ----------------------------------------------------------------------------------------------

class StepOrderError(ProtocolError):
    """The local user asked for a step out of order; ``str()`` names the step that must come first."""

    def __init__(self, message: str, step: Step | None = None) -> None:
        super().__init__(message)
        self.step = step


def self_claimed(nickname: str, nobody: str = "an unnamed peer") -> str:
    """A nickname from a hello, as step 1 reports it: claimed by the peer, checked only by step 2 (issue 15)."""
    return f"the peer calling itself '{nickname}' (not checked yet)" if nickname else nobody


class HandshakeFailed(ProtocolError):
    """The handshake cannot go on; ``str()`` is the reason for this side's user, ``peer_reason`` the text sent
    to the peer in an ``error`` frame (``None``: send nothing)."""

    def __init__(self, step: Step, reason: str, peer_reason: str | None = None) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason
        self.peer_reason = peer_reason


# --- data handed in and out ------------------------------------------------------------------------------

@dataclass(frozen=True)
class LedgerBinding:
    """What the ledger says about the peer (the IO layer's ledger client has verified the proof)."""

    public_der: bytes
    nickname: str
    ip: str | None
    port: int | None
    relay: str | None
    height: int
    confirmations: int


@dataclass(eq=False)
class Established:
    """The result of a completed handshake.

    The four key fields are taken over (and blanked here) by :class:`p2pchat.channel.Channel`, so that this
    object does not keep old keys alive after they rotate.
    """

    initiator: bool
    send_key: bytes = field(repr=False)     # key material is never shown: not in a repr, a log or a traceback
    recv_key: bytes = field(repr=False)
    send_chain: bytes = field(repr=False)
    recv_chain: bytes = field(repr=False)
    transcript_hash: bytes          # T2: also the session id in every sealed frame's header
    peer_public_der: bytes
    peer_nickname: str              # from the ledger record
    peer_binding: LedgerBinding
    safety_number: str
    peer_features: frozenset[str] = frozenset()     # step 1's, bound by the transcript (empty: an older peer)

    def wipe_keys(self) -> None:
        """Drop the references to the key material (Python cannot overwrite ``bytes`` in place)."""
        self.send_key = self.recv_key = self.send_chain = self.recv_chain = b""


@dataclass(frozen=True)
class NeedAccept:
    nickname: str
    address: str            # where the connection actually came from (or the relay)
    claimed_address: str    # what the peer says its address is


@dataclass(frozen=True)
class NeedLookup:
    query: str
    by: LookupBy


@dataclass(frozen=True)
class StepDone:
    step: Step
    detail: str


@dataclass(frozen=True)
class Failed:
    step: Step
    reason: str


@dataclass(frozen=True)
class Ready:
    established: Established


@dataclass(frozen=True)
class ChainPosition:
    """Where one side's ledger stands: its newest final block and its tip (heights and block hashes)."""

    final_height: int
    final_hash: bytes
    tip_height: int
    tip_hash: bytes

    def describe(self) -> str:
        return (f"final block {self.final_height} ({self.final_hash.hex()[:16]}), tip {self.tip_height} "
                f"({self.tip_hash.hex()[:16]})")


NO_POSITION = ChainPosition(0, bytes(32), 0, bytes(32))
"""What a side without a ledger view sends (all zero): the peer judges it ``unknown``, never a conflict."""


@dataclass(frozen=True)
class LedgersDisagree:
    """Step 3 verified a peer whose ledger disagrees with ours: ``ours`` is this side's verdict on the peer's
    checkpoint, ``theirs`` the peer's (signed) verdict on ours; at least one is ``conflict``."""

    ours: str
    theirs: str
    own: ChainPosition
    peer: ChainPosition


HsEvent = Send | NeedAccept | NeedLookup | StepDone | Failed | Ready | LedgersDisagree


class LedgerView(Protocol):
    """This side's verified ledger headers, as the cross-check of step 2 reads them (local reads, no IO)."""

    def position(self) -> ChainPosition | None:
        """Our newest final block and tip; ``None`` while there is no verified header chain."""
        ...

    def hash_at(self, height: int) -> bytes | None:
        """The hash of our verified main-chain header at ``height`` (``None`` above our tip or without headers)."""
        ...


def judge_checkpoint(peer: ChainPosition, view: LedgerView | None) -> str:
    """Our verdict on the peer's checkpoint: ``agree`` (its final block is on our chain), ``conflict`` (our chain
    holds another block at that height) or ``unknown`` (no view on either side, or the height is above our tip:
    our ledger is behind, which is not a conflict)."""
    if view is None or peer == NO_POSITION:
        return "unknown"
    ours = view.hash_at(peer.final_height)
    if ours is None:
        return "unknown"
    return "agree" if crypto.constant_time_equal(ours, peer.final_hash) else "conflict"


class Signer(Protocol):
    """This side's identity as the handshake needs it (:class:`p2pchat.foundation.identity.Identity`)."""

    public_der: bytes

    def sign(self, context: str, data: bytes) -> bytes: ...


class EphemeralLike(Protocol):
    public: bytes

    def agree(self, peer_public: bytes) -> bytes: ...

    def erase(self) -> None: ...


@dataclass(frozen=True)
class Hello:
    version: int
    network: str
    nickname: str
    address: str
    features: tuple[str, ...] | None = None     # None: the frame had no ``features`` (a node built before them)

    @classmethod
    def from_message(cls, msg: Message) -> Hello:
        features = msg.fields.get("features")
        return cls(msg["version"], msg["network"], msg["nickname"], msg["address"],
                   None if features is None else tuple(features))

    def wire(self) -> dict[str, object]:
        """The fields of a ``hello`` / ``welcome`` frame."""
        return {"version": self.version, "network": self.network, "nickname": self.nickname,
                "address": self.address, "features": None if self.features is None else list(self.features)}


@dataclass(frozen=True)
class SessionKeys:
    """Output of the handshake's key schedule (its repr shows no key)."""

    i2r_key: bytes = field(repr=False)
    r2i_key: bytes = field(repr=False)
    i2r_chain: bytes = field(repr=False)
    r2i_chain: bytes = field(repr=False)
    confirm_key: bytes = field(repr=False)


# --- pure functions (also used by the test vectors in docs/protocol.md) ---------------------------------

def add_hellos(t: Transcript, i: Hello, r: Hello) -> None:
    for prefix, h in (("i", i), ("r", r)):
        t.add(f"{prefix}.version", h.version)
        t.add(f"{prefix}.network", h.network)
        t.add(f"{prefix}.nickname", h.nickname)
        t.add(f"{prefix}.address", h.address)
    # only when both frames carry them: an older peer neither sends nor hashes them (protocol.md §3.5)
    if i.features is not None and r.features is not None:
        t.add("i.features", encode_features(i.features))
        t.add("r.features", encode_features(r.features))


def add_keys(t: Transcript, i_fingerprint: bytes, r_fingerprint: bytes) -> None:
    t.add("i.key", i_fingerprint)
    t.add("r.key", r_fingerprint)


def add_challenges(t: Transcript, i_nonce: bytes, r_nonce: bytes) -> None:
    t.add("i.challenge", i_nonce)
    t.add("r.challenge", r_nonce)


def add_ephemerals(t: Transcript, i_pub: bytes, r_pub: bytes) -> None:
    t.add("i.ephemeral", i_pub)
    t.add("r.ephemeral", r_pub)


def add_positions(t: Transcript, i: ChainPosition, r: ChainPosition) -> None:
    for prefix, p in (("i", i), ("r", r)):
        t.add(f"{prefix}.final_height", p.final_height)
        t.add(f"{prefix}.final_hash", p.final_hash)
        t.add(f"{prefix}.tip_height", p.tip_height)
        t.add(f"{prefix}.tip_hash", p.tip_hash)


def add_step_2(t: Transcript, *, i_key: bytes, r_key: bytes, i_nonce: bytes, r_nonce: bytes, i_ephemeral: bytes,
               r_ephemeral: bytes, i_position: ChainPosition, r_position: ChainPosition) -> None:
    """Everything step 2 adds to the transcript, in the protocol's order (``*_key``: SHA-256 fingerprints)."""
    add_keys(t, i_key, r_key)
    add_challenges(t, i_nonce, r_nonce)
    add_ephemerals(t, i_ephemeral, r_ephemeral)
    add_positions(t, i_position, r_position)


def auth_message(role: bytes, t2: bytes, verdict: str) -> bytes:
    """Data signed in step 3 (under context ``chat-auth``): the signer's role, the transcript hash T2 and the
    signer's verdict on the peer's ledger checkpoint (``agree``/``unknown``/``conflict``)."""
    return role + b"\x00" + t2 + b"\x00" + verdict.encode()


def derive_session_keys(shared: bytes, t2: bytes) -> SessionKeys:
    """HKDF-SHA256(ikm=shared, salt=T2, info=``p2pchat/chat-keys/v1``) → five 32-byte keys."""
    k = crypto.hkdf(shared, t2, KEYS_INFO, crypto.AES_KEY_LEN, count=5)
    return SessionKeys(k[0], k[1], k[2], k[3], k[4])


def confirm_tag(confirm_key: bytes, role: bytes, t2: bytes) -> bytes:
    """Key-confirmation tag: HMAC-SHA256(confirm_key, role | 0x00 | T2)."""
    return crypto.hmac_sha256(confirm_key, role + b"\x00" + t2)


class KeySchedule:
    """Step 4's X25519 agreement and key schedule (:func:`derive_session_keys`) as one call, which owns the X25519
    private half and erases it right after the agreement. The responder hands it to ``background`` once the
    initiator's signature verified, so that it runs on another core while the responder signs; ``background``
    returns how to collect the result, and runs it at most once, by whichever thread asks first (the IO layer's
    :class:`p2pchat.handshake_driver.Once`)."""

    def __init__(self, ephemeral: EphemeralLike, peer_half: bytes, t2: bytes) -> None:
        self._ephemeral: EphemeralLike | None = ephemeral
        self._peer_half = peer_half
        self._t2 = t2
        self.cancelled = False          # the handshake ended: erase the half, agree nothing

    def __call__(self) -> SessionKeys | CryptoError:
        """The keys, or why there are none (the peer's half is unusable, e.g. a low-order point)."""
        eph, self._ephemeral = self._ephemeral, None
        if eph is None or self.cancelled:
            if eph is not None:
                eph.erase()
            return CryptoError("the handshake ended before its keys were agreed")
        try:
            shared = eph.agree(self._peer_half)
        except CryptoError as exc:
            return exc
        finally:
            eph.erase()
        return derive_session_keys(shared, self._t2)


KeysResult = SessionKeys | CryptoError
Background = Callable[[Callable[[], KeysResult]], Callable[[], KeysResult]]
"""Starts a function on another thread and returns how to collect its result (which runs it here if it has not
run yet, waits if it is running): see :class:`KeySchedule`."""


@functools.lru_cache(maxsize=256)
def load_peer_key(der: bytes) -> crypto.RsaKey:
    """A peer's key parsed and checked (:func:`crypto.load_public`), remembered by its DER bytes.

    Only keys that equal a ledger record byte for byte get here, so the cache holds ledger keys only; a peer that
    comes back — an honest one, or one that runs step 2 again and again — is parsed once, not each time (about
    half of what a responder spends on a peer before its ``auth``). A refused key raises and is not cached."""
    return crypto.load_public(der)


def short_fp(der: bytes) -> str:
    return crypto.format_fingerprint(crypto.fingerprint(der), groups=4) + " …"


# --- the state machine -----------------------------------------------------------------------------------

class Phase(Enum):
    """Where one side's handshake stands. Each frame and each step button is accepted in one phase only; the
    step under way (``in_progress``) follows from it. Within ``SWAPPING`` two facts arrive in either order (our
    own ledger check passed, the peer's ``key_ok``): step 2 is done when both are in."""

    START = "start"                  # initiator: nothing sent yet; responder: waiting for hello
    ACCEPTING = "accepting"          # responder: hello received, its user decides
    HELLO_SENT = "hello sent"        # initiator: waiting for welcome
    CONNECTED = "connected"          # step 1 done
    SWAPPING = "swapping"            # step 2 under way: our key sent
    SWAPPED = "swapped"              # step 2 done: T2 fixed, the peer's key parsed
    AUTH_SENT = "auth sent"          # initiator: waiting for auth_reply
    AUTH_REPLIED = "auth replied"    # responder: auth verified, auth_reply sent, waiting for auth_ok
    AUTHENTICATED = "authenticated"  # step 3 done
    CONFIRM_SENT = "confirm sent"    # initiator: waiting for confirm_reply
    ESTABLISHED = "established"      # step 4 done: the keys are handed over
    FAILED = "failed"                # over, with a reason (``failed``)
    CLOSED = "closed"                # the connection ended before the handshake did


_IN_PROGRESS = {Phase.ACCEPTING: Step.CONNECT, Phase.HELLO_SENT: Step.CONNECT, Phase.SWAPPING: Step.SWAP_KEYS,
                Phase.AUTH_SENT: Step.AUTHENTICATE, Phase.AUTH_REPLIED: Step.AUTHENTICATE,
                Phase.CONFIRM_SENT: Step.AGREE_KEY}


class Handshake:
    """One side of the four-step handshake; see the module docstring for the protocol and the events."""

    def __init__(self, *, initiator: bool, identity: Signer, nickname: str, network: str, local_address: str,
                 peer_address: str, via_relay: bool = False, peer_query: str | None = None,
                 rng: Callable[[int], bytes] = crypto.random_bytes,
                 ephemeral_factory: Callable[[], EphemeralLike] = crypto.EphemeralKey,
                 ledger_view: LedgerView | None = None, background: Background | None = None,
                 features: tuple[str, ...] | None = FEATURES) -> None:
        """``local_address``: this node's claimed ``ip:port`` (its --host and chat port). ``peer_address``: the
        ``ip:port`` the socket is connected to (for a relayed session: the relay's). ``peer_query``: what the
        user asked for (address, nickname or fingerprint); for a relayed session it is what the ledger is asked,
        and a relayed responder without one looks the peer up by the fingerprint of the key it sends.
        ``background``: where the responder starts its step-4 keys while it signs (see :class:`KeySchedule`);
        ``None`` makes them on this thread (:meth:`prepare` or step 4). ``features``: what step 1 announces
        (``None``: no ``features`` field, as a node built before them)."""
        self.initiator = initiator
        self._identity = identity
        self._ledger_view = ledger_view          # ledger cross-check (step 2): None sends NO_POSITION
        self._rng = rng
        self._ephemeral_factory = ephemeral_factory
        self.via_relay = via_relay
        self.peer_address = peer_address
        self.peer_query = peer_query
        self._me = Hello(PROTOCOL_VERSION, network, nickname, local_address,
                         None if features is None else tuple(features))
        self._role = ROLE_INITIATOR if initiator else ROLE_RESPONDER
        self._peer_role = ROLE_RESPONDER if initiator else ROLE_INITIATOR

        self.phase = Phase.START
        self.done: set[Step] = set()            # the steps reported done on this side, in order
        self.failed: str | None = None
        self.failed_step: Step | None = None
        self.established: Established | None = None

        self._transcript = Transcript()
        self._peer_hello: Hello | None = None
        # step 2
        self.peer_public_der: bytes | None = None
        self._peer_key: crypto.RsaKey | None = None
        self.peer_binding: LedgerBinding | None = None
        self._lookup: NeedLookup | None = None
        self._lookup_pending = False             # a NeedLookup is out and not answered yet
        self._own_check_ok = False               # step 2: the peer's key matched our ledger answer
        self._peer_key_ok = False                # step 2: the peer's key_ok arrived
        self._my_nonce: bytes | None = None      # drawn with our `key` frame, fresh per session
        self._peer_nonce: bytes | None = None
        self._ephemeral: EphemeralLike | None = None     # made with our `key` frame; erased at agreement/failure
        self._peer_ephemeral: bytes | None = None
        self._t2: bytes | None = None            # the transcript hash, fixed once our check of the peer key passed
        self._my_position: ChainPosition | None = None     # the ledger position sent in our `key` frame
        self.peer_position: ChainPosition | None = None    # the peer's, from its `key` frame
        self.verdict: str | None = None          # ours on the peer's checkpoint, fixed with T2 (signed in step 3)
        self.peer_verdict: str | None = None     # the peer's on ours, from its verified step-3 frame
        # step 3
        self._auth_sig: bytes | None = None      # ours, over T2 (initiator: possibly made ahead by prepare())
        # step 4
        # the X25519 agreement's outcome, made once (ahead of step 4 or on the spot): the keys, or why the peer's
        # half is unusable (which then ends step 4 when it starts)
        self._pending_keys: SessionKeys | CryptoError | None = None
        self._background = background
        # the agreement started on another thread (background), and how to collect it; not collected yet
        self._key_job: tuple[KeySchedule, Callable[[], KeysResult]] | None = None

    # --- what the UI asks -------------------------------------------------------------------------------

    @property
    def in_progress(self) -> Step | None:
        """The step under way on this side (its first frame sent or received, not finished), if any."""
        return _IN_PROGRESS.get(self.phase)

    @property
    def next_step(self) -> Step | None:
        """The lowest step not done yet (``None`` once all four are done or the handshake failed or closed)."""
        if self.phase in (Phase.FAILED, Phase.CLOSED):
            return None
        for step in Step:
            if step not in self.done:
                return step
        return None

    @property
    def peer_nickname(self) -> str | None:
        """The ledger's nickname for the peer once step 2 checked it, before that the one from its hello."""
        if self.peer_binding is not None:
            return self.peer_binding.nickname
        return self._peer_hello.nickname if self._peer_hello else None

    @property
    def peer_features(self) -> frozenset[str]:
        """What the peer announced in step 1, hashed into the transcript by both sides (to be relied on once step 3
        verified it: :class:`Established` carries it); empty when either side's frame had no ``features`` (then
        neither side hashed them)."""
        peer = self._peer_hello
        if peer is None or peer.features is None or self._me.features is None:
            return frozenset()
        return frozenset(peer.features)

    @property
    def peer_claimed_address(self) -> str | None:
        return self._peer_hello.address if self._peer_hello else None

    @property
    def prepare_due(self) -> bool:
        """True when :meth:`prepare` has work to do (see there); on the responder only its X25519 half once it
        accepted the chat, and nothing else before the initiator's ``auth`` verified."""
        return self._work_ahead() is not None

    def prepare(self) -> None:
        """Make ahead, before the step that sends it, what this side will need next and nothing the peer could
        make it do for free:

        - initiator, from step 1 on, and the responder once it accepted the chat (its ``welcome`` written): the
          step-2 nonce and X25519 pair (a key generation, no private-key operation on anything the peer sent);
        - initiator, once T2 is fixed (the responder's ``key`` matched the ledger): its step-3 signature over T2,
          the one RSA private-key operation of this side;
        - either side, once its step-3 signature went out (initiator: ``auth`` sent; responder: only after the
          initiator's ``auth`` verified): the X25519 agreement and the session keys of step 4.

        Emits nothing and sends nothing: each result waits for its step. Does nothing unless :attr:`prepare_due`;
        safe to call at any time, any number of times."""
        work = self._work_ahead()
        if work is not None:
            work()

    def _work_ahead(self) -> Callable[[], object] | None:
        phase = self.phase
        # The X25519 half: the initiator's from step 1 on, the responder's once it accepted the chat (its welcome
        # is out; it needs the half for its `key` answer).
        if (phase is Phase.CONNECTED or (self.initiator and phase is Phase.HELLO_SENT)) and self._ephemeral is None:
            return self._own_half
        if self.initiator:
            if phase in (Phase.SWAPPING, Phase.SWAPPED) and self._t2 is not None and self._auth_sig is None:
                return self._own_auth_sig
        # The responder reaches AUTH_REPLIED only once the initiator's signature verified.
        if (phase in (Phase.AUTH_SENT, Phase.AUTH_REPLIED, Phase.AUTHENTICATED) and self._pending_keys is None
                and (self._ephemeral is not None or self._key_job is not None)):
            return self._keys_ahead
        return None

    def _keys_ahead(self) -> None:
        try:
            self._derive()
        except CryptoError:
            pass            # kept: step 4 fails with it when it starts, as when the agreement is made on the spot

    def close(self) -> None:
        """The connection ended before the handshake finished: erase the X25519 private half and any derived
        keys not handed over yet; nothing is prepared after this. Idempotent."""
        if self.phase not in (Phase.ESTABLISHED, Phase.FAILED):
            self.phase = Phase.CLOSED
        self._pending_keys = None
        self._erase_ephemeral()

    def refusal(self, step: Step | int) -> str | None:
        """Why :meth:`start` would refuse ``step`` now (the :class:`StepOrderError` text), or ``None``."""
        try:
            self._check_can_start(Step(step))
        except StepOrderError as exc:
            return str(exc)
        return None

    def start(self, step: Step | int) -> list[HsEvent]:
        """Initiator: begin ``step``; returns the events (frames to send, a ledger lookup to make).

        Raises :class:`StepOrderError` — naming the step that must come first — when the step is out of order,
        already done or in progress, after a failure, or on the responder's side.
        """
        step = Step(step)
        self._check_can_start(step)
        if step is Step.CONNECT:
            self.phase = Phase.HELLO_SENT
            return [self._send("hello", **self._me.wire())]
        if step is Step.SWAP_KEYS:
            self.phase = Phase.SWAPPING
            events: list[HsEvent] = [self._send_key()]
            if not self.via_relay or self.peer_query is not None:
                events.append(self._need_lookup(self._lookup_target(None)))
            return events
        if step is Step.AUTHENTICATE:
            self.phase = Phase.AUTH_SENT
            return [self._send("auth", sig=self._own_auth_sig(), ledgers=self.verdict)]
        self.phase = Phase.CONFIRM_SENT
        return self._guard(Step.AGREE_KEY, self._start_agree)

    def accept(self, yes: bool) -> list[HsEvent]:
        """Responder: the user's answer to :class:`NeedAccept`."""
        if self.phase in (Phase.FAILED, Phase.CLOSED):
            return []           # the peer left or broke the protocol while the user was deciding
        if self.phase is not Phase.ACCEPTING:
            raise StepOrderError("No chat request is waiting for an answer", Step.CONNECT)
        peer = self._peer_hello
        assert peer is not None
        if not yes:
            self._fail_state(Step.CONNECT, f"you declined the chat from {peer.nickname or 'an unnamed peer'} "
                                           f"at {self.peer_address}")
            return [self._send("decline", reason=f"{self._me.nickname or 'the peer'} declined the chat"),
                    Failed(Step.CONNECT, self.failed or "")]
        add_hellos(self._transcript, peer, self._me)
        self.phase = Phase.CONNECTED
        return [self._send("welcome", **self._me.wire()),
                self._step_done(Step.CONNECT, f"accepted the chat from {self_claimed(peer.nickname)} "
                                              f"at {self.peer_address}")]

    def ledger_answer(self, binding: LedgerBinding | None, error: str | None = None, *,
                      disputed: bool = False) -> list[HsEvent]:
        """The IO layer's answer to :class:`NeedLookup`: the verified binding, or ``None`` and why not
        (``disputed``: there is a binding, but its key does not answer at the address, see ledger/disputes.py)."""
        if self.phase in (Phase.FAILED, Phase.CLOSED):
            return []           # ended while the lookup was running: nothing more to do
        if not self._lookup_pending:
            raise StepOrderError("No ledger lookup is pending for this handshake", Step.SWAP_KEYS)
        self._lookup_pending = False
        lookup = self._lookup
        assert lookup is not None
        if binding is None and disputed:
            what = self._describe_query(lookup)
            return self._fail(Step.SWAP_KEYS, f"the ledger's binding for {what} is {error}",
                              f"the ledger this node asked marks its binding for "
                              f"{self._describe_query_for_peer(lookup)} as disputed")
        if binding is None:
            what = self._describe_query(lookup)
            reason = f"the ledger has no record for {what}" + (f" ({error})" if error else "")
            return self._fail(Step.SWAP_KEYS, reason,
                              f"the ledger this node asked has no record for {self._describe_query_for_peer(lookup)}")
        self.peer_binding = binding
        return self._guard(Step.SWAP_KEYS, self._maybe_check_binding)

    def key_refused(self, reason: str) -> list[HsEvent]:
        """The IO layer's answer to :class:`NeedLookup` when it will not use the key the ledger names: it differs
        from the key this node pinned for the peer (p2pchat/continuity.py). Step 2 fails with ``reason``, before
        anything is signed; the peer is told only that its key was not accepted."""
        if self.phase in (Phase.FAILED, Phase.CLOSED):
            return []
        if not self._lookup_pending:
            raise StepOrderError("No ledger lookup is pending for this handshake", Step.SWAP_KEYS)
        self._lookup_pending = False
        return self._fail(Step.SWAP_KEYS, reason,
                          "the peer's node did not accept the key the ledger names for you: it differs from the "
                          "key it chatted with before at this address or nickname")

    # --- frames from the peer ---------------------------------------------------------------------------

    def receive(self, msg: Message) -> list[HsEvent]:
        """Feed one decoded frame from the peer. Anything unexpected fails the handshake with a reason;
        frames after a failure are ignored (the connection is being closed)."""
        if self.phase in (Phase.FAILED, Phase.CLOSED):
            return []
        step = self._current_step()
        if msg.type == "error":
            return self._fail(step, f"the peer ended the handshake: {quote_peer(msg['reason'])}", None)
        handler = self._handlers().get(msg.type)
        if handler is None or self.phase is Phase.ESTABLISHED:
            return self._fail(step, self._unexpected(msg.type, step),
                              f"unexpected '{msg.type}' frame during step {step.label}")
        return self._guard(step, lambda: handler(msg))

    def _handlers(self) -> dict[str, Callable[[Message], list[HsEvent]]]:
        if self.initiator:
            return {"welcome": self._on_welcome, "decline": self._on_decline, "key": self._on_key,
                    "key_ok": self._on_key_ok, "auth_reply": self._on_auth_reply,
                    "confirm_reply": self._on_confirm_reply}
        return {"hello": self._on_hello, "key": self._on_key, "key_ok": self._on_key_ok, "auth": self._on_auth,
                "auth_ok": self._on_auth_ok, "confirm": self._on_confirm}

    # step 1 --------------------------------------------------------------------------------------------

    def _on_hello(self, msg: Message) -> list[HsEvent]:
        if self.phase is not Phase.START:
            raise self._out_of_order(msg.type, Step.CONNECT)
        hello = Hello.from_message(msg)
        self._check_version_network(hello)
        self._peer_hello = hello
        self.phase = Phase.ACCEPTING
        return [NeedAccept(hello.nickname, self.peer_address, hello.address)]

    def _on_welcome(self, msg: Message) -> list[HsEvent]:
        if self.phase is not Phase.HELLO_SENT:
            raise self._out_of_order(msg.type, Step.CONNECT)
        hello = Hello.from_message(msg)
        self._check_version_network(hello)
        self._peer_hello = hello
        add_hellos(self._transcript, self._me, hello)
        self.phase = Phase.CONNECTED
        return [self._step_done(Step.CONNECT, f"{self_claimed(hello.nickname, 'the peer')} at "
                                              f"{self.peer_address} accepted the chat")]

    def _on_decline(self, msg: Message) -> list[HsEvent]:
        if self.phase is not Phase.HELLO_SENT:
            raise self._out_of_order(msg.type, Step.CONNECT)
        reason = msg.get("reason")
        said = f": {quote_peer(reason)}" if reason else ""
        raise HandshakeFailed(Step.CONNECT, f"{self.peer_address} declined the chat{said}", None)

    def _check_version_network(self, hello: Hello) -> None:
        for name, value in (("nickname", hello.nickname), ("network", hello.network), ("address", hello.address)):
            if not value.isprintable():     # control and bidi characters could rewrite a terminal or a label
                raise HandshakeFailed(Step.CONNECT,
                                      f"{self.peer_address} sent a {name} with control characters",
                                      f"the {name} you sent contains control characters")
        if hello.address:
            try:
                # protocol.md §3.1: an address is "ip:port" in canonical form, as format_address writes it (spec
                # review 2026-12-07: " 127.0.0.1:80", "[127.0.0.1]:80" or a port "08471" were taken)
                ip, port = parse_address(hello.address, 0)
                if port == 0 or format_address(ip, port) != hello.address:
                    raise AddressError("not a canonical ip:port")
            except AddressError:
                raise HandshakeFailed(Step.CONNECT, f"{self.peer_address} claims the address "
                                                    f"'{hello.address}', which is not an IP address and port",
                                      "the address you claim is not an IP address and port") from None
        if hello.version not in SUPPORTED_VERSIONS:
            ours = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
            raise HandshakeFailed(
                Step.CONNECT,
                f"{self.peer_address} speaks chat protocol version {hello.version}; this node supports "
                f"version {ours} only",
                f"this node supports chat protocol version {ours} only, not version {hello.version}")
        if self.initiator and hello.version != self._me.version:
            raise HandshakeFailed(Step.CONNECT, f"{self.peer_address} answered with protocol version "
                                                f"{hello.version} instead of {self._me.version}",
                                  f"this node asked for chat protocol version {self._me.version}")
        if hello.network != self._me.network:
            raise HandshakeFailed(
                Step.CONNECT,
                f"{self.peer_address} is on network '{hello.network}', this node on '{self._me.network}'",
                f"this node is on network '{self._me.network}', not '{hello.network}'")

    # step 2 --------------------------------------------------------------------------------------------

    def _on_key(self, msg: Message) -> list[HsEvent]:
        # the initiator sent its key when its user started step 2; the responder answers the initiator's
        expected = Phase.SWAPPING if self.initiator else Phase.CONNECTED
        if self.phase is not expected or self.peer_public_der is not None:
            raise self._out_of_order(msg.type, Step.SWAP_KEYS)
        der: bytes = msg["key"]
        # Parsed only when step 2 completes (_maybe_finish_swap): the ledger check compares bytes, so our own
        # key goes out without waiting for the ~1 ms parse, and the two sides parse in parallel.
        self.peer_public_der = der
        self._peer_nonce = msg["nonce"]
        self._peer_ephemeral = msg["ephemeral"]
        position = ChainPosition(msg["final_height"], msg["final_hash"], msg["tip_height"], msg["tip_hash"])
        if position.final_height > position.tip_height:
            raise HandshakeFailed(Step.SWAP_KEYS, f"{self.peer_address} claims a final ledger block "
                                                  f"({position.final_height}) above its ledger's tip "
                                                  f"({position.tip_height})",
                                  "the final block height you sent is above your tip height")
        self.peer_position = position
        events: list[HsEvent] = []
        if not self.initiator:
            self.phase = Phase.SWAPPING
            events.append(self._send_key())
        if self._lookup is None:
            events.append(self._need_lookup(self._lookup_target(der)))
        events += self._maybe_check_binding()
        return events

    def _on_key_ok(self, msg: Message) -> list[HsEvent]:
        if self.phase is not Phase.SWAPPING or self._peer_key_ok:
            raise self._out_of_order(msg.type, Step.SWAP_KEYS)
        self._peer_key_ok = True
        return self._maybe_finish_swap()

    def _own_half(self) -> EphemeralLike:
        """Our step-2 nonce and X25519 pair, fresh for this session (a key generation, no RSA): made with our `key`
        frame, or ahead of it by the initiator (:meth:`prepare`)."""
        if self._ephemeral is None:
            self._my_nonce = self._fresh_nonce()
            self._ephemeral = self._ephemeral_factory()
        return self._ephemeral

    def _send_key(self) -> Send:
        """Our `key` frame: identity key, fresh nonce and a fresh X25519 half."""
        ephemeral = self._own_half()
        position = self._ledger_view.position() if self._ledger_view is not None else None
        self._my_position = pos = position or NO_POSITION
        return self._send("key", key=self._identity.public_der, nonce=self._my_nonce,
                          ephemeral=ephemeral.public, final_height=pos.final_height, final_hash=pos.final_hash,
                          tip_height=pos.tip_height, tip_hash=pos.tip_hash)

    def _lookup_target(self, peer_der: bytes | None) -> NeedLookup:
        if not self.via_relay and self._by_key_direct and peer_der is not None:
            # A caller with no address in the ledger (behind NAT, --no-inbound) dialled us directly: the address we
            # see is its NAT's, bound to nobody, so it is looked up by its key; _maybe_check_binding then requires
            # its record to be relay-only or to name the address we see.
            return NeedLookup(crypto.fingerprint(peer_der).hex(), "fingerprint")
        if not self.via_relay:
            return NeedLookup(self._peer_ip(), "address")
        if self.peer_query is not None:
            return NeedLookup(self.peer_query, "query")
        assert peer_der is not None
        return NeedLookup(crypto.fingerprint(peer_der).hex(), "fingerprint")

    def _need_lookup(self, lookup: NeedLookup) -> NeedLookup:
        self._lookup = lookup
        self._lookup_pending = True
        return lookup

    @property
    def _by_key_direct(self) -> bool:
        """Responder on a direct connection whose caller's hello gave no address (it has none in the ledger)."""
        return not self.initiator and self._peer_hello is not None and not self._peer_hello.address

    def _peer_ip(self) -> str:
        try:
            return parse_address(self.peer_address, 0)[0]
        except AddressError:
            return self.peer_address

    def _maybe_check_binding(self) -> list[HsEvent]:
        binding, der, lookup = self.peer_binding, self.peer_public_der, self._lookup
        if binding is None or der is None or lookup is None or self._own_check_ok:
            return []
        what = self._describe_query(lookup)
        if (lookup.by == "fingerprint" and not self.via_relay and binding.ip is not None
                and binding.ip != self._peer_ip()):
            raise HandshakeFailed(
                Step.SWAP_KEYS,
                f"{self.peer_address} called without an address of its own, but the ledger binds its key "
                f"{short_fp(der)} to {binding.ip}: a key with an address record must call from that address",
                f"the ledger binds your key to {binding.ip}, not to the address this node sees ({self._peer_ip()}); "
                "call from that address")
        if lookup.by == "address" and binding.ip is not None and binding.ip != lookup.query:
            raise HandshakeFailed(Step.SWAP_KEYS, f"the ledger answered for {binding.ip}, not for {what}",
                                  "this node could not check your key against the ledger")
        if not crypto.constant_time_equal(binding.public_der, der):
            raise HandshakeFailed(
                Step.SWAP_KEYS,
                f"the key {short_fp(der)} sent by {self.peer_address} is not the key the ledger binds to "
                f"{what} (the ledger has {short_fp(binding.public_der)})",
                f"the key you sent is not the one the ledger binds to {self._describe_query_for_peer(lookup)}")
        self._own_check_ok = True
        assert self.peer_position is not None
        self.verdict = judge_checkpoint(self.peer_position, self._ledger_view)   # after the lookup synced our headers
        self._fix_transcript()
        return [self._send("key_ok"), *self._maybe_finish_swap()]

    def _fix_transcript(self) -> None:
        """Our check of the peer's key passed, so both `key` frames are out: every item of step 2 is known and T2 is
        fixed. The initiator may sign it from here on (:meth:`prepare`) — overlapping the peer's own ledger
        lookup — though step 2 is done only when the peer's `key_ok` has arrived too and its key parsed."""
        der, mine, theirs = self.peer_public_der, self._my_nonce, self._peer_nonce
        eph, peer_eph = self._ephemeral, self._peer_ephemeral
        my_pos, peer_pos = self._my_position, self.peer_position
        assert der is not None and mine is not None and theirs is not None and eph is not None
        assert peer_eph is not None and my_pos is not None and peer_pos is not None
        own_fp, peer_fp = crypto.fingerprint(self._identity.public_der), crypto.fingerprint(der)
        if self.initiator:
            add_step_2(self._transcript, i_key=own_fp, r_key=peer_fp, i_nonce=mine, r_nonce=theirs,
                       i_ephemeral=eph.public, r_ephemeral=peer_eph, i_position=my_pos, r_position=peer_pos)
        else:
            add_step_2(self._transcript, i_key=peer_fp, r_key=own_fp, i_nonce=theirs, r_nonce=mine,
                       i_ephemeral=peer_eph, r_ephemeral=eph.public, i_position=peer_pos, r_position=my_pos)
        self._t2 = self._transcript.digest()     # complete: step 3 signs it, step 4 derives from it

    def _maybe_finish_swap(self) -> list[HsEvent]:
        if not (self._own_check_ok and self._peer_key_ok):
            return []
        der, binding, lookup = self.peer_public_der, self.peer_binding, self._lookup
        assert der is not None and binding is not None and lookup is not None
        try:
            self._peer_key = load_peer_key(der)
        except CryptoError as exc:
            raise HandshakeFailed(Step.SWAP_KEYS, f"the key sent by {self.peer_address} is unusable: {exc}",
                                  f"the key you sent is unusable: {exc}") from None
        self.phase = Phase.SWAPPED
        nick = f" ({binding.nickname})" if binding.nickname else ""
        claimed = self._peer_hello.nickname if self._peer_hello else ""
        also = f"; it calls itself '{claimed}'" if claimed and claimed != binding.nickname else ""
        conf = "confirmation" if binding.confirmations == 1 else "confirmations"
        return [self._step_done(
            Step.SWAP_KEYS,
            f"key {short_fp(der)}{nick} matches the ledger record for {self._describe_query(lookup)} "
            f"(block {binding.height}, {binding.confirmations} {conf}){also}")]

    def _describe_query(self, lookup: NeedLookup) -> str:
        if lookup.by == "address":
            return lookup.query
        if lookup.by == "fingerprint":
            return f"fingerprint {crypto.format_fingerprint(bytes.fromhex(lookup.query), groups=4)} …"
        return f"'{lookup.query}'"

    def _describe_query_for_peer(self, lookup: NeedLookup) -> str:
        return "your address " + lookup.query if lookup.by == "address" else self._describe_query(lookup)

    # step 3 --------------------------------------------------------------------------------------------

    def _on_auth(self, msg: Message) -> list[HsEvent]:
        """Responder: the initiator's signature opens step 3; only once it verifies do we sign (our one RSA
        private-key operation), so a peer that proves nothing costs us none."""
        if self.phase is not Phase.SWAPPED:
            raise self._out_of_order(msg.type, Step.AUTHENTICATE)
        self._verify_auth(msg["sig"], msg["ledgers"])
        self.phase = Phase.AUTH_REPLIED
        if self._background is not None:
            # The initiator's signature verified, so the step-4 agreement may start: on another core while we sign,
            # instead of after our auth_reply, when the initiator's confirm is already on its way.
            job = self._new_key_job()
            self._key_job = (job, self._background(job))
        return [self._send("auth_reply", sig=self._own_auth_sig(), ledgers=self.verdict)]

    def _on_auth_reply(self, msg: Message) -> list[HsEvent]:
        if self.phase is not Phase.AUTH_SENT:
            raise self._out_of_order(msg.type, Step.AUTHENTICATE)
        self._verify_auth(msg["sig"], msg["ledgers"])
        return [self._send("auth_ok"), *self._auth_done()]

    def _on_auth_ok(self, msg: Message) -> list[HsEvent]:
        if self.phase is not Phase.AUTH_REPLIED:
            raise self._out_of_order(msg.type, Step.AUTHENTICATE)
        return self._auth_done()

    def _own_auth_sig(self) -> bytes:
        """Our step-3 signature over T2 (the initiator's possibly made ahead by :meth:`prepare`)."""
        assert self._t2 is not None and self.verdict is not None
        if self._auth_sig is None:
            self._auth_sig = self._identity.sign(AUTH_CONTEXT, auth_message(self._role, self._t2, self.verdict))
        return self._auth_sig

    def _verify_auth(self, sig: bytes, verdict: str) -> None:
        assert self._peer_key is not None and self._t2 is not None
        if verdict not in VERDICTS:
            raise HandshakeFailed(Step.AUTHENTICATE, f"{self.peer_address} sent an unknown ledger verdict "
                                                     f"{quote_peer(verdict)}",
                                  f"the ledger verdict must be one of {', '.join(VERDICTS)}")
        message = auth_message(self._peer_role, self._t2, verdict)
        if not crypto.is_valid_signature(self._peer_key, AUTH_CONTEXT, message, sig):
            raise HandshakeFailed(
                Step.AUTHENTICATE,
                f"{self.peer_address} could not prove it holds the key {short_fp(self.peer_public_der or b'')}: "
                "its signature over this session's transcript does not verify",
                "your authentication signature does not verify for this session")
        self.peer_verdict = verdict

    def _auth_done(self) -> list[HsEvent]:
        """Step 3 done; a ledger disagreement is reported now that both signatures bind both positions and both
        verdicts (before this, a man in the middle could have made it up)."""
        self.phase = Phase.AUTHENTICATED
        events: list[HsEvent] = []
        ours, theirs, own, peer = self.verdict, self.peer_verdict, self._my_position, self.peer_position
        assert ours is not None and theirs is not None and own is not None and peer is not None
        if "conflict" in (ours, theirs):
            events.append(LedgersDisagree(ours, theirs, own, peer))
        events.append(self._step_done(Step.AUTHENTICATE,
                                      f"{self.peer_nickname or 'the peer'} proved it holds key "
                                      f"{short_fp(self.peer_public_der or b'')} (signature over this session "
                                      "verified)"))
        return events

    # step 4 --------------------------------------------------------------------------------------------

    def _erase_ephemeral(self) -> None:
        if self._ephemeral is not None:
            self._ephemeral.erase()
            self._ephemeral = None
        if self._key_job is not None:
            job, collect = self._key_job
            self._key_job = None
            job.cancelled = True
            # Erases the half now, or waits for the agreement under way (which erases it). A programming error
            # there was reported by the thread it ran on; ending the handshake goes on.
            with contextlib.suppress(Exception):
                collect()

    def _derive(self) -> SessionKeys:
        """X25519 with the peer's half from step 2 (our private half erased right after), then the key schedule;
        made once: on another thread (``background``, the responder), ahead of step 4 (:meth:`prepare`) or on the
        spot."""
        if self._pending_keys is None:
            started, self._key_job = self._key_job, None
            # made by the background already, or made now
            self._pending_keys = started[1]() if started is not None else self._new_key_job()()
        if isinstance(self._pending_keys, CryptoError):     # e.g. a low-order point
            raise self._pending_keys
        return self._pending_keys

    def _new_key_job(self) -> KeySchedule:
        """Hand the X25519 private half over to a :class:`KeySchedule` (which erases it after the agreement)."""
        eph, peer_pub, t2 = self._ephemeral, self._peer_ephemeral, self._t2
        assert eph is not None and peer_pub is not None and t2 is not None
        self._ephemeral = None
        return KeySchedule(eph, peer_pub, t2)

    def _start_agree(self) -> list[HsEvent]:
        keys = self._derive()
        return [self._send("confirm", confirm=confirm_tag(keys.confirm_key, self._role, self._t2 or b""))]

    def _on_confirm(self, msg: Message) -> list[HsEvent]:
        """Responder: derive, check the initiator's tag, answer with ours; the keys are then in use."""
        if self.phase is not Phase.AUTHENTICATED:
            raise self._out_of_order(msg.type, Step.AGREE_KEY)
        keys = self._derive()
        self._check_confirm(keys, msg["confirm"])
        tag = confirm_tag(keys.confirm_key, self._role, self._t2 or b"")
        return [self._send("confirm_reply", confirm=tag), *self._finish(keys)]

    def _on_confirm_reply(self, msg: Message) -> list[HsEvent]:
        keys = self._pending_keys
        if self.phase is not Phase.CONFIRM_SENT or not isinstance(keys, SessionKeys):
            raise self._out_of_order(msg.type, Step.AGREE_KEY)
        self._check_confirm(keys, msg["confirm"])
        return self._finish(keys)

    def _check_confirm(self, keys: SessionKeys, tag: bytes) -> None:
        expected = confirm_tag(keys.confirm_key, self._peer_role, self._t2 or b"")
        if not crypto.constant_time_equal(expected, tag):
            self._pending_keys = None
            raise HandshakeFailed(Step.AGREE_KEY,
                                  f"{self.peer_address} derived different keys (key confirmation failed): "
                                  "someone may be tampering with the connection",
                                  "key confirmation failed: the two sides derived different keys")

    def _finish(self, keys: SessionKeys) -> list[HsEvent]:
        der, binding, t2 = self.peer_public_der, self.peer_binding, self._t2
        assert der is not None and binding is not None and t2 is not None
        self._pending_keys = None       # only the Established (and then the Channel) holds the keys
        if self.initiator:
            send, recv, send_chain, recv_chain = keys.i2r_key, keys.r2i_key, keys.i2r_chain, keys.r2i_chain
        else:
            send, recv, send_chain, recv_chain = keys.r2i_key, keys.i2r_key, keys.r2i_chain, keys.i2r_chain
        number = safety_number(self._identity.public_der, der)
        self.phase = Phase.ESTABLISHED
        self.established = Established(
            initiator=self.initiator, send_key=send, recv_key=recv, send_chain=send_chain, recv_chain=recv_chain,
            transcript_hash=t2, peer_public_der=der, peer_nickname=binding.nickname, peer_binding=binding,
            safety_number=number, peer_features=self.peer_features)
        return [self._step_done(Step.AGREE_KEY, f"agreed AES-256-GCM keys (one per direction); safety number "
                                                f"{number}"),
                Ready(self.established)]

    # --- helpers ----------------------------------------------------------------------------------------

    def _send(self, type_: str, **fields: object) -> Send:
        return Send(CHAT.encode(type_, **fields))

    def _fresh_nonce(self) -> bytes:
        nonce = self._rng(32)
        if len(nonce) != 32:
            raise ValueError("rng must return the number of bytes asked for")
        return nonce

    def _step_done(self, step: Step, detail: str) -> StepDone:
        self.done.add(step)
        return StepDone(step, detail)

    def _current_step(self) -> Step:
        if self.in_progress is not None:
            return self.in_progress
        return self.next_step or Step.AGREE_KEY

    def _check_can_start(self, step: Step) -> None:
        if self.failed is not None:
            raise StepOrderError(f"The handshake failed at step {self.failed_step.label if self.failed_step else ''}"
                                 f" ({self.failed}); connect again to start over", Step.CONNECT)
        if self.phase is Phase.CLOSED:
            raise StepOrderError("The connection has ended; connect again to start over", Step.CONNECT)
        if not self.initiator:
            raise StepOrderError("The side that opened the chat drives the steps; this side answers them", step)
        if step in self.done:
            nxt = self.next_step
            then = f"; do step {nxt.label} next" if nxt else "; the chat is ready"
            raise StepOrderError(f"Step {step.label} is already done{then}", step)
        if self.in_progress is not None:
            raise StepOrderError(f"Step {self.in_progress.label} is still in progress; wait for it to finish",
                                 self.in_progress)
        nxt = self.next_step
        if nxt is not None and step != nxt:
            raise StepOrderError(f"Do step {int(nxt)} ({nxt.title}) first", nxt)

    def _unexpected(self, type_: str, step: Step) -> str:
        if self.phase is Phase.ESTABLISHED:
            return f"{self.peer_address} sent a '{type_}' frame after the handshake finished"
        return f"{self.peer_address} sent a '{type_}' frame that does not belong in step {step.label}"

    def _out_of_order(self, type_: str, belongs_to: Step) -> HandshakeFailed:
        current = self._current_step()
        if belongs_to > current:
            reason = (f"{self.peer_address} sent a '{type_}' frame of step {belongs_to.label} before step "
                      f"{current.label} was finished")
        else:
            reason = f"{self.peer_address} sent a '{type_}' frame out of turn (step {current.label})"
        return HandshakeFailed(current, reason, f"'{type_}' frame out of order during step {current.label}")

    def _guard(self, step: Step, action: Callable[[], list[HsEvent]]) -> list[HsEvent]:
        """Run one transition; a :class:`HandshakeFailed` or bad peer data becomes a ``Failed`` event."""
        try:
            return action()
        except HandshakeFailed as exc:
            return self._fail(exc.step, exc.reason, exc.peer_reason)
        except CryptoError as exc:  # e.g. a low-order X25519 point
            return self._fail(step, f"{self.peer_address} sent unusable key material: {exc}",
                              f"unusable key material: {exc}")

    def _fail_state(self, step: Step, reason: str) -> None:
        self.failed = reason
        self.failed_step = step
        self.phase = Phase.FAILED
        self._lookup_pending = False
        self._pending_keys = None
        self._erase_ephemeral()

    def _fail(self, step: Step, reason: str, peer_reason: str | None) -> list[HsEvent]:
        self._fail_state(step, reason)
        events: list[HsEvent] = []
        if peer_reason is not None:
            events.append(self._send("error", reason=peer_reason[:1000]))
        events.append(Failed(step, reason))
        return events


__all__ = [
    "NO_POSITION", "ChainPosition", "Established", "Failed", "Handshake", "HandshakeFailed", "Hello", "HsEvent",
    "LedgerBinding", "LedgerView", "LedgersDisagree", "NeedAccept", "NeedLookup", "Phase", "Ready", "Send",
    "SessionKeys", "Signer", "StepDone", "StepOrderError", "add_challenges", "add_ephemerals", "add_hellos",
    "add_keys", "add_positions", "add_step_2", "auth_message", "confirm_tag", "derive_session_keys",
    "judge_checkpoint",
]
