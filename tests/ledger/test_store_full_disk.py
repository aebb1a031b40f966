"""A full disk under the ledger's SQLite files while a batch of blocks is written (a sync stores 256 at a time): the
write is refused naming the cause, nothing stored before is damaged, and writing works again once there is room.
The "disk" is a file-size limit (RLIMIT_FSIZE) on a child process; a small page cache makes SQLite write pages in
the middle of the transaction, where the failure makes it roll back by itself (a second ROLLBACK then used to
raise "cannot rollback - no transaction is active" in place of the cause)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

resource = pytest.importorskip("resource")

CHILD = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    from ledger.blocks import Block, BlockHeader
    from ledger.errors import StoreError
    from ledger.params import NetworkParams
    from ledger.store import Store

    path, limit = Path(sys.argv[1]), int(sys.argv[2])
    params = NetworkParams(name="diskfull", difficulty_bits=1)

    def block(n):
        return Block(BlockHeader(version=params.version, network_id=params.network_id, height=n,
                                 prev_hash=n.to_bytes(32, "big"), merkle_root=bytes(32), timestamp=n,
                                 target_bits=1, nonce=n), ())

    store = Store(path)
    store.save_params(params)
    store.save_blocks([block(n) for n in range(1, 11)])
    store._conn.execute("PRAGMA cache_size=4")      # spill pages to the WAL while the transaction runs
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    error = None
    for first in range(11, 200_000, 5_000):         # bounded: the limit stops it at the first batch or so
        try:
            store.save_blocks([block(n) for n in range(first, first + 5_000)])
        except StoreError as exc:
            error = str(exc)
            break
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))     # room again
    store.save_blocks([block(n) for n in range(300_000, 300_010)])
    count = store.block_count()
    store.close()
    print(json.dumps({"error": error, "count": count, "first": first}))
""")


def test_a_full_disk_during_a_batch_of_blocks_names_its_cause_damages_nothing_and_writing_resumes(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(256 * 1024)], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["error"] is not None, "never refused under a 256 KiB limit"
    assert "cannot write to the ledger database" in out["error"], out
    assert "no transaction is active" not in out["error"], out["error"]
    # every batch before the refused one, and the one after it: the refused batch left nothing behind
    assert out["count"] == 10 + (out["first"] - 11) + 10, out
