#!/usr/bin/env bash
# Sets up .venv with the test tools and runs ruff, mypy and every test (GUI tests under Xvfb, lab tests in network
# namespaces when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/mypy      # the product packages, configured in pyproject.toml ([tool.mypy])
exec .venv/bin/python -m pytest "$@"
