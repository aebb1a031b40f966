"""The window's own ledger node, run as a child process: ``python -m gui.ledger_child`` (started by
:class:`gui.ledger_process.LedgerProcess`, never by hand).

Why a process: the node validates, stores and mines in CPU-bound Python; in the window's process it competes
for one GIL with the Tk event loop (bench/gui_lag_bench.py). In its own process it uses the other core.

Control protocol: JSON lines. The parent writes on the child's stdin, the child answers on its stdout; the
child's log goes to stderr, which the parent forwards to its own log.

- first line from the parent: the start request ``{"host", "port", "network", "data_dir", "key_pem",
  "passphrase", "nickname", "chat_port", "seeds", "difficulty_bits", "relay", "no_inbound", "parent_pid",
  "parent_death_signal"}``
  (the key travels through the pipe, never through the command line or the environment);
- the child answers ``{"event": "ready", "address": "ip:port"}`` once it listens, or
  ``{"event": "failed", "error": "<a sentence for a person>"}`` and exits with status 2;
- then requests ``{"id": n, "op": "recent"}`` (recent blocks and pending records, described),
  ``{"id": n, "op": "join", "address": "ip:port"}`` and ``{"id": n, "op": "move", "host": "ip"}`` (``--host auto``:
  this machine's address changed; the node listens there on the same port and publishes the updated record; the
  answer carries the node's new ``"address"``); each answer carries the request's id and either
  ``"ok": true`` with its fields or ``"ok": false, "error": "..."``. Status comes over the ledger port, like
  any light client's;
- ``{"op": "stop"}`` or the end of stdin stops the node (closing its store) and ends the process;
- when the store's whole-file check, owed after a clean shutdown and run once the node listens (docs/ledger.md,
  "Open check"), finds damage, the child logs it, stops the node and exits with status 1 (the parent reports
  its last log line).

The child also ends when its parent dies without a word: on Linux it asks the kernel for SIGTERM when the
parent exits (``PR_SET_PDEATHSIG``, when the parent's main thread started it), and everywhere the end of stdin
(the parent's end of the pipe closes with the parent) stops it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("gui.ledger_child")

NICENESS = 10        # mining and syncing are background work: the window (and the user's other programs) come first
_DAMAGED = threading.Event()   # the background store check found damage: stop, exit status 1
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, signal_too: bool) -> None:
    """Ask Linux to send SIGTERM when the parent exits; exit now if it already has (a race with the start).
    Linux sends that signal when the *thread* that started the child ends, so the parent asks for it
    (``signal_too``) only when its main thread started the child; the end of stdin covers the rest."""
    if signal_too and sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError) as exc:   # no prctl: the end of stdin still stops the child
            log.debug("no parent-death signal: %s", exc)
    if os.getppid() != parent_pid:
        raise SystemExit(0)


def _send(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def recent(node: Any) -> dict[str, Any]:
    """The ledger tab's recent blocks (newest first) and pending records, as lines for a person."""
    from gui.ledger_monitor import recent_lines

    blocks, pending = recent_lines(node.ledger, node.ledger.height)
    return {"blocks": blocks, "pending": pending}


def move(node: Any, host: str) -> None:
    """Move the node to ``host`` (the window's ``--host auto`` saw the address change); nothing if it is there."""
    from p2pchat.foundation.addresses import normalize_ip

    new = normalize_ip(host)
    if new != node.host:
        node.move_to(node.host, new)


def _start(request: dict[str, Any]) -> tuple[Any, Any]:
    from gui.ledger_runtime import start_in_process
    from p2pchat.foundation import crypto
    from p2pchat.foundation.identity import Identity

    try:
        key = crypto.import_private(request["key_pem"])      # held to the rules of every identity key
    except (ValueError, TypeError, crypto.CryptoError):
        from p2pchat.foundation.errors import IdentityError

        raise IdentityError("the window handed the ledger node an unreadable identity key") from None
    return start_in_process(
        data_dir=Path(request["data_dir"]), identity=Identity(key), host=request["host"], port=request["port"],
        network=request["network"], nickname=request.get("nickname"), chat_port=request.get("chat_port"),
        seeds=list(request.get("seeds") or []), difficulty_bits=request.get("difficulty_bits"),
        relay=request.get("relay"), no_inbound=bool(request.get("no_inbound")),
        passphrase=request.get("passphrase"))


def serve(stdin: IO[str], stdout: IO[str]) -> int:
    """Run the protocol above on ``stdin``/``stdout``; returns the exit status."""
    from p2pchat.foundation.errors import UserError

    first = stdin.readline()
    if not first:
        return 0
    request = json.loads(first)
    die_with_parent(int(request["parent_pid"]), bool(request.get("parent_death_signal")))
    if hasattr(os, "nice"):
        os.nice(NICENESS)
    try:
        node, ledger = _start(request)
    except UserError as exc:
        _send(stdout, {"event": "failed", "error": str(exc)})
        return 2
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        _send(stdout, {"event": "failed", "error": f"{exc.strerror or exc}{where}"})
        return 2
    def on_damage(_message: str) -> None:   # logged by the ledger; stop like SIGTERM (main's handler)
        _DAMAGED.set()
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        _send(stdout, {"event": "ready", "address": node.address})
        ledger.check_store_in_background(on_damage)
        for line in stdin:
            message = json.loads(line)
            op = message.get("op")
            if op == "stop":
                break
            answer: dict[str, Any] = {"id": message.get("id")}
            try:
                if op == "recent":
                    answer.update(ok=True, **recent(node))
                elif op == "join":
                    node.add_peer(str(message["address"]))
                    answer.update(ok=True)
                elif op == "move":
                    move(node, str(message["host"]))
                    answer.update(ok=True, address=node.address)
                else:
                    answer.update(ok=False, error=f"unknown request {op!r}")
            except UserError as exc:
                answer.update(ok=False, error=str(exc))
            _send(stdout, answer)
    finally:
        node.close()
        ledger.close()
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO if os.environ.get("P2PCHAT_LEDGER_VERBOSE") else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return serve(sys.stdin, sys.stdout)
    except KeyboardInterrupt:      # SIGTERM (the parent died, or the store is damaged) or SIGINT: serve's finally
        return 1 if _DAMAGED.is_set() else 0   # closed the node
    except BrokenPipeError:        # the parent went away while we answered
        return 0


if __name__ == "__main__":
    sys.exit(main())
