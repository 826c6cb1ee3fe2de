# shellcheck shell=bash
# shellcheck disable=SC2016 # the commands in single quotes run inside the box, with their own arguments
# Weeks of a box's life, compressed: the watcher (agentbox-watch, root, every 5 minutes) frees a disk filled on
# purpose, reports updates that need a reboot and reboots in the maintenance window only between the agent's turns,
# and reports a login the agent lost; the journal and agentbox's logs are bounded. Sourced by box.sh after
# checks-life.sh (ud_has, received, wants_*) and checks-hostile.sh (no_pwned_file).

WATCH_FILE=/var/lib/agentbox/watch
AGENT_STATE_DIR=/var/lib/agentbox/agent
HOOK_SESSION=5b7e0c1e-agentbox-test # the session the fed hooks claim to be
# a conversation as Claude Code keeps one, of another folder than the workspace: a hand-made transcript in the
# workspace's folder would be resumed (claude --continue) and refused ("No conversation found to continue")
CONVERSATION=/home/${AGENT_USER:-agent}/.claude/projects/-home-${AGENT_USER:-agent}-agentbox-test/$HOOK_SESSION.jsonl
T_MAINTENANCE=- # seconds from the watcher's start to the agent active again after its reboot

wants_window() { [ -n "$(box_env MAINTENANCE_DAYS)" ]; }
watch_get() { cin sed -n "s/^$1=//p" "$WATCH_FILE" | head -n 1; }
watch_is() { [ "$(watch_get "$1")" = "$2" ]; } # watch_is KEY VALUE
run_watch() { cin systemctl start agentbox-watch.service; }
# a hook as Claude Code runs it: as the agent, in its environment, the event's JSON on stdin
feed_hook() { # feed_hook EVENT [MORE_JSON_FIELDS]
  as_agent env HOME="/home/$AGENT" XDG_RUNTIME_DIR="/run/user/$AUID" sh -c 'printf "%s" "$0" | /usr/local/lib/agentbox/notify hook' \
    "{\"session_id\":\"$HOOK_SESSION\",\"transcript_path\":\"$CONVERSATION\",\"cwd\":\"/home/$AGENT/workspace\",\"hook_event_name\":\"$1\"${2:+,$2}}"
}
banner() { as_agent bash -lic true 2>&1; }
absent() { ! cin test -e "$1" && ! cin test -L "$1"; }
status_as_agent() { as_agent agentbox-status 2>&1; }
agent_unit_id() { ucl show -p MainPID -p InvocationID --value "$UNIT" | paste -sd ' ' -; }
says() { # says PATTERN TEXT: grep -E, and the text as evidence when it does not match
  grep -Eq -- "$1" <<<"$2" || {
    echo "no line matches /$1/ in:"
    echo "$2"
    return 1
  }
}

check_weeks() {
  if wants_notify; then
    # the stack's topic and token, as received() expects them (the user-data has a second copy, root's notify.env)
    # shellcheck disable=SC2034 # received() reads them
    NTFY_TOPIC_PATH=/$(box_env NTFY_URL | sed 's#.*/##')
    # shellcheck disable=SC2034
    NTFY_AUTH_SHA=$(printf 'Bearer %s' "$(box_env NTFY_TOKEN)" | sha256sum | cut -d' ' -f1)
  fi
  check_upkeep_config
  # the timer's own runs would race the checks below: they start the watcher themselves
  cin systemctl stop agentbox-watch.timer
  check_disk_pressure
  check_auth_lost
  check_reboot_for_updates
  cin systemctl start agentbox-watch.timer
}

# --- bounded logs, the watcher's timer -----------------------------------------------------------------

