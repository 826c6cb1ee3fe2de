# shellcheck shell=bash
# egress=allowlist on the running box: the ruleset, the refresh, and packets that prove it. Sourced by box.sh after
# checks.sh; every check prints one "ok - …" / "not ok - …" line (lib.sh).
#
# Packets go only between the box, a network namespace made inside it for these checks, and the harness's own end
# of the veth (HOST_IP): a stand-in resolver there answers one name, and listeners there receive what the box may
# send. Nothing is ever sent to any other address, the metadata address included.

EGRESS_PROBE_NAME=egress-probe.agentbox.test # in the CI stack's egressAllowHosts; resolves to HOST_IP here
EGRESS_NS=agentbox-probe                     # inside the box: a host that is no resolver, and a container's stand-in
EGRESS_NS_BOX=172.30.77.1 EGRESS_NS_PEER=172.30.77.2
EGRESS_TCP_PORT=47801 # HOST_IP: the agent's connection that must outlive its address's expiry
EGRESS_UDP_PORT=47802 # HOST_IP: what the namespace sends through the box (forwarded) must never reach it

# The stand-in resolver, harness-only: A for the probe name (HOST_IP), NXDOMAIN for every other name. It answers
# from itself alone and never forwards a query anywhere. usage: dns.py ADDRESS NAME (logs one line a query)
EGRESS_DNS_PY=$(
  cat <<'EOF'
import socket, struct, sys, threading
addr, name = sys.argv[1], sys.argv[2].lower()

def answer(q, how, peer):
    if len(q) < 17:
        return None
    i, labels = 12, []
    while i < len(q) and q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
        i += 1 + q[i]
    if i + 5 > len(q):
        return None
    qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
    qname = ".".join(labels).lower()
    rrs, rcode = [], 3
    if qname == name:
        rcode = 0
        if qtype == 1:
            rrs = [struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(addr)]
    flags = 0x8000 | 0x0400 | (struct.unpack(">H", q[2:4])[0] & 0x0100) | 0x0080 | rcode
    print(how, peer, qname, qtype, ["NXDOMAIN", addr if rrs else "NODATA"][rcode == 0], flush=True)
    return q[:2] + struct.pack(">HHHHH", flags, 1, len(rrs), 0, 0) + q[12:i + 5] + b"".join(rrs)

def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 53))
    while True:
        q, peer = s.recvfrom(4096)
        r = answer(q, "udp", peer[0])
        if r:
            s.sendto(r, peer)

def tcp_one(c, peer):
    c.settimeout(10)
    try:
        while True:
            n = c.recv(2)
            if len(n) < 2:
                return
            q = b""
            while len(q) < struct.unpack(">H", n)[0]:
                q += c.recv(4096)
            r = answer(q, "tcp", peer[0])
            if not r:
                return
            c.sendall(struct.pack(">H", len(r)) + r)
    except OSError:
        pass
    finally:
        c.close()

t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((addr, 53))
t.listen(16)
threading.Thread(target=udp, daemon=True).start()
print("listening on", addr, flush=True)
while True:
    c, peer = t.accept()
    threading.Thread(target=tcp_one, args=(c, peer), daemon=True).start()
EOF
)

