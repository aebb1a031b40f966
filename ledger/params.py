"""Network parameters: fixed when a network is created, committed to by its genesis block.

Every node of a network must run with the same :class:`NetworkParams`. The genesis block's ``prev_hash`` is
a digest of all parameters, so two networks that differ in any parameter (not only the name) have different
genesis hashes and never accept each other's blocks. A joining node adopts the parameters a peer announces
(:meth:`NetworkParams.from_wire`) and checks them against the genesis hash the peer claims.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ledger.defaults import DEFAULT_DIFFICULTY_BITS, DEFAULT_NETWORK, MAX_DIFFICULTY_BITS, MIN_DIFFICULTY_BITS
from ledger.errors import LedgerError
from p2pchat.foundation import crypto

if TYPE_CHECKING:
    from ledger.blocks import Block

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
PARAMS_DOMAIN = b"p2pchat-ledger-params/1"


def network_id(name: str) -> bytes:
    """The 32-byte network id carried in every block header: SHA-256 of the network name."""
    return crypto.sha256(name.encode())


@dataclass(frozen=True)
class NetworkParams:
    """Consensus parameters of one ledger network (all nodes of the network share them)."""

    name: str = DEFAULT_NETWORK
    difficulty_bits: int = DEFAULT_DIFFICULTY_BITS
    version: int = 1
    max_block_records: int = 500
    max_block_bytes: int = 1_000_000
    max_future_seconds: int = 120
    median_window: int = 11
    default_record_lifetime: int = 7 * 86400
    max_record_lifetime: int = 30 * 86400

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise LedgerError(f"network name {self.name!r} is not allowed (1–32 letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit)")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "name" and (not isinstance(value, int) or isinstance(value, bool)):
                raise LedgerError(f"network parameter {f.name} must be a whole number, got {value!r}")
        if not MIN_DIFFICULTY_BITS <= self.difficulty_bits <= MAX_DIFFICULTY_BITS:
            raise LedgerError(f"difficulty of {self.difficulty_bits} bits is outside "
                              f"{MIN_DIFFICULTY_BITS}–{MAX_DIFFICULTY_BITS}")
        if not 1 <= self.version <= 0xFFFFFFFF:
            raise LedgerError(f"ledger version {self.version} is invalid")
        if not 1 <= self.max_block_records <= 10_000:
            raise LedgerError("max_block_records must be between 1 and 10000")
        if not 1_000 <= self.max_block_bytes <= 3_000_000:
            raise LedgerError("max_block_bytes must be between 1000 and 3000000 (blocks must fit in one frame)")
        if not 0 <= self.max_future_seconds <= 86400:
            raise LedgerError("max_future_seconds must be between 0 and 86400")
        if not 1 <= self.median_window <= 101:
            raise LedgerError("median_window must be between 1 and 101")
        if not 60 <= self.default_record_lifetime <= self.max_record_lifetime <= 10 * 365 * 86400:
            raise LedgerError("record lifetimes must satisfy 60 s ≤ default ≤ max ≤ 10 years")

    @cached_property
    def network_id(self) -> bytes:
        return network_id(self.name)

    @cached_property
    def serialized(self) -> bytes:
        """The bytes the digest covers: a msgpack array of ``[name, value]`` pairs, one per parameter, sorted by
        name (docs/ledger.md gives the byte layout and a vector)."""
        import msgpack  # on first use: `ledger --help` needs this module's constants, not the codec

        return msgpack.packb(sorted(asdict(self).items()), use_bin_type=True)

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 of ``PARAMS_DOMAIN`` followed by :attr:`serialized`: the genesis block's ``prev_hash``."""
        return crypto.sha256(PARAMS_DOMAIN, self.serialized)

    def genesis(self) -> Block:
        """The genesis block: height 0, no records, timestamp 0, nonce 0, exempt from proof of work."""
        from ledger.blocks import Block, BlockHeader
        from ledger.merkle import EMPTY_ROOT

        header = BlockHeader(version=self.version, network_id=self.network_id, height=0, prev_hash=self.digest,
                             merkle_root=EMPTY_ROOT, timestamp=0, target_bits=self.difficulty_bits, nonce=0)
        return Block(header, ())

    @cached_property
    def genesis_hash(self) -> bytes:
        """The network id: the genesis block's hash, which commits to every parameter."""
        return self.genesis().hash

    @property
    def id_text(self) -> str:
        """The network id for people (see :func:`format_network_id`)."""
        return format_network_id(self.genesis_hash)

    def to_wire(self) -> dict[str, Any]:
        """All parameters as a msgpack-friendly map."""
        return asdict(self)

    @classmethod
    def from_wire(cls, data: Any, genesis_hash: bytes | None = None) -> NetworkParams:
        """Parameters announced by a peer; raises :class:`LedgerError` if they are malformed or, when
        ``genesis_hash`` is given, if they do not produce that genesis block."""
        if not isinstance(data, dict):
            raise LedgerError("network parameters should be a map")
        known = {f.name for f in fields(cls)}
        missing = known - data.keys()
        if missing:
            raise LedgerError(f"network parameters lack {', '.join(sorted(missing))}")
        params = cls(**{k: data[k] for k in known})
        if genesis_hash is not None and params.genesis_hash != genesis_hash:
            raise LedgerError(f"the parameters of network '{params.name}' do not match its announced genesis block")
        return params

    def describe(self) -> str:
        return f"network '{self.name}' (difficulty {self.difficulty_bits} bits, version {self.version})"


NETWORK_ID_GROUPS = 8          # 8 groups of 4 hex digits: the first 128 bits of the genesis hash
MIN_NETWORK_ID_HEX = 32        # what --network-id must give at least (128 bits)


def format_network_id(genesis_hash: bytes, groups: int = NETWORK_ID_GROUPS) -> str:
    """A network id as people compare it, like a key fingerprint: ``3f2a 9c01 …`` (the first 128 bits)."""
    text = genesis_hash.hex()
    return " ".join(text[i:i + 4] for i in range(0, min(len(text), groups * 4), 4))


def parse_network_id(text: str) -> str:
    """A network id typed by a person (hex, spaces, dashes and colons ignored) as lower-case hex; at least the
    first 128 bits (32 hex digits) of the genesis hash, at most all 64."""
    cleaned = "".join(c for c in text.strip().lower() if c not in " -:")
    if not cleaned or any(c not in "0123456789abcdef" for c in cleaned):
        raise LedgerError(f"network id '{text[:80]}' is not hexadecimal (copy it as 'ledger serve' printed it)")
    if not MIN_NETWORK_ID_HEX <= len(cleaned) <= 64:
        raise LedgerError(f"network id '{text[:80]}' has {len(cleaned)} hex digits; give at least "
                          f"{MIN_NETWORK_ID_HEX} (the 8 groups 'ledger serve' prints) and at most 64")
    return cleaned


def matches_network_id(genesis_hash: bytes, network_id_hex: str) -> bool:
    """True when ``network_id_hex`` (from :func:`parse_network_id`) is a prefix of the genesis hash."""
    return genesis_hash.hex().startswith(network_id_hex)
