"""The attacker of issue 10: sync an honest network's headers, mine a heavier private branch from genesis whose
first block binds the victim's IP and nickname to the attacker's key, and store it in the attacker's data
directory, so that a ``ledger serve`` started there announces it to the honest nodes.

Run as a script: ``python -m tests.integration.private_branch NODE VICTIM_IP VICTIM_NICK DATA_DIR``; prints the
branch's tip hash (hex) on stdout.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from ledger.blocks import Block, BlockHeader
from ledger.client import LedgerClient
from ledger.local_ledger import LocalLedger
from ledger.merkle import merkle_root
from ledger.miner import mine
from ledger.records import make_register
from p2pchat.foundation.identity import KEY_FILE, Identity


def build(node: str, victim_ip: str, victim_nick: str, data_dir: Path) -> bytes:
    client = LedgerClient(node, timeout=10.0)
    params = client.network()
    honest_height = client.sync_headers()   # the attacker knows exactly how much work to beat
    attacker = Identity.load(data_dir / KEY_FILE)
    now = int(time.time())
    claim = make_register(attacker, network=params.name, seq=0, prev=b"\0" * 32, nickname=victim_nick,
                          ip=victim_ip, port=8471, ledger_port=8470, relay=None, issued=now - 60, lifetime=86400)
    stop = threading.Event()
    with LocalLedger(data_dir, params) as ledger:
        tip = ledger.chain.genesis.header
        for i in range(honest_height + 2):
            records = (claim,) if i == 0 else ()
            header = BlockHeader(version=params.version, network_id=params.network_id, height=tip.height + 1,
                                 prev_hash=tip.hash, merkle_root=merkle_root([r.id for r in records]),
                                 timestamp=now - 50 + i, target_bits=params.difficulty_bits, nonce=0)
            solved = mine(header, stop)
            assert solved is not None
            result = ledger.receive_block(Block(solved, records), time.time())
            assert result.status == "added", result.reason
            tip = solved
        return tip.hash


def rewritten_history(node: str, ips: list[str], data_dir: Path) -> bytes:
    """Another history of the same network, heavier than the honest one at ``node``: mined from genesis into
    ``data_dir`` (which must hold no ledger), its first block holding the honest records of ``ips`` copied as they
    are (owner-signed records are valid in any branch). Both ledgers then name the same keys for those addresses,
    but no block after genesis is shared. Returns the tip hash."""
    client = LedgerClient(node, timeout=10.0)
    params = client.network()
    records = tuple(client.lookup(ip).record for ip in ips)
    honest_height = client.sync_headers()
    stop = threading.Event()
    start = int(time.time()) - 2
    with LocalLedger(data_dir, params) as ledger:
        tip = ledger.chain.genesis.header
        for i in range(honest_height + 2):
            body = records if i == 0 else ()
            header = BlockHeader(version=params.version, network_id=params.network_id, height=tip.height + 1,
                                 prev_hash=tip.hash, merkle_root=merkle_root([r.id for r in body]),
                                 timestamp=start + i, target_bits=params.difficulty_bits, nonce=0)
            solved = mine(header, stop)
            assert solved is not None
            result = ledger.receive_block(Block(solved, body), time.time())
            assert result.status == "added", result.reason
            tip = solved
        return tip.hash


if __name__ == "__main__":
    print(build(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])).hex())
