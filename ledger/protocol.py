"""The ledger wire protocol: every frame a ledger node, a peer or a light client sends, as codec schemas.

One :class:`~p2pchat.foundation.codec.Protocol` serves gossip between nodes, light-client lookups, record
submission and reachability proofs on the same port. The first frame of every connection is ``hello`` (from the
side that dialled) answered by ``hello_ack``; both carry the protocol version and the network, so a node on
another network or speaking another version is refused with a message naming what this node speaks.

This module is sans-IO: schemas, the hello check and a few pure encoders. docs/ledger-protocol.md describes
each frame and flow; tests/ledger/test_protocol.py checks its test vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from p2pchat.foundation.codec import Field, Message, Protocol, opt
from p2pchat.foundation.errors import ProtocolError

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
AGENT = "p2pchat-ledger/0.1"

HASH_LEN = 32
MAX_HEADERS = 2000          # per ``headers`` frame
MAX_LOCATOR = 64
MAX_GET_BLOCKS = 500        # hashes per ``get_blocks``
MAX_BLOCKS_BYTES = 4_000_000  # a ``blocks`` answer stops adding blocks past this many bytes
MAX_PEERS_SHARED = 100
MAX_FRAME = 8 * 1024 * 1024  # one maximal block (1 MB by default) fits with room to spare
MAX_HEADER_BYTES = 512
MAX_WORK_BYTES = 64
# A frame may build at most 1,024 maps and lists plus one per 64 bytes of its body: the leanest honest frame, a
# ``blocks`` answer of blocks without records, has one per ~72 bytes; a frame of nested empty maps built 68 bytes of
# Python objects per byte received (an 8 MiB one: 544 MB and 0.42 s) before this bound.
BYTES_PER_CONTAINER = 64

ROLE_PEER = "peer"          # a gossiping node (may be added to peer lists)
ROLE_CLIENT = "client"      # a light client or a one-shot request (status, lookup, submit, reachability proof)
ROLES = (ROLE_PEER, ROLE_CLIENT)

LOOKUP_KINDS = ("ip", "nick", "fp")
REACHABILITY_CONTEXT = "ledger-reachability"

_hash = Field(bytes, min_len=HASH_LEN, max_len=HASH_LEN)
_port = Field(int, lo=1, hi=65535)

# A node's hello carries everything; a light client's hello may leave out what it does not know yet (it learns
# the network from the node's hello_ack). ``PeerHello.from_message`` enforces this per role.
_HELLO: dict[str, Field] = {
    "version": Field(int, lo=0, hi=2**31),
    "role": Field(str, max_len=16),
    "nonce": Field(bytes, min_len=8, max_len=8),
    "network": opt(str, max_len=64),
    "genesis": opt(bytes, min_len=HASH_LEN, max_len=HASH_LEN),
    "params": opt(dict, max_len=64),
    "height": opt(int, lo=0, hi=2**40),
    "tip": opt(bytes, min_len=HASH_LEN, max_len=HASH_LEN),
    "work": opt(bytes, max_len=MAX_WORK_BYTES),
    "listen_port": opt(int, lo=1, hi=65535),
    "agent": opt(str, max_len=64),
    "time": opt(int, lo=0, hi=2**40),     # the sender's clock, unix seconds (network-adjusted time, nettime.py)
    "pruned": opt(int, lo=0, hi=2**40),   # pruning: bodies at or below this height are not served (prune.py)
}

LEDGER_PROTOCOL = Protocol("ledger", {
    "hello": _HELLO,
    "hello_ack": _HELLO,
    # Headers-first sync: the locator lists hashes of our main chain, dense at the tip then exponentially sparse.
    "get_headers": {"locator": Field(list, max_len=MAX_LOCATOR, items=_hash),
                    "limit": Field(int, lo=1, hi=MAX_HEADERS)},
    "headers": {"headers": Field(list, max_len=MAX_HEADERS, items=Field(bytes, max_len=MAX_HEADER_BYTES))},
    "get_blocks": {"hashes": Field(list, min_len=1, max_len=MAX_GET_BLOCKS, items=_hash)},
    "blocks": {"blocks": Field(list, max_len=MAX_GET_BLOCKS, items=Field(dict, max_len=16)),
               "pruned": opt(int, lo=0, hi=2**40), "reason": opt(str, max_len=1000)},   # pruning: not served
    # Announcements: full records and blocks are pushed; a receiver that already has them drops them.
    "record": {"record": Field(dict, max_len=32)},
    "block": {"block": Field(dict, max_len=16)},
    "get_peers": {},
    "peers": {"addrs": Field(list, max_len=MAX_PEERS_SHARED, items=Field(str, max_len=64))},
    # Lookups, answered with the block header and the Merkle path of the record.
    "lookup": {"by": Field(str, max_len=8), "value": Field(str, max_len=128)},
    "lookup_result": {"found": Field(bool), "reason": opt(str, max_len=1000), "record": opt(dict, max_len=32),
                      "header": opt(bytes, max_len=MAX_HEADER_BYTES), "index": opt(int, lo=0, hi=2**31),
                      "path": opt(list, max_len=64, items=_hash), "height": opt(int, lo=0, hi=2**40),
                      "confirmations": opt(int, lo=0, hi=2**40),
                      # This node's dispute mark of an IP binding (ledger/disputes.py): holder, answering, checked,
                      # node. Not proven: what the answering node itself observed.
                      "disputed": opt(dict, max_len=8)},
    "status": {},
    "status_result": {"status": Field(dict, max_len=64)},
    # Reachability proof: the node at the dialled address signs a fresh nonce with its identity key.
    "prove": {"nonce": _hash},
    "proof": {"key": Field(bytes, max_len=4096), "sig": Field(bytes, max_len=1024), "ip": Field(str, max_len=64)},
    # A light client hands a record to a node, which admits it like one received by gossip.
    "submit": {"record": Field(dict, max_len=32)},
    "submit_result": {"accepted": Field(bool), "reason": opt(str, max_len=1000), "id": opt(bytes, max_len=32)},
    # An owner's evidence that its binding was taken (ledger/watch.py, ledger/disputes.py): its signed record and,
    # if it was mined, the header and Merkle path of the block that held it. Gossip between peers only.
    "binding_alert": {"kind": Field(str, max_len=16), "record": Field(dict, max_len=32),
                      "header": opt(bytes, max_len=MAX_HEADER_BYTES), "index": opt(int, lo=0, hi=2**31),
                      "path": opt(list, max_len=64, items=_hash)},
    "ping": {"nonce": Field(int, lo=0, hi=2**63)},
    "pong": {"nonce": Field(int, lo=0, hi=2**63)},
    # Finality survey of a joining node: the newest final block, and the main-chain block at ``height`` if final.
    "get_checkpoint": {"height": opt(int, lo=0, hi=2**40)},
    "checkpoint": {"final_height": Field(int, lo=0, hi=2**40), "final_hash": _hash,
                   "height": opt(int, lo=0, hi=2**40), "hash": opt(bytes, min_len=HASH_LEN, max_len=HASH_LEN)},
    # A chat node's evidence (ledger/checkpoint_evidence.py): a chat peer whose ledger's final block is not on this
    # node's chain; ``peer`` is the chat peer's key fingerprint, so this node finds the peer's ledger node itself.
    "checkpoint_evidence": {"peer": _hash, "final_height": Field(int, lo=0, hi=2**32 - 1), "final_hash": _hash,
                            "tip_height": Field(int, lo=0, hi=2**32 - 1), "tip_hash": _hash},
    "evidence_result": {"verdict": Field(str, max_len=16), "detail": opt(str, max_len=1000)},
}, max_frame=MAX_FRAME, bytes_per_container=BYTES_PER_CONTAINER)


def work_to_bytes(work: int) -> bytes:
    """Cumulative work as minimal big-endian bytes (msgpack integers stop at 64 bits; work need not)."""
    if work < 0:
        raise ValueError("work cannot be negative")
    return work.to_bytes(max(1, (work.bit_length() + 7) // 8), "big")


def work_from_bytes(data: bytes) -> int:
    return int.from_bytes(data, "big")


@dataclass(frozen=True)
class PeerHello:
    """What the other side said about itself in its ``hello``/``hello_ack``.

    For a light client's hello the chain fields may be None; a node's hello (role ``peer``) and every
    ``hello_ack`` carry them all.
    """

    version: int
    role: str
    nonce: bytes
    network: str | None
    genesis: bytes | None
    params: dict[str, Any] | None
    height: int | None
    tip: bytes | None
    work: int | None
    listen_port: int | None
    agent: str
    time: int | None = None
    pruned: int | None = None   # bodies at or below this height are not served (a pruning node, prune.py)

    @property
    def complete(self) -> bool:
        return None not in (self.network, self.genesis, self.params, self.height, self.tip, self.work)

    @classmethod
    def from_message(cls, msg: Message) -> PeerHello:
        """Read a hello; refuses another protocol version first, so the message names the versions we speak."""
        if msg.type not in ("hello", "hello_ack"):
            raise ProtocolError(f"the first frame must be hello, got {msg.type}")
        if msg["version"] not in SUPPORTED_VERSIONS:
            known = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
            raise ProtocolError(f"ledger protocol version {msg['version']} is not supported; this node speaks "
                                f"version {known}")
        if msg["role"] not in ROLES:
            raise ProtocolError(f"unknown role '{msg['role'][:16]}' in hello (expected peer or client)")
        work = msg.get("work")
        hello = cls(version=msg["version"], role=msg["role"], nonce=msg["nonce"], network=msg.get("network"),
                    genesis=msg.get("genesis"), params=msg.get("params"), height=msg.get("height"),
                    tip=msg.get("tip"), work=None if work is None else work_from_bytes(work),
                    listen_port=msg.get("listen_port"), agent=msg.get("agent", "?"), time=msg.get("time"),
                    pruned=msg.get("pruned"))
        if (msg.type == "hello_ack" or hello.role == ROLE_PEER) and not hello.complete:
            raise ProtocolError(f"the {msg.type} is missing the network, genesis, params, height, tip or work")
        return hello


def hello_fields(*, role: str, nonce: bytes, network: str | None = None, genesis: bytes | None = None,
                 params: dict[str, Any] | None = None, height: int | None = None, tip: bytes | None = None,
                 work: int | None = None, listen_port: int | None = None,
                 time: int | None = None, pruned: int | None = None) -> dict[str, Any]:
    """The fields of our ``hello``/``hello_ack`` (``time`` only when given: a light client leaves it out;
    ``pruned`` only by a node that pruned bodies)."""
    return {"version": PROTOCOL_VERSION, "role": role, "nonce": nonce, "network": network, "genesis": genesis,
            "params": params, "height": height, "tip": tip,
            "work": None if work is None else work_to_bytes(work), "listen_port": listen_port, "agent": AGENT,
            "time": time, "pruned": pruned}


def check_compatible(hello: PeerHello, *, network: str | None, genesis: bytes | None,
                     difficulty_bits: int | None = None) -> None:
    """Refuse a peer on another network. ``network``/``genesis`` None means "not pinned"; a peer that did not
    say (a light client) is not refused for it. The message names both networks and both network ids."""
    from ledger.params import format_network_id

    peer_name = (hello.network or "?")[:64]
    if network is not None and hello.network is not None and hello.network != network:
        ids = ""
        if hello.genesis is not None and genesis is not None:
            ids = f" (ids {format_network_id(hello.genesis)} and {format_network_id(genesis)})"
        raise ProtocolError(f"wrong ledger network: the peer is on '{peer_name}', this node is on "
                            f"'{network}'{ids}; refusing it")
    if genesis is not None and hello.genesis is not None and hello.genesis != genesis:
        detail = ""
        peer_bits = hello.params.get("difficulty_bits") if isinstance(hello.params, dict) else None
        if isinstance(peer_bits, int) and difficulty_bits is not None and peer_bits != difficulty_bits:
            detail = f", difficulty {peer_bits} bits instead of {difficulty_bits}"
        raise ProtocolError(f"the peer's network '{peer_name}' has id {format_network_id(hello.genesis)}, but "
                            f"this node's network has id {format_network_id(genesis)} (same name, other "
                            f"parameters{detail}: another or a forged network); refusing it")


def reachability_data(nonce: bytes, ip: str, network: str) -> bytes:
    """The bytes a node signs (context ``ledger-reachability``) to prove that it answers at ``ip``.

    A fixed msgpack array, so both sides build identical bytes: [label, network, ip, nonce].
    """
    return msgpack.packb(["p2pchat-ledger-reachability-v1", network, ip, nonce], use_bin_type=True)


def parse_lookup_kind(by: str) -> str:
    if by not in LOOKUP_KINDS:
        raise ProtocolError(f"unknown lookup kind '{by[:8]}' (expected ip, nick or fp)")
    return by