# Probes, run on the host, in the box and in its namespace (python3 -c "$EGRESS_PY" COMMAND ...):
#   listen ADDR PORT SECONDS      TCP and UDP on ADDR:PORT; logs "pid N", then every connection, line and datagram
#   udp ADDR PORT TEXT            one datagram
#   tcp ADDR PORT TEXT            connect (5 s at most) and send one line
#   hold ADDR PORT                connect, send "before", wait for a line on stdin, send "after"
#   dns ADDR udp|tcp NAME         ask ADDR:53 for NAME's A record; prints the address
EGRESS_PY=$(
  cat <<'EOF'
import os, select, socket, struct, sys, time
cmd, a = sys.argv[1], sys.argv[2:]

def say(*words):
    print(*words, flush=True)

if cmd == "listen":
    addr, port, end = a[0], int(a[1]), time.time() + float(a[2])
    say("pid", os.getpid())
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((addr, port))
    t.listen(8)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((addr, port))
    say("listening")
    conns, peers, bufs = [], {}, {}
    while time.time() < end:
        ready = select.select([t, u] + conns, [], [], 0.2)[0]
        for s in ready:
            if s is t:
                c, p = t.accept()
                conns.append(c)
                peers[c], bufs[c] = p[0], b""
                say("tcp", p[0], "connect")
            elif s is u:
                d, p = u.recvfrom(4096)
                say("udp", p[0], d.decode(errors="replace").strip())
            else:
                d = s.recv(4096)
                if not d:
                    conns.remove(s)
                    s.close()
                    continue
                bufs[s] += d
                while b"\n" in bufs[s]:
                    line, bufs[s] = bufs[s].split(b"\n", 1)
                    say("tcp", peers[s], line.decode(errors="replace"))
try:
    if cmd == "udp":
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(a[2].encode() + b"\n", (a[0], int(a[1])))
        say("sent")
    elif cmd == "tcp":
        c = socket.create_connection((a[0], int(a[1])), timeout=5)
        c.sendall(a[2].encode() + b"\n")
        say("connected")
        time.sleep(0.5)
    elif cmd == "hold":
        c = socket.create_connection((a[0], int(a[1])), timeout=5)
        c.sendall(b"before\n")
        say("connected")
        sys.stdin.readline()
        c.sendall(b"after\n")
        say("sent after")
        time.sleep(1)
except OSError as e:
    sys.exit("%s: %s" % (cmd, e.strerror or e))
if cmd == "dns":
    labels = b"".join(bytes([len(l)]) + l.encode() for l in a[2].split("."))
    q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(">HH", 1, 1)
    if a[1] == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.sendto(q, (a[0], 53))
        r = s.recv(4096)
    else:
        s = socket.create_connection((a[0], 53), timeout=5)
        s.sendall(struct.pack(">H", len(q)) + q)
        r = s.recv(4096)[2:]
    if struct.unpack(">H", r[6:8])[0] == 0:
        sys.exit("no answer, rcode %d" % (r[3] & 15))
    say(socket.inet_ntoa(r[-4:]))
EOF
)

# before the box boots: its resolv.conf names the stand-in resolver, which starts on the host end of the veth
egress_prepare() { # egress_prepare RUN_DIR
  local dir=$1 host_ip
  host_ip=$(state_get "$dir" HOST_IP)
  # never through a link: the path is the box's, the write is the host's
  rm -f "$dir/merged/etc/resolv.conf"
  printf 'nameserver %s\n' "$host_ip" >"$dir/merged/etc/resolv.conf"
  printf '%s\n' "$EGRESS_DNS_PY" >"$dir/dns.py"
  setsid python3 "$dir/dns.py" "$host_ip" "$EGRESS_PROBE_NAME" </dev/null >"$dir/dns.log" 2>&1 &
  state_set "$dir" DNS_PID $!
  for _ in $(seq 50); do
    grep -q '^listening on ' "$dir/dns.log" && return 0
    sleep 0.1
  done
  die "the stand-in resolver did not start on $host_ip:53 (see $dir/dns.log)"
}

