"""First-run identity key generation, raced across the machine's cores, with progress.

pycryptodome's RSA-3072 generation is a prime search whose time has a long tail (bench/keygen_bench.py): the
number of random candidates tried before two primes are found varies a lot from run to run. Running one
complete, independent generation per idle core (each in its own process, so the caller's threads — a window's
event loop — never wait for the GIL) and keeping the first that finishes takes the minimum of independent draws:
the race's p99 is about the single search's p90. The losers are stopped at once.

Each worker is ``python -m p2pchat.foundation.keygen BITS``: it generates with :func:`crypto.generate_rsa` and
writes the private key (PKCS#8 DER, hex) on its stdout pipe to this process only.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol, TextIO

from p2pchat.foundation import crypto
from p2pchat.foundation.errors import IdentityError

MAX_WORKERS = 4
PROGRESS_INTERVAL = 0.1
STOP_GRACE = 2.0


def worker_count() -> int:
    """One search per idle core (at most MAX_WORKERS, at least one): on a machine whose cores are busy with other
    work, more searches only share the same CPU time and each pays an interpreter start (bench/keygen_bench.py)."""
    cores = os.cpu_count() or 1
    try:
        idle = cores - os.getloadavg()[0]
    except OSError:        # no load average on this platform
        idle = cores
    return max(1, min(MAX_WORKERS, cores, round(idle)))


def generate_identity_key(bits: int = crypto.RSA_BITS, *, workers: int | None = None,
                          progress: Callable[[float], None] | None = None,
                          stop: threading.Event | None = None) -> crypto.RsaKey:
    """A new RSA private key of ``bits`` bits from the first of ``workers`` parallel generations.

    ``progress(elapsed_seconds)`` is called about every 0.1 s from the calling thread; ``stop`` set cancels
    (raises :class:`IdentityError`). Every worker is stopped and reaped before this returns.
    """
    if bits < crypto.MIN_RSA_BITS:
        raise ValueError(f"identity keys have at least {crypto.MIN_RSA_BITS} bits")
    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "p2pchat.foundation.keygen", str(bits)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(workers or worker_count())]
    selector = selectors.DefaultSelector()
    buffers: dict[int, bytearray] = {}
    try:
        for proc in procs:
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            selector.register(proc.stdout, selectors.EVENT_READ, proc)
            buffers[proc.pid] = bytearray()
        while selector.get_map():
            if stop is not None and stop.is_set():
                raise IdentityError("making the identity key was cancelled")
            for key, _ in selector.select(PROGRESS_INTERVAL):
                proc = key.data
                chunk = os.read(key.fd, 65536)
                if chunk:
                    buffers[proc.pid] += chunk
                    continue
                selector.unregister(key.fileobj)
                if proc.wait() == 0:
                    return crypto.import_private(bytes.fromhex(buffers[proc.pid].decode("ascii")))
            if progress is not None:
                progress(time.monotonic() - started)
        errors = b"".join(p.stderr.read() for p in procs if p.stderr is not None).decode(errors="replace")
        last = errors.strip().splitlines()[-1] if errors.strip() else "no message"
        raise IdentityError(f"could not make the identity key: every key generator failed ({last})")
    finally:
        selector.close()
        _stop_all(procs)


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


class KeygenProgress(Protocol):
    """What a first run shows while the key is made: ``tick`` about every 0.1 s, ``done`` once at the end."""

    def tick(self, elapsed: float) -> None: ...
    def done(self, elapsed: float) -> None: ...


class TerminalProgress:
    """The command-line progress line on stderr: its elapsed time updated in place on a terminal, a line every
    5 s otherwise."""

    def __init__(self, prog: str, stream: TextIO | None = None) -> None:
        self.prog = prog
        self.out = stream if stream is not None else sys.stderr
        self.tty = self.out.isatty()
        self._shown = -1.0

    def _say(self, text: str, *, final: bool = False) -> None:
        if self.tty:
            print(f"\r{self.prog}: {text}", file=self.out, end="\n" if final else "", flush=True)
        else:
            print(f"{self.prog}: {text}", file=self.out, flush=True)

    def tick(self, elapsed: float) -> None:
        if self._shown < 0:
            self._shown = 0.0
            self._say("first run: making this machine's identity key (RSA-3072)…")
        elif elapsed - self._shown >= (0.5 if self.tty else 5.0):
            self._shown = elapsed
            self._say(f"first run: making this machine's identity key (RSA-3072)… {elapsed:.1f} s" if self.tty
                      else f"still making the identity key… {elapsed:.0f} s")

    def done(self, elapsed: float) -> None:
        self.tick(elapsed)
        self._say(f"identity key made in {elapsed:.1f} s", final=True)


def _worker(bits: int) -> int:
    key = crypto.generate_rsa(bits)
    sys.stdout.write(key.export_key(format="DER", pkcs=8).hex())
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_worker(int(sys.argv[1])))
