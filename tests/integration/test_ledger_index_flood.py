"""A status / fingerprint-prefix flood against a real node process holding 50,000 identities: every request
costs the node a bounded amount of index work (no walk over the identities), its CPU stays within a small
multiple of the flooders', and an honest IP lookup is answered correctly throughout."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from ledger.client import LedgerClient, LookupNotFound
from ledger.errors import LedgerError
from tests.conftest import free_loopback_ip, make_identities
from tests.helpers import wait_until
from tests.integration.procs import ROOT, _env

pytestmark = pytest.mark.slow
IDENTITIES = 50_000
CONNECTIONS = 8
ROUNDS = 25          # per connection: one status and one prefix lookup each


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_status_and_prefix_flood_costs_bounded_work_per_request(tmp_path):
    host = free_loopback_ip()
    make_identities(1)[0].save(tmp_path / "identity.pem")
    log = (tmp_path / "node.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.padded_ledger_node", "--host", host,
                             "--data-dir", str(tmp_path), "--identities", str(IDENTITIES)],
                            stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT, env=_env())
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready"), open(tmp_path / "node.log").read()
        port = int(line.split()[1])
        client = LedgerClient(host, port, timeout=10.0)
        wait_until(lambda: client.find(host, by="ip"), 60, what="the node's own registration")
        before = client.status()
        assert before["live_bindings"] >= IDENTITIES and before["index_work"]["identities"] >= IDENTITIES
        node_cpu0, own_cpu0 = cpu_seconds(proc.pid), time.process_time()
        errors: list[BaseException] = []

        def flood(seed: int) -> None:
            c = LedgerClient(host, port, timeout=10.0)
            try:
                for i in range(ROUNDS):
                    c.status()
                    try:
                        c.lookup(f"{(seed * 7919 + i * 104729) & 0xFFFFFFFF:08x}", by="fp")
                    except LookupNotFound:
                        pass
            except (LedgerError, OSError) as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=flood, args=(k,)) for k in range(CONNECTIONS)]
        for t in threads:
            t.start()
        honest = client.lookup(host, by="ip")          # an honest IP lookup during the flood
        for t in threads:
            t.join()
        node_cpu, own_cpu = cpu_seconds(proc.pid) - node_cpu0, time.process_time() - own_cpu0
        after = client.status()
        assert not errors, errors
        assert honest.ip == host and honest.nickname == "padded"
        requests = CONNECTIONS * ROUNDS * 2 + 2
        work = (after["index_work"]["rank_steps"] - before["index_work"]["rank_steps"]
                + after["index_work"]["prefix_keys_examined"] - before["index_work"]["prefix_keys_examined"])
        # A walk would cost 50,000 steps per request; the indexes cost a few (plus one offset rebuild of about
        # IDENTITIES / 512 buckets per chain change).
        print(f"index steps per request {work / requests:.2f}; node CPU {node_cpu:.2f} s, flooders {own_cpu:.2f} s")
        assert work / requests < 20, (work, requests)
        assert node_cpu < 10 * max(own_cpu, 0.05), (node_cpu, own_cpu)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
