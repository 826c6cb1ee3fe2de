# shellcheck shell=bash
# The agents of agentbox:agents: each one's settings, and what claude-session.sh does for one (AGENTBOX_AGENT), as
# the agent. Sourced (after lib.sh); only boxes with the key get this file.

# agentbox_agent NAME: exports that agent's settings (AGENTBOX_AGENT, AGENTBOX_SESSION, WORKSPACE, AGENT_WORK,
# AGENT_WORK_VALUE, AGENT_WORK_BRANCH); false for a name the box does not have
agentbox_agent() {
  local name kind value branch
  [ -r "$AGENTBOX_AGENTS_FILE" ] || return 1
  while IFS=$'\t' read -r name kind value branch; do
    [ "$name" = "$1" ] || continue
    export AGENTBOX_AGENT="$name" AGENTBOX_SESSION="$name" WORKSPACE="$AGENT_HOME/agents/$name" AGENT_WORK="$kind" \
      AGENT_WORK_VALUE="$value" AGENT_WORK_BRANCH="$branch"
    return 0
  done <"$AGENTBOX_AGENTS_FILE"
  return 1
}

# agentbox_agent_scope SCRIPT: claude in a scope of its own, bound to the agent's unit (stopped with it, and after it:
# Before= orders the unit's stop first, so that the unit ends by systemd's signal, not by hearing claude end) and
# holding the agent's share of the agents' memory. The pane is the shared tmux server's child: without the scope claude would
# live in that server's unit. Runs SCRIPT again in the scope and exits with it; when no scope can be made, returns.
agentbox_agent_scope() {
  local scoped rc
  agentbox_agent "$AGENTBOX_AGENT" || exit 1
  scoped=${XDG_RUNTIME_DIR:-/tmp}/agentbox/scoped-$AGENTBOX_EXIT_CHANNEL
  if [ -n "${AGENTBOX_SCOPED:-}" ]; then
    : >"$scoped"
    return 0
  fi
  mkdir -p "${scoped%/*}" && rm -f "$scoped"
  AGENTBOX_SCOPED=1 systemd-run --user --scope --quiet --collect \
    --unit="agentbox-claude-$AGENTBOX_AGENT-${AGENTBOX_EXIT_CHANNEL##*-}" \
    -p BindsTo="$AGENTBOX_UNIT" -p Before="$AGENTBOX_UNIT" -p OOMPolicy=continue \
    -p MemoryHigh="${AGENT_MEMORY_HIGH_PCT:-75}%" -p MemoryMax="${AGENT_MEMORY_MAX_PCT:-80}%" -- "$1"
  rc=$?
  # the scope ran the script again, which did the rest; else none could be made, and the caller does the rest
  if [ -e "$scoped" ]; then
    rm -f "$scoped"
    exit "$rc"
  fi
  echo "agentbox: systemd-run could not give claude a scope of its own; it runs in the tmux server's unit"
}

# The workspace is made the first time the agent starts; one that exists is never touched (a kept volume's). Until it
# can be made (the stack's clone in ~/workspace missing, a repository unreachable) the pane says why and the unit
# restarts.
# never waiting on a prompt, nor for ever on a stalled transfer
agentbox_git() {
  GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND="ssh -o StrictHostKeyChecking=accept-new -o BatchMode=yes" timeout 1800 git "$@"
}
agentbox_make_workspace() {
  local main=$AGENT_HOME/workspace
  [ -d "$WORKSPACE" ] && return 0
  mkdir -p "${WORKSPACE%/*}" || return 1
  case $AGENT_WORK in
    worktree)
      agentbox_git -C "$main" rev-parse --git-dir >/dev/null 2>&1 || {
        echo "no clone of the stack's repository in $main (see agentbox-status: repo)"
        return 1
      }
      if [ "$(agentbox_git -C "$main" symbolic-ref --quiet --short HEAD)" = "$AGENT_WORK_VALUE" ]; then
        echo "$main has $AGENT_WORK_VALUE checked out, and git checks a branch out in one place only: give the agent another (its worktree key)"
        return 1
      fi
      agentbox_git -C "$main" worktree prune
      # the branch where it exists (here or on origin: git then tracks origin's), else a new one from the clone's HEAD
      if agentbox_git -C "$main" show-ref --quiet --verify "refs/heads/$AGENT_WORK_VALUE" ||
        agentbox_git -C "$main" show-ref --quiet --verify "refs/remotes/origin/$AGENT_WORK_VALUE"; then
        agentbox_git -C "$main" worktree add --quiet "$WORKSPACE" "$AGENT_WORK_VALUE"
      else
        agentbox_git -C "$main" worktree add --quiet -b "$AGENT_WORK_VALUE" "$WORKSPACE"
      fi
      ;;
    repo)
      # into a folder of its own first: a clone cut short is never taken for the workspace
      rm -rf "$WORKSPACE.clone"
      local safe=()
      # a repository on the box itself is root's: safe to read (see provision.sh's clone_repo)
      [[ $AGENT_WORK_VALUE == file:///* ]] && safe=(--upload-pack "git -c safe.directory=${AGENT_WORK_VALUE#file://} upload-pack")
      agentbox_git clone "${safe[@]}" --quiet ${AGENT_WORK_BRANCH:+--branch "$AGENT_WORK_BRANCH"} -- \
        "$AGENT_WORK_VALUE" "$WORKSPACE.clone" && mv "$WORKSPACE.clone" "$WORKSPACE"
      ;;
    *) mkdir "$WORKSPACE" ;;
  esac
}
# Claude Code's folder trust, which nobody is there to give: the first box's .claude.json has it for every agent; a
# kept one from an earlier box may lack an agent added since.
agentbox_trust_workspace() {
  local f=$HOME/.claude.json tmp
  [ -f "$f" ] && command -v jq >/dev/null || return 0
  jq -e --arg w "$WORKSPACE" '.projects[$w].hasTrustDialogAccepted == true' "$f" >/dev/null 2>&1 && return 0
  tmp=$(mktemp "$f.XXXXXX") || return 0
  if ! { jq --arg w "$WORKSPACE" '.projects[$w].hasTrustDialogAccepted = true' "$f" >"$tmp" && chmod 0600 "$tmp" &&
    mv "$tmp" "$f"; }; then
    rm -f "$tmp"
  fi
}
agentbox_agent_workspace() {
  if ! agentbox_make_workspace; then
    echo "agentbox: the workspace of agent $AGENTBOX_AGENT ($WORKSPACE) could not be made; trying again in 30 s"
    sleep 30
    exit 1
  fi
  agentbox_trust_workspace
}
