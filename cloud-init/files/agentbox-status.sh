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

if unit=$(agentbox_as_agent systemctl --user show claude-agent.service -p ActiveState -p SubState -p NRestarts \
  -p ActiveEnterTimestamp 2>/dev/null) && [ -n "$unit" ]; then
  state=$(sed -n 's/^ActiveState=//p' <<<"$unit")/$(sed -n 's/^SubState=//p' <<<"$unit")
  since=$(sed -n 's/^ActiveEnterTimestamp=//p' <<<"$unit")
  row agent: "$state since ${since:-?}, restarted $(sed -n 's/^NRestarts=//p' <<<"$unit") times (claude-agent.service)"
else
  row agent: "(not visible to $(id -un): run as $AGENT_USER, with sudo, or as root)"
fi

if command -v tailscale >/dev/null; then
  row tailscale: "$(tailscale status --self=true --peers=false 2>&1 | head -n 1)"
else
  row tailscale: "not installed$(status_of tailscale | sed 's/^/ (/; s/$/)/')"
fi

if [ -r /var/lib/agentbox/workflow/state ]; then
  wf() { sed -n "s/^$1=//p" /var/lib/agentbox/workflow/state; }
  case $(wf state) in
    running) row workflow: "running for $(($(date +%s) - $(wf started))) s of $(wf timeout_minutes) min; output $(wf output)" ;;
    *) row workflow: "$(wf state) after $(($(wf ended) - $(wf started))) s (claude exit $(wf exit)); output $(wf output)" ;;
  esac
elif [ "${WORKFLOW:-0}" = 1 ]; then
  row workflow: "not started yet"
fi

echo "screen      (tmux -L $AGENTBOX_TMUX_SOCKET attach -t $AGENTBOX_SESSION):"
agentbox_as_agent tmux -L "$AGENTBOX_TMUX_SOCKET" capture-pane -p -t "$AGENTBOX_SESSION" 2>/dev/null |
  sed '/^[[:space:]]*$/d' | tail -n "${LINES_OF_SCREEN:-12}" | sed 's/^/  /' ||
  echo "  (no tmux session)"
