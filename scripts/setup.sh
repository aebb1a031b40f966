#!/usr/bin/env bash
# Creates .venv with the project installed. Installs the few Debian packages it needs when they are missing
# (python3-venv, python3-tk; with --test also xvfb, xdotool, a window manager, a D-Bus session bus and the
# notification test server's python3-gi for the real-window GUI tests). With a desktop present it also installs
# the desktop entry (menu item and icon) into ~/.local/share/applications.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

need=()
python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
python3 -c "import tkinter" 2>/dev/null || need+=(python3-tk)
if [ "$want_test" = 1 ]; then
  command -v Xvfb >/dev/null || need+=(xvfb)
  command -v xdotool >/dev/null || need+=(xdotool)
  command -v ip >/dev/null || need+=(iproute2)
  command -v nft >/dev/null || need+=(nftables)
  ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || need+=(libfaketime)   # lab hosts with a wrong clock
  command -v openbox >/dev/null || need+=(openbox)                  # map, focus and urgency semantics
  command -v xprop >/dev/null || need+=(x11-utils)                  # reads WM_HINTS in the tests
  command -v import >/dev/null || need+=(imagemagick)               # screenshots of the real window
  command -v dbus-daemon >/dev/null || need+=(dbus-daemon)          # a private session bus
  command -v gdbus >/dev/null || need+=(libglib2.0-bin)             # sends the desktop notifications
  /usr/bin/python3 -c "import gi" 2>/dev/null || need+=(python3-gi gir1.2-glib-2.0)   # the test server
fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing ${need[*]} with apt-get" >&2
  sudo_cmd=()
  [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The vm-lab tests check the Vagrantfile with `vagrant validate`; Debian's vagrant without its recommends is small.
if [ "$want_test" = 1 ] && [ "${CI:-}" = true ] && ! command -v vagrant >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "setup: installing vagrant (no recommends) for the Vagrantfile check" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends vagrant >/dev/null || \
    echo "setup: vagrant could not be installed; the Vagrantfile check will be skipped" >&2
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# pip's and setuptools' chatter only matters when the install fails: keep it in a log and show it then.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
target='.[dnd]'            # dnd: dropping files onto a chat (optional: the window works without it)
[ "$want_test" = 1 ] && target='.[test,dnd]'
echo "setup: installing p2pchat into .venv" >&2
if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e "$target"; } >"$log" 2>&1
then
  cat "$log" >&2
  echo "setup: installing into .venv failed (see above)" >&2
  exit 1
fi

# The desktop entry: only where a desktop runs (harmless elsewhere: nothing is written without one).
bash scripts/install-desktop-entry.sh
