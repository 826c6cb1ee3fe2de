#!/bin/bash
# agentbox-wait-ready: blocks until this box is ready (provisioning done and the agent unit active) and says so,
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
agent_state() { agentbox_as_agent systemctl --user is-active claude-agent.service 2>/dev/null; }
problems() { grep -v -e '^result=' -e '=ok$' "$STATUS" 2>/dev/null | sed 's/^/  /'; }
where() { # one line of progress: what the box is doing now
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
  echo "--- claude-agent.service: $(agent_state || true)"
  # the agent's own log: text the agent wrote, made safe for whoever's terminal shows it
  { agentbox_as_agent journalctl --user -u claude-agent.service -n 15 --no-pager -o cat 2>/dev/null ||
    echo "(its journal is not readable here)"; } | agentbox_printable
  echo "--- /var/log/agentbox/provision.log (last lines)"
  tail -n 15 /var/log/agentbox/provision.log 2>/dev/null || echo "(not readable here)"
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
          echo "agentbox: ready after ${elapsed} s of waiting: $(result), claude-agent.service active"
          if [ "$(result)" = degraded ]; then
            echo "agentbox: WARNING: an optional step failed (the agent runs):"
            problems
          fi
          exit 0
        fi
        echo "agentbox: provisioning says $(result) but claude-agent.service is $(agent_state || true)"
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
