"""What the window shows about the ledger: a snapshot taken off the Tk thread, and its text (no Tk here)."""

from __future__ import annotations

from dataclasses import dataclass

from gui.text import clean, clean_line, clean_name, count

ALERT_CHARS = 300          # one binding alert or conflict, as shown in the banner
BRANCH_ALERT_CHARS = 400   # one parked-branch alert, as shown in the Alert row
ALERTS_SHOWN = 3


@dataclass(frozen=True)
class LedgerSnapshot:
    """The ledger node's state as the GUI last saw it (collected by :class:`gui.ledger_monitor.LedgerMonitor`)."""

    where: str                            # "in this app, 127.0.0.2:8470" or "127.0.0.9:8470"
    running: bool
    error: str = ""
    network: str = ""
    difficulty_bits: int | None = None
    height: int | None = None
    tip: str = ""
    peers: tuple[str, ...] = ()
    mining: bool = False
    hashrate: float = 0.0
    pending_count: int = 0
    pending: tuple[str, ...] = ()         # pending records, described for people
    blocks: tuple[str, ...] = ()          # recent blocks, newest first
    sync: str = ""                        # "" when in step with the peers
    own_height: int | None = None         # the block holding this identity's record
    own_confirmations: int | None = None
    own_pending: bool = False
    nickname_problem: str = ""            # the node's nickname clashes: its record goes without one
    alerts: tuple[str, ...] = ()          # owner-watch alerts and conflicts from others (ledger/watch.py, disputes)
    final_height: int | None = None       # newest block this node will not switch away from by itself
    branch_alerts: tuple[str, ...] = ()   # heavier branches conflicting with final history, said for people
    starting: bool = False                # the app's own ledger node process is still starting


def rate_text(hashes_per_second: float) -> str:
    """The mining speed in words: ``1.2 million tries a second`` (a try is one hash of a block header)."""
    for unit, size in (("million", 1e6), ("thousand", 1e3)):
        if hashes_per_second >= size:
            return f"{hashes_per_second / size:.1f} {unit} tries a second"
    return f"{hashes_per_second:.0f} tries a second"


def own_record_text(snap: LedgerSnapshot) -> str:
    if snap.own_height is not None:
        if not snap.peers:
            # a confirmation means others hold the chain too; on a network of one nobody else does
            return f"in block {snap.own_height}, on this computer only (no other node holds the ledger yet)"
        text = f"confirmed in block {snap.own_height}"
        if snap.own_confirmations is not None:
            text += f" ({count(snap.own_confirmations, 'confirmation')})"
        return text
    if snap.own_pending:
        return "waiting to be mined into a block"
    return "not in the ledger yet"


def alert_text(snap: LedgerSnapshot | None) -> str:
    """The banner over the ledger tab and in the identity panel: binding alerts, or "" when there are none."""
    if snap is None or not snap.alerts:
        return ""
    more = len(snap.alerts) - ALERTS_SHOWN
    return "⚠ " + "\n⚠ ".join(snap.alerts[:ALERTS_SHOWN]) + (f"\n… and {more} more (ledger status)" if more > 0 else "")


def identity_ledger_line(snap: LedgerSnapshot | None) -> str:
    """The identity panel's ledger line: node running, peers, height, own record (an alert first, if any);
    cleaned (a ledger's answers and errors carry text from the network)."""
    return clean_line(_identity_line(snap))


def _identity_line(snap: LedgerSnapshot | None) -> str:
    if snap is None:
        return "Ledger: checking…"
    if snap.starting:
        return "Ledger: starting this app's ledger node…"
    if snap.running and snap.alerts:
        return "Ledger: ⚠ BINDING ALERT — " + snap.alerts[0]
    if not snap.running:
        return f"Ledger: not reachable at {snap.where}" + (f" — {snap.error}" if snap.error else "")
    parts = [f"node running ({snap.where})", count(len(snap.peers), "peer")]
    if snap.height is not None:
        parts.append(f"height {snap.height}")
    own = own_record_text(snap)
    parts.append("your record " + own if snap.own_height is not None or snap.own_pending else own.capitalize())
    return "Ledger: " + " · ".join(parts)


def ledger_rows(snap: LedgerSnapshot | None) -> list[tuple[str, str]]:
    """The ledger tab's summary as label/value rows, every value cleaned (a sync phase, a registration refusal or
    an error can carry a ledger peer's words)."""
    return [(name, clean_line(value)) for name, value in _rows(snap)]


def _rows(snap: LedgerSnapshot | None) -> list[tuple[str, str]]:
    if snap is None:
        return [("Node", "checking…")]
    if snap.starting:
        return [("Node", f"starting ({snap.where}): loading the ledger…")]
    if not snap.running:
        return [("Node", f"not reachable at {snap.where}"), ("Problem", snap.error or "no answer")]
    network = snap.network or "?"
    if snap.difficulty_bits is not None:
        network += f" · proof of work {snap.difficulty_bits} bits"
    height = "?" if snap.height is None else str(snap.height)
    if snap.tip:
        height += f" · last block {snap.tip[:16]}…"
    if snap.mining:
        mining = (f"mining {count(snap.pending_count, 'waiting record')} · mining speed "
                  f"{rate_text(snap.hashrate)}")
    elif snap.pending_count:
        mining = f"not mining; {count(snap.pending_count, 'waiting record')}"
    else:
        mining = "idle: no waiting records to mine"
    peers = ", ".join(clean_name(p) for p in snap.peers) if snap.peers else "none yet: join a network below"
    alert = [("Alert", "⚠ " + "\n⚠ ".join(clean(a.replace("\n", " "))[:BRANCH_ALERT_CHARS]
                                          for a in snap.branch_alerts))] if snap.branch_alerts else []
    final = [] if snap.final_height is None else [("Final", f"block {snap.final_height} and all before it")]
    return [
        *alert,
        ("Node", f"running ({snap.where})"),
        ("Network", network),
        ("Height", height),
        *final,
        ("Peers", peers),
        ("Mining", mining),
        ("Sync", snap.sync or ("in step with its peers" if snap.peers else "no peers to be in step with yet")),
        ("Your record", own_record_text(snap) + (f" · {clean_name(snap.nickname_problem, '?')}"
                                                  if snap.nickname_problem else "")),
    ]