check_upkeep_config() {
  local t0 took
  check "watch: agentbox-watch.timer is enabled and active" watch_timer_on
  check "watch: it ran (the timer's first run after provisioning wrote $WATCH_FILE)" eventually 60 cin test -s "$WATCH_FILE"
  t0=$(now)
  run_watch
  took=$(since "$t0")
  if awk -v t="$took" 'BEGIN { exit !(t < 5) }' && [ "$(watch_get checked)" -ge "${t0%.*}" ] 2>/dev/null &&
    says '^disk: +/ [0-9]+%' "$(status_as_agent)" >/dev/null; then
    ok "watch: a run without pressure takes $took s (under 5 s) and agentbox-status shows the disk"
  else
    not_ok "watch: a run without pressure takes under 5 s and agentbox-status shows the disk" "$took s; $(cin cat "$WATCH_FILE")"
  fi
  check "journald: agentbox's cap is part of its configuration (systemd-analyze cat-config)" journald_configured
  check "journald: the cap is in force in the running journald" journald_cap_in_force
  check "logrotate accepts /etc/logrotate.d/agentbox (logrotate -d)" logrotate_accepts
}
watch_timer_on() { cin systemctl is-enabled --quiet agentbox-watch.timer && cin systemctl is-active --quiet agentbox-watch.timer; }
journald_configured() {
  local conf
  conf=$(cin systemd-analyze cat-config systemd/journald.conf 2>&1)
  says '^# /etc/systemd/journald\.conf\.d/50-agentbox\.conf$' "$conf" && says '^SystemMaxUse=[0-9]+[KMGT]?$' "$conf"
}
# journald says at start what it will keep ("System Journal (...) is 8.0M, max 1.0G, 1015.9M free."): that max is
# the drop-in's SystemMaxUse (or less, when the disk is small)
journald_cap_in_force() {
  local cap said max kind=System
  said=$(cin journalctl -b -u systemd-journald --no-pager -o cat | grep -E '^System Journal .* max [0-9.]+[KMGT]?' | tail -n 1)
  # no persistent journal: the runtime one's cap, then
  [ -n "$said" ] || kind=Runtime said=$(cin journalctl -b -u systemd-journald --no-pager -o cat | grep -E '^Runtime Journal .* max ' | tail -n 1)
  cap=$(cin systemd-analyze cat-config systemd/journald.conf | sed -n "s/^${kind}MaxUse=//p" | tail -n 1)
  echo "${kind}MaxUse=$cap; journald: $said"
  max=$(sed -nE 's/.* max ([0-9.]+[KMGT]?)B?, .*/\1/p' <<<"$said")
  [ -n "$cap" ] && [ -n "$max" ] && [ "$(numfmt --from=iec "$max")" -le "$(numfmt --from=iec "$cap")" ]
}
logrotate_accepts() {
  local out
  out=$(cin logrotate -d /etc/logrotate.d/agentbox 2>&1)
  echo "$out" | tail -n 20
  ! grep -qi 'error' <<<"$out" && grep -q '/var/log/agentbox/\*\.log' <<<"$out"
}

# --- a full disk -----------------------------------------------------------------------------------------