egress_set() { cin nft -j list set inet agentbox "$1"; }
# seconds left before ADDRESS's element in SET expires; fails when it has none
egress_expires() { # egress_expires SET ADDRESS
  egress_set "$1" | python3 -c '
import json, sys
for o in json.load(sys.stdin)["nftables"]:
    for e in o.get("set", {}).get("elem", []):
        if isinstance(e, dict) and e["elem"]["val"] == sys.argv[1]:
            print(e["elem"]["expires"]); sys.exit(0)
sys.exit("no element %s" % sys.argv[1])' "$2"
}
# packets counted by the rule of CHAIN whose text contains WHAT
egress_counter() { # egress_counter CHAIN WHAT
  cin nft list chain inet agentbox "$1" | grep -F -- "$2" | sed -n 's/.*counter packets \([0-9]*\) .*/\1/p' | head -n 1
}
egress_refresh() { cin systemctl start agentbox-egress.service; }
egress_py() { python3 -c "$EGRESS_PY" "$@"; }
egress_in_box() { cin python3 -c "$EGRESS_PY" "$@"; }
egress_as_agent() { as_agent python3 -c "$EGRESS_PY" "$@"; }
egress_in_ns() { cin ip netns exec "$EGRESS_NS" python3 -c "$EGRESS_PY" "$@"; }
# wait for LOG to hold a line matching the extended regex RE (up to 5 s)
egress_logged() { # egress_logged LOG RE
  local _
  for _ in $(seq 50); do
    grep -Eq -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# egress=allowlist: the agent's uid, and forwarded traffic, reach only the allowed sets and the box's resolvers
check_egress() {
  local output allowlist log host_ip box_ip
  host_ip=$(state_get "$RUN_DIR" HOST_IP)
  box_ip=$(state_get "$RUN_DIR" BOX_IP)
  output=$(cin nft list chain inet agentbox output 2>&1)
  # read whole, then searched: `nft ... | grep -q` fails under pipefail when grep exits before nft has written all
  # (and again when a refresh's transaction interrupted the listing: nft then reports an error)
  for _ in 1 2 3; do
    allowlist=$(cin nft list chain inet agentbox allowlist 2>&1) && break
    sleep 1
  done
  if grep -Eq "meta skuid (\"?$AGENT\"?|$AUID) jump allowlist" <<<"$output" &&
    grep -Eq "meta skuid (\"?$AGENT\"?|$AUID) reject" <<<"$output" &&
    grep -q '@egress4 accept' <<<"$allowlist"; then
    ok "egress allow-list: $AGENT may reach only the allowed sets and DNS"
  else
    not_ok "egress allow-list: $AGENT may reach only the allowed sets and DNS" "$output"$'\n'"$allowlist"
  fi
  check "egress allow-list: agentbox-egress.service ran and succeeded" egress_ran
  check "egress allow-list: agentbox-egress.timer is active" cin systemctl is-active agentbox-egress.timer
  log=$(cin journalctl -b -u agentbox-egress --no-pager -o cat 2>&1)
  if grep -q 'does not resolve; skipped' <<<"$log" && grep -Eq '^egress: [0-9]+ hosts allowed, [0-9]+ did not resolve' <<<"$log"; then
    ok "egress allow-list: hosts that do not resolve are skipped and reported, the box carries on"
  else
    not_ok "egress allow-list: hosts that do not resolve are skipped and reported, the box carries on" "$log"
  fi
  egress_kernel_note
  check_egress_dns "$host_ip" "$box_ip"
  check "egress: a network namespace inside the box ($EGRESS_NS, $EGRESS_NS_PEER), routed through it" egress_ns_up
  check_egress_dns_elsewhere
  check_egress_expiry "$host_ip"
  check_egress_timeout_moves "$host_ip"
  egress_ns_down
}

egress_ran() { # a oneshot that the timer reruns: inactive between runs, so ask how its last run went
  local shown
  shown=$(cin systemctl show agentbox-egress.service -p Result -p ExecMainStatus -p ExecMainExitTimestampMonotonic)
  echo "$shown"
  grep -qx 'Result=success' <<<"$shown" && grep -qx 'ExecMainStatus=0' <<<"$shown" &&
    ! grep -qx 'ExecMainExitTimestampMonotonic=0' <<<"$shown"
}

# Not a check, a note for the record: does this box's nft and kernel move an existing element's timeout on a plain
# `add element` (the refresh does not rely on it), and does it know `destroy element`? In a scratch table.
egress_kernel_note() {
  local v1 v2 destroy=no
  cin nft add table inet agentbox_scratch || return 0
  cin nft add set inet agentbox_scratch s '{ type ipv4_addr; flags timeout; }'
  cin nft add element inet agentbox_scratch s '{ 192.0.2.1 timeout 1m }'
  sleep 2
  v1=$(cin nft -j list set inet agentbox_scratch s | grep -o '"expires": [0-9]*')
  cin nft add element inet agentbox_scratch s '{ 192.0.2.1 timeout 1m }'
  v2=$(cin nft -j list set inet agentbox_scratch s | grep -o '"expires": [0-9]*')
  cin nft destroy element inet agentbox_scratch s '{ 192.0.2.9 }' 2>/dev/null && destroy=yes
  cin nft delete table inet agentbox_scratch
  log "$(cin nft --version), kernel $(uname -r): a second plain add element left ${v1:-?} at ${v2:-?}" \
    "($([ "$v1" = "$v2" ] && echo "not refreshed" || echo "refreshed")); destroy element known: $destroy"
}

# (a) the box's resolver is in resolvers4, and the agent's queries to it are answered, over UDP and TCP
check_egress_dns() { # check_egress_dns HOST_IP BOX_IP
  local host_ip=$1 box_ip=$2 got
  if egress_set resolvers4 | grep -qF "\"$host_ip\""; then
    ok "egress: resolvers4 holds the box's resolver $host_ip (its resolv.conf)"
  else
    not_ok "egress: resolvers4 holds the box's resolver $host_ip (its resolv.conf)" "$(cin nft list set inet agentbox resolvers4 2>&1)"
  fi
  local asked
  asked=$(wc -l <"$RUN_DIR/dns.log")
  got=$(as_agent getent ahostsv4 "$EGRESS_PROBE_NAME" 2>&1 | awk 'NR == 1 { print $1 }')
  if [ "$got" = "$host_ip" ] && tail -n +$((asked + 1)) "$RUN_DIR/dns.log" | grep -q "^udp $box_ip $EGRESS_PROBE_NAME 1 $host_ip$"; then
    ok "egress: $AGENT's DNS query to its resolver $host_ip is answered ($EGRESS_PROBE_NAME = $got)"
  else
    not_ok "egress: $AGENT's DNS query to its resolver $host_ip is answered ($EGRESS_PROBE_NAME = $got)" "$(cat "$RUN_DIR/dns.log")"
  fi
  got=$(egress_as_agent dns "$host_ip" tcp "$EGRESS_PROBE_NAME" 2>&1)
  if [ "$got" = "$host_ip" ]; then
    ok "egress: $AGENT's DNS query over TCP to $host_ip:53 is answered"
  else
    not_ok "egress: $AGENT's DNS query over TCP to $host_ip:53 is answered" "$got"
  fi
}

# a network namespace inside the box, on a veth of its own, routed through the box: a host that is no resolver,
# and what a container's traffic looks like to the box
egress_ns_up() {
  cin ip netns add "$EGRESS_NS" &&
    cin ip link add egp-box type veth peer name egp-ns netns "$EGRESS_NS" &&
    cin ip addr add "$EGRESS_NS_BOX/30" dev egp-box &&
    cin ip link set egp-box up &&
    cin ip -n "$EGRESS_NS" link set lo up &&
    cin ip -n "$EGRESS_NS" addr add "$EGRESS_NS_PEER/30" dev egp-ns &&
    cin ip -n "$EGRESS_NS" link set egp-ns up &&
    cin ip -n "$EGRESS_NS" route add default via "$EGRESS_NS_BOX"
}
# the box's /proc/sys is read-only inside it: set its network's sysctl from the host, in its network namespace
egress_forwarding() { nsenter -t "$LEADER" -n sysctl -qw "net.ipv4.ip_forward=$1"; }
egress_ns_down() {
  egress_forwarding 0
  cin ip netns del "$EGRESS_NS" 2>/dev/null
  cin ip link del egp-box 2>/dev/null
  return 0
}

# start the listener `listen ADDR PORT` where RUNNER runs it (egress_py, egress_in_ns); sets LISTENER (the pid as
# its own namespace sees it) once it listens. Its log: $RUN_DIR/listen-NAME.log
egress_listen() { # egress_listen NAME RUNNER ADDR PORT
  local logf=$RUN_DIR/listen-$1.log
  "$2" listen "$3" "$4" 120 >"$logf" 2>&1 &
  LISTENER=
  egress_logged "$logf" '^listening$' || {
    cat "$logf"
    return 1
  }
  LISTENER=$(sed -n 's/^pid //p' "$logf")
}

# (b) port 53 of a host that is not the box's resolver: the agent's UDP and TCP never arrive, root's do
check_egress_dns_elsewhere() {
  local what="egress: $AGENT's UDP and TCP to port 53 of a host that is no resolver ($EGRESS_NS_PEER) are refused"
  local logf=$RUN_DIR/listen-ns53.log before after out
  if ! egress_listen ns53 egress_in_ns "$EGRESS_NS_PEER" 53 >/dev/null 2>&1; then
    not_ok "$what" "no listener in the box's namespace $EGRESS_NS: $(cat "$logf")"
    return
  fi
  before=$(egress_counter allowlist 'dport 53 counter')
  out=$(egress_as_agent udp "$EGRESS_NS_PEER" 53 agent-udp 2>&1; egress_as_agent tcp "$EGRESS_NS_PEER" 53 agent-tcp 2>&1)
  # root is not restricted: its datagram and connection show that the listener hears what arrives
  egress_in_box udp "$EGRESS_NS_PEER" 53 root-udp >/dev/null 2>&1
  egress_in_box tcp "$EGRESS_NS_PEER" 53 root-tcp >/dev/null 2>&1
  egress_logged "$logf" "^tcp $EGRESS_NS_BOX root-tcp$"
  after=$(egress_counter allowlist 'dport 53 counter')
  if grep -q "^udp $EGRESS_NS_BOX root-udp$" "$logf" && grep -q "^tcp $EGRESS_NS_BOX root-tcp$" "$logf"; then
    ok "egress: root's UDP and TCP to $EGRESS_NS_PEER:53 arrive (root is not restricted; the listener hears)"
  else
    not_ok "egress: root's UDP and TCP to $EGRESS_NS_PEER:53 arrive (root is not restricted; the listener hears)" "$(cat "$logf")"
  fi
  if ! grep -q 'agent-' "$logf" && [[ $out == *"Connection refused"* ]] && [ "${after:-0}" -ge $((${before:-0} + 2)) ]; then
    ok "$what (counted: $before -> $after)"
  else
    not_ok "$what (counted: $before -> $after)" "agent: $out
listener: $(cat "$logf")"
  fi
  cin kill "$LISTENER" 2>/dev/null
}

# (c) an established connection outlives its address's expiry, new ones are refused until the refresh; (e) meanwhile
# a forwarded datagram to that address is dropped by the forward chain
check_egress_expiry() { # check_egress_expiry HOST_IP
  local host_ip=$1 logf=$RUN_DIR/listen-host.log fifo=$RUN_DIR/egress-hold listener hold out
  if egress_set egress4 | grep -qF "\"$host_ip\""; then
    ok "egress: egress4 holds $host_ip ($EGRESS_PROBE_NAME, resolved by the refresh)"
  else
    not_ok "egress: egress4 holds $host_ip ($EGRESS_PROBE_NAME, resolved by the refresh)" "$(cin nft list set inet agentbox egress4 2>&1)"
  fi
  if ! egress_listen host egress_py "$host_ip" "$EGRESS_TCP_PORT" >/dev/null 2>&1; then
    not_ok "egress: a listener on $host_ip:$EGRESS_TCP_PORT" "$(cat "$logf")"
    return
  fi
  listener=$LISTENER
  rm -f "$fifo"
  mkfifo "$fifo"
  egress_as_agent hold "$host_ip" "$EGRESS_TCP_PORT" <"$fifo" >"$RUN_DIR/egress-hold.out" 2>&1 &
  hold=$!
  exec 7>"$fifo"
  egress_logged "$logf" "^tcp .* before$"
  # as an expiry would
  cin nft delete element inet agentbox egress4 "{ $host_ip }"
  # a client that is gone already must not take the harness with it (SIGPIPE)
  (
    trap '' PIPE
    echo go >&7
  ) 2>/dev/null
  exec 7>&-
  wait "$hold"
  if egress_logged "$logf" "^tcp .* before$" && egress_logged "$logf" "^tcp .* after$"; then
    ok "egress: $AGENT's connection to $host_ip outlives its address's expiry (established: data still arrives)"
  else
    not_ok "egress: $AGENT's connection to $host_ip outlives its address's expiry (established: data still arrives)" \
      "client: $(cat "$RUN_DIR/egress-hold.out"); listener: $(cat "$logf")"
  fi
  out=$(egress_as_agent tcp "$host_ip" "$EGRESS_TCP_PORT" new-while-expired 2>&1)
  if [[ $out == *"Connection refused"* ]] && ! grep -q 'new-while-expired' "$logf"; then
    ok "egress: expired, a new connection of $AGENT's to $host_ip is refused"
  else
    not_ok "egress: expired, a new connection of $AGENT's to $host_ip is refused" "client: $out; listener: $(cat "$logf")"
  fi

  check_egress_forward "$host_ip"

  egress_refresh
  out=$(egress_as_agent tcp "$host_ip" "$EGRESS_TCP_PORT" new-after-refresh 2>&1)
  if [ "$out" = connected ] && egress_logged "$logf" "^tcp .* new-after-refresh$"; then
    ok "egress: after a refresh, $AGENT's new connections to $host_ip work again"
  else
    not_ok "egress: after a refresh, $AGENT's new connections to $host_ip work again" "client: $out; listener: $(cat "$logf")
$(cin nft list set inet agentbox egress4 2>&1)"
  fi
  kill "$listener" 2>/dev/null
  rm -f "$fifo"
}

# (e) from the box's namespace, routed through the box to HOST_IP (not in egress4 at this point): dropped and
# counted by the forward chain; nothing arrives. UDP only: the listener never answers, so nothing goes back.
check_egress_forward() { # check_egress_forward HOST_IP
  local host_ip=$1 udpf=$RUN_DIR/listen-forward.log listener before after out
  local what="egress: traffic forwarded through the box (a container's) to a host not allowed is dropped"
  if ! egress_listen forward egress_py "$host_ip" "$EGRESS_UDP_PORT" >/dev/null 2>&1; then
    not_ok "$what" "no listener on $host_ip:$EGRESS_UDP_PORT: $(cat "$udpf")"
    return
  fi
  listener=$LISTENER
  egress_forwarding 1
  before=$(egress_counter forward 'egress allow-list')
  out=$(for i in 1 2 3; do egress_in_ns udp "$host_ip" "$EGRESS_UDP_PORT" "forwarded-$i" 2>&1; done)
  sleep 1
  after=$(egress_counter forward 'egress allow-list')
  egress_forwarding 0
  if [ "${after:-0}" -ge $((${before:-0} + 3)) ] && ! grep -q forwarded "$udpf" && [ "$(grep -c '^sent$' <<<"$out")" = 3 ]; then
    ok "$what (the forward chain's drop counted $before -> $after, nothing arrived)"
  else
    not_ok "$what (the forward chain's drop counted $before -> $after, nothing arrived)" "sender: $out
listener: $(cat "$udpf")
$(cin nft list chain inet agentbox forward 2>&1)"
  fi
  kill "$listener" 2>/dev/null
}

# (d) each refresh moves the element's expiry forward (a plain `add element` would leave it counting down)
check_egress_timeout_moves() { # check_egress_timeout_moves HOST_IP
  local host_ip=$1 e1 e2 e3
  e1=$(egress_expires egress4 "$host_ip" 2>&1)
  sleep 3
  e2=$(egress_expires egress4 "$host_ip" 2>&1)
  egress_refresh
  e3=$(egress_expires egress4 "$host_ip" 2>&1)
  if [[ $e1$e2$e3 =~ ^[0-9]+$ ]] && [ "$e2" -lt "$e1" ] && [ "$e3" -gt "$e2" ]; then
    ok "egress: a refresh moves $host_ip's expiry forward (${e1} s left, 3 s later ${e2} s, refreshed ${e3} s)"
  else
    not_ok "egress: a refresh moves $host_ip's expiry forward" "expires: '$e1', 3 s later '$e2', refreshed '$e3'"
  fi
}
