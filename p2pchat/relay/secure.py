"""The encrypted client↔relay link: a Noise-NK-like handshake and AES-256-GCM records (see docs/relay.md).

The relay has a static X25519 key; a client knows its public half from a ``--relay IP:PORT#KEY`` pin or
learns it on first contact and keeps it for the process (:class:`KnownRelays`). Handshake, raw bytes before
any frame::

    relay  -> client   "P2PR" ‖ u8 version ‖ s (32)          (sent at accept)
    client -> relay    "P2PC" ‖ u8 version ‖ e_c (32)        (sent at connect, not waiting for the relay)
    relay  -> client   e_r (32)

Both sides compute ``es = X25519(e_c, s)`` and ``ee = X25519(e_c, e_r)`` and derive the two direction keys
with :func:`p2pchat.foundation.crypto.relay_link_keys`. From then on every byte each way is a record
``u32 L ‖ AES-256-GCM(key, nonce = 0⁴ ‖ u64 record number, aad = the 4 length bytes)`` (``L`` counts the
ciphertext and its 16-byte tag) whose plaintexts, concatenated, are the ordinary relay-protocol frame stream.
A client that does not hold the pinned key, or a relay without the static private key, fails on the first
record. :class:`SecureSocket` is a :class:`FramedSocket` whose frames travel in those records.

In a relay session the two clients' payloads travel in *pair records* (the top bit of ``L`` set): sealed the
same way under the session's pair keys (:func:`p2pchat.foundation.crypto.relay_pair_keys` of the ``pair_key``
the relay sends both sides in ``paired``), one counter per direction, so the relay forwards them unopened: the
chat's bytes are sealed once more on each client, not twice more in the relay.

*Box records* (both top bits of ``L`` set, agreed in ``paired``: ``box_max``) carry one chat frame whose box the
chat channel already sealed end to end (:class:`~p2pchat.foundation.codec.BoxedFrame`): ``u16 H``, the frame's
head sealed under the pair key, then the box in clear as the record's associated data: the same integrity and
nothing more in clear than end-to-end ciphertext, for GHASH instead of a second AES-GCM pass (docs/relay.md).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

from p2pchat.display import quote_peer
from p2pchat.foundation import crypto
from p2pchat.foundation.codec import CLEAR_BOX_MIN, HEADER, BoxedFrame, Frame, Message, Protocol
from p2pchat.foundation.datadir import exposure_problem, slot_problem, write_new_file
from p2pchat.foundation.errors import CryptoError, FrameError, PeerUnreachable, ProtocolError, UserError
from p2pchat.foundation.transport import FramedSocket, _os_reason, _send_now, _wait_ready
from p2pchat.relay.protocol import RelayError

LINK_VERSION = 2
RELAY_MAGIC = b"P2PR"
CLIENT_MAGIC = b"P2PC"
INTRO = struct.Struct(">4sB32s")                 # magic, version, X25519 public key: 37 bytes
KEY_LEN = crypto.X25519_LEN
RECORD_HEADER = struct.Struct(">I")
TAG_LEN = crypto.GCM_TAG_LEN
MAX_RECORD_PLAINTEXT = 256 * 1024                # a record is sealed and checked whole: this bounds the buffer
MAX_RECORD = MAX_RECORD_PLAINTEXT + TAG_LEN
MAX_CLEAR_REFUSAL = 2048                         # a clear ``error`` frame a relay sends when it refuses at accept
RECV_CHUNK = 256 * 1024
Piece = tuple[str, bytes | bytearray | memoryview]   # what the record splitter hands on: ("link" | "pair", bytes)
LONG_RECORD = 64 * 1024                          # a record at least this long is read into a buffer of its own


class RelayKeyMismatch(CryptoError):
    """The relay presented a static key other than the one pinned for its address."""


def parse_key(text: str) -> bytes:
    """A relay key as people write it: 64 hex digits (spaces and colons allowed)."""
    cleaned = text.replace(" ", "").replace(":", "").lower()
    try:
        key = bytes.fromhex(cleaned)
    except ValueError:
        raise CryptoError(f"relay key '{text[:80]}' is not hex") from None
    if len(key) != KEY_LEN:
        raise CryptoError(f"a relay key is {KEY_LEN} bytes (64 hex digits), got {len(key)}")
    return key


class RelayKey:
    """The relay's static X25519 key pair. ``private`` fixes it (tests, vectors); otherwise a fresh one."""

    def __init__(self, private: bytes | None = None) -> None:
        crypto.keep_keys_out_of_core_dumps()
        self._private = crypto.x25519_private() if private is None else private
        self._key = crypto.EphemeralKey(self._private)
        self.public = self._key.public

    def agree(self, peer_public: bytes) -> bytes:
        return self._key.agree(peer_public)

    @classmethod
    def load_or_create(cls, path: Path) -> RelayKey:
        """The key stored at ``path`` (64 hex digits of the private key), created there (mode 0600) if absent:
        written whole to a file of this process's own, then linked into place, so a kill or a full disk never
        leaves half a key (which would refuse every later start, and a new key is refused by every client that
        pinned the old one) and of two relays starting at once one key wins and both use it."""
        problem = slot_problem(path)
        if problem is not None:
            raise UserError(f"the relay key {path} {problem}")
        try:
            exposed = exposure_problem(path.stat(), path)
            if exposed is not None:      # a private key others can read is no longer this relay's alone
                raise UserError(f"the relay key {path} {exposed}")
            text = path.read_text().strip()
        except FileNotFoundError:
            key = cls()
            if key._save_new(path):
                return key
            return cls.load_or_create(path)      # another relay made it meanwhile
        except (OSError, UnicodeDecodeError) as exc:
            reason = _os_reason(exc) if isinstance(exc, OSError) else "it is not text"
            raise UserError(f"cannot read the relay key {path}: {reason}") from None
        try:
            return cls(bytes.fromhex(text))
        except (ValueError, CryptoError):
            raise UserError(f"{path} does not hold a relay key (64 hex digits); it was not changed. Restore it from "
                            "a backup: a relay with a new key is refused by every client that pinned this one "
                            "(moving it aside makes a new key at the next start)") from None

    def _save_new(self, path: Path) -> bool:
        def fail(reason: str) -> UserError:
            return UserError(f"could not write the relay key {path}: {reason}")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise fail(_os_reason(exc)) from None
        return write_new_file(path, (self._private.hex() + "\n").encode(), fail)

    def __repr__(self) -> str:
        return f"RelayKey(public={self.public.hex()})"


