"""One-time pads (issue 17): making, importing and spending a pad shared in person, and the pad cipher.

A pad is two halves of OS randomness, one per direction. The owner of the lower key fingerprint (compared as
bytes) encrypts with half ``a`` and decrypts with half ``b``; the other side the reverse. Each half is spent from
its start upwards, never twice.

Files of a pad directory (``pad new`` writes two identical ones, ``mine`` and ``peer``; ``pad import`` copies
one into ``<data dir>/pads/<peer fingerprint hex>/``, every file mode 0600):

- ``pad.json`` — ``{"format": 1, "pad_id": hex16, "fingerprints": [low hex, high hex], "half_size": N,
  "sha256": {"a": hex, "b": hex}}``
- ``a.bin``, ``b.bin`` — the two halves, ``half_size`` bytes each
- ``lock`` (data directory only) — locked (``flock``) while a process spends the pad
- ``used.json`` (data directory only) — ``{"pad_id": hex, "sent": S, "received": R}``: bytes ``[0, S)`` of our
  sending half and ``[0, R)`` of the peer's are spent. It is replaced (write to a temporary file, fsync, rename,
  fsync the directory) BEFORE a frame using the bytes leaves and before a received text is shown.

Pad frame (inside the AES-GCM channel, see docs/protocol.md): ``index (u64, offset in the sender's half) ||
ciphertext || tag (16)``. At ``index`` the sender's half gives ``r || s`` (32 bytes, a one-time Poly1305 key) then
``len(text)`` bytes XORed with the UTF-8 text. ``tag = Poly1305(r, s, LABEL || index || ciphertext)``.
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:          # Windows: one process per data directory is assumed there
    fcntl = None  # type: ignore[assignment]

from p2pchat.foundation import crypto
from p2pchat.foundation.datadir import exposure_problem, replace_file
from p2pchat.foundation.errors import UserError

FORMAT = 1
PAD_ID_LEN = 16
MAC_KEY_LEN = 32                     # Poly1305 r || s, fresh pad bytes per message
TAG_LEN = 16
INDEX = struct.Struct(">Q")
OVERHEAD = INDEX.size + TAG_LEN
MAC_LABEL = b"p2pchat/pad-text/v1\x00"
META, HALF_A, HALF_B, USED, LOCK = "pad.json", "a.bin", "b.bin", "used.json", "lock"
MIN_HALF = 1024
MAX_SIZE = 1 << 40
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgKMG]?)i?[bB]?\s*$")
_CHUNK = 1 << 20


class PadError(UserError):
    """A pad cannot be made, imported or used (plain words for the user)."""


class PadExhausted(PadError):
    """Our sending half has too few bytes left for a message."""


class PadRefused(PadError):
    """A pad frame from the peer was refused (tampered, replayed, out of range)."""


def parse_size(text: str) -> int:
    """``64M``, ``512k``, ``1G`` or a byte count → bytes (binary units)."""
    m = _SIZE.match(text)
    if m is None:
        raise PadError(f"cannot read the pad size {text!r}: give a number with an optional k, M or G")
    n = int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    if not 2 * MIN_HALF <= n <= MAX_SIZE:
        raise PadError(f"a pad must hold between {2 * MIN_HALF} bytes and 1 TiB")
    return n


def _is_hex(value: object, n: int) -> bool:
    return isinstance(value, str) and re.fullmatch(f"[0-9a-f]{{{2 * n}}}", value) is not None


def _meta_problem(raw: object) -> str:
    """What is wrong with a parsed pad.json, in plain words ("" when nothing)."""
    if not isinstance(raw, dict):
        return "it is not a JSON object"
    half, fps, sha = raw.get("half_size"), raw.get("fingerprints"), raw.get("sha256")
    if type(raw.get("format")) is not int or raw["format"] != FORMAT:
        return f"its format is not {FORMAT}"
    if not _is_hex(raw.get("pad_id"), PAD_ID_LEN):
        return f"pad_id is not {2 * PAD_ID_LEN} lower-case hex digits"
    if not (isinstance(fps, list) and len(fps) == 2 and all(_is_hex(f, 32) for f in fps)):
        return "fingerprints is not a list of two fingerprints of 64 lower-case hex digits"
    if not fps[0] < fps[1]:
        return "the fingerprints are not listed lower first"
    if not isinstance(half, int) or isinstance(half, bool) or not MIN_HALF <= half <= MAX_SIZE // 2:
        return f"half_size is not a whole number of bytes from {MIN_HALF} to {MAX_SIZE // 2}"
    if not (isinstance(sha, dict) and _is_hex(sha.get("a"), 32) and _is_hex(sha.get("b"), 32)):
        return "sha256 does not hold the SHA-256 of a and b in lower-case hex"
    return ""


@dataclass(frozen=True)
class PadMeta:
    pad_id: bytes
    low: bytes             # the lower of the two fingerprints: sends with half a
    high: bytes
    half_size: int
    sha_a: bytes
    sha_b: bytes

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "pad_id": self.pad_id.hex(), "fingerprints": [self.low.hex(),
                           self.high.hex()], "half_size": self.half_size,
                           "sha256": {"a": self.sha_a.hex(), "b": self.sha_b.hex()}}, indent=1)

    @classmethod
    def load(cls, directory: Path) -> PadMeta:
        """The description, checked exactly as protocol.md §5.9 states it (each fault named)."""
        try:
            raw = json.loads((directory / META).read_text())
            problem = _meta_problem(raw)
        except FileNotFoundError:
            raise PadError(f"{directory} holds no pad ({META} is missing)") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise PadError(f"{directory / META} is not a pad description ({exc})") from None
        if problem:
            raise PadError(f"{directory / META} is not a valid pad description: {problem}")
        low, high = (bytes.fromhex(x) for x in raw["fingerprints"])
        return cls(bytes.fromhex(raw["pad_id"]), low, high, raw["half_size"], bytes.fromhex(raw["sha256"]["a"]),
                   bytes.fromhex(raw["sha256"]["b"]))

    def peer_of(self, me: bytes) -> bytes:
        if me == self.low:
            return self.high
        if me == self.high:
            return self.low
        raise PadError("this pad was made for two other keys, not yours")

    def halves(self, me: bytes) -> tuple[str, str]:
        """(the file we send with, the file the peer sends with)."""
        self.peer_of(me)
        return (HALF_A, HALF_B) if me == self.low else (HALF_B, HALF_A)


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that after a crash at any point ``path`` holds either the old or the new
    content: temporary file, fsync, rename over (foundation ``datadir.replace_file``), fsync the directory. A write
    the disk cannot take is a :class:`PadError` and leaves the old record: the bytes it would have spent are
    neither sent nor shown."""
    replace_file(path, data, lambda reason: PadError(f"could not write {path}: {reason}; the pad bytes it would "
                                                     "have recorded as spent were not used"))
    _fsync_dir(path.parent)


