"""Acting on one's own binding by hand: update the nickname or address, rotate the key, revoke the identity.

The records are built here from the key in the data directory and the node's view of the identity's latest
record (its ``status``: the data directory is locked by the running node, so everything goes through its ledger
port), handed to that node like any gossiped record, and followed until a block holds them. The running node
adopts what was published (its own registration keeps the new nickname; after a mined rotation it loads the new
key, see :func:`switch_to_rotated_key`), so a user with ``ledger serve`` running needs nothing else.

Key files (docs/ledger.md, "Identity key file"): ``identity.pem`` is the key in use; a rotation writes the new
key to ``identity.next.pem`` (PKCS#8 PEM, mode 0600, same passphrase) and only once the rotation is mined moves
the old key to ``identity.retired-<first 16 hex digits of its fingerprint>.pem`` and the new one into
``identity.pem``. Until then the old key stays where it was, so an unmined rotation loses nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ledger.errors import LedgerError
from ledger.params import NetworkParams
from ledger.records import Record, make_register, make_revocation, make_rotation
from p2pchat.foundation import crypto
from p2pchat.foundation.errors import IdentityError
from p2pchat.foundation.identity import KEY_FILE, Identity

log = logging.getLogger(__name__)
NEXT_KEY_FILE = "identity.next.pem"
POLL_SECONDS = 0.5


class OwnRecordError(LedgerError):
    """The action cannot be taken (no record yet, revoked, another node's key, …): the message says why."""


class NodeAccess(Protocol):
    """What the actions need from a node: :class:`ledger.client.LedgerClient` provides it."""

    def status(self) -> dict[str, Any]: ...

    def submit(self, record: Record) -> bytes: ...

    def network(self) -> NetworkParams: ...


def retired_key_file(fingerprint: bytes) -> str:
    return f"identity.retired-{fingerprint.hex()[:16]}.pem"


@dataclass(frozen=True)
class OwnRecord:
    """The node's view of the identity's latest record (pending or mined)."""

    id: bytes
    seq: int
    kind: str
    nickname: str
    ip: str | None
    port: int | None
    ledger_port: int | None
    relay: str | None
    mined: bool


def own_record(status: dict[str, Any], identity: Identity) -> OwnRecord:
    """The latest record of ``identity`` from a node's status; refuses a node running another key."""
    if status.get("fingerprint") != identity.fingerprint.hex():
        theirs = status.get("fingerprint") or ""
        raise OwnRecordError(f"the node at {status.get('address')} runs another key "
                             f"({crypto.format_fingerprint(bytes.fromhex(theirs), 4) if theirs else 'unknown'}) "
                             f"than this data directory's ({crypto.format_fingerprint(identity.fingerprint, 4)}); "
                             "give the --data-dir of the node you ask, or ask the node that runs this key")
    own = status.get("own_record")
    if not own or "id" not in own:
        raise OwnRecordError("this key has no record in the ledger yet; wait until the node has registered it "
                             "('ledger status' shows it)")
    if own["kind"] == "revoke":
        raise OwnRecordError("this identity was revoked: it can publish nothing more")
    return OwnRecord(id=bytes.fromhex(own["id"]), seq=own["seq"], kind=own["kind"], nickname=own["nickname"],
                     ip=own.get("ip"), port=own.get("port"), ledger_port=own.get("ledger_port"),
                     relay=own.get("relay"), mined=own.get("state") == "mined")


def build_update(identity: Identity, own: OwnRecord, params: NetworkParams, now: float, *,
                 nickname: str | None = None, ip: str | None = None, chat_port: int | None = None) -> Record:
    """A register record that changes the nickname and/or the address and keeps everything else."""
    if nickname is None and ip is None and chat_port is None:
        raise OwnRecordError("nothing to change: give --nickname and/or --ip (or --chat-port)")
    new_ip = ip if ip is not None else own.ip
    port = chat_port if chat_port is not None else own.port
    if new_ip is not None and port is None:
        raise OwnRecordError("an address needs the chat port too: give --chat-port")
    return make_register(identity, network=params.name, seq=own.seq + 1, prev=own.id,
                         nickname=own.nickname if nickname is None else nickname, ip=new_ip,
                         port=port if new_ip is not None else None,
                         ledger_port=own.ledger_port if new_ip is not None else None, relay=own.relay,
                         issued=int(now), lifetime=params.default_record_lifetime)


def build_rotation(old: Identity, new: Identity, own: OwnRecord, params: NetworkParams, now: float) -> Record:
    """A rotation to ``new`` carrying the current binding unchanged, signed by both keys."""
    return make_rotation(old, new, network=params.name, seq=own.seq + 1, prev=own.id, nickname=own.nickname,
                         ip=own.ip, port=own.port if own.ip else None,
                         ledger_port=own.ledger_port if own.ip else None, relay=own.relay, issued=int(now),
                         lifetime=params.default_record_lifetime)


def build_revocation(identity: Identity, own: OwnRecord, params: NetworkParams, now: float) -> Record:
    return make_revocation(identity, network=params.name, seq=own.seq + 1, prev=own.id, issued=int(now))


# --- key files -------------------------------------------------------------------------------------------------

def load_identity(data_dir: Path, passphrase: str | None) -> Identity:
    path = Path(data_dir) / KEY_FILE
    if not path.exists():
        raise OwnRecordError(f"there is no identity key in {data_dir} (start a node with 'ledger serve' first, "
                             "or give the --data-dir it uses)")
    return Identity.load(path, passphrase)


def next_key(data_dir: Path, passphrase: str | None, own: OwnRecord) -> Identity:
    """The key to rotate to: the one a previous, unfinished attempt left in ``identity.next.pem`` (so a second
    attempt never loses it), else a new key written there (PKCS#8, mode 0600, same passphrase)."""
    path = Path(data_dir) / NEXT_KEY_FILE
    if os.path.lexists(path):       # a link to nothing too: refused by load, never replaced by another new key
        log.info("reusing the new key left by an earlier rotation attempt in %s", path)
        return Identity.load(path, passphrase)
    new = Identity.generate()
    new.save(path, passphrase)
    return new


def switch_to_rotated_key(data_dir: Path, new_fingerprint: bytes, passphrase: str | None) -> Identity | None:
    """Once a rotation to ``new_fingerprint`` is mined: make ``identity.pem`` the new key, keeping the old one
    as ``identity.retired-….pem``. Idempotent and safe when the node and the command both try; returns the new
    identity, or None when its key file is not here."""
    data_dir = Path(data_dir)
    current_path, next_path = data_dir / KEY_FILE, data_dir / NEXT_KEY_FILE
    try:
        current = Identity.load(current_path, passphrase)
        if current.fingerprint == new_fingerprint:
            return current
        if not next_path.exists():
            return None
        new = Identity.load(next_path, passphrase)
    except IdentityError as exc:
        log.warning("cannot switch to the rotated key: %s", exc)
        return None
    if new.fingerprint != new_fingerprint:
        log.warning("%s holds key %s, not the key the rotation moved to (%s)", next_path, new.short_fingerprint,
                    crypto.format_fingerprint(new_fingerprint))
        return None
    backup = data_dir / retired_key_file(current.fingerprint)
    try:
        os.link(current_path, backup)
    except FileExistsError:
        pass
    try:
        os.replace(next_path, current_path)
    except FileNotFoundError:
        pass  # the other party switched first
    final = Identity.load(current_path, passphrase)
    if final.fingerprint != new_fingerprint:
        return None
    log.warning("identity key switched to %s (the retired key is kept in %s)", final.short_fingerprint, backup)
    return final


# --- publishing ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Published:
    record: Record
    mined: bool
    height: int | None


def describe(record: Record) -> list[str]:
    """The record as lines a person can check before and after it is published (no private data)."""
    lines = [f"kind        {record.kind} (seq {record.seq}, id {record.id.hex()[:16]})",
             f"key         {crypto.format_fingerprint(record.signer_fingerprint)}"]
    if record.kind == "rotate":
        lines.append(f"new key     {crypto.format_fingerprint(record.fingerprint)}")
    if record.kind != "revoke":
        lines.append(f"nickname    {record.nickname!r}" + ("  (none)" if not record.nickname else ""))
        lines.append(f"address     {record.ip}:{record.port}" if record.ip else "address     none")
        if record.relay:
            lines.append(f"relay       {record.relay}")
        lines.append(f"expires     {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(record.expires))}")
    return lines


def publish_and_wait(node: NodeAccess, record: Record, wait: float,
                     progress: Callable[[str], None] = lambda _text: None,
                     clock: Callable[[], float] = time.monotonic,
                     stop: threading.Event | None = None) -> Published:
    """Submit ``record`` and follow the node's status until a block holds it, ``wait`` seconds pass or ``stop``
    is set (the record stays with the node either way). Raises :class:`LedgerError` with the node's reason when
    it refuses the record."""
    stop = stop or threading.Event()
    node.submit(record)
    progress("accepted by the node: waiting for a block")
    deadline = clock() + wait
    last = ""
    while True:
        own = node.status().get("own_record") or {}
        if own.get("id") == record.id.hex() and own.get("state") == "mined":
            return Published(record, True, own.get("height"))
        if own.get("id") not in (None, record.id.hex()) and own.get("seq", -1) >= record.seq:
            raise LedgerError(f"the node's latest record is now seq {own.get('seq')} ({str(own.get('id'))[:16]}), "
                              "not the one published: it was replaced or dropped; check 'ledger status'")
        status_text = "pending: waiting for a block" if own.get("id") == record.id.hex() else "waiting for the node"
        if status_text != last:
            progress(status_text)
            last = status_text
        if clock() >= deadline or stop.wait(POLL_SECONDS):
            return Published(record, False, None)
