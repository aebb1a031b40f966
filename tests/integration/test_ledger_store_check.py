"""``ledger serve`` on a store damaged while it was stopped: after a clean shutdown the start runs only the cheap
open check, so the node listens first; the whole-file check in the background then finds the damage and the node
stops with a plain message. The next start (no clean-shutdown mark) refuses the file at open."""

from __future__ import annotations

from ledger.chain import Chain
from ledger.local_ledger import LocalLedger, store_path
from p2pchat.foundation.identity import KEY_FILE
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.procs import run_ledger
from tests.ledger.checkpoint_kit import damage_oldest_body
from tests.ledger.ledger_kit import PARAMS, T0, branch, reg


def test_serve_stops_with_a_plain_message_when_the_background_check_finds_damage(tmp_path):
    identity, owner = make_identities(2)
    identity.save(tmp_path / KEY_FILE)
    blocks = branch(Chain(PARAMS), PARAMS.genesis().header, 200, T0, records=[[reg(owner)]])
    with LocalLedger(tmp_path, PARAMS, clock=lambda: T0 + 1000) as ledger:
        ledger.receive_blocks(blocks, T0 + 1000)
    damage_oldest_body(store_path(tmp_path, PARAMS.name))   # old history that no start reads

    args = ["serve", "--data-dir", str(tmp_path), "--network", PARAMS.name, "--host", free_loopback_ip(),
            "--port", "18470", "--no-mine"]
    first = run_ledger(*args, timeout=60)
    assert first.returncode == 1, first.stderr
    listening = first.stderr.find("listening on")
    damaged = first.stderr.find("is damaged")
    assert 0 <= listening < damaged, first.stderr   # it started serving, then stopped on the damage
    assert "stopping" in first.stderr and "ledger verify" in first.stderr and "Traceback" not in first.stderr

    again = run_ledger(*args, timeout=60)
    assert again.returncode == 2 and "is damaged" in again.stderr and "mv " in again.stderr, again.stderr
    assert "listening on" not in again.stderr