def _write_half(path: Path, size: int) -> bytes:
    """``size`` bytes of OS randomness into ``path`` (0600); returns their SHA-256."""
    h = crypto.sha256_stream()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        left = size
        while left:
            chunk = crypto.random_bytes(min(left, _CHUNK))
            h.update(chunk)
            os.write(fd, chunk)
            left -= len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    return h.digest()


def _hash_file(path: Path) -> tuple[bytes, int]:
    h = crypto.sha256_stream()
    n = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.digest(), n


def create_pad(me: bytes, peer: bytes, size: int, out: Path) -> tuple[PadMeta, Path, Path]:
    """Make a pad of ``size`` bytes (two halves) for ``me`` and ``peer`` (32-byte fingerprints) in ``out/mine``
    and an identical copy in ``out/peer``; returns the description and both directories."""
    if me == peer:
        raise PadError("a pad is shared by two different keys")
    mine, theirs = out / "mine", out / "peer"
    for d in (mine, theirs):
        if d.exists() and any(d.iterdir()):
            raise PadError(f"{d} is not empty: choose another --out directory (a pad is never overwritten)")
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    half = size // 2
    sha_a = _write_half(mine / HALF_A, half)
    sha_b = _write_half(mine / HALF_B, half)
    low, high = sorted((me, peer))
    meta = PadMeta(crypto.random_bytes(PAD_ID_LEN), low, high, half, sha_a, sha_b)
    _write_file(mine / META, meta.to_json().encode())
    for name in (HALF_A, HALF_B, META):
        _copy(mine / name, theirs / name)
    _fsync_dir(mine)
    _fsync_dir(theirs)
    return meta, mine, theirs


