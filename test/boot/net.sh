# shellcheck shell=bash
# The box's network: a namespace of its own joined to the host by a veth pair on a
# private /30, with no route anywhere else. Its only way out is a tinyproxy on the host
# end of the veth that lets through exactly the hosts of this machine's apt sources and
# npm registry (read at run time) and refuses everything else without contacting it.
# Sourced by box.sh; every function works on one run directory and its `state` file.

# /30s are carved from this /24 (private, used only between our veth ends)
NET_BASE=${AGENTBOX_BOOT_NET:-10.203.77}
PROXY_PORT=3128

net_up() { # net_up RUN_DIR NAME
  local dir=$1 name=$2 slot host_ip box_ip
  local vh="${name: -6}h" vc="${name: -6}c" # interface names are limited to 15 characters
  exec 8>"$BOOT_CACHE/net.lock"
  flock 8
  for slot in $(seq 0 63); do
    host_ip=$NET_BASE.$((slot * 4 + 1))
    ip -4 -o addr show | grep -q " $host_ip/" || break
  done
  ip -4 -o addr show | grep -q " $host_ip/" && die "no free /30 left in $NET_BASE.0/24"

  ip netns add "$name"
  state_set "$dir" NETNS "$name"
  ip link add "$vh" type veth peer name "$vc" netns "$name"
  state_set "$dir" VETH "$vh"
  box_ip=$NET_BASE.$((slot * 4 + 2))
  ip addr add "$host_ip/30" dev "$vh"
  ip link set "$vh" up
  ip -n "$name" link set lo up
  ip -n "$name" addr add "$box_ip/30" dev "$vc"
  ip -n "$name" link set "$vc" up
  flock -u 8
  state_set "$dir" HOST_IP "$host_ip"
  state_set "$dir" BOX_IP "$box_ip"
  state_set "$dir" PROXY "http://$host_ip:$PROXY_PORT"
  proxy_start "$dir" "$host_ip" "$box_ip"
}

proxy_start() { # proxy_start RUN_DIR HOST_IP BOX_IP
  local dir=$1 host_ip=$2 box_ip=$3 h
  # anchored, dots escaped: exactly these host names, nothing under or around them
  allowed_hosts >"$dir/allowed-hosts"
  while read -r h; do printf '^%s$\n' "${h//./\\.}"; done <"$dir/allowed-hosts" >"$dir/proxy.filter"
  [ -s "$dir/proxy.filter" ] || die "no allowed hosts found (apt sources, npm registry)"
  cat >"$dir/proxy.conf" <<EOF
User nobody
Group nogroup
Port $PROXY_PORT
Listen $host_ip
Allow $box_ip/30
Timeout 600
MaxClients 64
LogLevel Connect
DisableViaHeader Yes
# CONNECT (TLS) only to 443; plain http to the allowed hosts as is
ConnectPort 443
Filter "$dir/proxy.filter"
FilterType ere
FilterURLs Off
FilterDefaultDeny Yes
EOF
  # no LogFile: in the foreground it logs to stderr, a file we open as root (it runs as nobody)
  # foreground (-d) in a session of its own, so it outlives this shell in "try" mode
  setsid tinyproxy -d -c "$dir/proxy.conf" </dev/null >"$dir/proxy.log" 2>&1 &
  state_set "$dir" PROXY_PID $!
  local _
  for _ in $(seq 50); do
    (echo >"/dev/tcp/$host_ip/$PROXY_PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  die "tinyproxy did not start listening on $host_ip:$PROXY_PORT (see $dir/proxy.log)"
}

net_down() { # net_down RUN_DIR
  local dir=$1 pid netns veth
  pid=$(state_get "$dir" PROXY_PID)
  # only our tinyproxy: the pid must still be a tinyproxy started with this run's config
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "tinyproxy -d -c $dir/proxy.conf"; then
    kill "$pid"
    for _ in $(seq 50); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
  fi
  # and only our stand-in resolver (checks-egress.sh), by the same test
  pid=$(state_get "$dir" DNS_PID)
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "python3 $dir/dns.py "; then
    kill "$pid"
    for _ in $(seq 50); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
  fi
  veth=$(state_get "$dir" VETH)
  [ -n "$veth" ] && ip link show "$veth" >/dev/null 2>&1 && ip link del "$veth"
  netns=$(state_get "$dir" NETNS)
  [ -n "$netns" ] && [ -e "/run/netns/$netns" ] && ip netns del "$netns"
  # the phone's namespace of the approvals checks (checks-approvals.sh), once its veth went with the box's
  netns=$(state_get "$dir" PHONE_NETNS)
  [ -n "$netns" ] && [ -e "/run/netns/$netns" ] && ip netns del "$netns"
  return 0
}
