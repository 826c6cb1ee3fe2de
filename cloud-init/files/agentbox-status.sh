#!/bin/bash
# agentbox-status: one screen about this box. Run it as the agent, the admin login or root.
set -uo pipefail
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
agentbox_load_env /etc/agentbox/box.env

STATUS=/var/lib/agentbox/status
status_of() { sed -n "s/^$1=//p" "$STATUS" 2>/dev/null; }
row() { printf '%-11s %s\n' "$1" "$2"; }

row box: "$(hostname), $(uptime -p 2>/dev/null || echo "up")"
steps=$(grep -v -e '^result=' "$STATUS" 2>/dev/null | grep -v '=ok$' | paste -sd ';' -)
row provision: "$(status_of result || true)${steps:+ ($steps)}  [$STATUS]"
row cloud-init: "$(cloud-init status 2>/dev/null | sed -n 's/^status: //p')"

# each agent (agentbox:agents), or the one agent: its unit's state and restarts, and with a list where it works
mapfile -t NAMES < <(agentbox_agent_names)
# agent_row NAME
agent_row() {
  local unit label=agent: text state since where=''
  unit=$(agentbox_agent_unit "$1")
  [ -r "$AGENTBOX_AGENTS_FILE" ] && label="agent $1:" && where=$(
    # shellcheck source=agents.sh disable=SC1091 # boxes with agentbox:agents only
    . /usr/local/lib/agentbox/agents.sh && agentbox_agent "$1" && case $AGENT_WORK in
      worktree) echo "; ${WORKSPACE/#$AGENT_HOME/\~} (worktree, branch $AGENT_WORK_VALUE)" ;;
      repo) echo "; ${WORKSPACE/#$AGENT_HOME/\~} (clone of $AGENT_WORK_VALUE)" ;;
      *) echo "; ${WORKSPACE/#$AGENT_HOME/\~}" ;;
    esac
  )
  if text=$(agentbox_agent_output systemctl --user show "$unit" -p ActiveState -p SubState -p NRestarts \
    -p ActiveEnterTimestamp 2>/dev/null | agentbox_printable) && [ -n "$text" ]; then
    state=$(sed -n 's/^ActiveState=//p' <<<"$text")/$(sed -n 's/^SubState=//p' <<<"$text")
    since=$(sed -n 's/^ActiveEnterTimestamp=//p' <<<"$text")
    row "$label" "$state since ${since:-?}, restarted $(sed -n 's/^NRestarts=//p' <<<"$text") times ($unit)$where"
  else
    row "$label" "(not visible to $(id -un): run as $AGENT_USER, with sudo, or as root)"
  fi
}
for name in "${NAMES[@]}"; do agent_row "$name"; done

if command -v tailscale >/dev/null; then
  row tailscale: "$(tailscale status --self=true --peers=false 2>&1 | head -n 1)"
else
  row tailscale: "not installed$(status_of tailscale | sed 's/^/ (/; s/$/)/')"
fi

# agentbox:approvals: whether the receiver takes taps (it waits for the tailnet's address first)
if [ "${APPROVALS:-0}" = 1 ]; then
  if [ -S /run/agentbox-approvals/approve.sock ]; then row approvals: "listening (port ${APPROVE_PORT:-?} on the tailnet)"
  else row approvals: "$(systemctl is-active agentbox-approve.service), not listening yet (journalctl -u agentbox-approve)"; fi
fi
# The workflow's state is the agent's to write (the workflow runs as the agent), and root or the admin login may
# run this: it is read with the agent's rights (a link to a file only root may read shows nothing), at most 4 KiB,
# and every value is checked before use, never evaluated, and printed without control characters.
WF_STATE=/var/lib/agentbox/workflow/state
if wf_text=$(agentbox_agent_file "$WF_STATE") && [ -n "$wf_text" ]; then
  wf() { sed -n "s/^$1=//p" <<<"$wf_text" | head -n 1 | agentbox_printable | tr -d '\t' | cut -c 1-160; }
  number() { [[ $1 =~ ^(0|[1-9][0-9]{0,11})$ ]] && echo "$1"; }
  started=$(number "$(wf started)") ended=$(number "$(wf ended)") minutes=$(number "$(wf timeout_minutes)")
  state=$(wf state)
  case $state in
    running) row workflow: "running for $(if [ -n "$started" ]; then echo "$(($(date +%s) - started))"; else echo "?"; fi) s of ${minutes:-?} min; output $(wf output)" ;;
    success | failure | timeout)
      row workflow: "$state after $(if [ -n "$started" ] && [ -n "$ended" ]; then echo "$((ended - started))"; else echo "?"; fi) s (claude exit $(wf exit)); output $(wf output)"
      ;;
    *) row workflow: "unreadable state file $WF_STATE (state '$state')" ;;
  esac
