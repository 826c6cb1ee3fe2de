#!/bin/bash
# Boot a #cloud-config user-data on a real systemd (Debian 13 under systemd-nspawn, in a
# network namespace of its own whose only way out is a filtering proxy) and either check
# the box contract against it or leave it running to try it out.
#
# usage: box.sh test USER_DATA [LABEL]   boot, check, kill claude, reboot, check again, tear down
#        box.sh bench USER_DATA [LABEL]  boot once, print the timings only, tear down
#        box.sh try USER_DATA            boot and leave the box running; prints how to attach
#        box.sh stop NAME                power off and remove a box started with `try`
#        box.sh list                     the runs on this machine
# env:   CLOUD_INIT_TIMEOUT (900 s), KEEP_RUN=1 (keep the run directory after a passing test),
#        EXPECT_CLAUDE_VERSION, AGENT_USER (agent), AGENT_UNIT (claude-agent.service),
#        TMUX_SESSION (claude), TMUX_SOCKET (tmux -L name, default agentbox; empty = the default socket),
#        KILL_ROUNDS (5), AGENTBOX_BOOT_CACHE (see lib.sh), BOX_ROOTFS (boot this root instead of the stock one),
#        INTERRUPT_FIRST_BOOT (auto: the digitalocean CI stack's; 1, 0: see checks-resume.sh)
set -euo pipefail
HERE=$(dirname "$0")
. "$HERE/lib.sh"
. "$HERE/net.sh"
. "$HERE/container.sh"
. "$HERE/checks.sh"
. "$HERE/checks-life.sh"
. "$HERE/checks-egress.sh"
. "$HERE/checks-ssh.sh"
. "$HERE/checks-hostile.sh"
. "$HERE/checks-memory.sh"
. "$HERE/checks-resume.sh"
. "$HERE/checks-weeks.sh"
. "$HERE/checks-agents.sh"
. "$HERE/checks-approvals.sh"

CLOUD_INIT_TIMEOUT=${CLOUD_INIT_TIMEOUT:-900}
NAME='' RUN_DIR='' PROXY='' T_BOOT=''

new_run() {
  NAME=agentbox-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
  RUN_DIR=$BOOT_RUNS/$NAME
  mkdir -p "$RUN_DIR"
}

start_box() { # start_box USER_DATA: network, overlay, seed, boot; sets T_BOOT
  local rootfs
  # BOX_ROOTFS: boot another root (a baked image, see bake.sh) instead of the cached stock one
  rootfs=${BOX_ROOTFS:-$("$BOOT_DIR/build-rootfs.sh")}
  state_set "$RUN_DIR" ROOTFS "$rootfs"
  # the text, for the checks; and as the cloud's datasource hands it to cloud-init, for the seed
  user_data_text "$1" >"$RUN_DIR/user-data" || die "$1 is neither #cloud-config text nor its gzip+base64"
  user_data_seed "$1" >"$RUN_DIR/seed-user-data"
  net_up "$RUN_DIR" "$NAME"
  PROXY=$(state_get "$RUN_DIR" PROXY)
  box_prepare "$RUN_DIR" "$NAME" "$rootfs" "$RUN_DIR/seed-user-data"
  if grep -q '^ *EGRESS=allowlist$' "$RUN_DIR/user-data"; then egress_prepare "$RUN_DIR"; fi
  prepare_volume
  T_BOOT=$(now)
  box_boot "$RUN_DIR" "$NAME" "$RUN_DIR/console.log"
  log "box $NAME booting (pid 1 = $LEADER), run directory $RUN_DIR"
}

collect_artifacts() { # collect_artifacts SUFFIX: what explains a failure, into $RUN_DIR/artifacts
  local a=$RUN_DIR/artifacts m=$RUN_DIR/merged
  mkdir -p "$a"
  cp "$m"/var/log/cloud-init.log "$m"/var/log/cloud-init-output.log "$a/" 2>/dev/null
  [ -d "$m/var/log/agentbox" ] && cp -r "$m/var/log/agentbox" "$a/"
  cin cat /run/cloud-init/result.json >"$a/result$1.json" 2>&1
  cin journalctl -b --no-pager >"$a/journal$1.txt" 2>&1
  [ -n "$AUID" ] && cin journalctl -b "_UID=$AUID" --no-pager >"$a/journal-$AGENT$1.txt" 2>&1
  cin systemctl --failed --no-pager >"$a/failed-units$1.txt" 2>&1
  agent_tmux capture-pane -p -t "$SESSION" >"$a/tmux-$SESSION$1.txt" 2>&1
  return 0
}

