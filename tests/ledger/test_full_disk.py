"""A full disk under a running ``ledger serve`` (red team 2026-12-07): the file-size limit (RLIMIT_FSIZE) of the
real process stands in for the disk. Found: the miner thread died with a traceback at the first block it could
not store, so the node never mined again, and the block stayed in memory with no write ever retrying it."""

import resource
import signal
import subprocess
import sys
import time

import pytest

from ledger.client import LedgerClient
from ledger.errors import LedgerError
from ledger.local_ledger import store_path
from ledger.records import make_register
from p2pchat.foundation.errors import UserError
from tests.conftest import free_loopback_ip, make_identities
from tests.helpers import wait_until
from tests.integration.procs import ROOT, _env, premine, run_ledger

pytestmark = pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")


def relay_record(identity, network, n):
    # A relay-only record needs no reachability proof: nothing but the store decides whether it is admitted.
    return make_register(identity, network=network, seq=0, prev=bytes(32), nickname=f"disk{n}", ip=None, port=None,
                         ledger_port=None, relay="127.0.0.9:9000", issued=int(time.time()), lifetime=86400)


def test_a_full_disk_stops_no_thread_and_what_was_kept_in_memory_is_stored_once_there_is_room(tmp_path):
    me, *others = make_identities(12)
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    me.save(data / "identity.pem")
    premine(data, 5)
    limit = store_path(data, "p2pchat").stat().st_size + 8192     # a few pages more, then the disk is "full"
    host = free_loopback_ip()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ledger", "serve", "--difficulty", "8", "--host", host, "--data-dir", str(data)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=_env(),
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY)))
    try:
        client = LedgerClient(host, timeout=5.0)

        def answers():
            try:
                return client.network()
            except UserError:
                return None
        network = wait_until(answers, what="the node to answer").name

        def submit(identity, n):
            try:
                return client.submit(relay_record(identity, network, n))
            except LedgerError as exc:
                assert "cannot store data right now" in str(exc)   # a plain refusal, never a crash
                return None

        def full() -> bool:
            return "cannot write to the ledger database" in log_path.read_text(errors="replace")

        for n, identity in enumerate(others[:6]):   # until some write met the full disk (bounded)
            submit(identity, n)
            if wait_until(full, timeout=3.0, what="a write to fail") if n == 5 else full():
                break
        assert proc.poll() is None and client.status()["address"] == f"{host}:8470"   # still serving
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        admitted = [submit(identity, 10 + n) for n, identity in enumerate(others[6:])]
        assert all(admitted)
        height = wait_until(lambda: client.status()["pending"] == 0 and client.status()["height"],
                            what="the node to mine again once the disk has room")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    output = log_path.read_text(errors="replace")
    assert code == 0, output
    assert "Traceback" not in output and "Exception in thread" not in output, output
    verify = run_ledger("verify", "--data-dir", str(data), "--network", "p2pchat")
    assert verify.returncode == 0 and "valid" in verify.stdout, verify.stdout + verify.stderr
    assert f"main chain height {height} " in verify.stdout     # nothing the node showed was left unstored
