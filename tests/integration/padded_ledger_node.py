"""A real ``LedgerNode`` process whose binding state holds many synthetic identities, for flood tests.

    python -m tests.integration.padded_ledger_node --host IP --data-dir DIR --identities N [--port P]

Mining 50,000 signed registrations would take minutes of RSA work, so the identities are put straight into the
binding state after the ledger is loaded (unsigned synthetic records, random fingerprints, 10.x addresses) —
exactly what the indexes see after applying that many blocks. Everything else is the real node: its own key,
its own registration, sockets, threads. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import random
import signal
import threading
from pathlib import Path

from ledger.bindings import IdentityState
from ledger.local_ledger import LocalLedger
from ledger.node import LedgerNode, NodeConfig
from ledger.params import NetworkParams
from ledger.records import ZERO_HASH, Record
from p2pchat.foundation.identity import Identity

NOW_PLUS = 30 * 86400


def pad(ledger: LocalLedger, n: int) -> None:
    rng = random.Random(1)
    now = int(ledger.clock())
    records = [Record(kind="register", key=i.to_bytes(4, "big") * 8, seq=0, prev=ZERO_HASH, nickname=f"pad{i}",
                      ip="10.0.0.1", port=8471, ledger_port=8470, relay=None, issued=now - 86400,
                      expires=now + NOW_PLUS + i) for i in range(256)]
    with ledger.lock:
        state = ledger.chain.bindings
        for i in range(n):
            fp = rng.randbytes(32)
            state.identities[fp] = IdentityState(records[i % 256], 1, 0, "live")
            state.by_ip[f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"] = fp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--identities", type=int, default=50_000)
    args = ap.parse_args()
    data = Path(args.data_dir)
    identity = Identity.load_or_create(data)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalLedger(data, NetworkParams(name="padded", difficulty_bits=8)) as ledger:
        pad(ledger, args.identities)
        node = LedgerNode(identity, ledger, host=args.host, port=args.port, nickname="padded",
                          config=NodeConfig(register_grace=0.0))
        node.start()
        print(f"ready {node.port}", flush=True)
        try:
            stop.wait()
        finally:
            node.close()


if __name__ == "__main__":
    main()
