#!/usr/bin/env bash
# The NAT router in front of the home network: forwards and masquerades connections that start in the home
# network, and forwards nothing that starts on the lab network (like a home router with no port forwards).
# Usage: router.sh ROUTER_LAB_IP HOME_NET_CIDR
set -euo pipefail
lab_ip=$1 home_net=$2
export DEBIAN_FRONTEND=noninteractive
if ! command -v nft >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq nftables >/dev/null
fi
wan=$(ip -o -4 addr show | awk -v ip="$lab_ip" 'index($4, ip "/") == 1 { print $2; exit }')
if [ -z "$wan" ]; then
  echo "router.sh: no interface has $lab_ip" >&2
  exit 1
fi
echo "net.ipv4.ip_forward = 1" > /etc/sysctl.d/90-p2plab-router.conf
sysctl -q -p /etc/sysctl.d/90-p2plab-router.conf
cat > /etc/nftables.conf <<RULES
#!/usr/sbin/nft -f
flush ruleset

table ip p2plab-nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "$wan" ip saddr $home_net masquerade
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        ip saddr $home_net oifname "$wan" accept
    }
}
RULES
nft -c -f /etc/nftables.conf
systemctl enable nftables.service
systemctl restart nftables.service
nft list ruleset
