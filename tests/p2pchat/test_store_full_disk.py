"""A full disk under the data directory's SQLite stores (history — which holds the outbox's waiting texts —,
group state, contacts): a write that does not fit is refused with the store's plain error, nothing written
before is damaged, and writing works again once there is room. The "disk" is a file-size limit
(RLIMIT_FSIZE) on a child process: SQLite gets the same refusal from the kernel as on a full disk."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from p2pchat.contacts import ContactStore
from p2pchat.group_store import GroupStore
from p2pchat.history import HistoryStore
from p2pchat.vault import Vault

FP = "ab" * 32
LIMIT = 96 * 1024       # bytes any one file of the child may reach

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    from p2pchat.contacts import ContactStore
    from p2pchat.group_store import GroupStore
    from p2pchat.history import HistoryStore
    from p2pchat.vault import Vault

    data, limit = Path(sys.argv[1]), int(sys.argv[2])
    vault = Vault.open(data, None)
    stores = {"history": HistoryStore.in_data_dir(data, vault), "groups": GroupStore.in_data_dir(data, vault),
              "contacts": ContactStore.in_data_dir(data, vault)}
    write = {"history": lambda s, i: s.append("ab" * 32, "in", "x" * 2000 + str(i), ts=time.time()),
             "groups": lambda s, i: s.add("text", body="y" * 2000, n=i),
             "contacts": lambda s, i: s.log_decision("verified", "z" * 2000 + str(i))}
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    out = {}
    for name, store in stores.items():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        done, error = 0, None
        for i in range(10_000):          # bounded: the limit stops it after a few dozen
            try:
                write[name](store, i)
            except Exception as exc:
                error = [type(exc).__name__, type(exc).__mro__[1].__name__, str(exc)]
                break
            done += 1
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))    # room again
        write[name](store, 10_000)
        out[name] = {"done": done + 1, "error": error}
    print(json.dumps(out))
""")


def test_a_full_disk_refuses_a_store_write_in_plain_words_damages_nothing_and_writing_resumes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(data), str(LIMIT)], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    expected = {"history": "HistoryStoreError", "groups": "GroupStoreError", "contacts": "ContactStoreError"}
    for name, result in out.items():
        assert result["error"] is not None, f"{name}: never refused under a {LIMIT}-byte limit"
        kind, base, text = result["error"]
        assert (kind, base) == (expected[name], "LocalFault"), result
        assert "could not write" in text and "no transaction" not in text, text
    vault = Vault.open(data, None)      # each store opens (integrity checked) with every acknowledged row
    assert len(HistoryStore.in_data_dir(data, vault).messages(FP, limit=10_000)) == out["history"]["done"]
    assert len(GroupStore.in_data_dir(data, vault).rows("text")) == out["groups"]["done"]
    assert len(ContactStore.in_data_dir(data, vault).decisions()) == out["contacts"]["done"]
