#!/usr/bin/env bash
# Lab routes, kept across reboots by a small systemd unit:
#   natted: this peer reaches the lab network only through the NAT router;
#   lan:    this machine has no route at all into the home network behind the router, so nobody can dial
#           the NAT'd peer (and nothing meant for it leaks out through the VM's own NAT adapter).
# Usage: routes.sh natted|lan ROUTER_HOME_IP LAB_NET_CIDR HOME_NET_CIDR
set -euo pipefail
kind=$1 router=$2 lab_net=$3 home_net=$4
case "$kind" in
  natted) route="/usr/sbin/ip route replace $lab_net via $router" ;;
  lan)    route="/usr/sbin/ip route replace unreachable $home_net" ;;
  *) echo "routes.sh: unknown kind '$kind' (natted or lan)" >&2; exit 2 ;;
esac
cat > /etc/systemd/system/p2plab-routes.service <<UNIT
[Unit]
Description=p2pchat lab routes ($kind)
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=$route
# The private interface may come up a moment after network-online on some providers.
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable p2plab-routes.service
systemctl restart p2plab-routes.service
ip route