# On the volume stack: the home (a 1 GiB volume) filled past the warning level with a debug log, beside a
# conversation, a workspace file and more workflow runs than are kept, and links a hostile agent would leave.
check_disk_pressure() {
  wants_volume || return 0
  local warn keep size used avail fill before after id0 status out freed sum0
  warn=$(box_env DISK_WARN_PCT) keep=$(box_env WORKFLOW_KEEP_RUNS)
  warn=${warn:-80} keep=${keep:-20}
  # runs older than the real one (workflow.sh's names), and two links where runs are: one named as a run
  as_agent sh -c 'cd && mkdir -p agentbox-runs && i=0 && while [ $i -lt "$0" ]; do
      d=agentbox-runs/2001$(printf %02d $((i / 28 + 1)))$(printf %02d $((i % 28 + 1)))T000000Z
      mkdir -p "$d" && echo run >"$d/output.jsonl" && i=$((i + 1)); done &&
    ln -sfn /etc agentbox-runs/19990101T000000Z && ln -sfn /etc agentbox-runs/old &&
    mkdir -p .claude/debug "${1%/*}" && ln -sfn /etc/agentbox/box.env .claude/debug/agentbox-test-link &&
    printf "%s\n" "$2" "$3" >"$1" && echo "$4" >workspace/agentbox-test-disk' \
    $((keep + 2)) "$CONVERSATION" \
    "{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":\"agentbox test: say hello\"},\"uuid\":\"6f1d2c4e-0000-4000-8000-000000000001\",\"parentUuid\":null,\"timestamp\":\"$(date -u +%FT%T.000Z)\",\"sessionId\":\"$HOOK_SESSION\",\"cwd\":\"/home/$AGENT/workspace\",\"userType\":\"external\",\"isSidechain\":false,\"version\":\"$EXPECT_CLAUDE_VERSION\"}" \
    "{\"type\":\"assistant\",\"message\":{\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"id\":\"msg_agentboxtest\",\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"agentbox-test-hello\"}],\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}},\"uuid\":\"6f1d2c4e-0000-4000-8000-000000000002\",\"parentUuid\":\"6f1d2c4e-0000-4000-8000-000000000001\",\"timestamp\":\"$(date -u +%FT%T.000Z)\",\"sessionId\":\"$HOOK_SESSION\",\"cwd\":\"/home/$AGENT/workspace\",\"userType\":\"external\",\"isSidechain\":false,\"version\":\"$EXPECT_CLAUDE_VERSION\"}" \
    "$NAME"
  sum0=$(cin sha256sum /etc/agentbox/box.env "$CONVERSATION" | cut -d' ' -f1 | paste -sd ' ' -)
  read -r size used avail < <(cin df -P -BM "/home/$AGENT" | awk 'NR == 2 { print $2 + 0, $3 + 0, $4 + 0 }')
  fill=$((size * (warn + 8) / 100 - used))
  [ "$fill" -lt $((avail - 8)) ] || fill=$((avail - 8))
  as_agent fallocate -l "${fill}M" "/home/$AGENT/.claude/debug/agentbox-test-big.txt"
  before=$(cin df -P "/home/$AGENT" | awk 'NR == 2 { print $5 }')
  log "disk: the home volume filled to $before with a ${fill} MB debug log (warning at $warn%)"
  id0=$(agent_unit_id)
  run_watch
  after=$(cin df -P "/home/$AGENT" | awk 'NR == 2 { print $5 + 0 }')
  freed=$(watch_get freed_mb)
  log "figure: disk freed ${freed:-?} MB on the home volume ($before -> $after%); watch: $(cin cat "$WATCH_FILE" | grep -E '^(disk|freed)' | paste -sd ' ' -)"
  check "disk: Claude Code's debug log is gone" absent "/home/$AGENT/.claude/debug/agentbox-test-big.txt"
  if [ "${after:-100}" -lt "$warn" ] && watch_is disk_level ok && [ "$(watch_get disk_home_pct)" = "$after" ] &&
    [ "${freed:-0}" -ge $((fill * 9 / 10)) ]; then
    ok "disk: the home volume is below $warn% again ($after%), the watcher recorded $freed MB freed"
  else
    not_ok "disk: the home volume is below $warn% again, the watcher recorded the MB freed" "df: $after%; $(cin cat "$WATCH_FILE")"
  fi
  check "disk: the conversation and box.env are untouched" \
    test "$(cin sha256sum /etc/agentbox/box.env "$CONVERSATION" | cut -d' ' -f1 | paste -sd ' ' -)" = "$sum0"
  check "disk: ~/.claude.json is still Claude Code's (owned by $AGENT, hasCompletedOnboarding)" claude_json_ok
  check "disk: the workspace file is there" file_says "/home/$AGENT/workspace/agentbox-test-disk" "$NAME"
  check "disk: the newest $keep workflow runs are kept (the real one among them), the older ones are gone" runs_kept "$keep"
  check "hostile: links in ~/.claude/debug and ~/agentbox-runs to root's files were removed, never followed" hostile_links_harmless
  status=$(status_as_agent)
  check "disk: agentbox-status shows the volume's use and the space freed" \
    says "^disk: +/ [0-9]+%, home volume $after% used \(frees space at $warn%\); last freed $freed MB at " "$status"
  if wants_notify; then
    check "notify: the freed space reached the ntfy server (with the MB)" eventually 15 received "disk: freed $freed MB "
  fi
  check "disk: the agent ran on throughout (same MainPID and InvocationID)" test "$(agent_unit_id)" = "$id0"
  # a full disk again, this time one nothing can free: the box says so and warns once
  as_agent fallocate -l "${fill}M" "/home/$AGENT/workspace/agentbox-test-fill"
  run_watch
  run_watch
  out=$(banner)
  status=$(status_as_agent)
  if watch_is disk_level warning && watch_is disk_full home && says '^agentbox: WARNING: disk at or above [0-9]+% \(home\)' "$out" >/dev/null &&
    says '^disk: +WARNING: ' "$status" >/dev/null && cin test -s "/home/$AGENT/workspace/agentbox-test-fill"; then
    ok "disk: a disk the watcher cannot free (the workspace filled) is reported at the warning level, the workspace untouched"
  else
    not_ok "disk: a disk the watcher cannot free is reported at the warning level, the workspace untouched" "$out
$status"
  fi
  if wants_notify; then
    check "notify: that warning was sent once (two watcher runs)" warned_once
  fi
  as_agent rm -f "/home/$AGENT/workspace/agentbox-test-fill"
  run_watch
  check "disk: back to ok once the user made room" watch_is disk_level ok
}
runs_kept() { # runs_kept KEEP: exactly the newest KEEP run folders are left, and the real run is one of them
  local runs want
  runs=$(as_agent sh -c 'cd ~/agentbox-runs && ls -1A' | sort)
  want=$(printf '%s\n' "$runs" | grep -E '^[0-9]{8}T[0-9]{6}Z$' | sort -r | head -n "$1" | sort)
  echo "left: $(paste -sd ' ' - <<<"$runs")"
  [ "$(grep -Ec '^[0-9]{8}T[0-9]{6}Z$' <<<"$runs")" = "$1" ] && [ "$(grep -E '^[0-9]{8}T' <<<"$runs")" = "$want" ] &&
    { [ -z "${WORKFLOW_RUN:-}" ] || grep -qx "$WORKFLOW_RUN" <<<"$runs"; } && ! grep -qx 19990101T000000Z <<<"$runs"
}
hostile_links_harmless() {
  cin ls -ld /etc /etc/passwd /etc/agentbox/box.env "/home/$AGENT/agentbox-runs/old" 2>&1
  cin test -d /etc -a -s /etc/passwd -a -s /etc/shadow -a -s /etc/agentbox/box.env -a -d /etc/systemd/system &&
    [ "$(cin stat -c %U /etc /etc/agentbox /etc/agentbox/box.env | sort -u)" = root ] &&
    absent "/home/$AGENT/.claude/debug/agentbox-test-link"
}
# the texts the stand-in ntfy server received, one a line
ntfy_bodies() { cin cat "$NTFY_LOG" | python3 -c 'import json, sys; [print(json.loads(l)["body"].strip()) for l in sys.stdin]'; }
warned_once() { sent_times 1 'disk: the home volume is at or above'; }
# sent_times N PATTERN: N notifications whose text matches PATTERN (grep -E) reached the receiver
sent_times() {
  local got
  got=$(ntfy_bodies | grep -E -- "$2")
  echo "sent $(grep -c . <<<"$got") times (want $1): $got"
  [ "$(grep -c . <<<"$got")" = "$1" ]
}
# what the watcher and the hooks of these checks sent (for the closing note)
log_notifications() {
  wants_notify || return 0
  local sent
  sent=$(ntfy_bodies | grep -E '\] (disk|updates): |cannot log in' | sed 's/^\[[^]]*\] //')
  log "figure: $(grep -c . <<<"$sent") notifications from the watcher and the login hook so far:"
  while IFS= read -r line; do log "  $line"; done <<<"$sent"
}