class KnownRelays:
    """Relay keys by address, for relays used without a pin: the first key seen is kept for the process and a
    different one later is refused (trust on first use). Thread-safe; bounded to ``limit`` relays."""

    def __init__(self, limit: int = 256) -> None:
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.limit = limit

    def get(self, address: str) -> bytes | None:
        with self._lock:
            return self._keys.get(address)

    def remember(self, address: str, key: bytes) -> None:
        with self._lock:
            if address not in self._keys and len(self._keys) >= self.limit:
                self._keys.pop(next(iter(self._keys)))
            self._keys.setdefault(address, key)


KNOWN_RELAYS = KnownRelays()


def _read_exact(sock: socket.socket, n: int, deadline: float, who: str) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PeerUnreachable(f"{who} did not complete the link handshake in time")
        try:
            sock.settimeout(remaining)
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            raise PeerUnreachable(f"{who} did not complete the link handshake in time") from None
        except OSError as exc:
            raise PeerUnreachable(f"connection to {who} failed: {_os_reason(exc)}") from None
        if not chunk:
            raise PeerUnreachable(f"{who} closed the connection during the link handshake")
        buf += chunk
    return bytes(buf)


def _sendall(sock: socket.socket, data: bytes, deadline: float, who: str) -> None:
    try:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(data)
    except OSError as exc:
        raise PeerUnreachable(f"could not send to {who}: {_os_reason(exc)}") from None


