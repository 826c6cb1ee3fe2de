# shellcheck shell=bash
# Several agents on one box (agentbox:agents; the digitalocean CI stack has two, in worktrees and a clone of a
# repository the harness puts on the box): each is supervised on its own, on the agents' shared tmux server. Sourced
# by box.sh; nothing here runs for a stack without the key, whose one agent the other checks cover. The contract is
# in README.md ("Several agents").

AGENTS=${AGENTS:-}    # the names, comma-separated (box.sh reads them from the user-data)
OTHER_BEFORE=''       # the second agent's claude pid, unit pid and restart count before the first is killed
FIRST_RESTARTS=''     # the first agent's restart count before the kills

agent_names() { tr ',' '\n' <<<"$AGENTS"; }
agent_unit_of() { echo "claude-agent@$1.service"; }
# "CLAUDE_PID MAIN_PID NRESTARTS" of an agent
agent_snapshot() { echo "$(agent_claude "$1" || echo -) $(ucl show -p MainPID -p NRestarts --value "$(agent_unit_of "$1")" | paste -sd ' ' -)"; }
restarts_of() { ucl show -p NRestarts --value "$(agent_unit_of "$1")"; }

session_shows_claude() { # NAME: that agent's pane on the shared server shows Claude Code
  local out
  out=$(agent_tmux capture-pane -p -t "=$1:" 2>&1)
  if ! grep -q 'Claude Code' <<<"$out"; then
    grep -v '^[[:space:]]*$' <<<"$out" | tail -n 15
    return 1
  fi
}

tmux_server_own_unit() { # the agents' tmux server is the main process of agentbox-tmux.service
  local server main
  # shellcheck disable=SC2153 # AGENT is checks.sh's
  server=$(cin pgrep -u "$AGENT" -f '^/usr/bin/tmux -L agentbox -f /usr/local/lib/agentbox/tmux.conf -D$') || return 1
  main=$(ucl show -p MainPID --value agentbox-tmux.service)
  echo "tmux server $server, agentbox-tmux.service MainPID $main"
  [ "$server" = "$main" ]
}

scope_share() { # NAME: its claude's scope is bound to its unit and holds its share of the agents' memory
  local pid scope props want_high want_max
  pid=$(agent_claude "$1") || return 1
  scope=$(cin sed -n 's#^0::.*/\([^/]*\.scope\)$#\1#p' "/proc/$pid/cgroup")
  props=$(ucl show -p BindsTo -p MemoryHigh -p MemoryMax -p OOMPolicy "$scope")
  echo "$scope: $(paste -sd ' ' <<<"$props")"
  want_high=$(box_env AGENT_MEMORY_HIGH_PCT) want_max=$(box_env AGENT_MEMORY_MAX_PCT)
  grep -qx "BindsTo=$(agent_unit_of "$1")" <<<"$props" && grep -qx 'OOMPolicy=continue' <<<"$props" &&
    near_share "$(sed -n 's/^MemoryMax=//p' <<<"$props")" "$want_max" &&
    near_share "$(sed -n 's/^MemoryHigh=//p' <<<"$props")" "$want_high"
}
near_share() { # BYTES PERCENT: BYTES is PERCENT of the RAM systemd sees, give or take 1% (its rounding)
  local ram
  # shellcheck disable=SC2016 # awk's fields
  ram=$(cin awk '/^MemTotal:/ { print $2 * 1024 }' /proc/meminfo)
  [[ $1 =~ ^[0-9]+$ ]] && [ $(($1 - ram * $2 / 100)) -lt $((ram / 100)) ] && [ $((ram * $2 / 100 - $1)) -lt $((ram / 100)) ]
}

works_in() { # NAME DIR: its claude's working directory
  local pid cwd
  pid=$(agent_claude "$1") || return 1
  cwd=$(cin readlink "/proc/$pid/cwd")
  echo "claude of $1 runs in $cwd"
  [ "$cwd" = "$2" ]
}

worktree_on() { # DIR BRANCH: a worktree of ~/workspace with BRANCH checked out
  local list
  list=$(as_agent git -C "/home/$AGENT/workspace" worktree list --porcelain 2>&1)
  echo "$list"
  grep -qx "worktree $1" <<<"$list" && [ "$(as_agent git -C "$1" rev-parse --abbrev-ref HEAD)" = "$2" ]
}

own_clone_of() { # DIR URL: a repository of its own (not a worktree), cloned from URL
  as_agent test -d "$1/.git" && [ "$(as_agent git -C "$1" remote get-url origin)" = "$2" ]
}

