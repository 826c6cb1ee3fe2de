#!/bin/bash
# Main process of agentbox-workflow.service (a user unit of the agent): the stack's workflow, once per box.
# Claude Code runs the prompt headless; its whole output stays in ~/agentbox-runs/<run>/ (on the volume when the
# box has one), and /var/lib/agentbox/workflow/state says where it is and how it ended:
#   state=running|success|failure|timeout, started=, ended= (unix seconds), exit=, output=, run=, timeout_minutes=
# Only claude's own exit ends a run: a quiet agent is never taken for a finished one.
set -uo pipefail
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
agentbox_load_env /etc/agentbox/box.env
agentbox_load_env "$HOME/.config/agentbox/agent.env"

STATE_DIR=/var/lib/agentbox/workflow
STATE=$STATE_DIR/state
PROMPT=$HOME/.config/agentbox/workflow-prompt
minutes=${WORKFLOW_TIMEOUT_MINUTES:?}

# state_write KEY=VALUE...: the whole file, replaced at once
state_write() {
  local tmp
  tmp=$(mktemp "$STATE_DIR/.state.XXXXXX")
  printf '%s\n' "$@" >"$tmp"
  chmod 0644 "$tmp"
  mv "$tmp" "$STATE"
}
state_of() { sed -n "s/^$1=//p" "$STATE" 2>/dev/null; }

case $(state_of state) in
  success | failure | timeout)
    echo "the workflow has already ended ($(state_of state)); it runs once per box"
    exit 0
    ;;
  running)
    # the box went down while it ran: that run is over, and says so
    state_write state=failure "started=$(state_of started)" "ended=$(date +%s)" exit=interrupted \
      "output=$(state_of output)" "run=$(state_of run)" "timeout_minutes=$minutes"
    /usr/local/lib/agentbox/notify workflow-end "failure (interrupted by a restart of the box)"
    exit 0
    ;;
esac

run=$(date -u +%Y%m%dT%H%M%SZ)
dir=$HOME/agentbox-runs/$run
mkdir -p "$dir"
out=$dir/output.jsonl
started=$(date +%s)
state_write state=running "started=$started" "output=$out" "run=$run" "timeout_minutes=$minutes"
echo "workflow $run started; output: $out; timeout: $minutes min"

cd "$WORKSPACE" || cd "$HOME" || exit 1
# Permissions: agentbox:workflowPermissionMode when the stack sets it (a headless run cannot ask: in Claude Code's
# default mode whatever would ask is refused), plus whatever the repository's .claude/settings.json allows.
# The run's record is its output file: no saved session, which the interactive agent's `claude --continue` in the
# same workspace would otherwise pick up as its own last conversation.
timeout --signal=TERM --kill-after=30 "${minutes}m" claude -p --output-format stream-json --verbose \
  --no-session-persistence ${WORKFLOW_PERMISSION_MODE:+--permission-mode "$WORKFLOW_PERMISSION_MODE"} \
  <"$PROMPT" >"$out" 2>"$dir/stderr.log"
code=$?
ended=$(date +%s)

if [ "$code" = 124 ] || { [ "$code" = 137 ] && [ $((ended - started)) -ge $((minutes * 60)) ]; }; then
  state=timeout
elif [ "$code" = 0 ] && ! tail -n 1 "$out" | grep -q '"is_error":true'; then
  state=success
else
  state=failure
fi
state_write "state=$state" "started=$started" "ended=$ended" "exit=$code" "output=$out" "run=$run" \
  "timeout_minutes=$minutes"
cp "$STATE" "$dir/state"
echo "workflow $run ended: $state (claude exit $code after $((ended - started)) s)"
/usr/local/lib/agentbox/notify workflow-end "$state after $((ended - started)) s"
exit 0