elif [ "${WORKFLOW:-0}" = 1 ]; then
  row workflow: "not started yet"
fi

# The watcher's findings (root writes them; checked all the same, as the banner does): disk, updates, the login.
WATCH=/var/lib/agentbox/watch
watch_of() { sed -n "s/^$1=//p" "$WATCH" 2>/dev/null | head -n 1 | agentbox_printable | cut -c 1-200; }
num() { [[ $1 =~ ^[0-9]{1,12}$ ]] && echo "$1"; }
utc() { [ -n "$1" ] && date -u -d "@$1" '+%F %H:%M UTC'; }
if [ -r "$WATCH" ]; then
  warn=$(num "$(watch_of disk_warn_pct)") freed=$(num "$(watch_of freed_mb)")
  disk="/ $(num "$(watch_of disk_pct)")%"
  home_pct=$(num "$(watch_of disk_home_pct)") && disk+=", home volume $home_pct%"
  disk+=" used (frees space at ${warn:-?}%)"
  if [ "$(watch_of disk_level)" = warning ]; then
    disk="WARNING: $disk, still at or above it on $(watch_of disk_full | tr -cd 'a-z,') after freeing: make room"
  fi
  [ -n "$freed" ] && disk+="; last freed $freed MB at $(utc "$(num "$(watch_of freed_at)")")"
  row disk: "$disk  [checked $(utc "$(num "$(watch_of checked)")")]"
  if [ "$(watch_of reboot_required)" = 1 ]; then
    updates="reboot required since $(utc "$(num "$(watch_of reboot_required_since)")") ($(watch_of reboot_pkgs | tr -cd 'A-Za-z0-9.+:~,-'))"
    case $(watch_of reboot) in
      rebooting) updates+=": rebooting now" ;;
      *) updates+=": deferred, $(watch_of reboot_reason)" ;;
    esac
  else
    updates="no reboot required"
  fi
  window=$(watch_of window)
  if [ -n "$window" ]; then updates+="; maintenance window $window"; else updates+="; no maintenance window (reboot by hand)"; fi
  last=$(num "$(watch_of last_reboot)") && updates+="; last rebooted for updates $(utc "$last")"
  row updates: "$updates"
else
  row disk: "not checked yet (agentbox-watch.timer runs every 5 minutes)"
fi

# The agent's login as its hooks last saw it: the agent's file, read like the workflow's state; else the watcher's copy.
auth_text=$(agentbox_agent_file /var/lib/agentbox/agent/auth)
[ -n "$auth_text" ] || auth_text=$(sed -n 's/^auth_//p; s/^auth=/state=/p' "$WATCH" 2>/dev/null)
auth_of() { sed -n "s/^$1=//p" <<<"$auth_text" | head -n 1 | grep -E "^($2)\$"; }
case $(auth_of state 'ok|failed') in
  ok) row auth: "ok (the last turn went through)" ;;
  failed)
    case $(auth_of credential 'oauth_token|api_key|login') in
      api_key) fix="set a new key: pulumi config set --secret agentbox:anthropicApiKey, then npm run up" ;;
      oauth_token) fix="a new token: claude setup-token on your laptop, then pulumi config set --secret agentbox:claudeOauthToken and npm run up (or attach and /login)" ;;
      *) fix="attach (tmux -L $AGENTBOX_TMUX_SOCKET attach -t ${NAMES[0]}) and /login" ;;
    esac
    row auth: "FAILED: $(auth_of error '[a-z_]{1,40}') since $(utc "$(auth_of since '[0-9]{1,12}')"): $fix"
    ;;
  *) row auth: "no turn seen yet" ;;
esac

# each agent's screen: the one agent's last 12 lines, or 6 of each of several
lines=${LINES_OF_SCREEN:-$([ ${#NAMES[@]} = 1 ] && echo 12 || echo 6)}
for name in "${NAMES[@]}"; do
  echo "screen      (tmux -L $AGENTBOX_TMUX_SOCKET attach -t $name):"
  agentbox_agent_output tmux -L "$AGENTBOX_TMUX_SOCKET" capture-pane -p -t "=$name:" |
    agentbox_printable | sed '/^[[:space:]]*$/d' | tail -n "$lines" | sed 's/^/  /' ||
    echo "  (no tmux session)"
done