# --- a login the agent lost --------------------------------------------------------------------------

check_auth_lost() {
  local out status
  feed_hook StopFailure '"error_type":"authentication_failed","error":"401","error_message":"OAuth token has expired"'
  status=$(status_as_agent)
  check "auth: agentbox-status shows the failed login, since when, and the fix (a new token)" \
    says '^auth: +FAILED: authentication_failed since [0-9-]+ [0-9:]+ UTC: a new token: claude setup-token on your laptop, then pulumi config set --secret agentbox:claudeOauthToken and npm run up' "$status"
  run_watch
  check "auth: the watcher copied it (auth=failed, auth_error=authentication_failed)" \
    auth_copied
  out=$(banner)
  check "auth: the login banner warns that Claude Code cannot log in" \
    says '^agentbox: WARNING: Claude Code cannot log in \(authentication_failed\)' "$out"
  if wants_notify; then
    check "notify: the failed login reached the ntfy server, with what to do" \
      eventually 15 received 'cannot log in to Claude \(authentication_failed\): a new token: claude setup-token on your laptop, then pulumi config set --secret agentbox:claudeOauthToken'
  fi
  # hostile: the agent's own auth file, crafted
  as_agent sh -c 'printf "%s\n" "state=failed" "error=\$(touch $1-auth)" "since=1\`touch $1-since\`" "credential=../../x" >"$0"' \
    "$AGENT_STATE_DIR/auth" "$PWNED"
  run_watch
  out=$(banner)
  if [ -z "$(watch_get auth_error)" ] && [ -z "$(watch_get auth_since)" ] && [ -z "$(watch_get auth_credential)" ] && no_pwned_file >/dev/null &&
    ! grep -q 'touch' <<<"$out$(cin agentbox-status 2>&1)"; then
    ok "hostile: a crafted auth file yields no values (none matches its pattern), nothing runs, nothing is shown"
  else
    not_ok "hostile: a crafted auth file yields no values, nothing runs, nothing is shown" "$(cin cat "$WATCH_FILE")
$out"
  fi
  feed_hook Stop
  run_watch
  out=$(banner)
  status=$(status_as_agent)
  if watch_is auth ok && says '^auth: +ok' "$status" >/dev/null && ! grep -q 'cannot log in' <<<"$out"; then
    ok "auth: a turn that went through (Stop) makes it ok again: status ok, no warning in the banner"
  else
    not_ok "auth: a turn that went through (Stop) makes it ok again" "$status
$out"
  fi
}

