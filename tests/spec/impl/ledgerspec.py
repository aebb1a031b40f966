"""Ledger formats and rules from docs/ledger.md, and a light client of docs/ledger-protocol.md."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import struct
import time
import unicodedata
from dataclasses import dataclass
from typing import Any

import msgpack
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA
from Crypto.Signature import pss

from .wire import SpecError, pack, socket_stream

PARAMS_LABEL = b"p2pchat-ledger-params/1"
DEFAULT_PARAMS: dict[str, Any] = {
    "name": "p2pchat", "difficulty_bits": 20, "version": 1, "max_block_records": 500, "max_block_bytes": 1_000_000,
    "max_future_seconds": 120, "median_window": 11, "default_record_lifetime": 7 * 86400,
    "max_record_lifetime": 30 * 86400,
}
HEADER = struct.Struct(">I32sQ32s32sQBQ")
EMPTY = hashlib.sha256(b"\x02").digest()
LEDGER_MAX_FRAME = 8 * 1024 * 1024


def H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- parameters and genesis ----------------------------------------------------------------------------------

def params_serialized(params: dict[str, Any]) -> bytes:
    pairs = [[name, params[name]] for name in sorted(params, key=lambda n: n.encode())]
    return msgpack.packb(pairs, use_bin_type=True)


def params_digest(params: dict[str, Any]) -> bytes:
    return H(PARAMS_LABEL + params_serialized(params))


@dataclass(frozen=True)
class Header:
    version: int
    network_id: bytes
    height: int
    prev_hash: bytes
    merkle_root: bytes
    timestamp: int
    target_bits: int
    nonce: int

    def pack(self) -> bytes:
        return HEADER.pack(self.version, self.network_id, self.height, self.prev_hash, self.merkle_root,
                           self.timestamp, self.target_bits, self.nonce)

    @classmethod
    def parse(cls, raw: bytes) -> Header:
        if len(raw) != HEADER.size:
            raise SpecError(f"a header is {HEADER.size} bytes, not {len(raw)}")
        return cls(*HEADER.unpack(raw))

    @property
    def hash(self) -> bytes:
        return H(self.pack())

    def meets_work(self) -> bool:
        return int.from_bytes(self.hash, "big") < 2 ** (256 - self.target_bits)


def genesis(params: dict[str, Any]) -> Header:
    return Header(params["version"], H(params["name"].encode()), 0, params_digest(params), EMPTY, 0,
                  params["difficulty_bits"], 0)


def network_id_text(genesis_hash: bytes) -> str:
    return " ".join(genesis_hash[:16].hex()[i:i + 4] for i in range(0, 32, 4))


# --- Merkle tree --------------------------------------------------------------------------------------------

def leaf(record_id: bytes) -> bytes:
    return H(b"\x00" + record_id)


def node(left: bytes, right: bytes) -> bytes:
    return H(b"\x01" + left + right)


def merkle_levels(ids: list[bytes]) -> list[list[bytes]]:
    level = [leaf(i) for i in ids]
    if not level:
        return [[EMPTY]]
    levels = [level]
    while len(level) > 1:
        if len(level) % 2:
            level = [*level, EMPTY]
            levels[-1] = level
        level = [node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def merkle_root(ids: list[bytes]) -> bytes:
    return merkle_levels(ids)[-1][0]


def merkle_path(ids: list[bytes], index: int) -> list[bytes]:
    path = []
    for level in merkle_levels(ids)[:-1]:
        path.append(level[index ^ 1])
        index >>= 1
    return path


def verify_merkle_path(record_id: bytes, index: int, path: list[bytes], root: bytes) -> bool:
    if len(path) > 32 or index >= 2 ** len(path) or any(len(s) != 32 for s in path):
        return False
    h = leaf(record_id)
    for sibling in path:
        h = node(h, sibling) if index & 1 == 0 else node(sibling, h)
        index >>= 1
    return h == root


# --- records -------------------------------------------------------------------------------------------------

RECORD_FIELDS = ("kind", "key", "seq", "prev", "nickname", "ip", "port", "ledger_port", "relay", "issued",
                 "expires", "new_key")
KINDS = ("register", "rotate", "revoke")


@dataclass(frozen=True)
class Record:
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
    new_key: bytes | None
    sig: bytes
    new_sig: bytes | None

    def content(self) -> list[Any]:
        return [getattr(self, name) for name in RECORD_FIELDS]

    def signed_bytes(self, network: str) -> bytes:
        return msgpack.packb([1, network, *self.content()], use_bin_type=True)

    def encoded(self) -> bytes:
        return msgpack.packb([1, *self.content(), self.sig, self.new_sig], use_bin_type=True)

    @property
    def id(self) -> bytes:
        return H(self.encoded())

    @property
    def fingerprint(self) -> bytes:
        return H(self.key)

    def to_wire(self) -> dict[str, Any]:
        fields = {name: getattr(self, name) for name in (*RECORD_FIELDS, "sig", "new_sig")}
        return {k: v for k, v in fields.items() if v is not None}

    def verify_signatures(self, network: str) -> bool:
        message = SHA256.new(b"p2pchat/ledger-record\x00" + self.signed_bytes(network))
        keys = [(self.key, self.sig)]
        if self.kind == "rotate":
            if self.new_key is None or self.new_sig is None:
                return False
            keys.append((self.new_key, self.new_sig))
        for der, sig in keys:
            try:
                pss.new(RSA.import_key(der), salt_bytes=32).verify(message, sig)
            except (ValueError, TypeError, IndexError):
                return False
        return True


def _canonical_ip(text: str) -> bool:
    try:
        return str(ipaddress.ip_address(text)) == text
    except ValueError:
        return False


def _canonical_endpoint(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or str(int(port)) != port:
        return False
    if host.startswith("["):
        return host.endswith("]") and _canonical_ip(host[1:-1]) and ":" in host
    return _canonical_ip(host) and ":" not in host


def record_from_wire(data: dict[str, Any]) -> Record:
    """The record of a wire map, with the form rules docs/ledger.md "Records" states (not the binding rules)."""
    def field(name: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
        value = data.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SpecError(f"record field {name!r} missing or of the wrong type: {value!r:.60}")
        return value
    record = Record(field("kind", str), field("key", bytes), field("seq", int), field("prev", bytes),
                    field("nickname", str), field("ip", str, True), field("port", int, True),
                    field("ledger_port", int, True), field("relay", str, True), field("issued", int),
                    field("expires", int), field("new_key", bytes, True), field("sig", bytes),
                    field("new_sig", bytes, True))
    problems = []
    if record.kind not in KINDS:
        problems.append("kind")
    if not 0 <= record.seq < 2**32 or not all(0 <= t < 2**40 for t in (record.issued, record.expires)):
        problems.append("seq, issued or expires out of range")
    if not 1 <= len(record.key) <= 1200 or len(record.sig) > 1024 or len(record.new_sig or b"") > 1024:
        problems.append("key or signature size")
    if any(p is not None and not 1 <= p <= 65535 for p in (record.port, record.ledger_port)):
        problems.append("port")
    if len(record.ip or "") > 45 or len(record.relay or "") > 64:
        problems.append("ip or relay too long")
    if record.new_key is not None and record.new_key == record.key:
        problems.append("a rotation to the same key")
    if len(record.prev) != 32 or (record.seq == 0) != (record.prev == bytes(32)) or record.seq < 0:
        problems.append("seq/prev")
    nick = record.nickname
    if (len(nick) > 32 or not nick.isprintable() or nick != nick.strip() or unicodedata.normalize("NFC", nick) != nick
            or (record.kind == "revoke" and nick)):
        problems.append("nickname")
    elif nick:
        from .nicknames import problem
        if problem(nick):
            problems.append(f"nickname: {problem(nick)}")
    if record.ip is not None and (not _canonical_ip(record.ip) or record.port is None):
        problems.append("ip")
    if record.ip is None and (record.port is not None or record.ledger_port is not None):
        problems.append("port without ip")
    if record.relay is not None and not _canonical_endpoint(record.relay):
        problems.append("relay")
    if record.kind != "revoke" and record.ip is None and record.relay is None:
        problems.append("neither ip nor relay")
    if record.kind == "revoke":
        if (record.expires != record.issued or record.ip is not None or record.relay is not None
                or record.port is not None or record.ledger_port is not None):
            problems.append("revoke binds nothing and expires == issued")
    elif record.expires <= record.issued:
        problems.append("expires")
    if (record.kind == "rotate") != (record.new_key is not None and record.new_sig is not None):
        problems.append("new_key/new_sig")
    if problems:
        raise SpecError(f"malformed record: {', '.join(problems)}")
    return record


# --- blocks ----------------------------------------------------------------------------------------------------

def mtp(timestamps: list[int]) -> int:
    """Median time past over a window ending at the block (oldest first)."""
    window = sorted(timestamps[-11:])
    return window[len(window) // 2]


@dataclass(frozen=True)
class Block:
    header: Header
    records: tuple[Record, ...]


def block_from_wire(data: dict[str, Any]) -> Block:
    return Block(Header.parse(data["header"]), tuple(record_from_wire(r) for r in data["records"]))


def check_block(block: Block, params: dict[str, Any], parent: Header, parent_window: list[int], now: int) -> None:
    """The context-free checks of docs/ledger.md "Block validation" steps 2, 4 and 5 (not the binding rules)."""
    h = block.header
    gen = genesis(params)
    if h.network_id != gen.network_id or h.version != params["version"] or h.target_bits != params["difficulty_bits"]:
        raise SpecError("network id, version or target")
    if h.height < 1 or not h.meets_work():
        raise SpecError("height or proof of work")
    if h.timestamp > now + params["max_future_seconds"]:
        raise SpecError("dated in the future")
    if h.prev_hash != parent.hash or h.height != parent.height + 1 or h.timestamp <= mtp(parent_window):
        raise SpecError("linkage or timestamp not above the parent's median time past")
    ids = [r.id for r in block.records]
    size = HEADER.size + sum(len(r.encoded()) for r in block.records)
    if len(ids) > params["max_block_records"] or size > params["max_block_bytes"] or len(set(ids)) != len(ids):
        raise SpecError("block too large or a record twice")
    if merkle_root(ids) != h.merkle_root:
        raise SpecError("Merkle root")
    for record in block.records:
        if not record.verify_signatures(params["name"]):
            raise SpecError("record signature")


# --- the ledger wire (ledger-protocol.md) --------------------------------------------------------------------------

def reachability_data(network: str, ip: str, nonce: bytes) -> bytes:
    return msgpack.packb(["p2pchat-ledger-reachability-v1", network, ip, nonce], use_bin_type=True)


class LedgerConnection:
    """One light-client connection to a ledger node (role ``client``)."""

    def __init__(self, host: str, port: int, source: str | None = None, timeout: float = 10.0,
                 peer_params: dict[str, Any] | None = None) -> None:
        """A light client; with ``peer_params`` a gossip peer (role ``peer``) at genesis of that network, which
        may ask for blocks (§3: a client may not) and answers what a node asks a peer."""
        self.sock = socket.create_connection((host, port), timeout, (source, 0) if source else None)
        self.stream = socket_stream(self.sock, LEDGER_MAX_FRAME)
        self.role = "peer" if peer_params else "client"
        if peer_params:
            gen = genesis(peer_params)
            self.sock.sendall(pack("hello", version=1, role="peer", nonce=os.urandom(8), network=peer_params["name"],
                                   genesis=gen.hash, params=peer_params, height=0, tip=gen.hash, work=b"",
                                   agent="p2pchat-spec/0.1", time=int(time.time())))
        else:
            self.sock.sendall(pack("hello", version=1, role="client", nonce=os.urandom(8), network="p2pchat",
                                   agent="p2pchat-spec/0.1"))
        ack = self.stream.read()
        if ack["t"] != "hello_ack":
            raise SpecError(f"expected hello_ack, got {ack!r:.200}")
        self.hello_ack = ack
        self.params = dict(ack["params"])
        if genesis(self.params).hash != ack["genesis"]:
            raise SpecError("the node's parameters do not give its genesis")

    def ask(self, t: str, **fields: Any) -> dict[str, Any]:
        """Send a request and return its answer; a peer answers the node's own requests meanwhile."""
        self.sock.sendall(pack(t, **fields))
        return self.read_answer()

    def read_answer(self) -> dict[str, Any]:
        """The next frame that is not one of the node's own requests to a peer (those are answered)."""
        while True:
            frame = self.stream.read()
            if self.role == "client" or frame["t"] not in ("ping", "get_peers", "get_headers", "block", "record",
                                                              "peers", "get_checkpoint"):
                return frame
            if frame["t"] == "ping":
                self.sock.sendall(pack("pong", nonce=frame["nonce"]))
            elif frame["t"] == "get_peers":
                self.sock.sendall(pack("peers", addrs=[]))
            elif frame["t"] == "get_headers":
                self.sock.sendall(pack("headers", headers=[]))
            elif frame["t"] == "get_checkpoint":
                gen = genesis(self.params)
                self.sock.sendall(pack("checkpoint", final_height=0, final_hash=gen.hash))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LedgerConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sync_headers(conn: LedgerConnection) -> list[Header]:
    """The node's main chain, every header checked as docs/ledger-protocol.md §8 step 2 says."""
    gen = genesis(conn.params)
    chain = [gen]
    while True:
        answer = conn.ask("get_headers", locator=[chain[-1].hash], limit=2000)
        if answer["t"] != "headers":
            raise SpecError(f"expected headers, got {answer!r:.200}")
        for raw in answer["headers"]:
            header = Header.parse(raw)
            parent = chain[-1]
            if (header.prev_hash != parent.hash or header.height != parent.height + 1
                    or header.network_id != gen.network_id or header.target_bits != conn.params["difficulty_bits"]
                    or not header.meets_work() or header.timestamp <= mtp([h.timestamp for h in chain])):
                raise SpecError(f"bad header at height {header.height}")
            chain.append(header)
        if len(answer["headers"]) < 2000:
            return chain


