"""kill -9 at random instants of the writers tests/crash/test_crash_kill9.py and test_group_kill9.py do not cover:
the first run's key creation, a contact's edit, the outbox's enqueue (a waiting row in the history), the window's
settings and a download's resume record. After each kill the next start works and every acknowledged write is
there exactly once (a write under way when killed is there once or not at all). Delays come from
``random.Random(SEED)`` (timing only); the child prints a line per acknowledged write (tests/crash/writers_child.py)."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from p2pchat.contacts import ContactStore
from p2pchat.downloads import PARTIAL_DIR, Downloads
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.history import HistoryStore
from p2pchat.vault import Vault
from tests.conftest import make_identities
from tests.crash.writers_child import FP, SIZE, content
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("CRASH_SEED", "20261207"))
KILLS = 4


class Child:
    """One writer process whose acknowledged lines are collected on a thread (joined by :meth:`kill`)."""

    def __init__(self, kind: str, data: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.crash.writers_child", kind, str(data)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env, text=True)
        self.acks: list[str] = []
        self._reader = threading.Thread(target=self._read, name="writers-child-output")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.acks.append(line.strip())

    def kill_after(self, delay_acks: int, last: str | None = None) -> list[str]:
        """SIGKILL once ``delay_acks`` writes were acknowledged, the child acknowledged ``last`` or it ended; the
        acknowledged lines."""
        def enough() -> bool:
            return (len(self.acks) >= delay_acks or self.proc.poll() is not None
                    or (last is not None and last in self.acks))
        wait_until(enough, timeout=20,
                   what=f"{delay_acks} acknowledged writes", interval=0.005)
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        assert "Traceback" not in err, err
        return list(self.acks)


def rounds(kind: str) -> list[int]:
    rng = random.Random(f"{SEED}-{kind}")
    return [rng.randrange(1, 40) for _ in range(KILLS)]


def test_kill_9_while_a_contact_is_renamed_keeps_the_last_acknowledged_name_or_the_next(tmp_path):
    peer = make_identities(2)[1]
    store = ContactStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
    store.record_chat(peer.public_der, peer.fingerprint, nickname="bob", ip="127.0.0.3", address="127.0.0.3:8471")
    store.close()
    for n in rounds("contacts"):
        acks = Child("contacts", tmp_path).kill_after(n)
        store = ContactStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
        contacts = store.all()
        store.close()
        assert len(contacts) == 1
        last = int(acks[-1]) if acks else -1
        assert contacts[0].local_name in (f"name-{last}", f"name-{last + 1}"), (contacts[0].local_name, last)


def test_kill_9_while_texts_wait_for_a_contact_loses_and_repeats_none(tmp_path):
    kept = 0
    for n in rounds("outbox"):
        acks = Child("outbox", tmp_path).kill_after(n)       # each run numbers on from the texts kept
        history = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
        texts = [m.text for m in history.waiting(FP)]
        history.close()
        assert texts == [f"text {i}" for i in range(len(texts))], "a waiting text is lost, repeated or moved"
        assert kept + len(acks) <= len(texts) <= kept + len(acks) + 1, (kept, len(acks), len(texts))
        kept = len(texts)        # a text written but not acknowledged is kept from here on


def test_kill_9_while_the_window_saves_its_settings_leaves_the_old_or_the_new_file(tmp_path):
    from gui import settings

    for n in rounds("settings"):
        acks = Child("settings", tmp_path).kill_after(n)
        last = int(acks[-1]) if acks else -1
        assert settings.load(tmp_path).width in (max(600 + last, settings.MIN_WIDTH), 600 + last + 1), last


def test_kill_9_while_a_download_records_its_progress_resumes_from_at_least_what_was_acknowledged(tmp_path):
    whole = content()
    downloads = Downloads(tmp_path / "downloads", max_size=SIZE)
    digest = hashlib.sha256(whole).digest()
    previous = 0
    for n in rounds("download"):
        acks = Child("download", tmp_path).kill_after(1 + n, last=str(SIZE))
        assert int(acks[0]) >= previous, (acks[0], previous)             # resumed from the last acknowledgement
        previous = int(acks[-1])
        offset = downloads.resume_offset(FP, digest, SIZE)
        acked = int(acks[-1]) if acks else 0
        assert offset is not None and offset >= acked, (offset, acked)
        part = next((tmp_path / "downloads" / PARTIAL_DIR).glob("*.part"))
        with part.open("rb") as fh:
            assert fh.read(offset) == whole[:offset]      # what the record calls verified is the file's prefix


@pytest.mark.parametrize("attempt", range(3))
def test_kill_9_while_the_first_key_is_made_leaves_no_key_or_a_whole_one(tmp_path, attempt):
    rng = random.Random(f"{SEED}-key-{attempt}")
    child = Child("key", tmp_path)
    deadline = time.monotonic() + rng.uniform(0.2, 1.5)
    wait_until(lambda: time.monotonic() >= deadline or child.proc.poll() is not None, timeout=5, interval=0.01)
    acks = child.kill_after(0)
    path = tmp_path / KEY_FILE
    if path.exists():
        made = Identity.load(path)
        if acks:
            assert made.fingerprint.hex() == acks[0]
    else:
        assert not acks
    again = Child("key", tmp_path)
    wait_until(lambda: again.proc.poll() is not None, timeout=60, what="the key")
    final = again.kill_after(0)
    assert final and Identity.load(path).fingerprint.hex() == final[0]
