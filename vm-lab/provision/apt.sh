#!/usr/bin/env bash
# Where apt gets its packages: through P2PLAB_APT_PROXY (e.g. apt-cacher-ng on the teacher's machine,
# http://10.0.0.5:3142) when it is set, so a class of VMs downloads each package once; straight from the
# box's mirrors when it is empty.
# Usage: apt.sh [PROXY_URL]
set -euo pipefail
proxy=${1:-}
conf=/etc/apt/apt.conf.d/01p2plab-proxy
if [ -z "$proxy" ]; then
  rm -f "$conf"
  exit 0
fi
case "$proxy" in
  http://*|https://*) ;;
  *) echo "apt.sh: the apt proxy must be an http:// or https:// URL, not '$proxy'" >&2; exit 2 ;;
esac
printf 'Acquire::http::Proxy "%s";\nAcquire::https::Proxy "DIRECT";\n' "$proxy" > "$conf"
echo "apt uses the proxy $proxy"
