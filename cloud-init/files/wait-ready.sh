#!/bin/bash
# agentbox-wait-ready: blocks until this box is ready (provisioning done and every agent's unit active) and says so,
# or prints why not. `pulumi up` runs it over SSH as the agent user; anyone may run it.
#
# usage: agentbox-wait-ready [--timeout SECONDS]   (default 900)
# exit:  0 ready (or degraded: an optional step failed, the agent runs; the problems are printed)
#        1 the box failed: provisioning's result, cloud-init's, and the agent's last log lines are printed
#        2 not ready within the timeout: the same details
set -uo pipefail
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
agentbox_load_env /etc/agentbox/box.env

STATUS=/var/lib/agentbox/status
timeout=900
if [ "${1:-}" = --timeout ] && [[ ${2:-} =~ ^[0-9]+$ ]]; then timeout=$2; fi
result() { sed -n 's/^result=//p' "$STATUS" 2>/dev/null; }
# every agent's unit (agentbox:agents), or the one claude-agent.service
mapfile -t UNITS < <(agentbox_agent_units)
UNITS_TEXT=$(IFS=, && echo "${UNITS[*]}")
# "active" when every agent's unit is, else the state of the first that is not (and which)
agent_state() {
  local unit state
  for unit in "${UNITS[@]}"; do
    # the agent's user manager answers: one word, or "?"
    state=$(agentbox_as_agent systemctl --user is-active "$unit" 2>/dev/null | head -n 1)
    [[ $state =~ ^[a-z-]{1,32}$ ]] || state='?'
    if [ "$state" != active ]; then
      if [ ${#UNITS[@]} = 1 ]; then echo "$state"; else echo "$state ($unit)"; fi
      return 1
    fi
  done
  echo active
}
problems() { grep -v -e '^result=' -e '=ok$' "$STATUS" 2>/dev/null | sed 's/^/  /'; }
# one line of progress: what the box is doing now
where() {
  local r steps
  r=$(result)
  if [ -z "$r" ]; then
    echo "cloud-init: $(cloud-init status 2>/dev/null | sed -n 's/^status: //p') (installing packages)"
  else
    steps=$(grep -v '^result=' "$STATUS" | cut -d= -f1 | paste -sd, -)
    echo "provisioning: $r${steps:+ (done: $steps)}"
  fi
}
details() {
  echo "--- /var/lib/agentbox/status"
  cat "$STATUS" 2>/dev/null || echo "(none yet: provisioning has not started)"
  echo "--- cloud-init"
  cloud-init status --long 2>/dev/null | sed -n '/^status:/p; /^errors:/,$p' | head -n 20
  echo "--- $UNITS_TEXT: $(agent_state || true)"
  # the agent's own log: text the agent wrote, made safe for whoever's terminal shows it
  for unit in "${UNITS[@]}"; do
    [ ${#UNITS[@]} = 1 ] || echo "--- $unit"
    { agentbox_as_agent journalctl --user -u "$unit" -n 15 --no-pager -o cat 2>/dev/null ||
      echo "(its journal is not readable here)"; } | agentbox_printable
  done
  echo "--- /var/log/agentbox/provision.log (last lines)"
  { tail -n 15 /var/log/agentbox/provision.log 2>/dev/null || echo "(not readable here)"; } | agentbox_printable
}

start=$(date +%s) last=
while :; do
  elapsed=$(($(date +%s) - start))
  case $(result) in
    ready | degraded)
      # cloud-init's own end too, so that `pulumi up` returns on a box that has finished everything (its status
      # command exits non-zero for error and degraded: read what it says, not how it exits)
      if grep -qE '^status: (done|error|degraded)' <<<"$(cloud-init status 2>/dev/null)"; then
        if [ "$(agent_state)" = active ]; then
          echo "agentbox: ready after ${elapsed} s of waiting: $(result), $UNITS_TEXT active"
          if [ "$(result)" = degraded ]; then
            echo "agentbox: WARNING: an optional step failed (the agent runs):"
            problems
          fi
          exit 0
        fi
        echo "agentbox: provisioning says $(result) but $UNITS_TEXT is $(agent_state || true)"
        details
        exit 1
      fi
      ;;
    failed)
      echo "agentbox: the box FAILED to provision:"
      problems
      details
      exit 1
      ;;
  esac
  if [ "$elapsed" -ge "$timeout" ]; then
    echo "agentbox: not ready within $timeout s; $(where)"
    details
    exit 2
  fi
  now=$(where)
  # progress: on every change, and every 30 s regardless
  if [ "$now" != "$last" ] || [ $((elapsed % 30)) -lt 2 ]; then
    echo "agentbox: waiting (${elapsed} s): $now"
    last=$now
  fi
  sleep 2
done