def _copy(src: Path, dst: Path) -> None:
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with src.open("rb") as f:
            while chunk := f.read(_CHUNK):
                os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)


def pads_dir(data_dir: Path) -> Path:
    return data_dir / "pads"


def import_pad(src: Path, data_dir: Path, me: bytes) -> PadMeta:
    """Check the pad in ``src`` (its hashes, that it is for ``me``) and install it for its other key. A pad with
    the same id already installed is refused (importing it again would reset what was spent)."""
    meta = PadMeta.load(src)
    peer = meta.peer_of(me)
    for name, want in ((HALF_A, meta.sha_a), (HALF_B, meta.sha_b)):
        got, n = _hash_file(src / name) if (src / name).exists() else (b"", -1)
        if n != meta.half_size or not crypto.constant_time_equal(got, want):
            raise PadError(f"{src / name} is damaged or missing (its SHA-256 or size differs from {META}); "
                           "the pad was not imported")
    dest = pads_dir(data_dir) / peer.hex()
    if (dest / META).exists():
        old = PadMeta.load(dest)
        if old.pad_id == meta.pad_id:
            raise PadError("this pad is already imported; importing it again would reuse spent bytes")
        raise PadError("another pad is installed for this contact; remove "
                       f"{dest} first (its unspent bytes are lost)")
    pads_dir(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    dest.mkdir(mode=0o700, exist_ok=True)
    for name in (HALF_A, HALF_B):
        _copy(src / name, dest / name)
    replace_durably(dest / USED, _used_json(meta.pad_id, 0, 0))
    _write_file(dest / META, meta.to_json().encode())     # last: a pad is installed once its description is
    _fsync_dir(dest)
    return meta


def _used_json(pad_id: bytes, sent: int, received: int) -> bytes:
    return json.dumps({"pad_id": pad_id.hex(), "sent": sent, "received": received}).encode()


def find_pad(data_dir: Path, peer: bytes) -> Path | None:
    d = pads_dir(data_dir) / peer.hex()
    return d if (d / META).exists() else None


@dataclass(frozen=True)
class PadStatus:
    pad_id: bytes
    send_left: int
    recv_left: int
    half_size: int


class Pad:
    """An installed pad of one contact: spends bytes and seals/opens pad frames. Safe to share between threads,
    and between processes using the same data directory (a ``p2pchat listen`` and a ``p2pchat chat``): every
    spend re-reads the record under an exclusive lock of the pad's directory, so two users of one pad never get
    the same bytes."""

    def __init__(self, directory: Path, me: bytes) -> None:
        self.dir = directory
        self.meta = PadMeta.load(directory)
        self.peer = self.meta.peer_of(me)
        send_name, recv_name = self.meta.halves(me)
        self._send_path, self._recv_path = directory / send_name, directory / recv_name
        for half in (self._send_path, self._recv_path):
            try:
                exposed = exposure_problem(half.stat(), half)
            except FileNotFoundError:
                continue            # reported in its own words when the half is read
            if exposed is not None:     # pad bytes others could read are no longer secret: not used
                raise PadError(f"the pad half {half} {exposed}")
        self._thread_lock = threading.Lock()
        self.sent, self.received = self._load_used()

    def _load_used(self) -> tuple[int, int]:
        path = self.dir / USED
        try:
            raw = json.loads(path.read_text())
            sent, received = int(raw["sent"]), int(raw["received"])
            ok = raw["pad_id"] == self.meta.pad_id.hex() and 0 <= sent <= self.meta.half_size \
                and 0 <= received <= self.meta.half_size
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PadError(f"the record of spent pad bytes ({path}) is unreadable ({exc}); the pad is not used, "
                           "so that no byte can be reused") from None
        if not ok:
            raise PadError(f"{path} does not belong to this pad; it is not used")
        return sent, received

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """This thread and process alone spend the pad; the record is re-read (another process may have spent)."""
        with self._thread_lock:
            fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                self.sent, self.received = self._load_used()
                yield
            finally:
                os.close(fd)       # releases the flock

    @classmethod
    def open(cls, data_dir: Path, me: bytes, peer: bytes) -> Pad | None:
        d = find_pad(data_dir, peer)
        return None if d is None else cls(d, me)

    @property
    def pad_id(self) -> bytes:
        return self.meta.pad_id

    def status(self) -> PadStatus:
        """Bytes left each way, as recorded on disk now (another process may have spent some)."""
        with self._exclusive():
            return PadStatus(self.pad_id, self.send_left, self.meta.half_size - self.received, self.meta.half_size)

    @property
    def send_left(self) -> int:
        """Text bytes the next message may still carry (0: used up)."""
        return max(0, self.meta.half_size - self.sent - MAC_KEY_LEN)

    def _record(self, sent: int, received: int) -> None:
        replace_durably(self.dir / USED, _used_json(self.pad_id, sent, received))
        self.sent, self.received = sent, received

    def _read(self, path: Path, offset: int, n: int) -> bytes:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read(n)
        if len(data) != n:
            raise PadError(f"{path} is shorter than its description says; the pad is damaged")
        return data

    def seal(self, text: str) -> bytes:
        """Spend pad bytes for ``text`` (recorded on disk first) and return its pad frame."""
        data = text.encode("utf-8", "surrogatepass")
        need = MAC_KEY_LEN + len(data)
        with self._exclusive():
            index = self.sent
            if index + need > self.meta.half_size:
                raise PadExhausted(f"the one-time pad is used up in your direction ({self.send_left:,} bytes "
                                   f"left, this message needs {len(data):,}); nothing was sent. To go on, both "
                                   "of you must agree to fall back to AES only (/pad off)")
            self._record(index + need, self.received)     # on disk BEFORE the bytes are used
        stream = self._read(self._send_path, index, need)
        ciphertext = _xor(data, stream[MAC_KEY_LEN:])
        head = INDEX.pack(index)
        return head + ciphertext + poly1305(stream[:MAC_KEY_LEN], MAC_LABEL + head + ciphertext)

    def open_frame(self, frame: bytes) -> str:
        """Check and decrypt a pad frame from the peer; its bytes are recorded as spent before the text is
        returned. Raises :class:`PadRefused` for a short, out-of-range, replayed or altered frame."""
        if len(frame) < OVERHEAD:
            raise PadRefused("a pad message is too short to hold its index and tag; it was not shown")
        (index,) = INDEX.unpack_from(frame)
        ciphertext = frame[INDEX.size:-TAG_LEN]
        end = index + MAC_KEY_LEN + len(ciphertext)
        with self._exclusive():
            if index < self.received:
                raise PadRefused(f"a pad message reuses pad bytes already spent (offset {index}, spent up to "
                                 f"{self.received}): a replay; it was not shown")
            if end > self.meta.half_size:
                raise PadRefused("a pad message points past the end of the pad; it was not shown")
            stream = self._read(self._recv_path, index, end - index)
            tag = poly1305(stream[:MAC_KEY_LEN], MAC_LABEL + frame[:INDEX.size] + ciphertext)
            if not crypto.constant_time_equal(tag, frame[-TAG_LEN:]):
                raise PadRefused("a pad message failed its one-time MAC: it was altered or forged; it was not "
                                 "shown")
            try:
                text = _xor(ciphertext, stream[MAC_KEY_LEN:]).decode("utf-8")
            except UnicodeDecodeError:
                raise PadRefused("a pad message's text is not UTF-8; it was not shown") from None
            self._record(self.sent, end)
        return text


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def poly1305(key: bytes, data: bytes) -> bytes:
    """One-time Poly1305 (RFC 8439 §2.5) with ``key`` = r || s used as is (never derived from a cipher)."""
    return crypto.poly1305_one_time(key, data)


__all__ = [
    "MAC_KEY_LEN", "OVERHEAD", "TAG_LEN", "Pad", "PadError", "PadExhausted", "PadMeta", "PadRefused", "PadStatus",
    "create_pad", "find_pad", "import_pad", "parse_size", "poly1305", "replace_durably",
]
