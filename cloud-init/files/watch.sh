#!/bin/bash
# agentbox-watch (root, every 5 minutes: agentbox-watch.timer): disk space, updates that need a reboot, the agent's
# login. Findings in /var/lib/agentbox/watch (agentbox-status, the login banner); a notification once per change.
set -uo pipefail
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
agentbox_load_env /etc/agentbox/box.env

# - disk: the root disk and the home volume against DISK_WARN_PCT. At that level it frees what is safe to free
#   (Claude Code's debug logs and caches, old workflow runs, the journal beyond its cap, apt's downloads); always, it
#   keeps the newest WORKFLOW_KEEP_RUNS workflow runs and a week of debug logs. Never conversations, the workspace,
#   settings or credentials.
# - updates that need a reboot (/run/reboot-required): reported, and the box rebooted inside the stack's maintenance
#   window (MAINTENANCE_*) when no workflow runs and the agent is between turns.
# - the agent's login, as its hooks last saw it (notify.sh records it).
# Everything the agent can write (its home, its hooks' state, the workflow's state) is hostile input here: read with
# the agent's rights, only values that match a pattern kept, nothing evaluated; what goes from the home is deleted by
# the agent (find -P never follows a link), never by root.
WATCH=/var/lib/agentbox/watch
AGENT_STATE=/var/lib/agentbox/agent
WF_STATE=/var/lib/agentbox/workflow/state
REBOOT_FLAG=/run/reboot-required
NOTIFY_ENV=/etc/agentbox/notify.env
# a workflow run's folder, as workflow.sh names it
RUN_RE='[0-9]{8}T[0-9]{6}Z'
NOW=$(date +%s)
WARN=${DISK_WARN_PCT:-80} KEEP=${WORKFLOW_KEEP_RUNS:-20}
[[ $WARN =~ ^([1-9][0-9]?|100)$ ]] || WARN=80
[[ $KEEP =~ ^[0-9]{1,4}$ ]] || KEEP=20
# a turn whose end no hook saw (claude killed mid-turn outside the agent's unit) stops counting after this
BUSY_STALE_S=43200
export AGENTBOX_AS_AGENT_TIMEOUT=10
W=()
REBOOT=''

put() { W+=("$1=$2"); }
prev() { sed -n "s/^$1=//p" "$WATCH" 2>/dev/null | head -n 1; }
prev_number() { prev "$1" | grep -E '^[0-9]{1,12}$'; }
notify() {
  [ -r "$NOTIFY_ENV" ] || return 0
  AGENTBOX_NOTIFY_ENV=$NOTIFY_ENV timeout 30 /usr/local/lib/agentbox/notify "$1" "$2" </dev/null
}
# value TEXT KEY PATTERN: KEY's first value, only when all of it matches PATTERN
value() {
  local v
  v=$(sed -n "s/^$2=//p" <<<"$1" | head -n 1)
  [[ $v =~ ^($3)$ ]] && printf '%s' "$v"
}
agent_find() { AGENTBOX_AS_AGENT_TIMEOUT=300 agentbox_agent_output find -P "$@"; }
# the same, for a find that deletes: what it prints (the agent's to shape) goes nowhere, not into root's journal
agent_delete() { AGENTBOX_AS_AGENT_TIMEOUT=300 agentbox_as_agent find -P "$@" >/dev/null 2>&1; }

# --- disk ---

# usage PATH: "PERCENT FREE_MB" of PATH's filesystem
usage() {
  timeout 10 df -P -BM -- "$1" 2>/dev/null | awk 'NR == 2 { print $5 + 0, $4 + 0 }'
}
home_is_volume() { [ "${VOLUME:-0}" = 1 ] && mountpoint -q -- "$AGENT_HOME"; }
disk_name() { if [ "$1" = home ]; then echo "the home volume"; else echo "the root disk"; fi; }

# The run the workflow's state names as running ("unknown": not a run's name), while its unit still runs: a state
# left behind by a box that went down mid-run is no run.
workflow_running() {
  local text
  text=$(agentbox_agent_file "$WF_STATE")
  [ "$(value "$text" state running)" = running ] || return 1
  case $(agentbox_as_agent systemctl --user is-active agentbox-workflow.service 2>/dev/null) in inactive | failed) return 1 ;; esac
  value "$text" run "$RUN_RE" || echo unknown
}

