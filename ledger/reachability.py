"""Reachability proofs: before a node admits a record that claims an IP address for a key that does not hold it
yet, it dials ``ip:ledger_port`` and has the node there sign a fresh nonce with the claimed key.

The prover signs (context ``ledger-reachability``) the bytes of :func:`ledger.protocol.reachability_data`:
the nonce, the network name and the address *it was reached at* (the local address of the connection, never an
address the asker names), so a proof made for one address, network or asker never verifies for another.
"""

from __future__ import annotations

import logging

from ledger.errors import LedgerError
from ledger.params import NetworkParams
from ledger.protocol import (
    LEDGER_PROTOCOL,
    REACHABILITY_CONTEXT,
    ROLE_CLIENT,
    PeerHello,
    check_compatible,
    hello_fields,
    reachability_data,
)
from ledger.records import Record
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import format_address
from p2pchat.foundation.errors import CryptoError, UserError
from p2pchat.foundation.identity import Identity
from p2pchat.foundation.transport import FramedSocket, connect

log = logging.getLogger(__name__)
NONCE_LEN = 32


def sign_reachability(identity: Identity, nonce: bytes, local_ip: str, network: str) -> dict[str, object]:
    """The ``proof`` fields a node answers a ``prove`` with, for a connection that reached it at ``local_ip``."""
    return {"key": identity.public_der, "ip": local_ip,
            "sig": identity.sign(REACHABILITY_CONTEXT, reachability_data(nonce, local_ip, network))}


def check_proof(proof: dict[str, object], *, nonce: bytes, ip: str, network: str, expected_fp: bytes) -> None:
    """Raise :class:`LedgerError` unless ``proof`` shows that the key with ``expected_fp`` answers at ``ip``."""
    key, sig, proved_ip = proof.get("key"), proof.get("sig"), proof.get("ip")
    if not isinstance(key, bytes) or not isinstance(sig, bytes):
        raise LedgerError("the reachability proof is incomplete")
    if proved_ip != ip:
        raise LedgerError(f"the node at {ip} answered for another address ({str(proved_ip)[:45]})")
    if crypto.fingerprint(key) != expected_fp:
        raise LedgerError(f"the node answering at {ip} holds another key "
                          f"({crypto.format_fingerprint(crypto.fingerprint(key), 4)}), not the claimed "
                          f"{crypto.format_fingerprint(expected_fp, 4)}")
    try:
        crypto.verify(key, REACHABILITY_CONTEXT, reachability_data(nonce, ip, network), sig)
    except CryptoError as exc:
        raise LedgerError(f"the node at {ip} sent a bad reachability signature: {exc}") from None


def request_proof(conn: FramedSocket, params: NetworkParams, nonce: bytes, *, timeout: float) -> dict[str, object]:
    """Over a fresh connection: hello as a client, then ``prove``; returns the ``proof`` fields."""
    conn.send("hello", **hello_fields(role=ROLE_CLIENT, nonce=crypto.random_bytes(8), network=params.name,
                                      genesis=params.genesis_hash))
    ack = conn.recv(timeout)
    if ack.type == "error":
        raise LedgerError(f"it refused: {ack['reason']}")
    check_compatible(PeerHello.from_message(ack), network=params.name, genesis=params.genesis_hash)
    conn.send("prove", nonce=nonce)
    answer = conn.recv(timeout)
    if answer.type == "error":
        raise LedgerError(f"it refused: {answer['reason']}")
    if answer.type != "proof":
        raise LedgerError(f"it answered {answer.type} instead of a proof")
    return answer.fields


def prove_reachability(record: Record, params: NetworkParams, *, source_ip: str | None,
                       timeout: float = 5.0) -> None:
    """Dial the address ``record`` claims and check that the record's key answers there.

    Raises :class:`LedgerError` with the reason (unreachable, another key, bad signature, another network).
    """
    if record.ip is None:
        return
    if record.ledger_port is None:
        raise LedgerError(f"{record.describe()} claims {record.ip} without a ledger port, so the claim cannot be "
                          "checked by a reachability proof")
    where = format_address(record.ip, record.ledger_port)
    nonce = crypto.random_bytes(NONCE_LEN)
    try:
        with connect(record.ip, record.ledger_port, LEDGER_PROTOCOL, source_ip=source_ip, timeout=timeout) as conn:
            proof = request_proof(conn, params, nonce, timeout=timeout)
        check_proof(proof, nonce=nonce, ip=record.ip, network=params.name, expected_fp=record.fingerprint)
    except LedgerError as exc:
        raise LedgerError(f"reachability proof for {record.describe()} failed at {where}: {exc}") from None
    except UserError as exc:
        raise LedgerError(f"reachability proof for {record.describe()} failed: {exc}") from None
    log.debug("reachability proof ok: %s answers at %s", record.describe_key(), where)