def client_handshake(conn: FramedSocket, relay_text: str, *, pin: bytes | None, known: KnownRelays | None,
                     timeout: float) -> SecureSocket:
    """Run the client side on a fresh connection; returns the encrypted socket (the caller closes ``conn`` on
    failure). ``pin`` is the relay key to insist on; without it ``known`` supplies or learns one."""
    who = f"the relay at {relay_text}"
    deadline = time.monotonic() + timeout
    eph = crypto.EphemeralKey()
    _sendall(conn.sock, INTRO.pack(CLIENT_MAGIC, LINK_VERSION, eph.public), deadline, who)
    head = _read_exact(conn.sock, 4, deadline, who)
    if head != RELAY_MAGIC:
        # A relay that refuses at accept (connection limits) answers with one clear ``error`` frame.
        (size,) = HEADER.unpack(head)
        if not 0 < size <= MAX_CLEAR_REFUSAL:
            raise ProtocolError(f"{who} does not speak relay link version {LINK_VERSION} (an older relay?)")
        msg = conn.protocol.decode(_read_exact(conn.sock, size, deadline, who))
        if msg.type != "error":     # e.g. the clear ``challenge`` of a version 1 relay
            raise ProtocolError(f"{who} does not speak relay link version {LINK_VERSION} (an older relay?)")
        raise RelayError(f"relay {relay_text}: {quote_peer(msg['reason'])}")
    rest = _read_exact(conn.sock, INTRO.size - 4, deadline, who)
    _, version, static = INTRO.unpack(head + rest)
    if version != LINK_VERSION:
        raise ProtocolError(f"{who} speaks relay link version {version}; this program speaks {LINK_VERSION}")
    expected = pin if pin is not None else (known.get(relay_text) if known is not None else None)
    if expected is not None and not crypto.constant_time_equal(expected, static):
        how = "pinned" if pin is not None else "it presented before"
        raise RelayKeyMismatch(f"{who} presented key {static.hex()[:16]}…, not the key {how} "
                               f"({expected.hex()[:16]}…): someone may be intercepting the connection")
    relay_eph = _read_exact(conn.sock, KEY_LEN, deadline, who)
    es, ee = eph.agree(static), eph.agree(relay_eph)
    eph_public = eph.public
    eph.erase()
    to_relay, to_client = crypto.relay_link_keys(static, eph_public, relay_eph, es, ee)
    if pin is None and known is not None:
        known.remember(relay_text, static)
    secure = SecureSocket(conn.sock, conn.protocol, timeout=conn.timeout, send_key=to_relay, recv_key=to_client)
    secure.relay_key = static
    return secure


def server_handshake(conn: FramedSocket, key: RelayKey, *, timeout: float) -> SecureSocket:
    """Run the relay side on an accepted connection; raises :class:`UserError` (nothing is sent back) on a
    client that does not speak the link, with the connection left for the caller to close."""
    who = f"client {conn.peer_text}"
    deadline = time.monotonic() + timeout
    _sendall(conn.sock, INTRO.pack(RELAY_MAGIC, LINK_VERSION, key.public), deadline, who)
    magic, version, client_eph = INTRO.unpack(_read_exact(conn.sock, INTRO.size, deadline, who))
    if magic != CLIENT_MAGIC:
        raise ProtocolError(f"{who} does not speak the relay link")
    if version != LINK_VERSION:
        raise ProtocolError(f"{who} speaks relay link version {version}; this relay speaks {LINK_VERSION}")
    eph = crypto.EphemeralKey()
    es, ee = key.agree(client_eph), eph.agree(client_eph)
    to_relay, to_client = crypto.relay_link_keys(key.public, client_eph, eph.public, es, ee)
    _sendall(conn.sock, eph.public, deadline, who)
    eph.erase()
    secure = SecureSocket(conn.sock, conn.protocol, timeout=conn.timeout, send_key=to_client, recv_key=to_relay)
    secure._opener.early_pairs = False
    return secure


