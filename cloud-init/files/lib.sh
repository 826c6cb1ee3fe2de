# shellcheck shell=bash
# Helpers shared by agentbox's scripts on the box. Sourced, never run.

# The tmux server of the claude-agent service has a socket of its own, so that the user's own tmux sessions never
# share its lifetime (systemd stops that server whenever Claude Code is restarted).
export AGENTBOX_TMUX_SOCKET=agentbox AGENTBOX_SESSION=claude

# The box's agents (agentbox:agents), from /etc/agentbox/agents (root's, written by cloud-init): one a line,
# NAME<TAB>KIND<TAB>VALUE<TAB>BRANCH, KIND being worktree (VALUE its branch), repo (VALUE the URL, BRANCH its branch)
# or empty. Without the file the box has the one agent of every earlier box: unit claude-agent.service, tmux session
# claude, workspace ~/workspace.
AGENTBOX_AGENTS_FILE=/etc/agentbox/agents
agentbox_agent_names() { if [ -r "$AGENTBOX_AGENTS_FILE" ]; then cut -f 1 "$AGENTBOX_AGENTS_FILE"; else echo claude; fi; }
agentbox_agent_unit() { if [ -r "$AGENTBOX_AGENTS_FILE" ]; then echo "claude-agent@$1.service"; else echo claude-agent.service; fi; }
# every agent's unit, one a line (provisioning starts them, the readiness wait waits for them)
agentbox_agent_units() {
  local name
  for name in $(agentbox_agent_names); do agentbox_agent_unit "$name"; done
}
# Exports the KEY=VALUE lines of a file literally: no quotes, no expansion, nothing is ever run. The files are
# written by agentbox (values are validated to one line), and the same format is valid for systemd's
# EnvironmentFile=.
agentbox_load_env() {
  local line key
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in '' | '#'*) continue ;; esac
    key=${line%%=*}
    [[ $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    export "$key=${line#*=}"
  done <"$1"
}

# True when Claude Code has a saved conversation for directory $1 (it keeps them in
# ~/.claude/projects/<the path with every non-alphanumeric character replaced by "-">/<session>.jsonl).
agentbox_has_conversation() {
  local dir=${1//[^a-zA-Z0-9]/-}
  compgen -G "$HOME/.claude/projects/$dir/*.jsonl" >/dev/null
}

# Runs a command as the agent, with its user manager's runtime dir, from the agent itself, root, or a login that may
# sudo to the agent (the admin login): the agent's user manager and tmux server belong to the agent.
agentbox_as_agent() {
  local uid
  uid=$(id -u "$AGENT_USER") || return 1
  if [ "$(id -u)" = "$uid" ]; then
    env XDG_RUNTIME_DIR="/run/user/$uid" "$@"
  elif [ "$(id -u)" = 0 ]; then
    # In a session of its own, without root's terminal (a process of the agent's must not get hold of it), and
    # bounded: what it talks to (the user manager's socket, the tmux server) is the agent's and could stall it.
    timeout -k 5 "${AGENTBOX_AS_AGENT_TIMEOUT:-20}" setsid -w runuser -u "$AGENT_USER" -- \
      env XDG_RUNTIME_DIR="/run/user/$uid" "$@" </dev/null
  else
    timeout -k 5 "${AGENTBOX_AS_AGENT_TIMEOUT:-20}" sudo -n -u "$AGENT_USER" env XDG_RUNTIME_DIR="/run/user/$uid" "$@" \
      </dev/null 2>/dev/null
  fi
}

# Text the agent could have shaped, made safe for a terminal: C0 controls but tab and newline, DEL, and the C1
# controls as UTF-8 encodes them (a terminal obeys either) are dropped. A filter: stdin to stdout.
# The sed loops: one pass would join the halves of a split C1 control ("\xc2\xc2\x9b\x9b") into a whole one.
agentbox_printable() { LC_ALL=C tr -d '\000-\010\013-\037\177' | LC_ALL=C sed ':a; s/\xc2[\x80-\x9f]//g; ta'; }
# What a command run as the agent prints, read by root with a bound of root's own: a process of the agent's could
# hold the pipe open (timeout ends the command, not what the agent started beside it). agentbox_agent_output CMD...
agentbox_agent_output() { agentbox_as_agent "$@" 2>/dev/null | timeout "${AGENTBOX_AS_AGENT_TIMEOUT:-20}" head -c 65536; }
# A file the agent may write, read by root or the admin login with the agent's rights, at most 4 KiB: a link to a
# root-only file reads as nothing, a FIFO times out. Every value in it is still to be checked before use.
agentbox_agent_file() { agentbox_agent_output timeout 5 head -c 4096 -- "$1"; }

# Prints the persistent volume's block device (at $VOLUME_GLOB, where the cloud's udev links it), waiting up to
# SECONDS for it to appear; with UUID, only the volume whose filesystem has it. agentbox_volume_device SECONDS [UUID]
agentbox_volume_device() {
  local dev _
  for _ in $(seq "$1"); do
    for dev in $VOLUME_GLOB; do
      if [ -b "$dev" ] && { [ -z "${2:-}" ] || [ "$(blkid -s UUID -o value "$dev")" = "$2" ]; }; then
        echo "$dev"
        return 0
      fi
    done
    sleep 1
  done
  return 1
}

# Runs COMMAND until it succeeds, at most ATTEMPTS times: after the first failure it waits FIRST_DELAY seconds, and
# twice as long after each further one (5 attempts from 5 s wait 5, 10, 20 and 40 s). Each retry is said on stderr
# (a caller may silence the command's stdout). Returns the command's last exit status.
# agentbox_retry ATTEMPTS FIRST_DELAY COMMAND...
agentbox_retry() {
  local attempts=$1 delay=$2 n=1 rc
  shift 2
  while :; do
    "$@" && return 0
    rc=$?
    [ "$n" -lt "$attempts" ] || return "$rc"
    echo "agentbox: $1 failed (attempt $n of $attempts, exit $rc); trying again in $delay s" >&2
    sleep "$delay"
    n=$((n + 1)) delay=$((delay * 2))
  done
}
