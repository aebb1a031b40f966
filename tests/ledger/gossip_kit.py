"""Builders for the gossip-node tests: in-process nodes on fresh 127.x addresses with short timeouts, a chain
grower, and a raw ledger-protocol connection that plays a misbehaving peer."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ledger.blocks import Block, BlockHeader
from ledger.chain import FinalityPolicy
from ledger.local_ledger import LocalLedger
from ledger.merkle import merkle_root
from ledger.miner import mine
from ledger.node import LedgerNode, NodeConfig
from ledger.params import NetworkParams
from ledger.protocol import LEDGER_PROTOCOL, ROLE_CLIENT, ROLE_PEER, hello_fields
from ledger.records import Record, make_register
from p2pchat.foundation import crypto
from p2pchat.foundation.identity import Identity
from p2pchat.foundation.transport import FramedSocket, connect
from tests.conftest import free_loopback_ip, make_identities
from tests.helpers import wait_until

PARAMS = NetworkParams(name="gossipnet", difficulty_bits=8)
DAY = 86400

FAST = NodeConfig(handshake_timeout=1.5, client_idle_timeout=5.0, ping_interval=2.0, request_timeout=5.0,
                  connect_timeout=2.0, send_timeout=5.0, reachability_timeout=2.0, maintain_interval=0.05,
                  backoff_base=0.1, backoff_cap=0.5, register_grace=1.0, register_retry=1.0, register_check=0.5,
                  ban_seconds=60.0)


def config(**changes: Any) -> NodeConfig:
    return dataclasses.replace(FAST, **changes)


class Net:
    """In-process ledger nodes of one test; closes every node and ledger on exit."""

    def __init__(self, base: Path, params: NetworkParams = PARAMS) -> None:
        self.base = base
        self.params = params
        self.nodes: list[LedgerNode] = []
        self._ids = iter(make_identities(6))

    def identity(self) -> Identity:
        return next(self._ids)

    def ledger(self, name: str, params: NetworkParams | None = None,
               finality: FinalityPolicy | None = None) -> LocalLedger:
        return LocalLedger(self.base / name, params or self.params, finality=finality)

    def node(self, *, ip: str | None = None, seeds: Sequence[str] = (), identity: Identity | None = None,
             ledger: LocalLedger | None = None, params: NetworkParams | None = None, start: bool = True,
             **kw: Any) -> LedgerNode:
        ip = ip or free_loopback_ip()
        identity = identity or self.identity()
        cfg = kw.pop("config", FAST)
        ledger = ledger or self.ledger(f"node-{ip}", params)
        node = LedgerNode(identity, ledger, host=ip, port=kw.pop("port", 0), seeds=seeds, config=cfg, **kw)
        self.nodes.append(node)
        return node.start() if start else node

    def registered_node(self) -> LedgerNode:
        """A started node whose own record is already in its ledger."""
        node = self.node()
        wait_until(lambda: node.ledger.lookup("ip", node.host, node.clock()), what="registration")
        return node

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        for node in self.nodes:
            node.ledger.close()

    def __enter__(self) -> Net:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()




def record_for(identity: Identity, ip: str | None, *, nickname: str, seq: int = 0, prev: bytes = bytes(32),
               ledger_port: int | None = None, relay: str | None = None,
               params: NetworkParams = PARAMS) -> Record:
    return make_register(identity, network=params.name, seq=seq, prev=prev, nickname=nickname, ip=ip,
                         port=8471 if ip else None, ledger_port=ledger_port if ip else None, relay=relay,
                         issued=int(time.time()), lifetime=DAY)


def next_block(parent: BlockHeader, records: Sequence[Record], timestamp: int,
               params: NetworkParams = PARAMS) -> Block:
    header = BlockHeader(version=params.version, network_id=params.network_id, height=parent.height + 1,
                         prev_hash=parent.hash, merkle_root=merkle_root([r.id for r in records]),
                         timestamp=timestamp, target_bits=params.difficulty_bits, nonce=0)
    solved = mine(header, threading.Event())
    assert solved is not None
    return Block(solved, tuple(records))


def grow(ledger: LocalLedger, n: int, *, start: int | None = None) -> list[Block]:
    """Mine ``n`` empty blocks onto ``ledger``'s tip, dated a second apart in the recent past."""
    t = start if start is not None else int(time.time()) - n - 60
    blocks = []
    tip = ledger.chain.tip
    for i in range(n):
        block = next_block(tip, (), max(t + i, tip.timestamp + 1), ledger.params)
        assert ledger.receive_block(block, time.time()).status == "added"
        blocks.append(block)
        tip = block.header
    return blocks


class RawPeer:
    """A hand-driven ledger connection (role peer or client) for playing a misbehaving node."""

    def __init__(self, node: LedgerNode, *, source_ip: str | None = None, role: str = ROLE_PEER,
                 params: NetworkParams = PARAMS, hello: bool = True) -> None:
        self.source_ip = source_ip or free_loopback_ip()
        self.conn: FramedSocket = connect(node.host, node.port, LEDGER_PROTOCOL, source_ip=self.source_ip,
                                          timeout=5.0)
        self.ack = None
        if hello:
            genesis = params.genesis()
            self.conn.send("hello", **hello_fields(
                role=role, nonce=crypto.random_bytes(8), network=params.name, genesis=params.genesis_hash,
                params=params.to_wire(), height=0, tip=genesis.hash, work=0, listen_port=None))
            self.ack = self.recv_type("hello_ack")

    def recv_type(self, type_: str, timeout: float = 5.0) -> Any:
        """The next message of ``type_``, skipping gossip the node sends meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.conn.recv(max(0.01, deadline - time.monotonic()))
            if msg.type == type_ or msg.type == "error":
                return msg

    def close(self) -> None:
        self.conn.close()


__all__ = ["DAY", "FAST", "PARAMS", "ROLE_CLIENT", "ROLE_PEER", "Net", "RawPeer", "config", "grow", "next_block",
           "record_for", "wait_until"]
