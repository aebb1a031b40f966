#!/usr/bin/env bash
# Installs p2pchat from the synced checkout (/p2pchat) into /opt/p2pchat/venv, with what the GUI needs over
# `ssh -X` (Tk and xauth), and puts `ledger` and `p2pchat` on everyone's PATH.
# Re-run after `vagrant rsync` with: vagrant provision NAME --provision-with install,services
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq python3 python3-venv python3-tk xauth rsync fonts-dejavu-core >/dev/null
install -d -m 0755 /opt/p2pchat
# A private copy: building the package never writes into the user's checkout.
rsync -a --delete --exclude .git/ --exclude .venv/ --exclude '__pycache__/' --exclude '*.egg-info/' \
  --exclude build/ /p2pchat/ /opt/p2pchat/src/
[ -x /opt/p2pchat/venv/bin/python ] || python3 -m venv /opt/p2pchat/venv
/opt/p2pchat/venv/bin/python -m pip install -q --upgrade pip
/opt/p2pchat/venv/bin/python -m pip install -q /opt/p2pchat/src
ln -sf /opt/p2pchat/venv/bin/ledger /usr/local/bin/ledger
ln -sf /opt/p2pchat/venv/bin/p2pchat /usr/local/bin/p2pchat
/usr/local/bin/ledger --help >/dev/null
/usr/local/bin/p2pchat --help >/dev/null
echo "p2pchat installed: $(/opt/p2pchat/venv/bin/python -c 'import sys; print(sys.version.split()[0])')"
