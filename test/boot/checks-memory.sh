# shellcheck shell=bash
# Memory on the running box: the limits in effect, then a memory hog in the agent's tmux session killed by the
# kernel's OOM killer while claude, its tmux session and the unit stay as they were. Sourced by box.sh.
#
# CI machines mount cgroup v1 in hybrid mode: the box (unified hierarchy, no controllers) cannot enforce its own
# memory limits there, so the settings are read with `systemctl show`, and the hog is put under a memory limit of
# the host's v1 memory controller (a cgroup of the run's own): a real OOM kill of one process of the agent's unit.

HOG_LIMIT_MB=256
HOG_MAX_MB=2048 # the hog never asks for more, killed or not

# ratio KEY EXPECTED_PERCENT SHOWN: the byte value systemd shows is EXPECTED_PERCENT of the box's RAM (±1 point)
limit_is_percent() {
  local value=$2 total
  # shellcheck disable=SC2016 # awk, in the box
  total=$(cin awk '/^MemTotal:/ { print $2 * 1024 }' /proc/meminfo)
  echo "$3: $value of $total bytes (want $1%)"
  [[ $value =~ ^[0-9]+$ ]] && awk -v v="$value" -v t="$total" -v p="$1" 'BEGIN { r = 100 * v / t; exit !(r > p - 1 && r < p + 1) }'
}
memory_settings_ok() {
  local sys user
  sys=$(cin systemctl show user.slice -p MemoryHigh -p MemoryMax)
  user=$(ucl show app.slice -p MemoryHigh -p MemoryMax)
  limit_is_percent 85 "$(sed -n 's/^MemoryHigh=//p' <<<"$sys")" "user.slice MemoryHigh" &&
    limit_is_percent 90 "$(sed -n 's/^MemoryMax=//p' <<<"$sys")" "user.slice MemoryMax" &&
    limit_is_percent 75 "$(sed -n 's/^MemoryHigh=//p' <<<"$user")" "agent's app.slice MemoryHigh" &&
    limit_is_percent 80 "$(sed -n 's/^MemoryMax=//p' <<<"$user")" "agent's app.slice MemoryMax"
}
zram_configured() {
  cin dpkg -s systemd-zram-generator >/dev/null &&
    cin grep -qx 'zram-size = ram / 4' /etc/systemd/zram-generator.conf.d/50-agentbox.conf
}

# the hog's pid as the host sees it: in this run's cgroup, with the hog's marker in its command line
hog_host_pid() {
  local p cg
  cg=$(state_get "$RUN_DIR" CGROUP)
  for p in $(pgrep -f agentbox-memory-hog); do
    grep -q ":/$cg/" "/proc/$p/cgroup" 2>/dev/null && tr '\0' ' ' <"/proc/$p/cmdline" | grep -q '^python3 ' && echo "$p" && return 0
  done
  return 1
}

check_memory() {
  local before after claude_before claude_after memcg pid t0 oom
  check "memory: the agent unit keeps running when a child is OOM-killed (OOMPolicy=continue)" oom_policy_continue
  log "memory: $(cin systemctl show user.slice -p MemoryHigh -p MemoryMax | paste -sd ' ' -); agent's app.slice: $(ucl show app.slice -p MemoryHigh -p MemoryMax | paste -sd ' ' -); swap: $(cin swapon --noheadings --show=NAME,SIZE | paste -sd ' ' - || true)"
  check "memory: logins and the agent together at most 90% of the RAM (user.slice), the agent's units 80% (app.slice)" memory_settings_ok
  check "memory: zram swap is configured (systemd-zram-generator, a quarter of the RAM)" zram_configured
  if cin systemd-detect-virt --quiet --container; then
    log "memory: the box is a container here: no zram device (the generator does nothing in one), and its cgroups have no memory controller on this host"
  fi

  if [ ! -w /sys/fs/cgroup/memory/cgroup.procs ]; then
    not_ok "memory hog: OOM-killed while claude, tmux and the unit stay" "this host has no cgroup v1 memory controller to limit the hog with"
    return
  fi
  claude_before=$(unit_claude)
  before=$(ucl show "$UNIT" -p NRestarts -p ActiveEnterTimestamp -p MainPID)
  # in the agent's own tmux session, as a user's test run would be: it waits until it is under its limit
  agent_tmux new-window -d -t "$SESSION:" -n agentbox-hog "python3 -c '
import os, sys, time
# agentbox-memory-hog
for _ in range(300):
    if os.path.exists(\"/tmp/agentbox-hog-go\"): break
    time.sleep(0.1)
b = []
for _ in range($((HOG_MAX_MB / 32))):
    b.append(b\"x\" * (32 << 20))
    time.sleep(0.02)
time.sleep(300)'"
  pid=$(eventually 10 hog_host_pid && hog_host_pid)
  if [ -z "$pid" ]; then
    not_ok "memory hog: started in the agent's tmux session" "$(agent_tmux list-windows -t "$SESSION" 2>&1)"
    return
  fi
  memcg=/sys/fs/cgroup/memory/$NAME-hog
  mkdir -p "$memcg"
  echo $((HOG_LIMIT_MB << 20)) >"$memcg/memory.limit_in_bytes"
  echo 0 >"$memcg/memory.swappiness" 2>/dev/null || true
  echo "$pid" >"$memcg/cgroup.procs"
  t0=$(now)
  cin touch /tmp/agentbox-hog-go
  for _ in $(seq 120); do
    [ -e "/proc/$pid" ] || break
    sleep 0.5
  done
  oom=$(sed -n 's/^oom_kill //p' "$memcg/memory.oom_control" 2>/dev/null)
  if [ ! -e "/proc/$pid" ] && [ "${oom:-0}" -ge 1 ]; then
    ok "memory hog: killed by the OOM killer at its ${HOG_LIMIT_MB} MB limit after $(since "$t0") s (oom_kill $oom)"
  else
    not_ok "memory hog: killed by the OOM killer at its ${HOG_LIMIT_MB} MB limit" "pid $pid $([ -e "/proc/$pid" ] && echo still runs); oom_kill ${oom:-?}"
    kill -9 "$pid" 2>/dev/null
  fi
  rmdir "$memcg" 2>/dev/null || log "could not remove $memcg"
  cin rm -f /tmp/agentbox-hog-go
  sleep 2
  claude_after=$(unit_claude)
  after=$(ucl show "$UNIT" -p NRestarts -p ActiveEnterTimestamp -p MainPID)
  if [ -n "$claude_before" ] && [ "$claude_after" = "$claude_before" ] && [ "$after" = "$before" ] &&
    [ "$(ucl is-active "$UNIT")" = active ]; then
    ok "memory hog: claude (pid $claude_before) and the unit are as they were (same main pid, start, restart count)"
  else
    not_ok "memory hog: claude and the unit are as they were" "claude $claude_before -> $claude_after; before: $before; after: $after"
  fi
  check "memory hog: the tmux session '$SESSION' still shows Claude Code" eventually 10 screen_shows_claude
}
oom_policy_continue() {
  local shown
  shown=$(ucl show "$UNIT" -p OOMPolicy)
  echo "$shown"
  [ "$shown" = OOMPolicy=continue ]
}
