#!/bin/bash
# Main process of the claude-agent user service. It opens the tmux session that runs Claude Code and lives exactly
# as long as Claude Code does: when claude exits or crashes the pane signals a tmux channel, this script returns,
# and systemd's Restart=always brings a fresh session back. (A tmux session that merely outlives claude would hide
# the crash from systemd.)
set -euo pipefail
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
agentbox_load_env /etc/agentbox/box.env

tmux_() { tmux -L "$AGENTBOX_TMUX_SOCKET" -f /usr/local/lib/agentbox/tmux.conf "$@"; }
channel="claude-exited-${INVOCATION_ID:-$$}"

tmux_ kill-session -t "$AGENTBOX_SESSION" 2>/dev/null || true
tmux_ new-session -d -s "$AGENTBOX_SESSION" -x 200 -y 50 -c "$WORKSPACE" \
  -e "AGENTBOX_EXIT_CHANNEL=$channel" /usr/local/lib/agentbox/claude-session
echo "Claude Code started in tmux session '$AGENTBOX_SESSION' (attach: tmux -L $AGENTBOX_TMUX_SOCKET attach -t $AGENTBOX_SESSION)"

# Returns once the pane signals the channel; fails if the tmux server itself goes away. Either way the unit ends.
tmux_ wait-for "$channel"
code=$(cat "${XDG_RUNTIME_DIR:-/tmp}/agentbox/claude-exit" 2>/dev/null || echo unknown)
echo "Claude Code exited (status $code); systemd restarts it"
exit 1
