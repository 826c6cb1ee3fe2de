# shellcheck shell=bash
# shellcheck disable=SC2016 # the commands in single quotes run inside the box, with their own arguments
# The agent as an adversary of root: everything the agent can write (its home, the volume, the workflow's state) is
# hostile input to every root-run script. These checks write what a hostile agent would, then run what root runs
# on it and look at what happened. Sourced by box.sh after checks-life.sh and checks-ssh.sh.

PWNED=/tmp/agentbox-pwned # a root-run command that executed agent-written text would have created one of these

no_pwned_file() {
  local found
  found=$(cin sh -c "ls -d $PWNED-* 2>/dev/null")
  [ -z "$found" ] || {
    echo "created by a command taken from an agent-written file: $found"
    return 1
  }
}

# agentbox-status (documented for root and the admin login) reads the workflow's state, which the agent writes.
check_status_on_crafted_state() {
  local state=/var/lib/agentbox/workflow/state saved out_root out_admin esc
  cin test -d "${state%/*}" || return 0
  saved=$(cin cat "$state" 2>/dev/null)
  esc=$(printf '\033')
  # shellcheck disable=SC2016 # the values are the attack: they must reach the box unexpanded
  as_agent sh -c 'printf "%s\n" "$@" >"$0"' "$state" 'state=success' "started=\$(touch $PWNED-started)" \
    "ended=a[\$(touch $PWNED-ended)]" "exit=\$(touch $PWNED-exit)" "timeout_minutes=\`touch $PWNED-minutes\`" \
    "output=${esc}]0;pwned${esc}\\ /tmp/x"
  out_root=$(cin agentbox-status 2>&1)
  out_admin=$([ -n "$ADMIN" ] && cin runuser -u "$ADMIN" -- agentbox-status 2>&1)
  log "agentbox-status as root on a crafted state: $(grep '^workflow:' <<<"$out_root")"
  check "hostile state: agentbox-status as root and as the admin ran nothing from the agent's workflow state" no_pwned_file
  if grep -q '^workflow:   success after ? s' <<<"$out_root" && ! grep -q "$esc" <<<"$out_root$out_admin"; then
    ok "hostile state: its values are refused (no number: '?'), its control characters never reach the terminal"
  else
    not_ok "hostile state: its values are refused, its control characters never reach the terminal" "$out_root"
  fi
  # a link to a file only root may read: shown as nothing, never read with root's rights
  as_agent ln -sfn /etc/shadow "$state"
  out_root=$(cin agentbox-status 2>&1)
  if ! grep -q '^workflow:.*root' <<<"$out_root" && ! grep -qF "$(cin head -c 12 /etc/shadow)" <<<"$out_root"; then
    ok "hostile state: a link to /etc/shadow in its place is read with the agent's rights (nothing shown)"
  else
    not_ok "hostile state: a link to /etc/shadow in its place is read with the agent's rights" "$out_root"
  fi
  # the real state back, as the agent wrote it (the checks after the reboot read it)
  as_agent sh -c 'rm -f "$0" && printf "%s\n" "$1" >"$0"' "$state" "$saved"
}

# Before the box is re-created on its volume: the earlier agent leaves links where provisioning (root) writes or
# reads in the home, so that following one would hand the next agent root's files.
HOSTILE_LINKS=(
  ".claude.json:/etc/shadow"
  ".config/agentbox:/etc/sudoers.d"
  ".ssh:/etc/ssh"
  ".config/systemd/user/default.target.wants:/etc/systemd/system"
)
play_hostile_agent() {
  local entry
  for entry in "${HOSTILE_LINKS[@]}"; do
    as_agent sh -c 'cd && mkdir -p "$(dirname "$0")" && rm -rf "$0" && ln -s "$1" "$0"' "${entry%%:*}" "${entry#*:}"
  done
  # and a FIFO where root used to read the volume's marker: opening it would hang whoever does
  as_agent sh -c 'cd && rm -f .agentbox-volume && mkfifo .agentbox-volume'
  # and a drop-in that holds the agent unit's start forever: provisioning must not wait for it
  as_agent sh -c 'cd && mkdir -p .config/systemd/user/claude-agent.service.d &&
    printf "[Service]\nExecStartPre=/bin/sleep infinity\nTimeoutStartSec=infinity\n" >.config/systemd/user/claude-agent.service.d/agentbox-test-hang.conf'
  log "hostile agent: $(as_agent sh -c 'cd && ls -ld .claude.json .config/agentbox .ssh .config/systemd/user/default.target.wants .agentbox-volume' 2>&1 | awk '{ print $1, $(NF-2), $(NF-1), $NF }' | paste -sd ';' -)"
}

