"""What a hostile ledger node costs a light client (red team 2026-12-07 night), against the same attack on another
checkout in the same run:

    python3 bench/ledger_light_client_hostile_bench.py [--baseline-code /work/main]

Attacks (the hostile node is a real server on a 127.x address in this process; the client runs in a child
process from the checkout measured, with a data directory, as ``ledger lookup`` does):

- ``junk``: after an honest sync of 3 headers, every ``get_headers`` is answered with the same 2,000 headers
  forking from genesis, without proof of work (precomputed: the node's cost is sending bytes);
- ``mined``: the same with 2,000 headers that *are* mined (once, before the measurement), sent again for every
  request: a branch that switches every round.

Printed per attack and checkout: the client's CPU seconds, the node's CPU seconds (this process), their ratio,
the ``get_headers`` requests the client made, and how the client's call ended.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "ledger"))

from ledger.protocol import MAX_HEADERS  # noqa: E402
from tests.ledger.gossip_kit import PARAMS  # noqa: E402
from tests.ledger.hostile_ledger import HostileLedgerNode, after_locator, header_chain  # noqa: E402

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from ledger.client import LedgerClient
from ledger.params import NetworkParams
host, port, data = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
params = NetworkParams(name="gossipnet", difficulty_bits=8)
client = LedgerClient(host, port, network=params, pin_dir=data, timeout=5.0)
client.sync_headers()
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.monotonic()
try:
    client.sync_headers()
    ended = "no error"
except Exception as exc:
    ended = f"{type(exc).__name__}: {str(exc)[:90]}"
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, "wall": time.monotonic() - t0,
                  "ended": ended, "maxrss_mib": r1.ru_maxrss / 1024}))
"""


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(code: Path, flood: list[bytes], work: Path) -> dict[str, object]:
    genesis = PARAMS.genesis().header
    own = [genesis, *header_chain(genesis, PARAMS, 3, int(time.time()) - 100)]
    synced: list[bool] = []

    def script(msg):   # type: ignore[no-untyped-def]
        if msg.type == "get_checkpoint":
            return [("checkpoint", {"final_height": 0, "final_hash": genesis.hash})]
        if not synced:
            answer = after_locator(own, msg["locator"], msg["limit"])
            if len(answer) < msg["limit"]:
                synced.append(True)
            return [("headers", {"headers": answer})]
        return [("headers", {"headers": flood})]

    node = HostileLedgerNode(PARAMS, script)
    data = work / f"client-{time.monotonic_ns()}"
    data.mkdir()
    try:
        env = dict(os.environ, PYTHONPATH=str(code))
        cpu0 = own_cpu()
        out = subprocess.run([sys.executable, "-c", CHILD, node.host, str(node.port), str(data)], cwd=code, env=env,
                             capture_output=True, text=True, timeout=600, check=True)
        node_cpu = own_cpu() - cpu0
    finally:
        node.close()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["node_cpu"] = node_cpu
    result["requests"] = node.requests.count("get_headers") - 1   # the honest sync's answer is not counted
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-code", type=Path, help="another checkout to run the same attacks against")
    args = parser.parse_args()
    codes = [ROOT] + ([args.baseline_code.resolve()] if args.baseline_code else [])
    genesis = PARAMS.genesis().header
    start = int(time.time()) - 5000
    floods = {"junk": [h.packed for h in header_chain(genesis, PARAMS, MAX_HEADERS, start, mined=False, salt=1)],
              "mined": [h.packed for h in header_chain(genesis, PARAMS, MAX_HEADERS, start, salt=2)]}
    print(f"{'attack':7} {'code':>9} {'client CPU s':>12} {'node CPU s':>10} {'ratio':>6} {'requests':>8} "
          f"{'client RSS MiB':>14}  ended")
    with tempfile.TemporaryDirectory() as tmp:
        for name, flood in floods.items():
            for code in codes:
                r = run(code, flood, Path(tmp))
                ratio = r["cpu"] / max(r["node_cpu"], 0.01)   # type: ignore[operator]
                label = "this" if code == ROOT else "baseline"
                print(f"{name:7} {label:>9} {r['cpu']:12.2f} {r['node_cpu']:10.2f} {ratio:6.1f} {r['requests']:8} "
                      f"{r['maxrss_mib']:14.0f}  {r['ended']}", flush=True)


if __name__ == "__main__":
    main()