PAIR_FLAG = 0x80000000          # set in a record's length word: a pair record (see the module docstring)
BOX_FLAG = 0x40000000           # set with PAIR_FLAG: a box record (a chat frame's head sealed, its box clear)
KIND_FLAGS = PAIR_FLAG | BOX_FLAG
PAIR_TYPE = "pair"              # the message type under which a relay receives a pair record, unopened
BOX_HEAD = struct.Struct(">IH")         # a box record's length word and head length
MAX_BOX_HEAD = 0xFFFF
BOX_OVERHEAD = 2 + TAG_LEN              # what a box record's L counts besides the frame it carries


class PairKeys:
    """One direction's view of a relay session's pair keys, with record counters."""

    def __init__(self, send_key: bytes, recv_key: bytes, split: int = MAX_RECORD_PLAINTEXT,
                 box_max: int | None = None) -> None:
        self.send_key, self.recv_key = send_key, recv_key
        self.split = max(1, min(split, MAX_RECORD_PLAINTEXT))
        self.box_max = box_max        # box records agreed in ``paired``: their largest L (None: not agreed)
        self.sent = 0
        self.received = 0


def seal_records(key: bytes, first_counter: int, data: Frame | memoryview, flag: int = 0,
                 split: int = MAX_RECORD_PLAINTEXT) -> tuple[bytearray, int]:
    """``data`` as records sealed under ``key`` from record number ``first_counter``, split every ``split``
    bytes (at most ``MAX_RECORD_PLAINTEXT``); returns the bytes (the buffer they were sealed in, not a copy of it)
    and the number of records."""
    view = memoryview(data)
    starts = range(0, len(view), split)
    out = bytearray(len(view) + len(starts) * (RECORD_HEADER.size + TAG_LEN))
    at = 0
    with memoryview(out) as dest:      # each record sealed in place: the data is not copied on the way
        for count, start in enumerate(starts):
            chunk = view[start:start + split]
            header = RECORD_HEADER.pack((len(chunk) + TAG_LEN) | flag)
            dest[at:at + RECORD_HEADER.size] = header
            at += RECORD_HEADER.size
            crypto.seal_into(key, crypto.gcm_counter_nonce(first_counter + count), [chunk], header,
                             dest[at:at + len(chunk) + TAG_LEN])
            at += len(chunk) + TAG_LEN
    return out, len(starts)


def open_record(key: bytes, counter: int, record: bytes | memoryview) -> bytes:
    """The plaintext of one whole record (header included) sealed under ``key`` as record number ``counter``;
    a box record's plaintext is its frame, head and box."""
    (word,) = RECORD_HEADER.unpack_from(record)
    if word & KIND_FLAGS == KIND_FLAGS:
        return open_box_record(key, counter, record)
    header, body = bytes(record[:RECORD_HEADER.size]), memoryview(record)[RECORD_HEADER.size:]   # body: not copied
    try:
        return crypto.open_sealed(key, crypto.gcm_counter_nonce(counter), body, header)
    except CryptoError:
        raise FrameError("a link record failed authentication (altered, replayed or wrong relay key)") from None


def box_record_fits(frame: Frame, box_max: int | None) -> bool:
    """Whether ``frame`` may travel as a box record under the limit agreed in ``paired``: a long box the chat
    channel sealed end to end (:class:`BoxedFrame`), behind a head a ``u16`` can count."""
    return (box_max is not None and isinstance(frame, BoxedFrame) and frame.box_len >= CLEAR_BOX_MIN
            and frame.box_at <= MAX_BOX_HEAD and BOX_OVERHEAD + len(frame) <= box_max)