# nothing on the root disk outside the home (and the workflow's and the hooks' state) is the agent's
outside_home_is_not_agents() {
  local found
  found=$(cin find / -xdev \( -user "$AGENT" -o -group "$AGENT" \) ! -path "/home/$AGENT" ! -path "/home/$AGENT/*" \
    ! -path '/var/lib/agentbox/workflow' ! -path '/var/lib/agentbox/workflow/*' \
    ! -path '/var/lib/agentbox/agent' ! -path '/var/lib/agentbox/agent/*' ! -path '/var/tmp/*' 2>&1)
  [ -z "$found" ] || {
    echo "$found"
    return 1
  }
}
root_files_intact() {
  cin stat -c '%n %U:%G %a' /etc/shadow /etc/sudoers.d /etc/ssh /etc/systemd/system
  [ "$(cin stat -c '%U:%G %a' /etc/shadow)" = "root:shadow 640" ] &&
    [ "$(cin stat -c '%U' /etc/sudoers.d /etc/ssh /etc/systemd/system | sort -u)" = root ] &&
    ! cin test -e /etc/ssh/authorized_keys && ! cin test -e /etc/sudoers.d/agent.env &&
    ! cin test -e /etc/systemd/system/claude-agent.service
}
real_home_files() { # the files provisioning puts in the home: real files and folders, the agent's, private
  local p
  for p in .ssh .config/agentbox .config/systemd/user/default.target.wants; do
    cin test -d "/home/$AGENT/$p" -a ! -L "/home/$AGENT/$p" || {
      echo "$p: $(cin ls -ld "/home/$AGENT/$p" 2>&1)"
      return 1
    }
  done
  owned "/home/$AGENT/.ssh" 700 && owned "/home/$AGENT/.ssh/authorized_keys" 600 &&
    owned "/home/$AGENT/.config/agentbox/agent.env" 600 && cin test -f "/home/$AGENT/.claude.json" -a ! -L "/home/$AGENT/.claude.json" &&
    claude_json_ok
}
home_mount_options() {
  local opts
  opts=$(cin findmnt -n -o OPTIONS "/home/$AGENT")
  echo "/home/$AGENT: $opts"
  [[ ,$opts, == *,nosuid,* && ,$opts, == *,nodev,* ]]
}

# Right after the re-creation: provisioning ended although the kept drop-in holds the agent's start, with the
# agent reported and the steps after it done; then the drop-in goes (as the agent) and the agent starts.
check_provisioning_not_held() {
  local status
  status=$(cin cat "$STATUS_FILE" 2>&1)
  if grep -q '^agent=failed: claude-agent.service is not active: activating' <<<"$status" &&
    grep -q '^result=failed$' <<<"$status" && grep -q '^tailscale=' <<<"$status" && grep -q '^updates=' <<<"$status"; then
    ok "hostile volume: a kept drop-in that holds the agent's start forever does not hold provisioning (agent=failed, the later steps ran)"
  else
    not_ok "hostile volume: a kept drop-in that holds the agent's start forever does not hold provisioning" "$status"
  fi
  as_agent sh -c 'rm -f ~/.config/systemd/user/claude-agent.service.d/agentbox-test-hang.conf'
  ucl daemon-reload
  ucl restart --no-block "$UNIT"
}

# After the re-creation: nothing outside the home became the agent's, and the user and the agent still get in.
check_hostile_volume_outcome() {
  check "hostile volume: nothing outside the home is the agent's (find / -user/-group $AGENT)" outside_home_is_not_agents
  check "hostile volume: /etc/shadow, /etc/sudoers.d, /etc/ssh, /etc/systemd/system untouched (no file written through a link)" root_files_intact
  check "hostile volume: the home's keys, credentials and .claude.json are real files again, the agent's, private" real_home_files
  check "hostile volume: the home is mounted nosuid,nodev" home_mount_options
  check "hostile volume: no root-run command executed anything the agent wrote" no_pwned_file
}
