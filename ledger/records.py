"""Ledger records: an identity key's signed claim on an address and a nickname.

A record is self-contained proof of possession: it is signed (RSA-PSS-SHA256, context ``ledger-record``) by
the key it binds, over canonical bytes that include the network name, so a record made for one network never
verifies on another. Three kinds:

``register``
    Create or update the binding of ``key``: nickname (may be empty: no nickname), optional ``ip``/``port``
    (chat) and ``ledger_port`` (where the host's ledger node answers reachability proofs), optional ``relay``
    hint (``ip:port``). At least an ``ip`` or a ``relay`` is required. Renewal is a register with the next
    sequence number.
``rotate``
    Move the binding from ``key`` (the old key) to ``new_key``; signed by both (``sig`` by the old key,
    ``new_sig`` by the new one) over the same bytes. Carries the binding data the new key ends up with.
``revoke``
    End the identity for good. Carries no nickname (empty), no addresses and ``expires == issued``.

Every identity's records form a hash chain: ``seq`` counts from 0 and ``prev`` is the id of the identity's
previous record (32 zero bytes for ``seq`` 0). After a rotation the new key continues the same chain: its
next record has ``seq = rotation.seq + 1`` and ``prev = rotation.id``.

A :class:`Record` can only be constructed well formed (types, sizes, canonical addresses); signatures and the
rules that depend on ledger state are checked separately (:meth:`Record.verify_signatures`,
:mod:`ledger.bindings`). Verified signatures are remembered per (network, record id) in a bounded cache, and
parsed public keys in another, so a record gossiped, pooled and then mined is verified once.

Nicknames: 0–32 characters, NFC, printable, no leading/trailing space, and the rules of
:mod:`ledger.nicknames` (assigned in Unicode 14.0, one script, few stacked marks). An empty nickname means the
record claims no nickname (what a node publishes when its nickname clashes with another key's); revocations
always carry an empty one.
"""

from __future__ import annotations

import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import msgpack

from ledger.errors import LedgerError
from ledger.nicknames import check_nickname, nickname_key, nickname_keys
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import check_port, normalize_ip, parse_address
from p2pchat.foundation.errors import AddressError, CryptoError
from p2pchat.foundation.identity import Identity

SIGN_CONTEXT = "ledger-record"
RECORD_FORMAT = 1
KINDS = ("register", "rotate", "revoke")
ZERO_HASH = bytes(32)
MAX_NICKNAME = 32
MAX_KEY_BYTES = 1200      # SubjectPublicKeyInfo DER of RSA-8192 is 1062 bytes
MAX_SIG_BYTES = 1024      # RSA-8192 signature
MAX_RELAY_CHARS = 64
MAX_TIME = 2**40          # year ~36812: far beyond any real expiry, small enough for every encoder
MAX_SEQ = 2**32

_WIRE_KEYS = ("kind", "key", "seq", "prev", "nickname", "ip", "port", "ledger_port", "relay", "issued", "expires",
              "new_key", "sig", "new_sig")


def _check_nickname(nickname: str, kind: str) -> None:
    if kind == "revoke":
        if nickname:
            raise LedgerError("a revocation carries no nickname")
        return
    if not nickname:
        return  # no nickname: the record binds its address only
    if len(nickname) > MAX_NICKNAME:
        raise LedgerError(f"nickname must be at most {MAX_NICKNAME} characters, got {len(nickname)}")
    if not nickname.isprintable() or nickname != nickname.strip():
        raise LedgerError(f"nickname {nickname!r} has control characters or leading/trailing spaces")
    if unicodedata.normalize("NFC", nickname) != nickname:
        raise LedgerError(f"nickname {nickname!r} is not in Unicode NFC form")
    check_nickname(nickname)


def validate_nickname(nickname: str) -> str:
    """``nickname`` if a register record may carry it, else :class:`LedgerError` saying why (for user input)."""
    _check_nickname(nickname, "register")
    return nickname


