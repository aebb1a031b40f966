#!/usr/bin/env bash
# The lab's services on one VM, as systemd units running as the vagrant user:
#   p2pchat-ledger  `ledger serve` on the seed peer, `ledger join SEED` everywhere else (the NAT'd peer with
#                   --no-inbound --relay, so its record carries the relay hint instead of an address);
#   p2pchat-relay   `p2pchat relay` on the relay VM.
# It also sets, in /etc/environment, P2PLAB_IP (this VM's lab address) and P2PLAB_OPTS (the options this VM's
# chat commands need: `p2pchat chat b $P2PLAB_OPTS`, `p2pchat gui $P2PLAB_OPTS`).
# Usage: services.sh seed|peer|natted|relay NAME HOST_IP SEED_IP RELAY_IP NETWORK DIFFICULTY
set -euo pipefail
role=$1 name=$2 host_ip=$3 seed_ip=$4 relay_ip=$5 network=$6 difficulty=$7
relay="$relay_ip:8472"
user=vagrant
data_dir="/home/$user/.local/share/p2pchat"   # the default data dir of that user: chats use the same key
install -d -o "$user" -g "$user" -m 0700 "/home/$user/.local" "/home/$user/.local/share" "$data_dir"

common="--host $host_ip --data-dir $data_dir --network $network"
case "$role" in
  seed)   ledger_args="serve $common --difficulty $difficulty --nickname $name" ;;
  peer|relay) ledger_args="join $seed_ip $common --nickname $name" ;;
  natted) ledger_args="join $seed_ip $common --nickname $name --no-inbound --relay $relay" ;;
  *) echo "services.sh: unknown role '$role' (seed, peer, natted or relay)" >&2; exit 2 ;;
esac

unit() {  # unit NAME DESCRIPTION EXEC
  cat > "/etc/systemd/system/$1.service" <<UNIT
[Unit]
Description=$2
After=network-online.target p2plab-routes.service
Wants=network-online.target

[Service]
User=$user
Environment=PYTHONUNBUFFERED=1
ExecStart=$3
# Ctrl-C is how both commands stop cleanly.
KillSignal=SIGINT
TimeoutStopSec=20
# A joining node whose seed is not up yet exits; try again until it is.
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
}

unit p2pchat-ledger "p2pchat ledger node ($role $name)" "/opt/p2pchat/venv/bin/ledger $ledger_args"
units=(p2pchat-ledger)
if [ "$role" = relay ]; then
  unit p2pchat-relay "p2pchat relay" "/opt/p2pchat/venv/bin/p2pchat relay --host $host_ip"
  units+=(p2pchat-relay)
fi
systemctl daemon-reload
for u in "${units[@]}"; do
  systemctl enable "$u.service"
  systemctl restart "$u.service"
done

chat_opts="--host $host_ip --network $network --relay $relay"
[ "$role" = natted ] && chat_opts="$chat_opts --no-inbound"
# /etc/environment reaches every ssh session (also `vagrant ssh NAME -c '...'`, which reads no profile).
sed -i '/^P2PLAB_/d' /etc/environment
cat >> /etc/environment <<ENVIRONMENT
P2PLAB_NAME="$name"
P2PLAB_IP="$host_ip"
P2PLAB_OPTS="$chat_opts"
ENVIRONMENT

# Wait (bounded) for the node to answer, so `vagrant up` ends with a working machine or a clear message.
for _ in $(seq 60); do
  if /opt/p2pchat/venv/bin/ledger status --host "$host_ip" --network "$network" >/dev/null 2>&1; then
    /opt/p2pchat/venv/bin/ledger status --host "$host_ip" --network "$network"
    exit 0
  fi
  sleep 2
done
echo "services.sh: the ledger node on $name does not answer yet; see: journalctl -u p2pchat-ledger" >&2
systemctl --no-pager status p2pchat-ledger.service || true