def seal_box_record(key: bytes, counter: int, frame: BoxedFrame) -> tuple[bytearray, memoryview]:
    """``frame`` as box record number ``counter`` under ``key``: ``u32 L|0xC0000000 ‖ u16 H ‖ AES-GCM(head) ‖
    tag ‖ box``, the box in clear but authenticated (associated data after the first six bytes). Returns the
    record's first part and the box, a view of ``frame`` (not copied) to be written right after it."""
    head_len = frame.box_at
    view = memoryview(frame)
    box = view[head_len:]
    first = bytearray(BOX_HEAD.size + head_len + TAG_LEN)
    BOX_HEAD.pack_into(first, 0, (BOX_OVERHEAD + len(frame)) | KIND_FLAGS, head_len)
    with memoryview(first) as dest:
        crypto.seal_into(key, crypto.gcm_counter_nonce(counter), [view[:head_len]], bytes(first[:BOX_HEAD.size]),
                         dest[BOX_HEAD.size:], aad_tail=box)
    return first, box


def open_box_record(key: bytes, counter: int, record: bytes | bytearray | memoryview) -> bytes:
    """The frame one whole box record carries (its head opened, its box authenticated), as one new ``bytes``."""
    head, box = _open_box(key, counter, memoryview(record))
    return head + box


def open_box_record_in_place(key: bytes, counter: int, record: bytearray) -> memoryview:
    """:func:`open_box_record` of a record in a buffer of its own: the opened head is written right before the
    box (over the sealed head and its tag, checked already) and the frame returned as a view — the box is not
    copied."""
    view = memoryview(record)
    head, box = _open_box(key, counter, view)
    start = len(view) - len(box) - len(head)
    view[start:start + len(head)] = head
    return view[start:]


def _open_box(key: bytes, counter: int, view: memoryview) -> tuple[bytes, memoryview]:
    _, head_len = BOX_HEAD.unpack_from(view)
    box_at = BOX_HEAD.size + head_len + TAG_LEN
    try:
        head = crypto.open_sealed(key, crypto.gcm_counter_nonce(counter), view[BOX_HEAD.size:box_at],
                                  bytes(view[:BOX_HEAD.size]), aad_tail=view[box_at:])
    except CryptoError:
        raise FrameError("a link record failed authentication (altered, replayed or wrong relay key)") from None
    return head, view[box_at:]


_BIN_HEADERS = ((0xC4, 1), (0xC5, 2), (0xC6, 4))        # msgpack's bin 8/16/32 markers and their length widths


def box_frame_ok(frame: bytes | memoryview, head_len: int) -> bool:
    """Whether the frame an opened box record carries is what one may carry (docs/relay.md): exactly one whole
    frame — its length prefix counts the head and the box, no more, no less — whose last field is the box (the
    head ends with the box's bin header)."""
    box_len = len(frame) - head_len
    if head_len <= HEADER.size or HEADER.unpack_from(frame)[0] != len(frame) - HEADER.size:
        return False
    return any(head_len > HEADER.size + width and frame[head_len - 1 - width] == marker
               and int.from_bytes(frame[head_len - width:head_len], "big") == box_len
               for marker, width in _BIN_HEADERS)


def record_payload_len(record: bytes | memoryview) -> int:
    """The bytes of the inner stream one whole pair or box record carries (what the relay counts)."""
    (word,) = RECORD_HEADER.unpack_from(record)
    overhead = RECORD_HEADER.size + (BOX_OVERHEAD if word & KIND_FLAGS == KIND_FLAGS else TAG_LEN)
    return max(0, len(record) - overhead)


