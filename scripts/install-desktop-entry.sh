#!/usr/bin/env bash
# Installs p2pchat's menu entry and icon for this user (XDG data directory) when a desktop session runs; without
# one it writes nothing and says so. scripts/setup.sh calls it; run it again after moving the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || [ -z "${XDG_CURRENT_DESKTOP:-}${DESKTOP_SESSION:-}" ]; then
  echo "setup: no desktop session here; the menu entry is not installed" >&2
  exit 0
fi
data="${XDG_DATA_HOME:-$HOME/.local/share}"
apps="$data/applications"
icons="$data/icons/hicolor/64x64/apps"
mkdir -p "$apps" "$icons"
icon=
if .venv/bin/python scripts/make_icon.py "$icons/p2pchat.png" >/dev/null 2>&1; then icon=p2pchat; fi
sed -e "s|@EXEC@|$PWD/.venv/bin/p2pchat|" -e "s|@ICON@|$icon|" packaging/p2pchat.desktop > "$apps/p2pchat.desktop"
if command -v update-desktop-database >/dev/null; then update-desktop-database -q "$apps" || true; fi
echo "setup: installed the menu entry $apps/p2pchat.desktop" >&2
