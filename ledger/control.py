"""The local control socket: ``ledger lookup`` asks this data directory's own running node without a proof.

A running node listens on ``ledger.sock``, a Unix socket in its data directory (docs/ledger.md, "Asking this
machine's own node"). Only the directory's owner can reach it or put a socket there (the directory is mode 0700,
the socket 0600), so an answer that comes through it comes from the node this user runs on this data directory,
which validated every block and record it holds. The node says whether the record's block had its signatures
checked (``checked``: false while the block is part of an assumed-valid history not yet verified in the
background); the command then checks nothing itself, which spares it pycryptodome, the header file and the
proof (bench/startup_bench.py). Anything else — no socket, another node asked (``--node``), another network,
an unchecked block — falls back to the proven lookup of :mod:`ledger.client`.

The socket speaks the project's frame codec (4-byte length, msgpack map) with its own two messages:
``lookup`` (``query``, ``by``) and ``lookup_result`` (``found``, ``reason``, ``binding``, ``checked``, ``node``,
``network``). ``binding`` is the map ``ledger lookup --json`` prints.

Client side (:func:`ask`) imports only the codec and the socket: it is what the command's start-up pays.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2pchat.foundation.codec import Field, Message, Protocol, opt
from p2pchat.foundation.errors import PeerUnreachable, UserError

if TYPE_CHECKING:
    from ledger.disputes import Dispute
    from ledger.local_ledger import LocalLedger
    from p2pchat.foundation.transport import FramedSocket, FrameServer

SOCKET_NAME = "ledger.sock"
MAX_CONNECTIONS = 16
TIMEOUT = 5.0
# sun_path holds 108 bytes on Linux and 104 on the BSDs and macOS, terminating NUL included.
MAX_PATH_BYTES = 103

CONTROL_PROTOCOL = Protocol("ledger-control", {
    "lookup": {"query": Field(str, max_len=256), "by": opt(str, max_len=8)},
    "lookup_result": {"found": Field(bool), "reason": opt(str, max_len=1000), "binding": opt(dict, max_len=32),
                      "checked": Field(bool), "node": Field(str, max_len=64), "network": Field(str, max_len=64)},
}, max_frame=64 * 1024)


def socket_path(data_dir: Path) -> Path:
    return Path(data_dir) / SOCKET_NAME


def usable(path: Path) -> bool:
    """True if a Unix socket can live at ``path`` on this system (Windows has none; the path length is bounded)."""
    return hasattr(socket, "AF_UNIX") and len(os.fsencode(str(path))) <= MAX_PATH_BYTES


# --- the command's side ---------------------------------------------------------------------------------------

def ask(data_dir: Path, query: str, by: str | None) -> Message | None:
    """This data directory's node's ``lookup_result`` for ``query``; None when no node answers on the socket
    (none running, none started with a socket, no Unix sockets here)."""
    path = socket_path(data_dir)
    if not usable(path):
        return None
    if not _owned(path):
        return None
    from p2pchat.foundation.transport import FramedSocket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
    except OSError:      # a socket file left by a node that stopped: refused
        sock.close()
        return None
    with FramedSocket(sock, CONTROL_PROTOCOL, timeout=TIMEOUT) as conn:
        try:
            conn.send("lookup", query=query, by=by)
            answer = conn.recv()
        except (PeerUnreachable, UserError):
            return None
    return answer if answer.type == "lookup_result" else None


def _owned(path: Path) -> bool:
    """True if ``path`` is a socket of this user in a directory only this user can write to: then no one else
    can have put it there (the rule of docs/ledger.md)."""
    if not hasattr(os, "getuid"):     # no POSIX owners to check (Windows): never trusted
        return False
    try:
        sock, parent = os.lstat(path), os.stat(path.parent)
    except OSError:
        return False
    uid = os.getuid()
    return (stat.S_ISSOCK(sock.st_mode) and sock.st_uid == uid and parent.st_uid == uid
            and not parent.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


# --- the node's side ------------------------------------------------------------------------------------------

Answer = Callable[[str, "str | None"], dict[str, Any]]


class ControlServer:
    """The node's control socket: one request per connection, answered by ``answer`` (a node method).

    ``start`` binds it when it can (a live socket of another node on this data directory is left alone);
    ``close`` stops every thread and removes the socket file."""

    def __init__(self, data_dir: Path, answer: Answer) -> None:
        self.path = socket_path(data_dir)
        self._answer = answer
        self._server: FrameServer | None = None
        self.problem: str | None = None      # why there is no socket, when there is none

    def start(self) -> bool:
        from p2pchat.foundation.transport import FrameServer

        if not usable(self.path):
            self.problem = f"no control socket: {self.path} is too long for a Unix socket, or there are none here"
            return False
        if _answers(self.path):
            self.problem = f"another node answers on {self.path}"
            return False
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.path.unlink(missing_ok=True)   # a socket file left by a node that stopped
            listener.bind(str(self.path))
            # Connecting needs write permission on the socket file: 0600 before it listens, so only the owner can.
            # (Not through the umask, which is the whole process's and would race the node's other threads.)
            os.chmod(self.path, 0o600)
        except OSError as exc:
            listener.close()
            self.problem = f"no control socket at {self.path}: {exc.strerror or exc}"
            return False
        self._server = FrameServer("", 0, CONTROL_PROTOCOL, self._serve, name="ledger-control",
                                   max_connections=MAX_CONNECTIONS, timeout=TIMEOUT, listener=listener)
        self._server.start()
        return True

    def _serve(self, conn: FramedSocket) -> None:
        request = conn.recv()
        if request.type != "lookup":
            conn.send_error(f"{request.type} is not a control request")
            return
        try:
            answer = self._answer(request["query"], request.get("by"))
        except UserError as exc:     # a query that is not one: the command's proven lookup says why, as usual
            conn.send_error(str(exc))
            return
        conn.send("lookup_result", **answer)

    def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self._server = None
        try:
            self.path.unlink()
        except OSError:
            pass


def _answers(path: Path) -> bool:
    """True if something accepts connections on the socket at ``path``."""
    if not path.exists():
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(1.0)
        sock.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def local_answer(ledger: LocalLedger, query: str, by: str | None, now: float, *, node: str, network: str,
                 checked: Callable[[int], bool], dispute: Callable[[str, bytes], Dispute | None],
                 refuse: str | None = None) -> dict[str, Any]:
    """The ``lookup_result`` fields for ``query`` from the node's own ledger.

    ``checked(height)`` says whether the signatures of the block at ``height`` were checked: an answer resting on
    a record of an unchecked block says ``checked`` false (a plain "no binding" rests on no record). ``dispute``
    gives the node's dispute mark of a binding; ``refuse`` is a reason not to answer at all (e.g. the background
    verification found a forgery). A query that is not one raises :class:`LedgerError`."""
    from ledger.lookup_service import AmbiguousLookup, answer_lookup, parse_query

    base: dict[str, Any] = {"node": node, "network": network, "checked": True}
    if refuse is not None:
        return base | {"found": False, "reason": refuse}
    attempts = parse_query(query, by)
    reason = "not found"
    for kind, value in attempts:
        try:
            answer = answer_lookup(ledger, kind, value, now)
        except AmbiguousLookup as exc:
            reason = str(exc)
            continue
        if answer is None:
            reason = f"no live binding for {kind} {value[:64]}"
            continue
        record = answer.record
        if record.kind == "revoke":
            return base | {"found": False, "reason": f"the identity for '{value}' was revoked",
                           "checked": checked(answer.height)}
        mark = dispute(record.ip, record.id) if kind == "ip" and record.ip is not None else None
        binding = {"nickname": record.nickname, "fingerprint": record.fingerprint.hex(), "ip": record.ip,
                   "port": record.port, "ledger_port": record.ledger_port, "relay": record.relay,
                   "issued": record.issued, "expires": record.expires, "seq": record.seq, "kind": record.kind,
                   "height": answer.height, "block": answer.header.hash.hex(),
                   "confirmations": answer.confirmations, "node": node, "proof": "own node",
                   "public_key": record.holder_key.hex(),
                   "disputed": mark.to_json() if mark is not None else None}
        return base | {"found": True, "binding": binding, "checked": checked(answer.height)}
    return base | {"found": False, "reason": reason}