# over SSH as the user logs in, with the user's key: on the box's own loopback (the digitalocean stack opens no
# public SSH), from this side's ssh
loopback_ssh() {
  nsenter -t "$LEADER" -n ssh -F /dev/null -i "$BOX_SSH_KEY" -o IdentitiesOnly=yes -o IdentityAgent=none \
    -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
    -o ConnectTimeout=10 "$AGENT@127.0.0.1" "$@"
}
ssh_attach_target_of() { # NAME: the attach command's target, over ssh: that agent's session, showing Claude Code
  local out
  out=$(loopback_ssh "tmux -L agentbox has-session -t =$1 && tmux -L agentbox capture-pane -p -t =$1:" 2>&1)
  grep -q 'Claude Code' <<<"$out" || {
    echo "$out" | tail -n 15
    return 1
  }
}

agents_before_kills() {
  [ -n "$AGENTS" ] || return 0
  local second
  second=$(agent_names | sed -n 2p)
  eventually 30 agent_claude "$second" >/dev/null
  OTHER_BEFORE=$(agent_snapshot "$second")
  FIRST_RESTARTS=$(restarts_of "${AGENTS%%,*}")
  log "agents before the kills: $second (claude, unit pid, restarts) $OTHER_BEFORE; ${AGENTS%%,*} restarted $FIRST_RESTARTS times"
}

check_agents() {
  [ -n "$AGENTS" ] || return 0
  local name first=${AGENTS%%,*} second out
  second=$(agent_names | sed -n 2p)
  for name in $(agent_names); do
    check "agents: $(agent_unit_of "$name") is enabled and active" enabled_and_active "$(agent_unit_of "$name")"
    check "agents: tmux session '$name' on the agents' server shows Claude Code" eventually 30 session_shows_claude "$name"
    check "agents: $name's claude runs in its own scope, bound to its unit, with its share of the memory" \
      eventually 30 scope_share "$name"
    check "agents: $name works in /home/$AGENT/agents/$name" works_in "$name" "/home/$AGENT/agents/$name"
  done
  check "agents: their tmux server is agentbox-tmux.service's main process, no agent's" tmux_server_own_unit
  check "agents: $first's workspace is a worktree of ~/workspace on its branch (fix-api, from origin)" \
    worktree_on "/home/$AGENT/agents/$first" fix-api
  check "agents: $second's workspace is a clone of its own" \
    own_clone_of "/home/$AGENT/agents/$second" "$(box_env REPO_URL)"
  # the kills of check_restart_after_kill were all the first agent's
  check "agents: $KILL_ROUNDS kills of $first's claude left $second alone (same claude, unit pid and restart count)" \
    same_as "$OTHER_BEFORE" "$(agent_snapshot "$second")"
  check "agents: $first's restart count went up by $KILL_ROUNDS" \
    same_as "$((FIRST_RESTARTS + KILL_ROUNDS))" "$(restarts_of "$first")"
  check "agents: agentbox-status shows each agent's state and work" lines_match "$(as_agent agentbox-status 2>&1)" \
    "^agent $first: +active/running .*\\(claude-agent@$first\\.service\\); ~/agents/$first \\(worktree, branch fix-api\\)\$" \
    "^agent $second: +active/running .*\\(claude-agent@$second\\.service\\); ~/agents/$second \\(clone of "
  check "agents: the login banner lists them" lines_match "$(as_agent bash -lic true 2>&1)" \
    "^agentbox: [a-z]+\\. Agents: $first, $second \\(tmux -L agentbox attach -t <agent>\\)\\. Details: agentbox-status\$"
  check "agents: agentbox-wait-ready waits for every agent" lines_match "$(as_agent agentbox-wait-ready --timeout 30 2>&1)" \
    "^agentbox: ready after [0-9]+ s of waiting: [a-z]+, claude-agent@$first\\.service,claude-agent@$second\\.service active\$"
  for name in $(agent_names); do
    check "agents: over ssh as $AGENT, the attach target of $name (tmux -L agentbox attach -t $name) shows Claude Code" \
      eventually 30 ssh_attach_target_of "$name"
  done
}

enabled_and_active() { ucl is-enabled "$1" && ucl is-active "$1"; }
same_as() { # WANT GOT
  echo "want '$1', got '$2'"
  [ "$1" = "$2" ]
}
lines_match() { # TEXT PATTERN...: every extended regex matches a line of TEXT (the text is the evidence otherwise)
  local text=$1 pattern
  shift
  for pattern in "$@"; do
    grep -Eq -- "$pattern" <<<"$text" || {
      echo "no line matches /$pattern/ in:"
      echo "$text"
      return 1
    }
  done
}

check_agents_after_reboot() {
  [ -n "$AGENTS" ] || return 0
  local name
  for name in $(agent_names); do
    check "after reboot: agents: $(agent_unit_of "$name") is active" eventually 120 ucl is-active "$(agent_unit_of "$name")"
    check "after reboot: agents: tmux session '$name' shows Claude Code" eventually 60 session_shows_claude "$name"
    check "after reboot: agents: $name works in its workspace again" eventually 30 works_in "$name" "/home/$AGENT/agents/$name"
  done
}