# the box's disk (its overlay's upper layer) and what it received through the proxy (the veth's counter)
box_usage() {
  local veth
  veth=$(state_get "$RUN_DIR" VETH)
  echo "disk_used_mb=$(du -sm "$RUN_DIR/upper" | cut -f1)" \
    "proxy_to_box_mb=$(awk '{ printf "%.0f", $1 / 1048576 }' "/sys/class/net/$veth/statistics/tx_bytes")"
}

median() { tr ' ' '\n' | sort -n | awk 'NF { v[++n] = $1 } END { if (!n) printf "-"; else printf "%.1f", n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }'; }

cmd_test() {
  local ud=$1 label=${2:-$(basename "$1")} t_ci=- t_agent=- t_reboot=- t_fw=- active kills usage
  new_run
  trap 'finish_test $?' EXIT
  trap 'exit 130' INT TERM
  echo "# box test: $label ($NAME)"
  # the version the stack pinned, as the rendered box settings carry it
  : "${EXPECT_CLAUDE_VERSION:=$(user_data_text "$ud" | sed -n 's/^ *CLAUDE_VERSION=//p' | head -n 1)}"
  start_box "$ud"
  # agentbox:agents: the checks of the one agent are made on the first, checks-agents.sh's on all of them
  AGENTS=$(box_env AGENTS)
  if [ -n "$AGENTS" ]; then UNIT=claude-agent@${AGENTS%%,*}.service SESSION=${AGENTS%%,*}; fi
  # from here on a failing command is a finding for the checks to report, not a reason to stop
  set +e
  interrupt_first_boot
  start_wait_ready

  check_network
  start_ntfy_receiver
  if box_wait_cloud_init "$RUN_DIR" "$CLOUD_INIT_TIMEOUT"; then
    t_ci=$(since "$T_BOOT")
    ok "cloud-init finished (/run/cloud-init/result.json) within $CLOUD_INIT_TIMEOUT s"
  else
    not_ok "cloud-init finished (/run/cloud-init/result.json) within $CLOUD_INIT_TIMEOUT s" "$(tail -n 20 "$RUN_DIR/console.log")"
  fi
  AUID=$(cin id -u "$AGENT" 2>/dev/null)
  check_resumed
  check_status
  check_busy_first_boot
  check_cloud_init_errors
  check_agent_user
  check_claude_install
  check_sshd
  check_firewall
  # the window in which only the cloud's firewall and key-only sshd protect the box
  active=$(cin systemctl show --timestamp=us+utc -p ActiveEnterTimestamp --value agentbox-firewall.service) &&
    [ -n "$active" ] && t_fw=$(seconds_between "$T_BOOT" "$(date -d "$active" +%s.%N)")
  if grep -q '^ *EGRESS=allowlist$' "$RUN_DIR/user-data"; then check_egress; fi
  check_agent_service
  active=$(unit_active_since) && t_agent=$(seconds_between "$T_BOOT" "$active")
  check_wait_ready
  check_baked_skip
  check_volume
  agents_before_kills
  check_restart_after_kill
  check_agents
  check_status_command
  check_memory
  check_ssh_logins ""
  check_notifications
  check_approvals
  check_workflow
  check_status_on_crafted_state
  check_updates
  check_secrets
  check_system ""
  check_wait_ready_failure
  check_weeks
  collect_artifacts ""

  # what destroy and a replacement do first; the reboot then shows the box comes back from it
  check_release_before_delete
  box_poweroff "$RUN_DIR"
  local t2
  hide_volume_for_reboot
  t2=$(now)
  box_boot "$RUN_DIR" "$NAME" "$RUN_DIR/console-reboot.log"
  check_late_volume "$t2"
  box_wait_booted 120 || log "the box did not finish starting up within 120 s after the reboot"
  check_after_reboot
  check_agents_after_reboot
  check_weeks_after_reboot
  active=$(unit_active_since) && t_reboot=$(seconds_between "$t2" "$active")
  check_ssh_logins "after reboot: "
  check_volume_after_reboot
  check_workflow_after_reboot "$WORKFLOW_RUN"
  collect_artifacts "-reboot"
  usage=$(box_usage)
  check_recreated_on_volume
  check_proxy_destinations

  kills=$(IFS=, && echo "${RESTART_TIMES[*]:--}")
  echo "# bench: stack=$label boot_to_cloudinit_s=$t_ci boot_to_agent_active_s=$t_agent boot_to_host_firewall_s=$t_fw" \
    "restart_after_kill_s=$kills restart_after_kill_median_s=$(echo "${RESTART_TIMES[*]}" | median)" \
    "kill_to_screen_median_s=$(echo "${SCREEN_TIMES[*]}" | median)" \
    "reboot_to_agent_s=$t_reboot wait_ready_returned_s=$T_WAIT_READY $usage"
  summary
}

