#!/usr/bin/env bash
# Sets up .venv and runs the demo: two chat windows beside a local ledger network, or the terminal demo of the
# whole flow when there is no display.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/p2pchat demo "$@"