def check_lookup(answer: dict[str, Any], chain: list[Header], network: str, by: str, value: str, now: int) -> Record:
    """A ``lookup_result`` for ``by`` (``ip``, ``nick`` or ``fp``) ``value`` checked as docs/ledger-protocol.md §8
    step 3 says."""
    if not answer.get("found"):
        raise SpecError(f"not found: {answer.get('reason')}")
    record = record_from_wire(answer["record"])
    header = Header.parse(answer["header"])
    height = answer["height"]
    if height >= len(chain) or chain[height] != header:
        raise SpecError("the proof's header is not on the verified chain")
    if not verify_merkle_path(record.id, answer["index"], list(answer["path"]), header.merkle_root):
        raise SpecError("the Merkle path does not reach the header's root")
    if not record.verify_signatures(network):
        raise SpecError("the record's signature")
    if by == "nick":
        from .nicknames import keys
        about = keys(value)[0] in keys(record.nickname)
    else:
        about = record.ip == value if by == "ip" else record.fingerprint.hex().startswith(value.lower())
    if not about or record.kind == "revoke" or record.expires <= now:
        raise SpecError("the record is not a live binding of what was asked")
    return record


def answer_reachability(conn: socket.socket, identity: RSA.RsaKey, params: dict[str, Any], chain: list[Header],
                        claim: str | None = None) -> str:
    """Serve one reachability check on an accepted connection (ledger-protocol.md §5.3): the asker's ``hello``
    (role ``client``), our ``hello_ack``, its ``prove``, our ``proof`` over the address it reached us at (or over
    ``claim``, to see it refused). Returns the address proved."""
    stream = socket_stream(conn, LEDGER_MAX_FRAME)
    hello = stream.read()
    if hello["t"] != "hello" or hello["version"] != 1 or hello["role"] != "client":
        raise SpecError(f"expected a client hello, got {hello!r:.200}")
    gen = genesis(params)
    work = ((len(chain) - 1) * 2 ** params["difficulty_bits"])
    conn.sendall(pack("hello_ack", version=1, role="peer", nonce=os.urandom(8), network=params["name"],
                      genesis=gen.hash, params=params, height=len(chain) - 1, tip=chain[-1].hash,
                      work=work.to_bytes((work.bit_length() + 7) // 8, "big"), agent="p2pchat-spec/0.1",
                      time=int(time.time())))
    prove = stream.read()
    if prove["t"] != "prove" or len(prove["nonce"]) != 32:
        raise SpecError(f"expected prove, got {prove!r:.200}")
    ip = claim or conn.getsockname()[0]
    data = reachability_data(params["name"], ip, prove["nonce"])
    sig = pss.new(identity, salt_bytes=32).sign(SHA256.new(b"p2pchat/ledger-reachability\x00" + data))
    conn.sendall(pack("proof", key=identity.public_key().export_key(format="DER"), sig=sig, ip=ip))
    return ip


def mine(params: dict[str, Any], parent: Header, window: list[int], records: list[Record], timestamp: int) -> Block:
    """A block on ``parent`` (``window``: the timestamps of the chain ending at it) that meets the target."""
    gen = genesis(params)
    timestamp = max(timestamp, mtp(window) + 1)
    nonce = 0
    while True:
        header = Header(params["version"], gen.network_id, parent.height + 1, parent.hash,
                        merkle_root([r.id for r in records]), timestamp, params["difficulty_bits"], nonce)
        if header.meets_work():
            return Block(header, tuple(records))
        nonce += 1


def block_to_wire(block: Block) -> dict[str, Any]:
    return {"header": block.header.pack(), "records": [r.to_wire() for r in block.records]}
