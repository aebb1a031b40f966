#!/usr/bin/env bash
# Installs p2pchat from the synced checkout (/p2pchat) into /opt/p2pchat/venv, with what the GUI needs over
# `ssh -X` (Tk and xauth), and puts `ledger` and `p2pchat` on everyone's PATH.
# Python packages come from PyPI, from PIP_INDEX (a "simple" index such as a devpi or proxpi cache) or only
# from WHEELHOUSE (a directory of wheels served over HTTP; pip then asks nothing else).
# Re-run after `vagrant rsync` with: vagrant provision NAME --provision-with install,services
# Usage: install.sh [PIP_INDEX] [WHEELHOUSE]
set -euo pipefail
pip_index=${1:-} wheelhouse=${2:-}
export DEBIAN_FRONTEND=noninteractive
packages=(python3 python3-venv python3-tk xauth rsync fonts-dejavu-core)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then   # a box that has them all needs no package source at all
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

pip_opts=(--disable-pip-version-check)
trust() {  # pip refuses plain-http sources unless their host is trusted
  case "$1" in http://*) local host=${1#http://}; host=${host%%/*}; pip_opts+=(--trusted-host "${host%%:*}") ;; esac
}
if [ -n "$wheelhouse" ]; then
  pip_opts+=(--no-index --find-links "$wheelhouse"); trust "$wheelhouse"
elif [ -n "$pip_index" ]; then
  pip_opts+=(--index-url "$pip_index"); trust "$pip_index"
fi

install -d -m 0755 /opt/p2pchat
# A private copy: building the package never writes into the user's checkout.
rsync -a --delete --exclude .git/ --exclude .venv/ --exclude '__pycache__/' --exclude '*.egg-info/' \
  --exclude build/ /p2pchat/ /opt/p2pchat/src/
[ -x /opt/p2pchat/venv/bin/python ] || python3 -m venv /opt/p2pchat/venv
/opt/p2pchat/venv/bin/python -m pip install -q "${pip_opts[@]}" /opt/p2pchat/src
ln -sf /opt/p2pchat/venv/bin/ledger /usr/local/bin/ledger
ln -sf /opt/p2pchat/venv/bin/p2pchat /usr/local/bin/p2pchat
/usr/local/bin/ledger --help >/dev/null
/usr/local/bin/p2pchat --help >/dev/null
echo "p2pchat installed: $(/opt/p2pchat/venv/bin/python -c 'import sys; print(sys.version.split()[0])')" \
  "(packages from ${wheelhouse:-${pip_index:-PyPI}})"
