"""The light client: asks a ledger node for a binding and checks the answer instead of trusting it.

For every lookup the client syncs block headers from the node and checks them (genesis of the network's
parameters, linkage, heights, the network's fixed proof-of-work target, timestamps), then checks the answer:
the block header must be the one at that height of the verified header chain, the Merkle path must put the
record in that block, the record must match the query, carry valid signatures and not be expired.
Confirmations are counted on the client's own header chain.

What a node can still do: hide a newer record (answer with an older, still unexpired one) or claim there is
no binding. A client that needs more assurance asks several nodes (docs/ledger.md, threat model).

``LedgerClient`` is what ``ledger lookup`` and the chat node use. Each call opens one short connection, bound
to ``source_ip`` when given; the verified headers are kept between calls.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.blocks import BlockHeader
from ledger.errors import LedgerError
from ledger.header_store import HeaderStore, header_file_path
from ledger.lookup_service import LookupAnswer, parse_query
from ledger.network_pin import NetworkMismatch, find_pin, mismatch_message
from ledger.params import NetworkParams
from ledger.protocol import LEDGER_PROTOCOL, MAX_HEADERS, ROLE_CLIENT, PeerHello, check_compatible, hello_fields
from ledger.records import Record, nickname_key
from ledger.sync import FinalityConflict, HeaderChain, PendingBranch
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import LEDGER_PORT, format_address, normalize_ip
from p2pchat.foundation.codec import Message
from p2pchat.foundation.errors import PeerUnreachable, ProtocolError, UserError
from p2pchat.foundation.transport import FramedSocket, connect

if TYPE_CHECKING:  # imported when a dispute mark arrives: most lookups never need it
    from ledger.disputes import Dispute

log = logging.getLogger("ledger.client")

MAX_HEADER_ROUNDS = 500     # bounds one header sync (2000 headers a round: a million blocks)
MAX_BRANCH = 20_000         # headers of a competing branch held (≈ 13 MB, each checked on arrival) before adopted
STALE_ANSWER_RETRIES = 2    # lookups asked again when the answer's block is not on the headers synced after it
MAX_BRANCH_RESTARTS = 2     # times one sync may see the node switch to another branch before it is refused
CALL_TIMEOUTS = 3           # a call's answers must all arrive within this many timeouts, plus one per full batch
                            # of checked headers (those cost the sender proof of work)


class _StaleAnswer(LedgerError):
    """A lookup answer proven by a block that is not on the header chain synced right after it."""


class LookupNotFound(LedgerError):
    """The node has no live binding for the query."""


@dataclass(frozen=True)
class VerifiedBinding:
    """A binding whose proof the client checked: the record's fields, its block and confirmations."""

    record: Record
    public_der: bytes          # the key the binding is under (the new key of a rotation)
    fingerprint: bytes         # SHA-256 of public_der
    ip: str | None
    port: int | None           # chat port
    ledger_port: int | None
    nickname: str
    relay: str | None          # "ip:port" of a relay that reaches this host, if any
    issued: int
    expires: int
    seq: int
    height: int                # block that holds the record
    block_hash: bytes
    confirmations: int         # blocks on top of and including that block, on the client's header chain
    node: str                  # the node that answered
    disputed: Dispute | None = None   # the node's dispute mark (IP lookups; ledger/disputes.py), not proven

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()

    @property
    def short_fingerprint(self) -> str:
        return crypto.format_fingerprint(self.fingerprint)

    @property
    def address(self) -> str | None:
        """``ip:port`` of the chat endpoint, None for a relay-only host."""
        return format_address(self.ip, self.port) if self.ip is not None and self.port is not None else None

    def to_json(self) -> dict[str, Any]:
        return {"nickname": self.nickname, "fingerprint": self.fingerprint_hex, "ip": self.ip, "port": self.port,
                "ledger_port": self.ledger_port, "relay": self.relay, "issued": self.issued,
                "expires": self.expires, "seq": self.seq, "kind": self.record.kind, "height": self.height,
                "block": self.block_hash.hex(), "confirmations": self.confirmations, "node": self.node,
                "proof": "verified", "public_key": self.public_der.hex(),
                "disputed": self.disputed.to_json() if self.disputed is not None else None}


