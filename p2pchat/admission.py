"""Work only for those who proved something: what one address may make a node do before it authenticated.

A stranger (a connection whose step 3 has not verified) is held to

- :data:`PRE_AUTH_PER_ADDRESS` connections at once per address, and :data:`PRE_AUTH_TOTAL` over all addresses;
- :data:`HANDSHAKES_PER_MINUTE` new connections per address in any 60 s that did not authenticate (one that
  reaches step 3 gives its place back, so an honest peer opening many chats is limited only by concurrency);
- :data:`PROMPTS_PER_ADDRESS` chat requests per address waiting for the user's answer (more are declined
  without asking);
- frames of at most :data:`PRE_AUTH_FRAME` bytes (the largest handshake frame is about 3 KiB with an RSA-8192
  key); the protocol's full frame limit applies once step 3 verified.

The "address" of a relayed caller is the fingerprint the relay names (every relayed call comes from the relay's
own IP address). A connection that authenticated no longer counts against its address.

A verified peer (step 3 proved its key) may hold at most :data:`CHATS_PER_PEER` incoming chats at once, counted
by its key's fingerprint whatever address or relay each came through: otherwise one registered key could fill
every connection the node takes (``max_sessions``) and a reader thread for each. The chat over the limit fails
at step 3 with a sentence naming it, and keeps its place in its address's handshakes of the minute, so a peer
retrying at its limit is rationed like a stranger.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

PRE_AUTH_PER_ADDRESS = 4
PRE_AUTH_TOTAL = 64
HANDSHAKES_PER_MINUTE = 20
PROMPTS_PER_ADDRESS = 2
PRE_AUTH_FRAME = 8 * 1024
CHATS_PER_PEER = 16         # incoming chats one verified key may hold at once
WINDOW = 60.0
MAX_TRACKED = 4096          # addresses remembered for the per-minute count before old ones are forgotten


class Ticket:
    """One connection's claim on its address's allowances; released exactly once."""

    __slots__ = ("address", "peer", "pre_auth", "prompt")

    def __init__(self, address: str) -> None:
        self.address = address
        self.pre_auth = True
        self.prompt = False
        self.peer: bytes | None = None      # the verified key's fingerprint once step 3 admitted it


class Admission:
    """Thread-safe per-address counters (see the module docstring for the limits)."""

    def __init__(self, *, per_address: int = PRE_AUTH_PER_ADDRESS, total: int = PRE_AUTH_TOTAL,
                 per_minute: int = HANDSHAKES_PER_MINUTE, prompts: int = PROMPTS_PER_ADDRESS,
                 per_peer: int = CHATS_PER_PEER, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_address = per_address
        self.per_peer = per_peer
        self.total = total
        self.per_minute = per_minute
        self.prompts = prompts
        self._clock = clock
        self._lock = threading.Lock()
        self._pre_auth: dict[str, int] = {}
        self._pre_auth_total = 0
        self._prompts: dict[str, int] = {}
        self._peers: dict[bytes, int] = {}
        self._recent: dict[str, deque[float]] = {}
        self.refused = 0

    def admit(self, address: str) -> Ticket | str:
        """A ticket for a new connection from ``address``, or why it is refused (a sentence for the peer)."""
        now = self._clock()
        with self._lock:
            recent = self._recent.get(address)
            if recent is None:
                if len(self._recent) >= MAX_TRACKED:
                    self._forget_old(now)
                recent = self._recent[address] = deque()
            while recent and now - recent[0] >= WINDOW:
                recent.popleft()
            refusal = None
            if self._pre_auth.get(address, 0) >= self.per_address:
                refusal = (f"too many unauthenticated connections from {address} at once "
                           f"(at most {self.per_address}); try again later")
            elif self._pre_auth_total >= self.total:
                refusal = "this node has too many unauthenticated connections; try again later"
            elif len(recent) >= self.per_minute:
                refusal = (f"too many chat connections from {address} in the last minute "
                           f"(at most {self.per_minute}); try again later")
            if refusal is not None:
                self.refused += 1
                return refusal
            recent.append(now)
            self._pre_auth[address] = self._pre_auth.get(address, 0) + 1
            self._pre_auth_total += 1
            return Ticket(address)

    def peer_full(self, fingerprint: bytes) -> str | None:
        """Why a chat with the key ``fingerprint`` would be over :attr:`per_peer` now (None: it is not); a check
        only, made before step 3's signatures so a peer at its limit costs no RSA operation."""
        with self._lock:
            return self._peer_refusal(fingerprint)

    def authenticated(self, ticket: Ticket, fingerprint: bytes) -> str | None:
        """The connection proved it holds the key ``fingerprint`` (step 3). Within the key's :attr:`per_peer`
        chats it no longer counts as a stranger, nor against its address's handshakes of the minute (only
        handshakes that prove nothing are rationed), and None is returned; over it, the sentence for both users
        (the connection then ends, and its handshake of the minute stays counted)."""
        with self._lock:
            refusal = self._peer_refusal(fingerprint) if ticket.peer is None else None
            if refusal is not None:
                self.refused += 1
                self._drop_pre_auth(ticket)
                return refusal
            if ticket.pre_auth:
                recent = self._recent.get(ticket.address)
                if recent:
                    recent.pop()
            self._drop_pre_auth(ticket)
            if ticket.peer is None:
                ticket.peer = fingerprint
                self._peers[fingerprint] = self._peers.get(fingerprint, 0) + 1
            return None

    def peer_chats(self, fingerprint: bytes) -> int:
        """Incoming chats the key ``fingerprint`` holds now."""
        with self._lock:
            return self._peers.get(fingerprint, 0)

    def _peer_refusal(self, fingerprint: bytes) -> str | None:
        if self._peers.get(fingerprint, 0) < self.per_peer:
            return None
        return (f"this node already has {self.per_peer} chats open with your key (at most {self.per_peer} at "
                "once); end one of them before opening another")

    def ask_user(self, ticket: Ticket) -> bool:
        """May this connection's chat request be put to the user? (False: its address has enough waiting.)"""
        with self._lock:
            if ticket.prompt:
                return True
            if self._prompts.get(ticket.address, 0) >= self.prompts:
                return False
            ticket.prompt = True
            self._prompts[ticket.address] = self._prompts.get(ticket.address, 0) + 1
            return True

    def answered(self, ticket: Ticket) -> None:
        with self._lock:
            self._drop_prompt(ticket)

    def release(self, ticket: Ticket) -> None:
        """The connection ended: give back whatever it still holds. Idempotent."""
        with self._lock:
            self._drop_pre_auth(ticket)
            self._drop_prompt(ticket)
            self._drop_peer(ticket)

    def counts(self, address: str) -> tuple[int, int]:
        """Unauthenticated connections and unanswered prompts of ``address`` now."""
        with self._lock:
            return self._pre_auth.get(address, 0), self._prompts.get(address, 0)

    def _drop_pre_auth(self, ticket: Ticket) -> None:
        if ticket.pre_auth:
            ticket.pre_auth = False
            self._pre_auth_total -= 1
            left = self._pre_auth[ticket.address] - 1
            if left:
                self._pre_auth[ticket.address] = left
            else:
                del self._pre_auth[ticket.address]

    def _drop_peer(self, ticket: Ticket) -> None:
        fp, ticket.peer = ticket.peer, None
        if fp is not None:
            left = self._peers[fp] - 1
            if left:
                self._peers[fp] = left
            else:
                del self._peers[fp]

    def _drop_prompt(self, ticket: Ticket) -> None:
        if ticket.prompt:
            ticket.prompt = False
            left = self._prompts[ticket.address] - 1
            if left:
                self._prompts[ticket.address] = left
            else:
                del self._prompts[ticket.address]

    def _forget_old(self, now: float) -> None:
        for address in [a for a, d in self._recent.items() if not d or now - d[-1] >= WINDOW]:
            del self._recent[address]
        while len(self._recent) >= MAX_TRACKED:     # all recent: forget the oldest entries
            del self._recent[next(iter(self._recent))]
