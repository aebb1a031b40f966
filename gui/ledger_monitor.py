"""Watching the ledger node off the Tk thread: a thread asks for its status every second and keeps the newest
:class:`~gui.ledger_view.LedgerSnapshot` for the window to take on its next tick; "Join network" requests run
on the same thread.

Two sources: :class:`NodeSource` reads a :class:`ledger.node.LedgerNode` running in this process (status,
recent blocks, pending records); :class:`ClientSource` asks a ledger node run by another program through
:class:`ledger.client.LedgerClient`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from gui.ledger_view import ALERT_CHARS, LedgerSnapshot
from gui.text import clean_line, clean_name
from p2pchat.foundation.errors import UserError

log = logging.getLogger(__name__)

RECENT_BLOCKS = 8
PENDING_SHOWN = 20


class LedgerSource(Protocol):
    where: str

    def snapshot(self) -> LedgerSnapshot: ...
    def join(self, address: str) -> str: ...
    def move(self, old: str, new: str) -> None: ...
    def close(self) -> None: ...


def snapshot_from_status(status: dict[str, Any], where: str, *, blocks: tuple[str, ...] = (),
                         pending: tuple[str, ...] = ()) -> LedgerSnapshot:
    """Read the plain-values status dict of ``LedgerNode.status()`` (or its wire copy) defensively."""

    def num(key: str, source: dict[str, Any] | None = None) -> int | None:
        value = (status if source is None else source).get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    listed = status.get("peers")
    peers: list[Any] = listed if isinstance(listed, list) else []
    peer_names = tuple(str(p.get("address", "?")) if isinstance(p, dict) else str(p) for p in peers)
    sync = status.get("sync") if isinstance(status.get("sync"), dict) else None
    sync_text = ""
    if sync is not None and status.get("syncing") and sync.get("phase") != "done":
        height, target = num("height", sync) or 0, num("target", sync) or 0
        share = f" ({min(1.0, height / target):.0%})" if target else ""
        sync_text = (f"syncing from {clean_name(str(sync.get('peer', '?')))}: {sync.get('phase', '?')}, "
                     f"height {height} of {target}{share}")
    own = status.get("own_record") if isinstance(status.get("own_record"), dict) else None
    own_height = num("height", own) if own is not None else None
    if status.get("registration_error") and own_height is None:
        sync_text = (sync_text + " · " if sync_text else "") + f"registration refused: {status['registration_error']}"
    hashrate = status.get("hashrate")
    tip_height = num("height")
    alerts = tuple(_alert_line(item, "") for item in _maps(status.get("binding_alerts")))
    alerts += tuple(_alert_line(item, "reported by another node: ") for item in _maps(status.get("binding_conflicts")))
    raw_branch_alerts = status.get("alerts")
    branch_alerts: list[Any] = raw_branch_alerts if isinstance(raw_branch_alerts, list) else []
    return LedgerSnapshot(
        where=where, running=True, network=str(status.get("network", "")),
        difficulty_bits=num("difficulty_bits"), height=tip_height, tip=str(status.get("tip", "")),
        peers=peer_names, mining=bool(status.get("mining")),
        hashrate=float(hashrate) if isinstance(hashrate, (int, float)) else 0.0,
        pending_count=num("pending") or 0, pending=pending, blocks=blocks, sync=sync_text,
        own_height=own_height,
        own_confirmations=(tip_height - own_height + 1) if tip_height is not None and own_height is not None else None,
        own_pending=own is not None and own.get("state") == "pending",
        nickname_problem=str(status.get("nickname_problem") or ""), alerts=alerts,
        final_height=num("final_height"), branch_alerts=tuple(str(a) for a in branch_alerts[:8]),
    )


def _maps(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)][:20] if isinstance(value, list) else []


def _alert_line(item: dict[str, Any], prefix: str) -> str:
    """One alert for display: cleaned, one line, bounded (its text carries nicknames from the network)."""
    return prefix + clean_line(str(item.get("text", "?")).replace("\n", " "), ALERT_CHARS)


def recent_lines(ledger: Any, height: int) -> tuple[list[str], list[str]]:
    """The ledger tab's recent main-chain blocks below ``height`` (newest first) and pending records, as lines for
    a person (pending records come from the network: cleaned). Shared by the in-process source and the child."""
    blocks = []
    for h in range(height, max(-1, height - RECENT_BLOCKS), -1):
        block = ledger.main_at(h)
        if block is None:
            break
        stamp = time.strftime("%H:%M:%S", time.localtime(block.header.timestamp))
        blocks.append(f"#{h:<5} {block.hash.hex()[:12]}  {len(block.record_ids):>3} rec  {stamp}")  # pruned too
    pending = [clean_name(r.describe(), "?") if hasattr(r, "describe") else "?"
               for r in ledger.pending_records()[:PENDING_SHOWN]]
    return blocks, pending


class NodeSource:
    """A ledger node running inside this process (the app started it)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.where = f"in this app, {node.address}"

    def snapshot(self) -> LedgerSnapshot:
        status = self.node.status()
        blocks, pending = recent_lines(self.node.ledger, status.get("height") or 0)
        return snapshot_from_status(status, self.where, blocks=tuple(blocks), pending=tuple(pending))

    def join(self, address: str) -> str:
        self.node.add_peer(address)
        return f"✓ dialling {address}; it appears under Peers once connected"

    def move(self, old: str, new: str) -> None:
        """A node in this process follows the address by itself (``host_watch``): only say where it is now."""
        self.where = f"in this app, {self.node.address}"

    def close(self) -> None:
        """The node belongs to the app, which closes it."""