def _fail(what: str, value: Any) -> LedgerError:
    return LedgerError(f"record field '{what}' is invalid ({type(value).__name__} {value!r:.60})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, repr=False)
class Record:
    """One signed ledger record (see the module docstring for the kinds and the sequence chain)."""

    kind: str
    key: bytes
    seq: int
    prev: bytes
    nickname: str
    ip: str | None
    port: int | None
    ledger_port: int | None
    relay: str | None
    issued: int
    expires: int
    new_key: bytes | None = None
    sig: bytes = b""
    new_sig: bytes | None = None

    def __post_init__(self) -> None:
        self._check_form()

    def _check_form(self) -> None:
        kind = self.kind
        if kind not in KINDS:
            raise LedgerError(f"unknown record kind {kind!r:.40} (expected one of {', '.join(KINDS)})")
        for name in ("key", "prev", "sig"):
            if not isinstance(getattr(self, name), bytes):
                raise _fail(name, getattr(self, name))
        if not 1 <= len(self.key) <= MAX_KEY_BYTES:
            raise LedgerError(f"record key is {len(self.key)} bytes (at most {MAX_KEY_BYTES})")
        if len(self.sig) > MAX_SIG_BYTES:
            raise LedgerError("record signature is too long")
        if len(self.prev) != 32:
            raise LedgerError("record 'prev' must be a 32-byte record id")
        if not _is_int(self.seq) or not 0 <= self.seq < MAX_SEQ:
            raise _fail("seq", self.seq)
        if (self.seq == 0) != (self.prev == ZERO_HASH):
            raise LedgerError("a record has prev = zeros exactly when it is an identity's first record (seq 0)")
        if not isinstance(self.nickname, str):
            raise _fail("nickname", self.nickname)
        _check_nickname(self.nickname, kind)
        for name in ("issued", "expires"):
            value = getattr(self, name)
            if not _is_int(value) or not 0 <= value < MAX_TIME:
                raise _fail(name, value)
        self._check_addresses()
        if kind == "rotate":
            if not isinstance(self.new_key, bytes) or not 1 <= len(self.new_key) <= MAX_KEY_BYTES:
                raise LedgerError("a rotation record needs the new key")
            if not isinstance(self.new_sig, bytes) or len(self.new_sig) > MAX_SIG_BYTES:
                raise LedgerError("a rotation record needs the new key's signature")
            if self.new_key == self.key:
                raise LedgerError("a rotation must move to a different key")
        elif self.new_key is not None or self.new_sig is not None:
            raise LedgerError(f"a {kind} record carries no new key")
        if kind == "revoke":
            if self.expires != self.issued:
                raise LedgerError("a revocation has no lifetime (expires must equal issued)")
        elif self.expires <= self.issued:
            raise LedgerError("record expires before it is issued")

    def _check_addresses(self) -> None:
        ip, port, lport, relay = self.ip, self.port, self.ledger_port, self.relay
        if self.kind == "revoke":
            if any(v is not None for v in (ip, port, lport, relay)):
                raise LedgerError("a revocation carries no address or relay hint")
            return
        if ip is None:
            if port is not None or lport is not None:
                raise LedgerError("a record without an IP address cannot name ports")
            if relay is None:
                raise LedgerError("a record needs an IP address or a relay hint")
        else:
            if not isinstance(ip, str) or len(ip) > 45:
                raise _fail("ip", ip)
            try:
                canonical = normalize_ip(ip)
                if port is None:
                    raise LedgerError("a record with an IP address needs the chat port")
                check_port(port)
                if lport is not None:
                    check_port(lport)
            except AddressError as exc:
                raise LedgerError(f"record address: {exc}") from None
            if canonical != ip:
                raise LedgerError(f"record IP {ip!r} is not written in canonical form ({canonical})")
        if relay is not None:
            if not isinstance(relay, str) or len(relay) > MAX_RELAY_CHARS:
                raise _fail("relay", relay)
            try:
                rip, rport = parse_address(relay, 0)
                check_port(rport)
            except AddressError as exc:
                raise LedgerError(f"record relay hint: {exc}") from None
            if relay != (f"[{rip}]:{rport}" if ":" in rip else f"{rip}:{rport}"):
                raise LedgerError(f"record relay hint {relay!r} is not written as canonical ip:port")

    # --- canonical encodings -------------------------------------------------------------------------------

    def _fields(self) -> list[Any]:
        return [self.kind, self.key, self.seq, self.prev, self.nickname, self.ip, self.port, self.ledger_port,
                self.relay, self.issued, self.expires, self.new_key]

    def signing_bytes(self, network: str) -> bytes:
        """What both signatures cover: every field except the signatures, plus the network name."""
        return msgpack.packb([RECORD_FORMAT, network, *self._fields()], use_bin_type=True)

    @cached_property
    def encoded(self) -> bytes:
        """Canonical encoding of the whole record (signatures included); its SHA-256 is :attr:`id`."""
        return msgpack.packb([RECORD_FORMAT, *self._fields(), self.sig, self.new_sig], use_bin_type=True)

    @cached_property
    def id(self) -> bytes:
        return crypto.sha256(self.encoded)

    @property
    def size(self) -> int:
        """Bytes counted against a block's size limit."""
        return len(self.encoded)

    @property
    def holder_key(self) -> bytes:
        """The key the binding ends up under: ``new_key`` for a rotation, else ``key``."""
        return self.new_key if self.kind == "rotate" and self.new_key is not None else self.key

    @cached_property
    def fingerprint(self) -> bytes:
        """Fingerprint of :attr:`holder_key`."""
        return crypto.fingerprint(self.holder_key)

    @cached_property
    def signer_fingerprint(self) -> bytes:
        """Fingerprint of ``key`` (the identity whose sequence chain this record extends)."""
        return crypto.fingerprint(self.key)

    @cached_property
    def nickname_key(self) -> str:
        """The primary comparison key of the nickname ("" for none)."""
        return nickname_key(self.nickname) if self.nickname else ""

    @cached_property
    def nickname_keys(self) -> tuple[str, ...]:
        """Every key the nickname claims (none for an empty nickname); see :mod:`ledger.nicknames`."""
        return nickname_keys(self.nickname) if self.nickname else ()

    def to_wire(self) -> dict[str, Any]:
        """The record as a msgpack-friendly map (``None`` fields omitted)."""
        out = {k: getattr(self, k) for k in _WIRE_KEYS}
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_wire(cls, data: Any) -> Record:
        """Parse a record received from a peer or the store; :class:`LedgerError` if malformed."""
        if not isinstance(data, dict):
            raise LedgerError("a record should be a map")
        try:
            values: dict[str, Any] = {k: data.get(k) for k in _WIRE_KEYS}
        except TypeError:
            raise LedgerError("a record map has unhashable keys") from None
        for name in ("kind", "key", "seq", "prev", "nickname", "issued", "expires", "sig"):
            if values[name] is None:
                raise LedgerError(f"record field '{name}' is missing")
        return cls(**values)

    # --- signatures ----------------------------------------------------------------------------------------

    def verify_signatures(self, network: str) -> None:
        """Raise :class:`LedgerError` unless every signature is valid for ``network`` (cached per record id)."""
        if _VERIFIED.contains((network, self.id)):
            return
        data = self.signing_bytes(network)
        try:
            crypto.verify(public_key(self.key), SIGN_CONTEXT, data, self.sig)
        except CryptoError as exc:
            raise LedgerError(f"record seq {self.seq} of {self.describe_key()} has a bad signature: {exc}") from None
        if self.kind == "rotate":
            assert self.new_key is not None and self.new_sig is not None  # guaranteed by _check_form
            try:
                crypto.verify(public_key(self.new_key), SIGN_CONTEXT, data, self.new_sig)
            except CryptoError as exc:
                raise LedgerError(f"rotation of {self.describe_key()} is not signed by the new key: {exc}") from None
        _VERIFIED.add((network, self.id))

    def __repr__(self) -> str:
        return f"Record({self.describe()}, id {self.id.hex()[:16]})"

    def describe_key(self) -> str:
        return f"key {crypto.format_fingerprint(self.signer_fingerprint, 4)}"

    def describe(self) -> str:
        where = self.ip or f"relay {self.relay}"
        return f"{self.kind} #{self.seq} '{self.nickname}' at {where} by {self.describe_key()}"


# --- bounded caches ----------------------------------------------------------------------------------------

class _LruSet:
    """Thread-safe bounded set with least-recently-used eviction."""

    def __init__(self, limit: int) -> None:
        self._items: OrderedDict[Any, None] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def contains(self, item: Any) -> bool:
        with self._lock:
            if item in self._items:
                self._items.move_to_end(item)
                return True
            return False

    def add(self, item: Any) -> None:
        with self._lock:
            self._items[item] = None
            self._items.move_to_end(item)
            while len(self._items) > self._limit:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


SIGNATURE_CACHE_SIZE = 100_000
KEY_CACHE_SIZE = 4096
_VERIFIED = _LruSet(SIGNATURE_CACHE_SIZE)
_KEYS: OrderedDict[bytes, crypto.RsaKey] = OrderedDict()
_KEYS_LOCK = threading.Lock()


def public_key(der: bytes) -> crypto.RsaKey:
    """Parsed (and vetted: size, exponent, canonical DER) public key, cached by its DER bytes."""
    with _KEYS_LOCK:
        key = _KEYS.get(der)
        if key is not None:
            _KEYS.move_to_end(der)
            return key
    try:
        key = crypto.load_public(der)
    except CryptoError as exc:
        raise LedgerError(f"record key is unusable: {exc}") from None
    with _KEYS_LOCK:
        _KEYS[der] = key
        while len(_KEYS) > KEY_CACHE_SIZE:
            _KEYS.popitem(last=False)
    return key


def clear_caches() -> None:
    """Forget verified signatures and parsed keys (benchmarks measure cold verification with this)."""
    _VERIFIED.clear()
    with _KEYS_LOCK:
        _KEYS.clear()


# --- constructors ------------------------------------------------------------------------------------------

def _payload(kind: str, identity: Identity, *, seq: int, prev: bytes, nickname: str, ip: str | None,
             port: int | None, ledger_port: int | None, relay: str | None, issued: int, lifetime: int,
             new_key: bytes | None = None) -> Record:
    return Record(kind=kind, key=identity.public_der, seq=seq, prev=prev, nickname=nickname, ip=ip, port=port,
                  ledger_port=ledger_port, relay=relay, issued=issued, expires=issued + lifetime,
                  new_key=new_key, sig=b"", new_sig=b"" if kind == "rotate" else None)


def make_register(identity: Identity, *, network: str, seq: int, prev: bytes, nickname: str,
                  ip: str | None = None, port: int | None = None, ledger_port: int | None = None,
                  relay: str | None = None, issued: int, lifetime: int) -> Record:
    """A signed register/update record binding ``identity`` to the given address and nickname."""
    unsigned = _payload("register", identity, seq=seq, prev=prev, nickname=nickname, ip=ip, port=port,
                        ledger_port=ledger_port, relay=relay, issued=issued, lifetime=lifetime)
    return _with_sigs(unsigned, identity.sign(SIGN_CONTEXT, unsigned.signing_bytes(network)), None)


def make_rotation(old_identity: Identity, new_identity: Identity, *, network: str, seq: int, prev: bytes,
                  nickname: str, ip: str | None = None, port: int | None = None, ledger_port: int | None = None,
                  relay: str | None = None, issued: int, lifetime: int) -> Record:
    """A rotation from ``old_identity`` to ``new_identity``, signed by both; the binding moves to the new key."""
    unsigned = _payload("rotate", old_identity, seq=seq, prev=prev, nickname=nickname, ip=ip, port=port,
                        ledger_port=ledger_port, relay=relay, issued=issued, lifetime=lifetime,
                        new_key=new_identity.public_der)
    data = unsigned.signing_bytes(network)
    return _with_sigs(unsigned, old_identity.sign(SIGN_CONTEXT, data), new_identity.sign(SIGN_CONTEXT, data))


def make_revocation(identity: Identity, *, network: str, seq: int, prev: bytes, issued: int) -> Record:
    """A revocation: ``identity`` is dead from the block that includes this record on."""
    unsigned = Record(kind="revoke", key=identity.public_der, seq=seq, prev=prev, nickname="", ip=None, port=None,
                      ledger_port=None, relay=None, issued=issued, expires=issued)
    return _with_sigs(unsigned, identity.sign(SIGN_CONTEXT, unsigned.signing_bytes(network)), None)


def _with_sigs(unsigned: Record, sig: bytes, new_sig: bytes | None) -> Record:
    values = {k: getattr(unsigned, k) for k in _WIRE_KEYS}
    values.update(sig=sig, new_sig=new_sig)
    return Record(**values)