# Always: a week of Claude Code's debug logs (it never removes them itself), the newest KEEP workflow runs (and a
# running one). The runs' folders are listed as the agent and their names checked.
housekeeping() {
  local dir=$AGENT_HOME/agentbox-runs running old=()
  agent_delete "$AGENT_HOME/.claude/debug" -xdev -mindepth 1 \( -type f -o -type l \) -mtime +7 -delete
  running=$(workflow_running) || running=none
  [ "$running" = unknown ] && return
  mapfile -t old < <(agent_find "$dir" -mindepth 1 -maxdepth 1 -printf '%f\n' | grep -E "^$RUN_RE\$" | sort -r |
    tail -n +$((KEEP + 1)) | grep -vxF -- "$running" | sed "s#^#$dir/#")
  ((${#old[@]})) && agent_delete "${old[@]}" -xdev -delete
}

# At the warning level, in the home: all of Claude Code's debug logs and the caches. A log claude still writes frees
# its blocks only when emptied (deleted, they stay until claude closes it): emptied first.
free_home() {
  agent_delete "$AGENT_HOME/.claude/debug" -xdev -mindepth 1 -type f -exec truncate -s 0 -- {} +
  agent_delete "$AGENT_HOME/.claude/debug" "$AGENT_HOME/.cache" "$AGENT_HOME/.npm/_cacache" -xdev -mindepth 1 -delete
}
# ... on the root disk: the journal down to its cap, apt's downloaded packages (not while apt runs: its lock)
free_root() {
  local cap
  cap=$(timeout 10 systemd-analyze cat-config systemd/journald.conf 2>/dev/null | sed -n 's/^SystemMaxUse=//p' | tail -n 1)
  [[ $cap =~ ^[0-9]+[KMGT]?$ ]] || cap=1G
  timeout 60 journalctl --vacuum-size="$cap" >/dev/null 2>&1
  timeout 60 apt-get clean -q >/dev/null 2>&1
}

disk() {
  local fs pct free p f before=() shown=() freed=0 full=() pressed='' level=ok text
  local -A path=([root]=/)
  housekeeping
  home_is_volume && path[home]=$AGENT_HOME
  for fs in root home; do
    [ -n "${path[$fs]:-}" ] || continue
    read -r pct free <<<"$(usage "${path[$fs]}")"
    [ -n "$free" ] || continue
    before+=("$fs $pct $free")
    [ "$pct" -ge "$WARN" ] || continue
    pressed=1
    if [ "$fs" = root ]; then free_root; fi
    if [ "$fs" = home ] || ! home_is_volume; then free_home; fi
  done
  for fs in "${before[@]}"; do
    read -r fs pct free <<<"$fs"
    if [ -n "$pressed" ] && read -r p f <<<"$(usage "${path[$fs]}")" && [ -n "$f" ]; then
      [ "$f" -gt "$free" ] && freed=$((freed + f - free))
      pct=$p free=$f
    fi
    [ "$pct" -ge "$WARN" ] && full+=("$fs")
    shown+=("$(disk_name "$fs") $pct%")
    if [ "$fs" = root ]; then put disk_pct "$pct"; else put disk_home_pct "$pct"; fi
  done
  ((${#full[@]})) && level=warning
  put disk_warn_pct "$WARN" && put disk_level $level && put disk_full "$(IFS=, && echo "${full[*]}")"
  # the last time space had to be freed, and how much
  if [ -n "$pressed" ] && [ $freed -gt 0 ]; then
    put freed_mb $freed && put freed_at "$NOW"
  else
    put freed_mb "$(prev_number freed_mb)" && put freed_at "$(prev_number freed_at)"
  fi
  text=$(printf '%s, ' "${shown[@]}")
  text="${text%, } used"
  echo "disk: $text (warning at $WARN%)${pressed:+, $freed MB freed}"
  # once per change: the level, and each time space had to be freed
  if [ $level = warning ] && [ "$(prev disk_notified)" != warning ]; then
    notify disk "$(disk_name "${full[0]}") is at or above $WARN% ($text) after freeing $freed MB: make room (see agentbox-status)"
  elif [ $level = ok ] && [ -n "$pressed" ] && [ $freed -gt 0 ]; then
    notify disk "freed $freed MB (Claude Code's debug logs, caches, old workflow runs, the journal): $text now"
  elif [ $level = ok ] && [ "$(prev disk_notified)" = warning ]; then
    notify disk "back below $WARN%: $text"
  fi
  put disk_notified $level
}

# --- updates that need a reboot ---

# the maintenance window as people read it; fails when the stack set none

window() {
  local d names=() days=(- Mon Tue Wed Thu Fri Sat Sun)
  [[ ${MAINTENANCE_DAYS:-} =~ ^[1-7](,[1-7])*$ && ${MAINTENANCE_START_MIN:-} =~ ^[0-9]{1,4}$ &&
    ${MAINTENANCE_END_MIN:-} =~ ^[0-9]{1,4}$ ]] || return 1
  for d in ${MAINTENANCE_DAYS//,/ }; do names+=("${days[$d]}"); done
  printf '%s %02d:%02d-%02d:%02d UTC\n' "$(IFS=, && echo "${names[*]}")" $((MAINTENANCE_START_MIN / 60)) \
    $((MAINTENANCE_START_MIN % 60)) $((MAINTENANCE_END_MIN / 60)) $((MAINTENANCE_END_MIN % 60))
}
in_window() {
  local day h m
  read -r day h m < <(date -u -d "@$NOW" '+%u %H %M')
  m=$((10#$h * 60 + 10#$m))
  [[ ,$MAINTENANCE_DAYS, == *,$day,* ]] && [ "$m" -ge "$MAINTENANCE_START_MIN" ] && [ "$m" -lt "$MAINTENANCE_END_MIN" ]
}
# an agent's hooks saw a turn start and not end: the one agent's (turn), or any of agentbox:agents' (NAME/turn);
# MID_TURN names it
MID_TURN=''
mid_turn() {
  local text since name file
  for name in $(agentbox_agent_names); do
    file=$AGENT_STATE/$name/turn
    [ -r "$AGENTBOX_AGENTS_FILE" ] || file=$AGENT_STATE/turn
    text=$(agentbox_agent_file "$file")
    since=$(value "$text" since '[0-9]{1,12}')
    if [ "$(value "$text" state busy)" = busy ] && [ -n "$since" ] && [ $((NOW - since)) -lt $BUSY_STALE_S ]; then
      MID_TURN=$name
      return 0
    fi
  done
  return 1
}

updates() {
  local since pkgs reason='' last window
  last=$(prev_number last_reboot)
  window=$(window) && put window "$window"
  if [ ! -e "$REBOOT_FLAG" ]; then
    put reboot_required 0 && put last_reboot "$last"
    echo "updates: no reboot required"
    return
  fi
  since=$(stat -c %Y "$REBOOT_FLAG")
  pkgs=$(grep -E '^[A-Za-z0-9][A-Za-z0-9.+:~-]*$' "$REBOOT_FLAG.pkgs" 2>/dev/null | sort -u | head -n 20 | paste -sd, -)
  put reboot_required 1 && put reboot_required_since "$since" && put reboot_pkgs "$pkgs"
  if [ "$(sed -n 's/^result=//p' /var/lib/agentbox/status 2>/dev/null)" = provisioning ]; then
    reason="provisioning has not finished"
  elif [ -z "$window" ]; then
    reason="no maintenance window set (agentbox:maintenanceWindow)"
  elif ! in_window; then
    reason="outside the maintenance window ($window)"
  elif workflow_running >/dev/null; then
    reason="a workflow is running"
  elif mid_turn; then
    reason="the agent$([ -r "$AGENTBOX_AGENTS_FILE" ] && echo " $MID_TURN") is mid-turn"
  elif [ -n "$last" ] && [ $((NOW - last)) -lt 3600 ]; then
    reason="the box rebooted for updates less than an hour ago"
  fi
  if [ -n "$reason" ] && [ "$(prev reboot_notified)" != "$since" ]; then
    notify updates "a reboot is needed (${pkgs:-updates}): deferred, $reason"
  fi
  put reboot_notified "$since"
  if [ -n "$reason" ]; then
    put reboot deferred && put reboot_reason "$reason" && put last_reboot "$last"
    echo "updates: a reboot is needed (${pkgs:-?}), deferred: $reason"
  else
    put reboot rebooting && put last_reboot "$NOW"
    echo "updates: rebooting for ${pkgs:-updates}"
    REBOOT=${pkgs:-updates}
  fi
}

# --- the agent's login ---

auth() {
  local text state
  text=$(agentbox_agent_file "$AGENT_STATE/auth")
  state=$(value "$text" state 'ok|failed')
  put auth "${state:-unknown}"
  [ "$state" = failed ] || return 0
  put auth_error "$(value "$text" error '[a-z_]{1,40}')"
  put auth_since "$(value "$text" since '[0-9]{1,12}')"
  put auth_credential "$(value "$text" credential 'oauth_token|api_key|login')"
  echo "auth: the agent cannot log in ($(value "$text" error '[a-z_]{1,40}'))"
}

put checked "$NOW"
disk
updates
auth
if ! { tmp=$(mktemp "$WATCH.XXXXXX") && printf '%s\n' "${W[@]}" >"$tmp" && chmod 0644 "$tmp" && mv -f "$tmp" "$WATCH"; }; then
  # the record holds the guard against a second reboot within the hour: no reboot without it
  echo "watch: could not write $WATCH${REBOOT:+; the reboot waits for the next run}"
  REBOOT=''
fi
if [ -n "$REBOOT" ]; then
  notify updates "rebooting now for $REBOOT; the agent resumes its conversation after the boot"
  systemctl reboot
fi
# a transient problem (a busy disk, an unreachable user manager) is for the next run: the unit never fails
exit 0