class _Exchange:
    """One call's connection and its deadline: a node that answers each frame just in time, or keeps the client
    asking, still ends the call once the whole call's time is spent."""

    def __init__(self, conn: FramedSocket, node: str, budget: float) -> None:
        self.conn = conn
        self.node = node
        self.budget = budget
        self._deadline = time.monotonic() + budget

    def __enter__(self) -> _Exchange:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def extend(self, seconds: float) -> None:
        """More time for a call that made progress the node paid for (a full batch of checked headers)."""
        self.budget += seconds
        self._deadline += seconds

    def recv(self, timeout: float) -> Message:
        """The next message, waiting ``timeout`` at most, or less when the call's deadline comes first."""
        remaining = self._deadline - time.monotonic()
        if remaining > 0:
            try:
                return self.conn.recv(min(timeout, remaining))
            except PeerUnreachable:
                if self._deadline > time.monotonic():
                    raise
        raise LedgerError(f"{self.node} did not finish answering within {self.budget:.0f} s; giving up")


class LedgerClient:
    """A light client of one ledger node (see the module docstring).

    ``network`` pins what the node must be on: a :class:`NetworkParams` pins everything (difficulty included),
    a name pins the name and adopts the node's parameters after checking them against its genesis hash, None
    adopts the node's network. With ``pin_dir`` (a data directory) and no :class:`NetworkParams`, the network
    pinned there (``ledger join``/``serve`` wrote it, :mod:`ledger.network_pin`) is used as if it had been
    passed: a node on a same-named network with other parameters is refused. Raises :class:`PeerUnreachable`
    when the node cannot be reached and
    :class:`LedgerError` (:class:`LookupNotFound` for "no binding") for everything else.
    """

    def __init__(self, ip: str, port: int = LEDGER_PORT, *, source_ip: str | None = None,
                 network: str | NetworkParams | None = None, timeout: float = 5.0,
                 pin_dir: Path | None = None) -> None:
        if pin_dir is not None and not isinstance(network, NetworkParams):
            network = find_pin(pin_dir, network) or network
        self.ip = normalize_ip(ip)
        self.port = port
        self.source_ip = source_ip
        self.timeout = timeout
        self.params: NetworkParams | None = network if isinstance(network, NetworkParams) else None
        self._network_name = network.name if isinstance(network, NetworkParams) else network
        self._data_dir = pin_dir
        self.header_problem: str | None = None   # why a stored header file was moved aside, if it was
        self.headers_received = 0                # headers this client was sent (a restart syncs only the suffix)
        self._header_chain: HeaderChain | None = None   # opened on first use: status or submit never touch it
        self._lock = threading.Lock()     # guards the header chain only, never held across network IO
        self._open_lock = threading.Lock()   # opening the header file

    @property
    def node(self) -> str:
        return format_address(self.ip, self.port)

    # --- public API ----------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The node's status (height, tip, work, peers, pending records, own record, …)."""
        with self._session() as conn:
            answer = self._request(conn, "status", "status_result")
            return dict(answer["status"])

    def lookup(self, query: str, *, by: str | None = None) -> VerifiedBinding:
        """The verified binding for an IP, nickname or fingerprint (hex, or a prefix of ≥ 8 hex digits).

        ``by`` ("ip", "nick", "fp") forces the kind; otherwise it is detected from the query.
        """
        attempts = parse_query(query, by)
        # No lock across the exchange: lookups of several sessions run at once; only the shared header chain
        # is guarded, one batch of headers at a time (_sync, _verify).
        with self._session() as conn:
            reasons = []
            for kind, value in attempts:
                for retry in range(STALE_ANSWER_RETRIES + 1):
                    answer = self._request(conn, "lookup", "lookup_result", by=kind, value=value)
                    if not answer["found"]:
                        reasons.append(answer.get("reason") or "not found")
                        break
                    try:
                        return self._verify(conn, kind, value, answer.fields)
                    except _StaleAnswer:
                        # The node's chain moved (a new block, a reorg) between its answer and our header sync:
                        # ask again; a node that keeps answering off its own chain is refused below.
                        if retry == STALE_ANSWER_RETRIES:
                            raise
        detail = reasons[-1] if reasons else "not found"
        raise LookupNotFound(f"no ledger record for '{query.strip()}' at {self.node} ({detail})")

    def find(self, query: str, *, by: str | None = None) -> VerifiedBinding | None:
        """Like :meth:`lookup` but None when there is no binding."""
        try:
            return self.lookup(query, by=by)
        except LookupNotFound:
            return None

    def submit(self, record: Record) -> bytes:
        """Hand a record to the node (it checks it like any gossiped record); returns the record id.
        Raises :class:`LedgerError` with the node's reason when it is refused."""
        # A new IP claim makes the node dial the claimed address first: allow for its timeout.
        with self._session(extra=10.0) as conn:
            answer = self._request(conn, "submit", "submit_result", timeout=self.timeout + 10.0,
                                   record=record.to_wire())
        if not answer["accepted"]:
            raise LedgerError(f"{self.node} refused the record: {answer.get('reason') or 'no reason given'}")
        return record.id

    def network(self) -> NetworkParams:
        """The node's network parameters (checked against its genesis hash, and against ``network`` if pinned)."""
        with self._session():
            pass
        assert self.params is not None
        return self.params

    def checkpoint(self, height: int | None = None) -> tuple[int, bytes, bytes | None]:
        """The node's newest final block ``(height, hash)`` and, when ``height`` is given and final there,
        the hash of its main-chain block at ``height`` (else None)."""
        with self._session() as conn:
            fields = {} if height is None else {"height": height}
            answer = self._request(conn, "get_checkpoint", "checkpoint", **fields)
        at = answer.get("hash") if answer.get("height") == height else None
        return answer["final_height"], answer["final_hash"], at

    def sync_headers(self) -> int:
        """Fetch and check the node's headers; returns the verified height."""
        with self._session() as conn:
            return self._sync(conn)

    def header(self, height: int) -> BlockHeader | None:
        """The verified header at ``height`` (after a lookup or :meth:`sync_headers`)."""
        return self._headers.at(height) if self._headers is not None else None

    def position(self) -> tuple[int, bytes, int, bytes] | None:
        """Where the verified header chain stands, read locally (no IO): ``(final height, final hash, tip height,
        tip hash)``, the final block being the newest a node reported on this chain (genesis if none); ``None``
        before the network is known."""
        chain = self._headers
        if chain is None:
            return None
        assert self.params is not None      # the header chain exists only once the network is known
        # The final block first: the chain never moves below it (HeaderChain.extend), so the tip read after it is
        # at or above it.
        final = chain.final() or (0, self.params.genesis_hash)
        tip = chain.tip
        return final[0], final[1], tip.height, tip.hash

    def report_checkpoint(self, *, peer: bytes, final_height: int, final_hash: bytes, tip_height: int,
                          tip_hash: bytes) -> str:
        """Give the node a chat peer's ledger position that disagrees with ours (``checkpoint_evidence``,
        docs/ledger-protocol.md §5.5): ``peer`` is the peer's key fingerprint, so the node can find its ledger node
        in its own ledger. Returns the node's verdict text."""
        with self._session() as conn:
            answer = self._request(conn, "checkpoint_evidence", "evidence_result", peer=peer,
                                   final_height=final_height, final_hash=final_hash, tip_height=tip_height,
                                   tip_hash=tip_hash)
        return str(answer["verdict"]) + (f": {answer['detail']}" if answer.get("detail") else "")

    @property
    def header_store(self) -> HeaderStore | None:
        """Where the verified headers are kept (None before the network is known)."""
        return self._headers.store if self._headers is not None else None

    @property
    def height(self) -> int:
        """Height of the verified header chain (-1 before the first contact)."""
        return self._headers.height if self._headers is not None else -1

    # --- internals -----------------------------------------------------------------------------------------

    def _session(self, extra: float = 0.0) -> _Exchange:
        """A connection that completed the handshake; the call must end within ``CALL_TIMEOUTS`` timeouts plus
        ``extra`` seconds."""
        conn = connect(self.ip, self.port, LEDGER_PROTOCOL, source_ip=self.source_ip, timeout=self.timeout)
        exchange = _Exchange(conn, self.node, CALL_TIMEOUTS * self.timeout + extra)
        try:
            # Only the name goes out: the genesis is compared here, so the refusal is told from this side.
            conn.send("hello", **hello_fields(role=ROLE_CLIENT, nonce=crypto.random_bytes(8),
                                              network=self._network_name))
            ack = exchange.recv(self.timeout)
            if ack.type == "error":
                raise ProtocolError(f"{self.node} refused the connection: {ack['reason']}")
            hello = PeerHello.from_message(ack)
            check_compatible(hello, network=self._network_name, genesis=None)
            if self.params is not None and hello.genesis != self.params.genesis_hash:
                assert hello.genesis is not None  # hello_ack is always complete
                bits = hello.params.get("difficulty_bits") if hello.params else None
                raise NetworkMismatch(mismatch_message(
                    f"the ledger node at {self.node}", hello.network or "?", hello.genesis, self.params,
                    peer_difficulty=bits if isinstance(bits, int) else None))
            self._adopt(hello)
        except BaseException:
            conn.close()
            raise
        return exchange

    def _adopt(self, hello: PeerHello) -> None:
        if self.params is not None:
            return
        assert hello.params is not None and hello.genesis is not None  # hello_ack is always complete
        try:
            params = NetworkParams.from_wire(hello.params, hello.genesis)
        except LedgerError as exc:
            raise ProtocolError(f"{self.node} announced unusable network parameters: {exc}") from None
        with self._lock:
            if self.params is None:     # two first lookups at once: the first to get here sets them
                self.params = params

    @property
    def _headers(self) -> HeaderChain | None:
        """The verified headers (None before the network is known): persisted in the data directory
        (``pin_dir``) when there is one."""
        with self._open_lock:
            return self._open_headers()

    def _open_headers(self) -> HeaderChain | None:
        if self._header_chain is None and self.params is not None:
            if self._data_dir is None:
                self._header_chain = HeaderChain(self.params)
            else:
                store = HeaderStore(self.params, header_file_path(self._data_dir, self.params, self.ip, self.port))
                self.header_problem = store.problem
                self._header_chain = HeaderChain(self.params, store)
        return self._header_chain

    def close(self) -> None:
        """Close the header file (also closed when the client is garbage-collected)."""
        if self._header_chain is not None:
            self._header_chain.store.close()

    def _request(self, conn: _Exchange, type_: str, answer_type: str, *, timeout: float | None = None,
                 **fields: Any) -> Message:
        self._send(conn, type_, **fields)
        return self._answer(conn, type_, answer_type, timeout)

    def _send(self, conn: _Exchange, type_: str, **fields: Any) -> None:
        try:
            conn.conn.send(type_, **fields)
        except PeerUnreachable:
            raise
        except UserError as exc:
            raise LedgerError(f"cannot send a {type_} request to {self.node}: {exc}") from None

    def _answer(self, conn: _Exchange, type_: str, answer_type: str, timeout: float | None = None) -> Message:
        try:
            answer = conn.recv(self.timeout if timeout is None else timeout)
        except (PeerUnreachable, LedgerError):
            raise
        except UserError as exc:
            raise LedgerError(f"{self.node} sent a bad answer: {exc}") from None
        if answer.type == "error":
            raise LedgerError(f"{self.node} refused: {answer['reason']}")
        if answer.type != answer_type:
            raise LedgerError(f"{self.node} answered {answer.type} to a {type_} request")
        return answer

    def _sync(self, conn: _Exchange) -> int:
        chain = self._headers
        assert chain is not None
        branch: PendingBranch | None = None  # a branch forking below our tip: checked as it arrives, adopted whole
        restarts = 0

        def adopt(headers: list[BlockHeader]) -> None:
            try:
                with self._lock:        # another lookup may have extended the chain meanwhile: extend copes
                    chain.extend(headers, time.time())
            except FinalityConflict as exc:
                raise LedgerError(f"{self.node} is on another history than this client: {exc}") from None
            except LedgerError as exc:
                raise LedgerError(f"{self.node} sent an invalid header chain: {exc}") from None

        # The node's final block is asked together with the first headers (answers come in request order): once
        # it is on our chain, no later answer can take this client below it without an error saying so.
        checkpoint: Message | None = None
        before = self.headers_received
        for _ in range(MAX_HEADER_ROUNDS):
            with self._lock:
                ours = chain.locator()
                tip = chain.tip.hash
            locator = ([branch.tip.hash] if branch is not None else []) + ours
            if checkpoint is None:
                self._send(conn, "get_checkpoint")
                self._send(conn, "get_headers", locator=locator[:64], limit=MAX_HEADERS)
                checkpoint = self._answer(conn, "get_checkpoint", "checkpoint")
                answer = self._answer(conn, "get_headers", "headers")
            else:
                answer = self._request(conn, "get_headers", "headers", locator=locator[:64], limit=MAX_HEADERS)
            try:
                headers = [BlockHeader.unpack(h) for h in answer["headers"]]
            except LedgerError as exc:
                raise LedgerError(f"{self.node} sent a malformed header: {exc}") from None
            self.headers_received += len(headers)
            if branch is not None and headers and headers[0].prev_hash != branch.tip.hash:
                # The node switched branches meanwhile: start over from our own chain, a bounded number of times
                # (a node resending one batch it mined once would otherwise have it checked round after round).
                restarts += 1
                if restarts > MAX_BRANCH_RESTARTS:
                    raise LedgerError(f"{self.node} switched branches {restarts} times in one header sync")
                branch = None
            if branch is None and headers and headers[0].prev_hash == tip:
                adopt(headers)  # extends our tip: checked batch by batch
            elif headers:
                try:
                    with self._lock:
                        branch = branch or chain.branch_from(headers[0])
                    branch.add(headers, time.time())
                except LedgerError as exc:
                    raise LedgerError(f"{self.node} sent an invalid header chain: {exc}") from None
                if len(branch.headers) > MAX_BRANCH:
                    raise LedgerError(f"{self.node} sent a competing branch of over {MAX_BRANCH} headers")
            if len(headers) < MAX_HEADERS:
                break
            conn.extend(self.timeout)   # a full batch of checked headers: the node paid its proof of work
        if branch is not None:
            adopt(branch.headers)
        if checkpoint is not None:
            with self._lock:
                chain.note_final(checkpoint["final_height"], checkpoint["final_hash"])
        with self._lock:
            height = chain.height
        log.info("%s sent %d headers; verified header chain at height %d", self.node, self.headers_received - before,
                 height)
        return height

    def _verify(self, conn: _Exchange, kind: str, value: str, fields: dict[str, Any]) -> VerifiedBinding:
        params, chain = self.params, self._headers
        assert params is not None and chain is not None
        try:
            answer = LookupAnswer.from_wire(fields)
            answer.verify_proof()
        except LedgerError as exc:
            raise LedgerError(f"{self.node} sent a lookup answer that does not check out: {exc}") from None
        self._sync(conn)  # also brings the confirmation count up to date
        with self._lock:
            held = chain.at(answer.height)
            confirmations = chain.confirmations(answer.height)
        if held is None or held.hash != answer.header.hash:
            raise _StaleAnswer(f"{self.node} answered with {answer.header.describe()}, which is not on the "
                               "verified header chain")
        record = answer.record
        try:
            record.verify_signatures(params.name)
        except LedgerError as exc:
            raise LedgerError(f"{self.node} answered with a forged record: {exc}") from None
        _check_matches(record, kind, value, self.node)
        now = time.time()
        if record.kind == "revoke":
            raise LookupNotFound(f"the identity for '{value}' was revoked")
        if record.expires <= now:
            raise LedgerError(f"the record for '{value}' at {self.node} expired at {record.expires}")
        mark = fields.get("disputed")
        disputed: Dispute | None = None
        if kind == "ip" and mark is not None:
            from ledger.disputes import Dispute
            disputed = Dispute.from_wire(value, mark)
        return VerifiedBinding(record=record, public_der=record.holder_key, fingerprint=record.fingerprint,
                               ip=record.ip, port=record.port, ledger_port=record.ledger_port,
                               nickname=record.nickname, relay=record.relay, issued=record.issued,
                               expires=record.expires, seq=record.seq, height=answer.height,
                               block_hash=held.hash, confirmations=confirmations,
                               node=self.node, disputed=disputed)


def _check_matches(record: Record, kind: str, value: str, node: str) -> None:
    """The answer must be about what was asked, or a node could answer with any valid record."""
    if kind == "ip":
        ok = record.ip == value
    elif kind == "nick":
        ok = nickname_key(value) in record.nickname_keys
    else:
        ok = record.fingerprint.hex().startswith(value)
    if not ok:
        raise LedgerError(f"{node} answered a lookup of {kind} '{value}' with a record for "
                          f"'{record.nickname}' ({record.ip or record.relay})")
