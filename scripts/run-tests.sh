#!/usr/bin/env bash
# Sets up .venv with the test tools and runs ruff, mypy and every test (GUI tests under Xvfb, lab tests in network
# namespaces when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/mypy      # the product packages, configured in pyproject.toml ([tool.mypy])
# Two workers (pytest-xdist): most of a test's time is spent waiting on sockets and child processes, so two run
# side by side on two cores. Each module stays whole on one worker and the netns lab tests share one worker
# (tests/conftest.py, which also orders the work longest first); TEST_WORKERS=0 runs everything in this one process.
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadscope --no-loadscope-reorder "$@"
