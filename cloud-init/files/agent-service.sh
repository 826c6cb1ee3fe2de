#!/bin/bash
# Main process of the claude-agent user service (claude-agent@NAME with agentbox:agents). It opens the tmux session
# that runs Claude Code and lives exactly as long as Claude Code does: when claude exits or crashes the pane signals
# a tmux channel, this script returns, and systemd's Restart=always brings a fresh session back. (A tmux session
# that merely outlives claude would hide the crash from systemd.)
#
# usage: agent-service [NAME]   NAME: one of agentbox:agents. Then the session lives on the agents' shared tmux
# server (agentbox-tmux.service, never started from here: a server started by one agent's unit would live and die
# with it), and claude runs in a scope of its own bound to this unit (see claude-session.sh).
set -euo pipefail
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
agentbox_load_env /etc/agentbox/box.env
no_server=()
if [ -n "${1:-}" ]; then
  # shellcheck source=agents.sh disable=SC1091 # boxes with agentbox:agents only
  . /usr/local/lib/agentbox/agents.sh
  agentbox_agent "$1" || {
    echo "agentbox: no agent named '$1' on this box (/etc/agentbox/agents)" >&2
    exit 1
  }
  # -N: never start a server
  no_server=(-N)
fi

tmux_() { tmux "${no_server[@]}" -L "$AGENTBOX_TMUX_SOCKET" -f /usr/local/lib/agentbox/tmux.conf "$@"; }
channel="claude-exited-${INVOCATION_ID:-$$}"
# = : this session exactly (tmux would otherwise take a session whose name merely begins with it)
target="=$AGENTBOX_SESSION"

tmux_ kill-session -t "$target" 2>/dev/null || true
start() {
  tmux_ new-session -d -s "$AGENTBOX_SESSION" -x 200 -y 50 -c "$([ -d "$WORKSPACE" ] && echo "$WORKSPACE" || echo "$HOME")" \
    -e "AGENTBOX_EXIT_CHANNEL=$channel" -e "AGENTBOX_AGENT=${AGENTBOX_AGENT:-}" \
    -e "AGENTBOX_UNIT=$(agentbox_agent_unit "$AGENTBOX_SESSION")" /usr/local/lib/agentbox/claude-session
}
if [ ${#no_server[@]} = 0 ]; then
  start
else
  # the shared server may still be starting (its unit is active once tmux is executed, before it listens)
  for _ in $(seq 50); do
    start 2>/dev/null && break
    sleep 0.2
  done
fi
tmux_ has-session -t "$target" || {
  echo "agentbox: could not open the tmux session $AGENTBOX_SESSION" >&2
  exit 1
}
echo "Claude Code started in tmux session '$AGENTBOX_SESSION' (attach: tmux -L $AGENTBOX_TMUX_SOCKET attach -t $AGENTBOX_SESSION)"

# Returns once the pane signals the channel (claude-session's EXIT trap), or once the session is gone without a word
# (its pane killed; the agents' shared server outlives its sessions). Either way the unit ends and systemd restarts it.
# (The look is every 5 s; the channel's signal ends the wait at once.)
tmux_ wait-for "$channel" &
waiter=$!
while :; do
  sleep 5 &
  sleeper=$!
  wait -n "$waiter" "$sleeper" || true
  kill "$sleeper" 2>/dev/null || true
  if ! kill -0 "$waiter" 2>/dev/null || ! tmux_ has-session -t "$target" 2>/dev/null; then break; fi
done
kill "$waiter" 2>/dev/null || true
code=$(cat "${XDG_RUNTIME_DIR:-/tmp}/agentbox/claude-exit${AGENTBOX_AGENT:+-$AGENTBOX_AGENT}" 2>/dev/null || echo unknown)
echo "Claude Code exited (status $code); systemd restarts it"
exit 1
