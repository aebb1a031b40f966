"""The ledger node behind a window: the one already running for this data directory, or one the app starts.

:func:`attach_ledger` asks ``host:LEDGER_PORT`` (or ``--ledger``) for its status with a light client. If nothing
answers at this machine's own address, the app starts a :class:`ledger.node.LedgerNode` on its own data
directory in a child process it owns (:mod:`gui.ledger_process`; :func:`start_in_process` is what that child
runs) and stops it on exit. A ``--ledger`` address of another machine is never replaced by a local node: the
window then shows that the ledger is unreachable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gui.ledger_monitor import ClientSource, LedgerSource
from p2pchat.foundation.addresses import CHAT_PORT, LEDGER_PORT, format_address, normalize_ip, parse_address
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.identity import Identity

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 1.5
READY_TIMEOUT = 600.0     # a node loading a long chain from disk; progress is shown meanwhile


@dataclass
class LedgerRuntime:
    """Where the chat node should ask the ledger, what the window watches, and what to close on exit."""

    address: str                   # "ip:port" for ChatNode(ledger=...)
    source: LedgerSource
    started_here: bool
    host: str                      # this machine's address the runtime was attached from (moved by move())
    _owned: list[Any] = field(default_factory=list)

    @property
    def follows_host(self) -> bool:
        """True when the ledger node is this machine's own (at ``host``): it moves with the machine's address and
        publishes the updated record."""
        return parse_address(self.address, LEDGER_PORT)[0] == self.host

    def move(self, new: str) -> None:
        """``--host auto``: this machine's address is now ``new``. The app's own node process moves there; a node
        on this machine run by another program is asked there (``ledger join --host auto`` moves by itself); one
        on another machine is still asked there, from ``new``. Raises a UserError when the node cannot move."""
        new = normalize_ip(new)
        if new == self.host:
            return
        follows = self.follows_host
        self.source.move(self.host, new)
        if follows:
            self.address = format_address(new, parse_address(self.address, LEDGER_PORT)[1])
        self.host = new

    def close(self) -> None:
        """Stop the node process we started (see :class:`gui.ledger_process.LedgerProcess`); nothing if it was
        not ours."""
        while self._owned:
            self._owned.pop().close()


def probe(ip: str, port: int, *, source_ip: str | None, network: str | None,
          timeout: float = PROBE_TIMEOUT) -> dict[str, Any] | None:
    """The status of the ledger node at ``ip:port``, or None when nothing answers there."""
    from ledger.client import LedgerClient

    try:
        client = LedgerClient(ip, port, source_ip=source_ip, network=network, timeout=timeout)
    except UserError:
        return None
    try:
        status = client.status()
        return status if isinstance(status, dict) else {}
    except UserError:
        return None
    finally:
        if hasattr(client, "close"):
            client.close()


def seed_params(seeds: Sequence[str], host: str, network: str) -> Any:
    """The network parameters the first answering seed runs (what ``ledger join`` adopts), or None."""
    from ledger.client import LedgerClient

    for seed in seeds:
        ip, port = parse_address(seed, LEDGER_PORT)
        try:
            return LedgerClient(ip, port, source_ip=host, network=network, timeout=PROBE_TIMEOUT).network()
        except UserError as exc:
            log.warning("cannot learn the network from %s: %s", seed, exc)
    return None


def start_in_process(*, data_dir: Path, identity: Identity, host: str, port: int, network: str,
                     nickname: str | None, chat_port: int | None, seeds: Sequence[str] = (),
                     difficulty_bits: int | None = None, relay: str | None = None,
                     no_inbound: bool = False, passphrase: str | None = None) -> tuple[Any, Any]:
    """Open this data directory's ledger and start a gossip node on it; returns ``(node, local_ledger)``.
    The node loads the new key by itself once a key rotation of this identity is mined."""
    from ledger.local_ledger import LocalLedger, stored_params
    from ledger.network_pin import find_pin, load_pin, save_pin
    from ledger.node import LedgerNode
    from ledger.own_record import switch_to_rotated_key
    from ledger.params import NetworkParams

    # The network pinned in this data dir (by `ledger join`/`serve` or an earlier start) binds the seeds too.
    pinned = stored_params(data_dir, network) or find_pin(data_dir, network)
    params = pinned or (seed_params(seeds, host, network) if seeds else None)
    if params is None:
        params = NetworkParams(name=network) if difficulty_bits is None else NetworkParams(
            name=network, difficulty_bits=difficulty_bits)
    if load_pin(data_dir, params.name) is None:
        save_pin(data_dir, params)
        log.warning("pinned network '%s' with id %s in %s (trust on first use)", params.name, params.id_text,
                    data_dir)
    ledger = LocalLedger(data_dir, params)
    try:
        node = LedgerNode(identity, ledger, host=host, port=port, chat_port=chat_port, seeds=list(seeds),
                          nickname=nickname, relay=relay, no_inbound=no_inbound,
                          reload_identity=lambda fp: switch_to_rotated_key(data_dir, fp, passphrase))
        node.start()
    except BaseException:
        ledger.close()
        raise
    return node, ledger


def attach_ledger(*, data_dir: Path, identity: Identity, host: str, ledger: str | None, network: str,
                  nickname: str | None, chat_port: int | None = CHAT_PORT, seeds: Sequence[str] = (),
                  difficulty_bits: int | None = None, relay: str | None = None,
                  no_inbound: bool = False, passphrase: str | None = None, ready_timeout: float = READY_TIMEOUT,
                  tick: Callable[[float], None] | None = None) -> LedgerRuntime:
    """Use the ledger node that answers for this machine, or start one in a child process and wait until it
    listens (``tick(elapsed)`` every 0.1 s meanwhile); see the module docstring."""
    host = normalize_ip(host)
    ip, port = parse_address(ledger, LEDGER_PORT) if ledger else (host, LEDGER_PORT)
    address = format_address(ip, port)
    if probe(ip, port, source_ip=host, network=network) is not None or ip != host:
        log.info("using the ledger node at %s", address)
        return LedgerRuntime(address, ClientSource(ip, port, source_ip=host, network=network), started_here=False,
                             host=host)
    log.info("no ledger node answers at %s: starting one for this app in its own process", address)
    from gui.ledger_process import ChildSource, LedgerProcess, LedgerProcessError

    process = LedgerProcess({
        "host": host, "port": port, "network": network, "data_dir": str(data_dir),
        "key_pem": identity.to_pem().decode("ascii"), "passphrase": passphrase, "nickname": nickname,
        "chat_port": chat_port, "seeds": list(seeds), "difficulty_bits": difficulty_bits, "relay": relay,
        "no_inbound": no_inbound})
    try:
        process.wait_ready(ready_timeout, tick=tick)
    except LedgerProcessError as exc:
        # The window still opens: the ledger tab says what went wrong (and, after a timeout, when it is up).
        log.warning("%s", exc)
    except BaseException:
        process.close()
        raise
    return LedgerRuntime(process.address, ChildSource(process, source_ip=host, network=network), started_here=True,
                         host=host, _owned=[process])
