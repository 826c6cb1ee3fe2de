#!/bin/bash
# Runs in the tmux pane of the claude-agent service: Claude Code in the workspace, resuming the last conversation
# when there is one (`claude --continue` exits with an error when there is none), then tells the service it ended.
set -uo pipefail
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
agentbox_load_env /etc/agentbox/box.env
# However this ends (claude's exit, a workspace that cannot be made yet), the service hears of it and restarts
trap 'tmux -L "$AGENTBOX_TMUX_SOCKET" wait-for -S "$AGENTBOX_EXIT_CHANNEL"' EXIT
# One of agentbox:agents (AGENTBOX_AGENT, from agent-service): its scope and its workspace first (agents.sh)
if [ -n "${AGENTBOX_AGENT:-}" ]; then
  # shellcheck source=agents.sh disable=SC1091 # boxes with agentbox:agents only
  . /usr/local/lib/agentbox/agents.sh
  agentbox_agent_scope "$0"
fi
# The agent's credentials: read here, so that they reach claude's environment only, not the tmux server's.
agentbox_load_env "$HOME/.config/agentbox/agent.env"

if [ -n "${AGENTBOX_AGENT:-}" ]; then agentbox_agent_workspace; fi

cd "$WORKSPACE" 2>/dev/null || cd "$HOME" || exit 1
args=()
if agentbox_has_conversation "$PWD"; then args+=(--continue); fi
# agentbox:permissionMode (one of Claude Code's modes, checked by the stack); unset: Claude Code's own default
args+=(${PERMISSION_MODE:+--permission-mode "$PERMISSION_MODE"})
# Remote Control: the session shows up in the Claude app under the box's name, and the agent's (once someone has
# logged in)
if [ "${REMOTE_CONTROL:-0}" = 1 ]; then args+=(--remote-control "$(hostname)${AGENTBOX_AGENT:+-$AGENTBOX_AGENT}"); fi
started=$SECONDS
claude "${args[@]}"
code=$?
# A conversation Claude Code will not continue (damaged, or from another version) makes `--continue` fail at once:
# a plain start then, rather than a restart loop that never gets past it (a signal, 128+, is not that).
if [ "$code" = 1 ] && [ $((SECONDS - started)) -lt 10 ] && [[ " ${args[*]} " == *" --continue "* ]]; then
  echo "agentbox: claude --continue exited at once ($code); starting a new conversation"
  fresh=()
  for a in "${args[@]}"; do [ "$a" = --continue ] || fresh+=("$a"); done
  claude ${fresh[@]+"${fresh[@]}"}
  code=$?
fi

mkdir -p "${XDG_RUNTIME_DIR:-/tmp}/agentbox"
echo "$code" >"${XDG_RUNTIME_DIR:-/tmp}/agentbox/claude-exit${AGENTBOX_AGENT:+-$AGENTBOX_AGENT}"
