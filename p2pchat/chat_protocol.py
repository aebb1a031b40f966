"""The chat wire protocol: codec schemas of every frame two chat peers exchange, and the byte layouts that the
handshake and the channel share (transcript encoding, sealed-frame header, padding).

Public API (used by :mod:`p2pchat.handshake`, :mod:`p2pchat.channel` and the IO layer :mod:`p2pchat.node`):

- ``CHAT`` — the :class:`~p2pchat.foundation.codec.Protocol` for chat connections. Build readers with
  ``CHAT.reader()``, frames with ``CHAT.encode(type, **fields)``; the peer-facing ``error`` frame is built in.
- ``SEALED_CONTENT`` — the protocol of the plaintext *inside* an encrypted ``sealed`` frame.
- ``Send(frame)`` — the one "put these bytes on the wire" event both protocol cores return.
- ``HANDSHAKE_TYPES`` / ``CHANNEL_TYPES`` — which frame types belong to which core.
- ``encode_features(names)`` — a ``features`` list as its transcript item (docs/protocol.md §3.5).
- constants: ``PROTOCOL_VERSION``, ``SUPPORTED_VERSIONS``, ``FEATURES`` (what this version announces in step 1),
  ``MAX_TEXT_BYTES``, ``MAX_FRAME``, ``MAX_BATCH_TEXTS``.

Frame types on a chat connection (field names as on the wire; see docs/protocol.md for the full spec):

======================  ============  =============================================================
type                    sent by       fields
======================  ============  =============================================================
``hello``               initiator     version, network, nickname, address,         (step 1)
                                      features (optional: what this node also speaks)
``welcome``             responder     version, network, nickname, address, features (step 1)
``decline``             responder     reason                                       (step 1)
``key``                 both          key (DER), nonce, ephemeral (X25519 half),   (step 2)
                                      final_height/hash, tip_height/hash (ledger)
``key_ok``              both          —  (my ledger check of your key passed)      (step 2)
``auth``                initiator     sig (over the transcript), ledgers (verdict) (step 3)
``auth_reply``          responder     sig, ledgers (sent only after ``auth`` verified) (step 3)
``auth_ok``             initiator     —  (your signature verified)                 (step 3)
``confirm``             initiator     confirm (key-confirmation tag)               (step 4)
``confirm_reply``       responder     confirm (key-confirmation tag)               (step 4)
``sealed``              both          epoch, counter, box                          (channel)
``error``               both          reason                                       (any time)
======================  ============  =============================================================
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from p2pchat.foundation import crypto
from p2pchat.foundation.codec import BODY_BUFFER, HEADER, BoxedFrame, Field, Frame, Message, Protocol, check_fields, opt
from p2pchat.foundation.errors import ProtocolError

PROTOCOL_VERSION = 2                     # 2: step 2 carries each side's ledger checkpoint and tip (cross-check)
SUPPORTED_VERSIONS: tuple[int, ...] = (2,)
# Optional abilities a node announces in step 1 (``features`` of hello/welcome, transcript-bound; protocol.md §3.1)
FEATURE_FILE_ROOT = "file-root"          # it checks a file offer's root (§5.7 "The file's digest")
FEATURES: tuple[str, ...] = (FEATURE_FILE_ROOT,)
MAX_FEATURES = 16                        # names in one features list
MAX_FEATURE_NAME = 32                    # characters of one name (≤ 128 bytes of UTF-8: its u8 length fits)

MAX_TEXT_BYTES = 1024 * 1024            # one chat message: up to 1 MiB of UTF-8
MAX_NICKNAME = 64
MAX_NETWORK = 64
MAX_ADDRESS = 64                         # "ip:port" / "[v6]:port"
MAX_REASON = 1000
MAX_KEY_DER = 2048                       # RSA-8192 SubjectPublicKeyInfo is ~1 100 bytes
MAX_SIGNATURE = 1024                     # RSA-8192
NONCE_LEN = 32                           # challenges (sent in step 2's `key` frames)
X25519_LEN = crypto.X25519_LEN
MAX_RECEIPT_IDS = 256                    # texts one cumulative delivery receipt may acknowledge
MAX_BATCH_TEXTS = 64                     # texts one sealed ``texts`` batch may carry
MAX_BATCH_TEXT_BYTES = 60 * 1024         # a sender batches texts up to this much UTF-8 (larger texts go alone)
TAG_LEN = 32                             # HMAC-SHA256 key-confirmation tags
MAX_ROTATE_EVERY = 1000                  # a sender rotates its key after at most this many texts per epoch
MAX_HEIGHT = 2**32 - 1                   # block heights in `key` frames (a u32 in the transcript)
VERDICTS = ("agree", "unknown", "conflict")   # step 3: the signer's verdict on the peer's ledger checkpoint
TRANSFER_ID_LEN = 16                     # a file transfer's number, drawn by its sender
BASE_CHUNK = 4 * 65536 - 128            # file data in one file_chunk to a receiver that announced no max_chunk
MAX_CHUNK = 16 * 65536 - 128            # the most this version takes (file_accept's max_chunk): pads to 1 MiB
PAD_ID_LEN = 16                          # one-time-pad mode (issue 17): a pad's id
PAD_FRAME_OVERHEAD = 8 + 16              # a pad frame's index (u64) and one-time Poly1305 tag
PAD_OPS = ("on?", "on!", "no", "off?", "off!")   # pad_mode ops: ask / accept pad mode, decline, ask / accept off

# --- padding buckets for sealed plaintext ----------------------------------------------------------------
PAD_BUCKETS: tuple[int, ...] = (256, 1024, 4096, 16384, 65536)
PAD_STEP = 65536                         # above the last bucket: the next multiple of 64 KiB
LENGTH_PREFIX = struct.Struct(">I")

# Largest padded plaintext: a 1 MiB text plus its msgpack envelope, rounded up to the next 64 KiB.
MAX_PLAINTEXT = MAX_TEXT_BYTES + 2 * PAD_STEP
MAX_BOX = MAX_PLAINTEXT + crypto.GCM_TAG_LEN
MAX_FRAME = 2 * 1024 * 1024              # a 1 MiB message fits in one frame with room to spare

MAX_GROUP_BODY = 1024 * 1024            # [groups, issue 18] one group frame (p2pchat.groups.GROUP_WIRE)

MAX_COUNTER = 2**64 - 1
MAX_EPOCH = 2**32 - 1


@dataclass(frozen=True)
class Send:
    """Put ``frame`` (complete, length-prefixed bytes) on the wire, in the order the events came."""

    frame: Frame


def _hello_fields() -> dict[str, Field]:
    return {
        "version": Field(int, lo=0, hi=65535),
        "network": Field(str, min_len=1, max_len=MAX_NETWORK),
        "nickname": Field(str, max_len=MAX_NICKNAME),
        "address": Field(str, max_len=MAX_ADDRESS),
        # absent: a node built before features existed (its transcript has no features items, §3.5)
        "features": opt(list, max_len=MAX_FEATURES, items=Field(str, min_len=1, max_len=MAX_FEATURE_NAME)),
    }


def _bytes(n: int) -> Field:
    return Field(bytes, min_len=n, max_len=n)


_SIG = Field(bytes, min_len=1, max_len=MAX_SIGNATURE)
_VERDICT = Field(str, min_len=1, max_len=8)      # one of VERDICTS (checked by the handshake)

_SEALED_HEAD = b"\x84\xa1t\xa6sealed\xa5epoch"        # msgpack: {"t": "sealed", "epoch": …
_COUNTER_KEY = b"\xa7counter"
_BOX_KEY = b"\xa3box"
_UINT_SIZES = {0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8}     # msgpack's unsigned integers after their marker byte
_BIN_SIZES = {0xc4: 1, 0xc5: 2, 0xc6: 4}               # msgpack's bin length fields after their marker byte


def _uint_at(body: bytearray | memoryview, at: int) -> tuple[int, int] | None:
    """(value, end) of the msgpack unsigned integer at ``at``; None when there is none."""
    if at >= len(body):
        return None
    marker = body[at]
    if marker < 0x80:
        return marker, at + 1
    size = _UINT_SIZES.get(marker)
    if size is None or at + 1 + size > len(body):
        return None
    return int.from_bytes(body[at + 1:at + 1 + size], "big"), at + 1 + size


def _last_bin_at(body: bytearray | memoryview, at: int) -> tuple[int, int] | None:
    """(start, length) of the msgpack bin whose header is at ``at`` when it ends exactly where ``body`` ends; None
    otherwise (another kind of value, a cut header, a length that lies)."""
    size = _BIN_SIZES.get(body[at]) if at < len(body) else None
    if size is None:
        return None
    start = at + 1 + size
    length = int.from_bytes(body[at + 1:start], "big")
    return (start, length) if start + length == len(body) else None


def _sealed_view(body: bytearray | memoryview) -> Message | None:
    """The ``sealed`` message of ``body`` with its box as a writable view into ``body``, when ``body`` holds
    exactly the map :func:`sealed_frame` writes (keys in that order, any msgpack width of the integers and the
    box length) and every value is within its schema; None for anything else, which the general decoder then
    reads (and accepts or refuses) as before."""
    if body[:len(_SEALED_HEAD)] != _SEALED_HEAD:
        return None
    epoch = _uint_at(body, len(_SEALED_HEAD))
    if epoch is None or body[epoch[1]:epoch[1] + len(_COUNTER_KEY)] != _COUNTER_KEY:
        return None
    counter = _uint_at(body, epoch[1] + len(_COUNTER_KEY))
    if counter is None or body[counter[1]:counter[1] + len(_BOX_KEY)] != _BOX_KEY:
        return None
    box = _last_bin_at(body, counter[1] + len(_BOX_KEY))
    if box is None:
        return None
    start, box_len = box
    if not crypto.GCM_TAG_LEN <= box_len <= MAX_BOX or epoch[0] > MAX_EPOCH or counter[0] > MAX_COUNTER:
        return None
    return Message("sealed", {"epoch": epoch[0], "counter": counter[0], "box": memoryview(body)[start:]})


# --- [file transfer, branch h-filedirect] a received file chunk's data stays where it was decrypted ----------------
_CHUNK_HEAD = b"\x84\xa1t\xaafile_chunk\xa2id\xc4\x10"      # msgpack: {"t": "file_chunk", "id": <bin 16>
_OFFSET_KEY = b"\xa6offset"
_DATA_KEY = b"\xa4data"


def _file_chunk_view(body: memoryview) -> Message | None:
    """The ``file_chunk`` message of ``body`` (a padded inner message's body, :func:`unpad`) with its ``data`` as a
    view into ``body``, when ``body`` holds exactly the map a sender encodes (keys in that order, any msgpack width
    of the offset and the data's length) and every value is within its schema; None for anything else, which the
    general decoder then reads (and accepts or refuses) as before. A megabyte of file data is then not copied out
    by msgpack on its way to the disk."""
    head = len(_CHUNK_HEAD)
    if body[:head] != _CHUNK_HEAD or body[head + TRANSFER_ID_LEN:head + TRANSFER_ID_LEN + len(_OFFSET_KEY)] != \
            _OFFSET_KEY:
        return None
    offset = _uint_at(body, head + TRANSFER_ID_LEN + len(_OFFSET_KEY))
    if offset is None or body[offset[1]:offset[1] + len(_DATA_KEY)] != _DATA_KEY:
        return None
    data = _last_bin_at(body, offset[1] + len(_DATA_KEY))
    if data is None:
        return None
    start, data_len = data
    if not 1 <= data_len <= MAX_CHUNK or offset[0] > 2**63 - 1:
        return None
    return Message("file_chunk", {"id": bytes(body[head:head + TRANSFER_ID_LEN]), "offset": offset[0],
                                  "data": body[start:]})


def decode_inner(body: memoryview) -> Message:
    """``SEALED_CONTENT.decode(body)``, except that a ``file_chunk``'s data is a view into ``body``
    (:func:`_file_chunk_view`): the same messages, values and errors."""
    chunk = _file_chunk_view(body) if len(body) <= SEALED_CONTENT.max_frame else None
    return chunk if chunk is not None else SEALED_CONTENT.decode(body)
# --- end of the file chunk view ----------------------------------------------------------------------------------


class _ChatProtocol(Protocol):
    def decode_buffer(self, body: bytearray | memoryview) -> Message:
        """A ``sealed`` frame's box stays where it arrived (a writable view the channel decrypts in place,
        :func:`p2pchat.foundation.crypto.open_in_place`), instead of being copied out by msgpack; every other
        frame, and a sealed frame in any other layout, is decoded as usual."""
        sealed = _sealed_view(body) if len(body) <= self.max_frame else None
        return sealed if sealed is not None else self.decode(body)


CHAT = _ChatProtocol("chat", {
    # step 1 — Connect
    "hello": _hello_fields(),
    "welcome": _hello_fields(),
    "decline": {"reason": Field(str, max_len=MAX_REASON)},
    # step 2 — Swap public keys
    "key": {"key": Field(bytes, min_len=1, max_len=MAX_KEY_DER), "nonce": _bytes(NONCE_LEN),
            "ephemeral": _bytes(X25519_LEN),
            # the sender's ledger: its newest final block and its tip (all zero: no ledger view)
            "final_height": Field(int, lo=0, hi=MAX_HEIGHT), "final_hash": _bytes(32),
            "tip_height": Field(int, lo=0, hi=MAX_HEIGHT), "tip_hash": _bytes(32)},
    "key_ok": {},
    # step 3 — Authenticate
    "auth": {"ledgers": _VERDICT, "sig": _SIG},           # the signature last: it ends the frame
    "auth_reply": {"ledgers": _VERDICT, "sig": _SIG},
    "auth_ok": {},
    # step 4 — Agree AES key
    "confirm": {"confirm": _bytes(TAG_LEN)},
    "confirm_reply": {"confirm": _bytes(TAG_LEN)},
    # after the handshake: everything travels sealed
    "sealed": {
        "epoch": Field(int, lo=0, hi=MAX_EPOCH),
        "counter": Field(int, lo=0, hi=MAX_COUNTER),
        "box": Field(bytes, min_len=crypto.GCM_TAG_LEN, max_len=MAX_BOX),
    },
}, max_frame=MAX_FRAME, bounded_shape=True)

# The shared-secret check's sealed messages (p2pchat/smp.py owns their meaning; smp1 also carries the question).
SMP_ELEMENT_LEN = 384                    # a 3072-bit group element or exponent, big-endian
SMP_HASH_LEN = 32                        # a proof's SHA-256 challenge
SMP_MAX_QUESTION = 200                   # characters
SMP_CHALLENGES = frozenset({"c2", "c3", "cp", "cr"})
SMP_FIELDS: dict[str, tuple[str, ...]] = {
    "smp1": ("g2a", "c2", "d2", "g3a", "c3", "d3"),
    "smp2": ("g2b", "c2", "d2", "g3b", "c3", "d3", "pb", "qb", "cp", "d5", "d6"),
    "smp3": ("pa", "qa", "cp", "d5", "d6", "ra", "cr", "d7"),
    "smp4": ("rb", "cr", "d7"),
}
SMP_KINDS = frozenset({*SMP_FIELDS, "smp_abort"})


def _smp_schema(kind: str) -> dict[str, Field]:
    schema = {name: _bytes(SMP_HASH_LEN if name in SMP_CHALLENGES else SMP_ELEMENT_LEN) for name in SMP_FIELDS[kind]}
    if kind == "smp1":
        schema["question"] = Field(str, max_len=SMP_MAX_QUESTION)
    return schema


HANDSHAKE_TYPES = frozenset({"hello", "welcome", "decline", "key", "key_ok", "auth", "auth_reply", "auth_ok",
                             "confirm", "confirm_reply"})
CHANNEL_TYPES = frozenset({"sealed"})

# What travels inside a sealed frame (after decryption and unpadding). Same codec, its own schema set.
SEALED_CONTENT = Protocol("chat-sealed", {
    "text": {
        "id": Field(int, lo=1, hi=2**63 - 1),
        "sent_at": Field(float),
        "text": Field(str, max_len=MAX_TEXT_BYTES),
    },
    # several texts in one sealed frame: entries [id, sent_at, text] (their types are checked by the channel)
    "texts": {"texts": Field(list, min_len=1, max_len=MAX_BATCH_TEXTS, items=Field(list, min_len=3, max_len=3))},
    "receipt": {"ids": Field(list, min_len=1, max_len=MAX_RECEIPT_IDS, items=Field(int, lo=1, hi=2**63 - 1))},
    "typing": {"on": Field(bool)},
    "rotate": {"epoch": Field(int, lo=1, hi=MAX_EPOCH), "pub": _bytes(X25519_LEN)},
    "rotate_ack": {"epoch": Field(int, lo=1, hi=MAX_EPOCH), "pub": _bytes(X25519_LEN)},
    "goodbye": {"reason": Field(str, max_len=MAX_REASON)},
    # file transfer (docs/protocol.md §5.7; the state machine is p2pchat.transfer)
    # [file digest, issue 16] an offer carries `sha256` or `root` (or both; transfer.offer_digest), and a
    # file_accept's `root: true` says the receiver checks roots
    "file_offer": {"id": _bytes(TRANSFER_ID_LEN), "name": Field(str, min_len=1, max_len=255),
                   "size": Field(int, lo=0, hi=2**63 - 1), "sha256": opt(bytes, min_len=32, max_len=32),
                   "root": opt(bytes, min_len=32, max_len=32)},
    "file_accept": {"id": _bytes(TRANSFER_ID_LEN), "offset": Field(int, lo=0, hi=2**63 - 1),
                    "max_chunk": opt(int, lo=BASE_CHUNK, hi=2**31 - 1), "root": opt(bool)},
    "file_decline": {"id": _bytes(TRANSFER_ID_LEN), "reason": Field(str, max_len=MAX_REASON)},
    "file_chunk": {"id": _bytes(TRANSFER_ID_LEN), "offset": Field(int, lo=0, hi=2**63 - 1),
                   "data": Field(bytes, min_len=1, max_len=MAX_CHUNK)},
    "file_ack": {"id": _bytes(TRANSFER_ID_LEN), "offset": Field(int, lo=0, hi=2**63 - 1)},
    "file_cancel": {"id": _bytes(TRANSFER_ID_LEN), "reason": Field(str, max_len=MAX_REASON)},
    "file_done": {"id": _bytes(TRANSFER_ID_LEN)},
    # --- the shared-secret check (p2pchat/smp.py, docs/protocol.md "Shared-secret check") ---
    **{kind: _smp_schema(kind) for kind in SMP_FIELDS},
    "smp_abort": {},
    # --- end of the shared-secret check ---
    # --- one-time-pad mode (issue 17, docs/protocol.md "One-time-pad mode") ---
    "pad_mode": {"op": Field(str, min_len=2, max_len=4), "pad_id": _bytes(PAD_ID_LEN)},
    "pad_text": {"id": Field(int, lo=1, hi=2**63 - 1), "sent_at": Field(float),
                 "box": Field(bytes, min_len=PAD_FRAME_OVERHEAD, max_len=MAX_TEXT_BYTES + PAD_FRAME_OVERHEAD)},
    # [groups, issue 18] a group frame; its body is checked by p2pchat.groups (docs/groups.md)
    "group": {"body": Field(bytes, min_len=1, max_len=MAX_GROUP_BODY)},
}, max_frame=MAX_PLAINTEXT, bounded_shape=True)
FILE_TYPES = frozenset({"file_offer", "file_accept", "file_decline", "file_chunk", "file_ack", "file_cancel",
                        "file_done"})


# --- transcript ------------------------------------------------------------------------------------------

TRANSCRIPT_LABEL = b"p2pchat/chat-transcript/v1"


class Transcript:
    """The ordered, labelled record of a handshake that both sides hash and sign.

    Items are appended in a fixed order defined by the protocol (not the order frames happened to arrive).
    Encoding: ``TRANSCRIPT_LABEL`` then, per item, ``u8 len(label) | label | u32 len(value) | value``;
    the hash is SHA-256 of that byte string.
    """

    def __init__(self) -> None:
        self._items: list[tuple[str, bytes]] = []

    def add(self, label: str, value: bytes | str | int) -> None:
        self._items.append((label, encode_item(value)))

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self._items]

    def encoded(self) -> bytes:
        out = bytearray(TRANSCRIPT_LABEL)
        for label, value in self._items:
            raw = label.encode()
            out += bytes([len(raw)]) + raw + LENGTH_PREFIX.pack(len(value)) + value
        return bytes(out)

    def digest(self) -> bytes:
        return crypto.sha256(self.encoded())


def encode_features(names: tuple[str, ...] | list[str]) -> bytes:
    """A ``features`` list as one transcript value: ``u8 len | name`` (UTF-8) per name, in the order sent."""
    out = bytearray()
    for name in names:
        raw = name.encode()
        out += bytes([len(raw)]) + raw
    return bytes(out)


def encode_item(value: bytes | str | int) -> bytes:
    """Transcript value encoding: bytes as is, text as UTF-8, integers as 4-byte big-endian."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32:
        return struct.pack(">I", value)
    raise TypeError(f"cannot put {type(value).__name__} in a transcript")


# --- sealed frames: header, nonce, padding ------------------------------------------------------------------

SEALED_AAD_LABEL = b"p2pchat/sealed/v1\x00"
DIRECTION_I2R = b"i2r"
DIRECTION_R2I = b"r2i"
_AAD_TAIL = struct.Struct(">IQ")
_NONCE_PREFIX = b"\x00\x00\x00\x00"


def sealed_aad(session_id: bytes, direction: bytes, epoch: int, counter: int) -> bytes:
    """Authenticated header of a sealed frame: label (frame kind + version) | session id (the handshake
    transcript hash, 32 B) | direction (``i2r``/``r2i``) | epoch (u32) | counter (u64)."""
    return SEALED_AAD_LABEL + session_id + direction + _AAD_TAIL.pack(epoch, counter)


def sealed_nonce(counter: int) -> bytes:
    """96-bit GCM nonce: four zero bytes then the 64-bit big-endian per-direction counter.

    Every (direction, epoch) pair has its own key and the counter never repeats within a direction, so no
    (key, nonce) pair ever repeats; the layout is the same for every direction and epoch."""
    return _NONCE_PREFIX + counter.to_bytes(8, "big")


def sealed_frame(epoch: int, counter: int, box_len: int) -> tuple[BoxedFrame, int]:
    """A ``sealed`` frame (length prefix included) whose ``box`` of ``box_len`` bytes is still to be written,
    and where the box starts: byte for byte ``CHAT.encode("sealed", epoch=…, counter=…, box=…)``, so a large
    box is sealed in place (:func:`p2pchat.foundation.crypto.seal_into`) into the frame that is then written."""
    if not crypto.GCM_TAG_LEN <= box_len <= MAX_BOX:
        raise ValueError(f"a sealed box is {crypto.GCM_TAG_LEN} to {MAX_BOX} bytes")
    if box_len > BODY_BUFFER:
        from p2pchat.foundation.allocator import keep_freed_buffers  # (ctypes: not at start-up)

        keep_freed_buffers()     # a stream of large frames reuses the heap's pages instead of mapping fresh ones
    # the same map with a 16-byte box (bin 8: c4 10 + 16 bytes), its box header replaced by box_len's
    small = CHAT.encode_body("sealed", epoch=epoch, counter=counter, box=bytes(crypto.GCM_TAG_LEN))
    head = small[:-2 - crypto.GCM_TAG_LEN] + _bin_header(box_len)
    frame = BoxedFrame(HEADER.size + len(head) + box_len, HEADER.size + len(head))
    HEADER.pack_into(frame, 0, len(head) + box_len)
    frame[HEADER.size:HEADER.size + len(head)] = head
    return frame, HEADER.size + len(head)


def _sized_header(markers: bytes, n: int) -> bytes:
    """msgpack's header of a bin or str of ``n`` bytes: the marker of the shortest of its 8-, 16- and 32-bit
    length forms (``markers``, in that order), then the length, as msgpack packs it."""
    for marker, width in zip(markers, (1, 2, 4), strict=True):
        if n < 1 << 8 * width:
            return bytes((marker,)) + n.to_bytes(width, "big")
    raise ValueError("msgpack sizes are below 2**32")


def _bin_header(n: int) -> bytes:
    return _sized_header(b"\xc4\xc5\xc6", n)


def _str_header(n: int) -> bytes:
    """(``n`` >= 32: shorter strings have a one-byte form.)"""
    return _sized_header(b"\xd9\xda\xdb", n)


def padded_size(n: int) -> int:
    """The bucket a plaintext of ``n`` bytes (length prefix included) is padded up to."""
    for bucket in PAD_BUCKETS:
        if n <= bucket:
            return bucket
    return -(-n // PAD_STEP) * PAD_STEP


BIG_FIELD = 4096            # a bytes field this long, last in its message, is sealed from where it lies
_ZEROS = bytes(PAD_STEP)
_ZERO_VIEW = memoryview(_ZEROS)     # padding is a view of it: slicing the bytes would copy up to 64 KiB


def padded_parts(type_: str, **fields: Any) -> list[bytes | memoryview]:
    """``pad(SEALED_CONTENT.encode_body(type_, **fields))`` as parts to seal one after the other: a large
    bytes field that ends the message (a file chunk's ``data``) is one part of its own, never copied, and a large
    text field that ends it (a long text's ``text``) is one part of its own, its UTF-8 made in one pass (msgpack
    would copy it twice more: into its buffer, then out)."""
    schema = SEALED_CONTENT.messages.get(type_, {})
    last = list(schema)[-1] if schema else ""
    big = fields.get(last)
    if isinstance(big, str) and len(big) >= BIG_FIELD:
        check_fields(fields, schema, f"outgoing {type_!r}")
        big = big.encode("utf-8")
        # the same message with an empty text (fixstr a0), its str header replaced by the real one
        head = SEALED_CONTENT.encode_body(type_, **{**fields, last: ""})[:-1] + _str_header(len(big))
    elif isinstance(big, bytes) and len(big) >= BIG_FIELD:
        check_fields(fields, schema, f"outgoing {type_!r}")      # the real value's type and length, not copied
        # the same message with a one-byte placeholder (bin 8: c4 01 00), its bin header replaced by the real one
        head = SEALED_CONTENT.encode_body(type_, **{**fields, last: b"\0"})[:-3] + _bin_header(len(big))
    else:
        body = SEALED_CONTENT.encode_body(type_, **fields)
        if len(body) < BIG_FIELD:
            return [pad(body)]
        # a large packed body (a batch of texts): sealed where it lies, not joined into a padded copy first
        n = LENGTH_PREFIX.size + len(body)
        zeros = padded_size(n) - n
        return [LENGTH_PREFIX.pack(len(body)), body, *([_ZERO_VIEW[:zeros]] if zeros else [])]
    body_len = len(head) + len(big)
    n = LENGTH_PREFIX.size + body_len
    zeros = padded_size(n) - n
    return [LENGTH_PREFIX.pack(body_len) + head, big, *([_ZERO_VIEW[:zeros]] if zeros else [])]


def pad(body: bytes) -> bytes:
    """``u32 len(body) | body | zero bytes`` up to the bucket size."""
    n = LENGTH_PREFIX.size + len(body)
    return b"".join((LENGTH_PREFIX.pack(len(body)), body, bytes(padded_size(n) - n)))   # one copy of the body


def unpad(plain: bytes | memoryview) -> memoryview:
    """Inverse of :func:`pad` (a view into ``plain``, not a copy); refuses a wrong length or non-zero padding."""
    if len(plain) < LENGTH_PREFIX.size:
        raise ProtocolError("sealed message is too short to hold its length")
    (n,) = LENGTH_PREFIX.unpack_from(plain)
    end = LENGTH_PREFIX.size + n
    if end > len(plain):
        raise ProtocolError("sealed message's length is larger than the message")
    if len(plain) != padded_size(end):
        raise ProtocolError("sealed message is not padded to its size bucket")
    view = memoryview(plain)
    if not _ZEROS.startswith(view[end:]):     # one memcmp (the padding is shorter than PAD_STEP)
        raise ProtocolError("sealed message's padding is not zero")
    return view[LENGTH_PREFIX.size:end]


__all__ = [
    "CHANNEL_TYPES", "CHAT", "FEATURES", "FEATURE_FILE_ROOT", "FILE_TYPES", "HANDSHAKE_TYPES", "MAX_BATCH_TEXTS",
    "MAX_BATCH_TEXT_BYTES", "MAX_FRAME", "MAX_HEIGHT", "MAX_RECEIPT_IDS", "MAX_ROTATE_EVERY", "MAX_TEXT_BYTES",
    "PAD_BUCKETS", "PROTOCOL_VERSION", "SEALED_CONTENT", "SUPPORTED_VERSIONS", "VERDICTS", "Send", "Transcript",
    "encode_features", "pad", "padded_size", "sealed_aad", "sealed_nonce", "unpad",
]