class ClientSource:
    """A ledger node run by another program, asked through a light client."""

    def __init__(self, ip: str, port: int, *, source_ip: str | None, network: str | None,
                 timeout: float = 5.0) -> None:
        from p2pchat.foundation.addresses import format_address

        self.ip, self.port = ip, port
        self.source_ip, self.network, self.timeout = source_ip, network, timeout
        self.where = format_address(ip, port)
        self._client: Any = None
        self._lock = threading.Lock()      # move() comes from the window's host watch, the rest from the monitor
        self._stale = False

    def _connect(self) -> Any:
        from ledger.client import LedgerClient

        with self._lock:
            stale, self._stale = self._stale, False
            ip, source_ip = self.ip, self.source_ip
        if stale:
            self._drop()
        if self._client is None:
            self._client = LedgerClient(ip, self.port, source_ip=source_ip, network=self.network,
                                        timeout=self.timeout)
        return self._client

    def move(self, old: str, new: str) -> None:
        """This machine's address changed: ask from ``new``, and at ``new`` if the node was at ``old`` (a node on
        this machine run with ``--host auto`` moves too). The next status request reconnects."""
        from p2pchat.foundation.addresses import format_address

        with self._lock:
            if self.ip == old:
                self.ip = new
                self.where = format_address(new, self.port)
            if self.source_ip == old:
                self.source_ip = new
            self._stale = True

    def snapshot(self) -> LedgerSnapshot:
        try:
            status = self._connect().status()
        except UserError:
            self._drop()
            raise
        return snapshot_from_status(status, self.where)

    def join(self, address: str) -> str:
        raise UserError(f"the ledger node at {self.where} is run by another program: join there with "
                        f"`ledger join {address}`")

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()

    def close(self) -> None:
        self._drop()


class LedgerMonitor:
    """The thread between a :class:`LedgerSource` and the window (see the module docstring)."""

    def __init__(self, source: LedgerSource, interval: float = 1.0) -> None:
        self.source = source
        self.interval = interval
        self._latest: LedgerSnapshot | None = None
        self._fresh = False
        self._lock = threading.Lock()
        self._jobs: queue.Queue[tuple[str, Callable[[str, bool], None]]] = queue.Queue()
        self._answers: queue.Queue[tuple[Callable[[str, bool], None], str, bool]] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gui-ledger-monitor")

    def start(self) -> LedgerMonitor:
        self._thread.start()
        return self

    def take(self) -> LedgerSnapshot | None:
        """The newest snapshot if it is newer than the last one taken (called on the Tk thread)."""
        with self._lock:
            if not self._fresh:
                return None
            self._fresh = False
            return self._latest

    @property
    def latest(self) -> LedgerSnapshot | None:
        with self._lock:
            return self._latest

    def join(self, address: str, done: Callable[[str, bool], None]) -> None:
        """Ask the node to join the network through ``address``; ``done(text, ok)`` runs in :meth:`drain`."""
        self._jobs.put((address, done))
        self._wake.set()

    def drain(self) -> int:
        """Run the callbacks of finished join requests (on the Tk thread)."""
        ran = 0
        while True:
            try:
                done, text, ok = self._answers.get_nowait()
            except queue.Empty:
                return ran
            done(text, ok)
            ran += 1

    def refresh(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            while True:
                try:
                    address, done = self._jobs.get_nowait()
                except queue.Empty:
                    break
                try:
                    self._answers.put((done, self.source.join(address), True))
                except UserError as exc:
                    self._answers.put((done, f"✗ {exc}", False))
            try:
                snap = self.source.snapshot()
            except UserError as exc:
                snap = LedgerSnapshot(where=self.source.where, running=False, error=str(exc))
            with self._lock:
                self._latest, self._fresh = snap, True
            self._wake.wait(self.interval)
            self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self.source.close()
