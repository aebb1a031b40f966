#!/usr/bin/env python3
"""Start-up time of the command-line entry points against a bare interpreter, measured in the same run.

Each round runs every command once, in a shuffled order, as a fresh process (so a busy moment of the machine
hits all of them alike), from a neutral working directory (``python -m`` would otherwise import the package
from the current directory instead of the interpreter's); the report gives the median and p90 wall time of
each and its ratio to the bare interpreter (``python -c pass``) of the same rounds. Commands:

- ``p2pchat --help``, ``ledger --help``, ``ledger lookup --help``;
- ``ledger lookup IP`` end to end against a ``ledger serve`` node started by the bench on a loopback address with
  a one-record chain (so the figure is start-up, not chain size), twice: from the node's own data directory,
  answered over the node's control socket (ledger/control.py: connect, one request, print), and with
  ``--prove`` (interpreter start, imports, one connection, header sync, Merkle proof and RSA signature check),
  which is also what a lookup from another machine or of another node costs.

The commands are the installed scripts (``.venv/bin/ledger``, ``.venv/bin/p2pchat``), as a user starts them.

Besides wall time (what the user waits; on a shared machine it moves with the load) the child's CPU time (user +
system, from ``wait4``) is reported, which the other jobs of a loaded machine disturb much less.

With ``--python`` another checkout's interpreter (e.g. the code before a change) is measured instead. When
hyperfine is installed its figures for the ``--help`` commands are printed too. Goal: ≤ 2 × the bare interpreter.

    python3 bench/startup_bench.py [--rounds 30] [--python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from commands import installed_command  # noqa: E402  (bench/ is on sys.path when run as a script)

from gui.lag import percentile  # noqa: E402

HOST = "127.79.1.2"
GOAL_RATIO = 2.0


def _wait_for_own_record(python: str, data_dir: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        proc = subprocess.run([python, "-m", "ledger", "status", "--host", HOST, "--json"], capture_output=True,
                              text=True, env=_env(data_dir), cwd=data_dir)
        if proc.returncode == 0:
            own = json.loads(proc.stdout).get("own_record") or {}
            if own.get("height") is not None:
                return
        time.sleep(0.3)
    raise SystemExit("the bench's ledger node did not mine its own record in time")


def _env(data_dir: str) -> dict[str, str]:
    return {**os.environ, "P2PCHAT_HOME": data_dir, "PYTHONDONTWRITEBYTECODE": "0"}


def _run(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``argv``."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with status {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def measure(python: str, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    data_dir = tempfile.mkdtemp(prefix="startup-bench-")
    node = subprocess.Popen([python, "-m", "ledger", "serve", "--host", HOST, "--difficulty", "8",
                             "--nickname", "bench"], env=_env(data_dir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=data_dir)
    try:
        _wait_for_own_record(python, data_dir, time.monotonic() + 120)
        p2pchat, ledger = installed_command(python, "p2pchat"), installed_command(python, "ledger")
        commands = {
            "python -c pass": [python, "-c", "pass"],
            "p2pchat --help": [*p2pchat, "--help"],
            "ledger --help": [*ledger, "--help"],
            "ledger lookup --help": [*ledger, "lookup", "--help"],
            "ledger lookup IP (own node)": [*ledger, "lookup", HOST, "--node", HOST],
            "ledger lookup IP --prove": [*ledger, "lookup", HOST, "--node", HOST, "--prove"],
        }
        env = _env(data_dir)
        for name, argv in list(commands.items()):   # warm the page cache and the bytecode caches once
            if subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=data_dir).returncode != 0:
                # e.g. --prove, measuring code from before it existed (there every lookup was proven)
                print(f"{name}: not measured (this checkout does not run it)", file=sys.stderr)
                del commands[name]
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(rounds):
            order = list(commands.items())
            random.shuffle(order)
            for name, argv in order:
                wall, used = _run(argv, env, data_dir)
                times[name].append(wall)
                cpu[name].append(used)
        return times, cpu
    finally:
        node.terminate()
        node.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)


def hyperfine(python: str) -> str:
    if shutil.which("hyperfine") is None:
        return ""
    neutral = tempfile.mkdtemp(prefix="startup-bench-")
    out = tempfile.mktemp(suffix=".json")
    subprocess.run(["hyperfine", "-N", "--warmup", "3", "--runs", "20", "--export-json", out,
                    f"{python} -c pass", " ".join([*installed_command(python, "p2pchat"), "--help"]),
                    " ".join([*installed_command(python, "ledger"), "--help"])],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=neutral)
    shutil.rmtree(neutral, ignore_errors=True)
    results = json.loads(Path(out).read_text())["results"]
    os.unlink(out)
    base = results[0]["median"]
    bindir = str(Path(python).parent) + "/"
    return "\n".join(f"hyperfine: {r['command'].replace(python, 'python').replace(bindir, '')}: "
                     f"median {r['median'] * 1000:.1f} ms (× {r['median'] / base:.2f})" for r in results)


def report(times: dict[str, list[float]], cpu: dict[str, list[float]], python: str, rounds: int) -> str:
    base, cbase = times["python -c pass"], cpu["python -c pass"]
    b50, b90, c50 = percentile(base, 50), percentile(base, 90), percentile(cbase, 50)
    lines = [f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {rounds} rounds, shuffled; "
             f"interpreter {python}", "",
             "| command | median | p90 | × bare (median) | × bare (p90) | CPU median | CPU × bare |",
             "|---|---|---|---|---|---|---|"]
    for name, values in times.items():
        m, p, c = percentile(values, 50), percentile(values, 90), percentile(cpu[name], 50)
        lines.append(f"| `{name}` | {m * 1000:.0f} ms | {p * 1000:.0f} ms | {m / b50:.2f} | {p / b90:.2f} | "
                     f"{c * 1000:.0f} ms | {c / c50:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--python", default=sys.executable, help="the interpreter (and so the checkout) to time")
    parser.add_argument("--label", default="", help="what this run measures (printed with the table)")
    args = parser.parse_args()
    times, cpu = measure(args.python, args.rounds)
    text = report(times, cpu, args.python, args.rounds)
    print((args.label + "\n\n" if args.label else "") + text)
    hf = hyperfine(args.python)
    if hf:
        print(hf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
