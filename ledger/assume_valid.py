"""Assume-valid join: a fresh node takes the history up to the checkpoint its peers agreed on without checking
record signatures, starts serving, and checks those signatures in the background (docs/ledger.md,
"Joining fast: assumed-valid history").

What is assumed: that the records of the blocks at or below the checkpoint ``(height, hash)`` — the block the
finality survey of ``ledger join`` found final on every peer asked, or the operator's ``--checkpoint`` — carry
valid signatures. Nothing else: every header of that history was checked by the light client (proof of work,
linkage, timestamps) and leads to the checkpoint hash, and every block body is still checked against its header
(Merkle root) and replayed through every binding rule. A block is assumed valid only when its hash is the
verified header at its height of that chain.

The :class:`BackgroundVerifier` then checks every signature of the main chain from block 1 to the checkpoint,
at a bounded number of blocks a second if asked, saving its progress (``assume-valid-<network id prefix>.json``
in the data directory) so a restart resumes it. A forged signature stops it with a loud alert; the node then
stops answering lookups (its binding state may rest on a forged record) until the operator joins again through
other peers.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.blocks import Block
from ledger.errors import LedgerError
from ledger.header_store import HeaderStore
from ledger.params import NetworkParams
from p2pchat.foundation.datadir import replace_file

if TYPE_CHECKING:
    from ledger.local_ledger import LocalLedger

log = logging.getLogger("ledger.assume_valid")

SAVE_EVERY = 2.0   # seconds between progress saves while verifying
COVER_WINDOW = 2048   # agreed headers read at once by AssumeValid.covers


class VerifyState(enum.Enum):
    WAITING = "waiting"     # the main chain has not reached the checkpoint yet
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


def progress_path(data_dir: Path, params: NetworkParams) -> Path:
    return Path(data_dir) / f"assume-valid-{params.genesis_hash.hex()[:16]}.json"


class AssumeValid:
    """The checkpoint a joining node assumes valid, and the state of its background verification."""

    def __init__(self, path: Path, height: int, block_hash: bytes, *, headers: HeaderStore | None = None,
                 verified: int = 0, state: VerifyState = VerifyState.WAITING, problem: str | None = None) -> None:
        self.path = path
        self.height = height
        self.hash = block_hash
        self.headers = headers            # the light client's verified headers (only while joining)
        self.verified = verified          # every signature of blocks 1..verified checked
        self.state = state
        self.problem = problem
        self._lock = threading.Lock()
        self._agreed: dict[int, bytes] = {}   # hashes of a window of the agreed headers (see covers)

    @classmethod
    def begin(cls, data_dir: Path, params: NetworkParams, height: int, block_hash: bytes,
              headers: HeaderStore) -> AssumeValid:
        """A joining node's assumption: ``headers`` must hold ``block_hash`` at ``height``."""
        held = headers.at(height)
        if held is None or held.hash != block_hash:
            found = "nothing" if held is None else held.hash.hex()
            raise LedgerError(f"the peer's verified header chain has {found} at block {height}, not the agreed "
                              f"checkpoint {block_hash.hex()}; refusing to assume its history valid")
        av = cls(progress_path(data_dir, params), height, block_hash, headers=headers)
        if not av.save():   # without the file a restart would take the history as checked: do not start
            raise LedgerError(f"could not write {av.path}, which keeps the background verification's progress "
                              "(is the disk full?)")
        return av

    @classmethod
    def load(cls, data_dir: Path, params: NetworkParams) -> AssumeValid | None:
        """A verification left unfinished (or failed) by an earlier run; None when there is none."""
        path = progress_path(data_dir, params)
        try:
            data = json.loads(path.read_text())
            av = cls(path, int(data["height"]), bytes.fromhex(data["hash"]), verified=int(data["verified"]),
                     state=VerifyState(data["state"]), problem=data.get("problem"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LedgerError(f"the background-verification file {path} is damaged ({exc}); run 'ledger verify' "
                              "to check the history, then delete the file") from None
        return None if av.state is VerifyState.DONE else av

    def covers(self, block: Block) -> bool:
        """True if ``block`` is a block of the agreed history at or below the checkpoint (signatures assumed)."""
        if self.headers is None or self.state is VerifyState.FAILED or block.height > self.height:
            return False
        held = self._agreed.get(block.height)
        if held is None:
            # A sync asks in height order: read the agreed headers a window at a time, not one query a block.
            low = block.height
            self._agreed = {h.height: h.hash for h in self.headers.range(low, min(low + COVER_WINDOW,
                                                                                    self.height + 1))}
            held = self._agreed.get(block.height)
        return held == block.hash

    @property
    def failed(self) -> bool:
        return self.state is VerifyState.FAILED

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"state": self.state.value, "verified": self.verified, "target": self.height,
                    "checkpoint": self.hash.hex(), "problem": self.problem}

    def update(self, *, verified: int | None = None, state: VerifyState | None = None,
               problem: str | None = None) -> None:
        with self._lock:
            if verified is not None:
                self.verified = verified
            if state is not None:
                self.state = state
            if problem is not None:
                self.problem = problem

    def save(self) -> bool:
        """Replace the progress file (written to a temporary file first: a crash leaves the old or the new). A
        write the disk cannot take is logged and leaves the old file and no temporary copy (False): the
        verification goes on, and a restart checks again from the last block saved."""
        data = self.status()
        data["height"], data["hash"] = self.height, self.hash.hex()
        try:
            replace_file(self.path, json.dumps(data).encode("utf-8"), OSError)
        except OSError as exc:
            log.warning("could not save the background verification's progress in %s: %s; it goes on, and a "
                        "restart checks again from the last block saved", self.path, exc)
            return False
        return True


class BackgroundVerifier:
    """Checks the signatures of the assumed-valid history in a thread the node owns (``start``/``close``)."""

    def __init__(self, ledger: LocalLedger, av: AssumeValid, *, rate: float = 0.0,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.ledger = ledger
        self.av = av
        self.rate = rate                      # blocks a second (0: as fast as one core goes)
        self.on_failure = on_failure
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="assume-valid", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.av.state is not VerifyState.FAILED:
            self.av.save()

    def _run(self) -> None:
        av, params = self.av, self.ledger.params
        next_height = first = av.verified + 1
        last_save = time.monotonic()
        started: float | None = None
        checked = 0
        if next_height > av.height:   # a run stopped between its last block and saving "done"
            av.update(state=VerifyState.DONE)
            av.save()
            return
        while not self._stop.is_set() and av.state in (VerifyState.WAITING, VerifyState.RUNNING):
            with self.ledger.lock:
                chain = self.ledger.chain
                block = chain.main_at(next_height) if chain.height >= av.height else None
                at_checkpoint = chain.main_at(av.height) if block is not None else None
            if block is None:
                self._stop.wait(0.5)   # still syncing up to the checkpoint
                continue
            if at_checkpoint is None or at_checkpoint.hash != av.hash:
                self._fail(f"the main chain no longer holds the agreed checkpoint {av.hash.hex()[:16]} at block "
                           f"{av.height}")
                return
            if started is None:
                started = time.monotonic()
                av.update(state=VerifyState.RUNNING)
            for index, record in enumerate(block.records):
                try:
                    record.verify_signatures(params.name)
                except LedgerError as exc:
                    self._fail(f"block {block.height} ({block.hash.hex()[:16]}), record {index}: {exc}")
                    return
                checked += 1
            av.update(verified=next_height)
            if next_height >= av.height:
                av.update(state=VerifyState.DONE)
                av.save()
                log.info("background verification finished: every signature up to the checkpoint at block %d "
                         "checked (%d records)", av.height, checked)
                return
            next_height += 1
            now = time.monotonic()
            if now - last_save >= SAVE_EVERY:
                av.save()
                last_save = now
            if self.rate > 0 and started is not None:
                ahead = (next_height - first) / self.rate - (now - started)
                if ahead > 0:
                    self._stop.wait(ahead)

    def _fail(self, reason: str) -> None:
        text = (f"BACKGROUND VERIFICATION FAILED: the history this node assumed valid at join holds a forged "
                f"record ({reason}). The peers that agreed on checkpoint {self.av.hash.hex()[:16]} served a forged "
                "history; this node stops answering lookups. Stop it, move its ledger database away and join again "
                "through peers you trust.")
        log.critical("%s", text)   # before the state changes: whoever sees "failed" finds the alert logged
        self.av.update(state=VerifyState.FAILED, problem=text)
        self.av.save()
        if self.on_failure is not None:
            self.on_failure(text)