class _Opener:
    """Sans-IO record splitter: feed ciphertext bytes, get ``(kind, bytes)`` in order — ``("link", plaintext)``
    for link records, and for pair records either ``("pair", plaintext)`` (a client holding the pair keys) or
    ``("pair", the whole record unopened)`` (the relay, which forwards them)."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0
        self._buf = bytearray()
        self.pair: PairKeys | None = None
        self.forward_pairs = False
        # A client's first pair record can arrive with ``paired``, before it set the pair keys (it waits, below);
        # a relay takes none before it forwards them (docs/relay.md: "a pair record outside a session ... ends
        # the connection"; spec review 2026-12-07: it waited for the login timeout instead).
        self.early_pairs = True
        self.box_max: int | None = None      # box records accepted, up to this L (None: refused)
        # A record longer than one read is read straight into a buffer of its own (``pending_view``).
        self._record: bytearray | None = None
        self._have = 0

    def pending_view(self) -> memoryview | None:
        """Where the next bytes of a long record go (read them into it, then call :meth:`filled`), or None:
        read any amount and :meth:`feed` it."""
        return None if self._record is None else memoryview(self._record)[self._have:]

    def filled(self, count: int) -> list[Piece]:
        """``count`` bytes were read into :meth:`pending_view`; what is complete now, as :meth:`feed`."""
        assert self._record is not None
        self._have += count
        if self._have < len(self._record):
            return []
        record, self._record = self._record, None
        out: list[Piece] = []
        with memoryview(record) as view:
            self._split(view, out, own=record)
        return out

    def feed(self, data: bytes) -> list[Piece]:
        # Records are opened where they lie: in ``data`` itself when nothing was left over from the last read
        # (the bytes of a relayed file are then copied only by the decryption), else in the buffer.
        out: list[Piece] = []
        if self._record is not None:       # the rest of a long record (pending_view reads it without this copy)
            take = min(len(data), len(self._record) - self._have)
            self._record[self._have:self._have + take] = memoryview(data)[:take]
            out = self.filled(take)
            data = data[take:]
            if not data:
                return out
        if self._buf:
            self._buf += data
            source: bytes | bytearray = self._buf
        else:
            source = data
        try:
            with memoryview(source) as view:
                used = self._split(view, out)
        except FrameError:
            self._buf = bytearray()
            raise
        rest = len(source) - used
        if rest >= BOX_HEAD.size and self._reads_alone(source, used, rest):
            self._record = bytearray(RECORD_HEADER.size + (RECORD_HEADER.unpack_from(source, used)[0] & ~KIND_FLAGS))
            self._record[:rest] = memoryview(source)[used:]
            self._have = rest
            self._buf = bytearray()
        elif source is self._buf:
            del self._buf[:used]
        else:
            self._buf = bytearray(data[used:])       # a partial record: kept until the rest arrives
        return out

    def _reads_alone(self, source: bytes | bytearray, at: int, rest: int) -> bool:
        """Whether the partial record at ``at`` (its header checked by ``_split``) is long enough to be read
        into a buffer of its own and can be opened (or forwarded) as soon as it is whole. Only in a relay session
        (pair keys set, or pair records forwarded): a buffer of a record's size is committed when its first six
        bytes arrive, which a connection that has not logged in and been paired must not be able to make the
        relay (or a client its relay) do — its records are buffered as their bytes arrive (:meth:`held`)."""
        (word,) = RECORD_HEADER.unpack_from(source, at)
        total = RECORD_HEADER.size + (word & ~KIND_FLAGS)
        in_session = self.pair is not None or self.forward_pairs
        return total >= LONG_RECORD and rest < total and in_session

    def held(self) -> int:
        """Bytes this opener holds for records not yet whole (its buffer, or a long record's own buffer)."""
        return len(self._buf) + (len(self._record) if self._record is not None else 0)

    def missing(self) -> int:
        """Bytes still to come of the record whose header is buffered (0: none is under way)."""
        if self._record is not None:
            return len(self._record) - self._have
        if len(self._buf) < RECORD_HEADER.size:
            return 0
        (word,) = RECORD_HEADER.unpack_from(self._buf)
        return max(0, RECORD_HEADER.size + (word & ~KIND_FLAGS) - len(self._buf))

    def _split(self, view: memoryview, out: list[Piece], own: bytearray | None = None) -> int:
        """Open (or, on the relay, copy for forwarding) every whole record in ``view``; returns the bytes used.
        ``own``: ``view`` is exactly one record in a buffer of its own, which is handed on instead of copied."""
        at = 0
        while len(view) - at >= RECORD_HEADER.size:
            (word,) = RECORD_HEADER.unpack_from(view, at)
            size = word & ~KIND_FLAGS
            box = word & KIND_FLAGS == KIND_FLAGS
            if box:
                if len(view) - at < BOX_HEAD.size:
                    break
                self._check_box(size, BOX_HEAD.unpack_from(view, at)[1])
            elif word & BOX_FLAG:
                raise FrameError("a link record announced a kind this program does not know")
            elif not TAG_LEN < size <= MAX_RECORD:
                raise FrameError(f"link record of {size} bytes is outside 17..{MAX_RECORD}")
            end = at + RECORD_HEADER.size + size
            if word & PAIR_FLAG and self.pair is None and not self.forward_pairs:
                # A session's first pair record can arrive with ``paired`` itself, before the client has set
                # the pair keys: it waits (with what follows, bounded) until they are set.
                if not self.early_pairs or len(view) - at > 2 * (RECORD_HEADER.size + MAX_RECORD):
                    raise FrameError("pair records arrived outside a relay session")
                break
            if len(view) < end:
                break
            if not word & PAIR_FLAG:
                out.append(("link", open_record(self._key, self._counter, view[at:end])))
                self._counter += 1
            elif self.forward_pairs:
                out.append((PAIR_TYPE, own if own is not None else bytes(view[at:end])))
            else:
                assert self.pair is not None
                opened: bytes | memoryview
                if box and own is not None:
                    opened = open_box_record_in_place(self.pair.recv_key, self.pair.received, own)
                else:
                    opened = open_record(self.pair.recv_key, self.pair.received, view[at:end])
                if box and not box_frame_ok(opened, BOX_HEAD.unpack_from(view, at)[1]):
                    raise FrameError("a box record did not carry exactly one frame ending with its box (the peer "
                                     "put something else in clear)")
                out.append((PAIR_TYPE, opened))
                self.pair.received += 1
            at = end
        return at

    def _check_box(self, size: int, head_len: int) -> None:
        """Refuse a box record that was not agreed, is over the agreed size, or whose parts do not add up."""
        if self.box_max is None:
            raise FrameError("a box record arrived, but this session did not agree on box records")
        if size > self.box_max:
            raise FrameError(f"box record of {size} bytes is over the agreed {self.box_max}")
        if head_len < 1 or BOX_OVERHEAD + head_len >= size:
            raise FrameError(f"box record of {size} bytes with a head of {head_len} bytes leaves no box")


class SecureSocket(FramedSocket):
    """A :class:`FramedSocket` whose frame stream travels in sealed link records (one per send, split at
    ``MAX_RECORD_PLAINTEXT``). Sealing and writing happen under one lock, so records leave in counter order.

    In a relay session the payloads travel in *pair records* instead (:meth:`send_pair`, received as
    ``Message("pair", payload=…)``): sealed by one client for the other under the session's pair keys, forwarded by
    the relay without opening them (:meth:`forward_pair_records`, :meth:`send_raw`)."""

    relay_key: bytes | None = None      # the relay's static key (client side)

    def __init__(self, sock: socket.socket, protocol: Protocol, *, timeout: float, send_key: bytes,
                 recv_key: bytes) -> None:
        super().__init__(sock, protocol, timeout=timeout)
        self._send_key = send_key
        self._send_counter = 0
        self._opener = _Opener(recv_key)

    def set_pair_keys(self, send_key: bytes, recv_key: bytes, max_payload: int, box_max: int | None = None) -> None:
        """Client side, once paired: payloads are sent (at most ``max_payload`` bytes a record) and received as
        pair records under these keys; with ``box_max``, long chat boxes as box records of at most that L."""
        self._opener.pair = PairKeys(send_key, recv_key, max_payload, box_max)
        self._opener.box_max = box_max
        self._take(b"")           # pair records that arrived before the keys

    @property
    def box_max(self) -> int | None:
        """Box records agreed for this session: their largest L (None: not agreed)."""
        return self._opener.box_max

    def forward_pair_records(self, box_max: int | None = None) -> None:
        """Relay side, before ``paired`` is sent: pair records (and, with ``box_max``, box records of at most that
        L) are received whole and unopened, for forwarding."""
        self._opener.forward_pairs = True
        self._opener.box_max = box_max

    def _seal(self, data: Frame | memoryview) -> bytearray:
        sealed, count = seal_records(self._send_key, self._send_counter, data)
        self._send_counter += count
        return sealed

    def _seal_pair(self, data: Frame | memoryview) -> list[memoryview]:
        """``data`` sealed for the peer, as the pieces to write in order: a box record (its first part, then the
        box itself) when ``data`` is a long box the session may leave unsealed, else pair records."""
        pair = self._opener.pair
        if pair is None:
            raise RuntimeError("pair records need the pair keys of a relay session")
        if isinstance(data, BoxedFrame) and box_record_fits(data, pair.box_max):
            first, box = seal_box_record(pair.send_key, pair.sent, data)
            pair.sent += 1
            return [memoryview(first), box]
        sealed, count = seal_records(pair.send_key, pair.sent, data, PAIR_FLAG, pair.split)
        pair.sent += count
        return [memoryview(sealed)]

    def send_frame(self, frame: Frame | memoryview) -> None:
        """Seal ``frame`` (any frame bytes, any number of frames) and send it."""
        if frame:
            with self._send_lock:
                self._write_all(memoryview(self._seal(frame)))

    def send_pair(self, data: Frame | memoryview) -> None:
        """Seal ``data`` (any slice of the inner byte stream) in pair records for the peer and send it (a long
        :class:`BoxedFrame` as a box record, when the session agreed on them)."""
        if len(data):
            with self._send_lock:
                for piece in self._seal_pair(data):
                    self._write_all(piece)

    def send_raw(self, sealed: bytes | bytearray | memoryview) -> None:
        """Write bytes already sealed (a tail :meth:`try_send_pair` left, or pair records the relay forwards)."""
        with self._send_lock:
            self._write_all(memoryview(sealed))

    def try_send_pair(self, data: Frame | memoryview) -> list[memoryview] | None:
        """Never waits: ``None`` when the socket has no room (nothing sealed, nothing taken); otherwise seals
        ``data`` for the peer (:meth:`send_pair`), writes what the socket takes and returns the sealed pieces it
        did not (``[]`` if none), which the caller must write with :meth:`send_raw` before anything else."""
        if not self._send_lock.acquire(blocking=False):
            return None
        try:
            if not _wait_ready(self.sock, write=True, timeout=0):
                return None
            pieces = self._seal_pair(data)
            while pieces:
                sent = _send_now(self.sock, pieces[0])
                if sent < len(pieces[0]):
                    pieces[0] = pieces[0][sent:]        # the tail, not a copy of it
                    break
                pieces.pop(0)
            return pieces
        except OSError as exc:
            raise PeerUnreachable(f"could not send to {self.peer_text}: {_os_reason(exc)}") from None
        finally:
            self._send_lock.release()

    def send_nowait(self, data: Frame | memoryview) -> int:
        raise NotImplementedError("use try_send_pair on an encrypted link: a partly written record must be finished")

    def recv(self, timeout: float | None = None) -> Message:
        if self._ready:
            return self._ready.pop(0)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._ready:
            target = self._opener.pending_view()
            if target is not None:
                # the rest of a long record, read where it will be opened or forwarded from: not copied again
                with target:
                    count = self._read_into(deadline, target)
                self._deliver(self._opener.filled(count))
            else:
                # a whole record (up to 256 KiB) per read where the socket holds it, not the framed socket's 64 KiB
                self._take(self._read_some(deadline, RECV_CHUNK))
        return self._ready.pop(0)

    def _take(self, data: bytes) -> None:
        self._deliver(self._opener.feed(data))

    def _deliver(self, chunks: list[Piece]) -> None:
        for kind, chunk in chunks:
            if kind == PAIR_TYPE:
                self._ready.append(Message(PAIR_TYPE, {"payload": chunk}))
            else:
                assert isinstance(chunk, bytes)          # a link record's plaintext
                self._ready.extend(self._reader.feed(chunk))