finish_test() { # EXIT trap of `test`: tear down; keep the run directory when something failed
  local rc=$1
  trap - EXIT INT TERM
  # on Ctrl-C a pipe reading our output (run.sh's tee) may be gone: never die half-way here
  trap '' PIPE
  set +e
  if [ -n "$WAIT_READY_PID" ]; then kill "$WAIT_READY_PID" 2>/dev/null; fi
  box_teardown "$RUN_DIR"
  if [ "$rc" = 0 ] && [ "$FAILED" = 0 ] && [ "${KEEP_RUN:-0}" != 1 ]; then
    rm -rf "$RUN_DIR"
  else
    echo "# run directory kept: $RUN_DIR (console*.log, proxy.log, artifacts/: cloud-init logs," \
      "journals, /var/log/agentbox, tmux screen; upper/ is the box's disk)"
  fi
  exit "$rc"
}

cmd_bench() { # boot once and measure, no fault checks: what scripts/bench.sh repeats
  local ud=$1 label=${2:-$(basename "$1")} t_ci=- t_agent=- active
  new_run
  trap 'trap "" PIPE; box_teardown "$RUN_DIR"; rm -rf "$RUN_DIR"' EXIT
  trap 'exit 130' INT TERM
  start_box "$ud"
  set +e
  box_wait_cloud_init "$RUN_DIR" "$CLOUD_INIT_TIMEOUT" && t_ci=$(since "$T_BOOT")
  AUID=$(cin id -u "$AGENT" 2>/dev/null)
  eventually 60 ucl is-active --quiet "$UNIT" >/dev/null
  active=$(unit_active_since) && t_agent=$(seconds_between "$T_BOOT" "$active")
  echo "# bench: stack=$label boot_to_cloudinit_s=$t_ci boot_to_agent_active_s=$t_agent $(box_usage)"
}

cmd_try() {
  local ud=$1
  new_run
  trap 'trap "" PIPE; box_teardown "$RUN_DIR"; rm -rf "$RUN_DIR"' EXIT
  trap 'exit 130' INT TERM
  start_box "$ud"
  log "waiting for cloud-init (up to $CLOUD_INIT_TIMEOUT s; Ctrl-C stops and removes the box)"
  if box_wait_cloud_init "$RUN_DIR" "$CLOUD_INIT_TIMEOUT"; then
    log "cloud-init finished after $(since "$T_BOOT") s; status: $(cin cat "$STATUS_FILE" 2>/dev/null | tr '\n' ' ')"
  fi
  trap - EXIT INT TERM
  cat <<EOF
box $NAME is running (run directory $RUN_DIR)
  attach to Claude Code: nsenter -t $LEADER -a runuser -u $AGENT -- tmux ${TMUX_SOCKET:+-L $TMUX_SOCKET }attach -t $SESSION   (detach: Ctrl-b d)
  a root shell:          nsenter -t $LEADER -a /bin/bash -l
  stop and remove it:    $0 stop $NAME
EOF
}

cmd_stop() {
  local name=$1
  if ! [[ $name =~ ^agentbox-[0-9a-f]{6}$ ]] || [ ! -e "$BOOT_RUNS/$name/state" ]; then
    die "no run named '$name' (see: $0 list)"
  fi
  box_teardown "$BOOT_RUNS/$name"
  if [ "${KEEP_RUN:-0}" = 1 ]; then log "run directory kept: $BOOT_RUNS/$name"; else rm -rf "${BOOT_RUNS:?}/$name"; fi
}

cmd_list() {
  local d
  for d in "$BOOT_RUNS"/agentbox-*/; do
    [ -e "$d/state" ] || continue
    d=${d%/}
    if box_running "$d"; then
      echo "$(basename "$d") running, pid 1 = $(state_get "$d" LEADER)"
    else
      echo "$(basename "$d") stopped (remove with: $0 stop $(basename "$d"))"
    fi
  done
}

usage() { sed -n '6,14s/^# \{0,1\}//p' "$0" >&2; }

[ $# -ge 1 ] || {
  usage
  exit 2
}
cmd=$1
shift
case $cmd in
  test | try | bench)
    [ -f "${1:-}" ] || die "$cmd needs a user-data file"
    require_root
    ensure_host_packages
    "cmd_$cmd" "$(readlink -f "$1")" "${@:2}"
    ;;
  stop)
    [ $# = 1 ] || die "usage: $0 stop NAME"
    require_root
    cmd_stop "$1"
    ;;
  list) cmd_list ;;
  *)
    usage
    exit 2
    ;;
esac