auth_copied() { watch_is auth failed && watch_is auth_error authentication_failed; }

# --- updates that need a reboot ------------------------------------------------------------------------------

check_reboot_for_updates() {
  local out status t0 pid1 seen=''
  # the agent mid-turn, as its UserPromptSubmit hook says; then the flag and package list dpkg's hooks leave
  feed_hook UserPromptSubmit '"prompt":"agentbox test: a long task"'
  check "turn: UserPromptSubmit records the agent mid-turn (state=busy), as the agent" turn_is busy
  cin sh -c 'touch /run/reboot-required && echo linux-image-test >/run/reboot-required.pkgs'
  run_watch
  out=$(banner)
  status=$(status_as_agent)
  local why="the agent is mid-turn"
  wants_window || why="no maintenance window set"
  if watch_is reboot_required 1 && watch_is reboot deferred && [[ $(watch_get reboot_reason) == "$why"* ]] &&
    says "^agentbox: WARNING: updates need a reboot \(linux-image-test\): deferred, $why" "$out" >/dev/null &&
    says "^updates: +reboot required since .* \(linux-image-test\): deferred, $why" "$status" >/dev/null; then
    ok "updates: a reboot is required and deferred ($why): in the watch file, the banner and agentbox-status"
  else
    not_ok "updates: a reboot is required and deferred ($why)" "$(cin cat "$WATCH_FILE")
$out
$status"
  fi
  if wants_notify; then
    eventually 15 received "updates: a reboot is needed \(linux-image-test\): deferred, $why" >/dev/null
    run_watch
    check "notify: the reboot needed reached the ntfy server, once (two watcher runs)" \
      sent_times 1 "updates: a reboot is needed \(linux-image-test\): deferred, $why"
  fi
  check "updates: no reboot while deferred (the box runs on)" box_running "$RUN_DIR"
  feed_hook Stop
  check "turn: Stop records the turn's end (state=idle)" turn_is idle
  if ! wants_window; then
    run_watch
    if watch_is reboot_reason 'no maintenance window set (agentbox:maintenanceWindow)' && box_running "$RUN_DIR"; then
      ok "updates: without a maintenance window, deferred (no maintenance window set) and no reboot"
    else
      not_ok "updates: without a maintenance window, deferred (no maintenance window set) and no reboot" "$(cin cat "$WATCH_FILE")"
    fi
    cin rm -f /run/reboot-required /run/reboot-required.pkgs
    run_watch
    return
  fi
  # between turns, inside the window (every time of day on this stack): the watcher reboots the box
  log_notifications
  collect_artifacts "-before-maintenance"
  pid1=$LEADER t0=$(now)
  cin systemctl start --no-block agentbox-watch.service
  for _ in $(seq 600); do
    [ -n "$seen" ] || ! received 'updates: rebooting now for linux-image-test' >/dev/null 2>&1 || seen=1
    box_running "$RUN_DIR" || break
    sleep 0.2
  done
  if box_running "$RUN_DIR"; then
    not_ok "updates: between turns, inside the maintenance window, the box rebooted by itself" "$(cin cat "$WATCH_FILE")"
    return
  fi
  ok "updates: between turns, inside the maintenance window, the box rebooted by itself ($(since "$t0") s to power off)"
  if wants_notify; then
    if [ -n "$seen" ]; then ok "notify: 'rebooting now for linux-image-test' reached the ntfy server before the reboot"; else not_ok "notify: 'rebooting now' reached the ntfy server before the reboot"; fi
  fi
  box_boot "$RUN_DIR" "$NAME" "$RUN_DIR/console-maintenance.log"
  box_wait_booted 120 || log "the box did not finish starting up within 120 s after the maintenance reboot"
  start_ntfy_receiver
  check "after the maintenance reboot: $UNIT is active" eventually 120 ucl is-active "$UNIT"
  local active
  active=$(unit_active_since) && T_MAINTENANCE=$(seconds_between "$t0" "$active")
  log "figure: the agent was down $T_MAINTENANCE s across the maintenance reboot (watcher start -> agent active)"
  check "after the maintenance reboot: tmux shows Claude Code" eventually 30 screen_shows_claude
  check "after the maintenance reboot: claude started as after any reboot (--continue exactly when the workspace has a conversation)" \
    claude_as_session_decides
  check "after the maintenance reboot: the watcher's timer is active again" cin systemctl is-active agentbox-watch.timer
  cin systemctl stop agentbox-watch.timer
  run_watch
  status=$(status_as_agent)
  if watch_is reboot_required 0 && [ -n "$(watch_get last_reboot)" ] &&
    says '^updates: +no reboot required; maintenance window .*; last rebooted for updates ' "$status" >/dev/null; then
    ok "after the maintenance reboot: no reboot required any more (/run is new), the last reboot for updates recorded"
  else
    not_ok "after the maintenance reboot: no reboot required any more, the last reboot recorded" "$(cin cat "$WATCH_FILE")
$status"
  fi
  [ "$LEADER" != "$pid1" ] || log "the box's pid 1 is the same as before the reboot?"
}
turn_is() { # turn_is STATE: the agent's turn as its hooks recorded it (a file of the agent's)
  cin cat "$AGENT_STATE_DIR/turn"
  [ "$(cin sed -n 's/^state=//p' "$AGENT_STATE_DIR/turn")" = "$1" ] && owned "$AGENT_STATE_DIR/turn" >/dev/null
}
# claude-session.sh resumes the workspace's last conversation (one Claude Code saved after a real exchange: the API is
# out of reach here, so there is none unless the stack's repository brought one)
claude_as_session_decides() {
  local pid argv
  pid=$(unit_claude) || return 1
  argv=$(cin sh -c "tr '\0' ' ' </proc/$pid/cmdline")
  echo "claude: $argv"
  if as_agent sh -c 'ls ~/.claude/projects/-home-*-workspace/*.jsonl' >/dev/null 2>&1; then
    grep -q -- ' --continue' <<<"$argv"
  else
    ! grep -q -- ' --continue' <<<"$argv"
  fi
}

# after the harness's own reboot: journald started again with the drop-in in place
check_weeks_after_reboot() {
  check "after reboot: journald's cap is in force" journald_cap_in_force
}
