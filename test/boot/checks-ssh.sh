# shellcheck shell=bash
# The user's way in, as the user takes it: ssh to the box's address with the run's key (BOX_SSH_KEY, made by
# run.sh and added to the stack's sshPublicKeys), from the host end of the veth, which the hetzner CI stack's
# allowSshFrom covers. No nsenter, no agent forwarding, no config of this machine's: `ssh -F /dev/null`.
# Sourced by box.sh after checks.sh.

BOX_SSH_KEY=${BOX_SSH_KEY:-}

# ud_file PATH: the content of a write_files entry of the run's user-data (decoded as cloud-init does)
ud_file() {
  /usr/bin/python3 - "$RUN_DIR/user-data" "$1" <<'EOF'
import base64, gzip, sys, yaml
for f in yaml.safe_load(open(sys.argv[1])).get("write_files") or []:
    if f.get("path") == sys.argv[2]:
        c = f.get("content", "")
        sys.stdout.write(gzip.decompress(base64.b64decode(c)).decode() if f.get("encoding") == "gz+b64" else c)
        sys.exit(0)
sys.exit(1)
EOF
}

# the CIDRs of allowSshFrom, as the rendered host firewall has them (one a line)
allow_ssh_from() {
  ud_file /etc/agentbox/firewall.nft | sed -n 's/.*saddr { \(.*\) } tcp dport 22 accept.*/\1/p' | tr ',' '\n' | tr -d ' '
}

# true when the stack lets the harness's side of the veth in, and the run has a key the box knows
ssh_from_harness() {
  [ -n "$BOX_SSH_KEY" ] && [ -r "$BOX_SSH_KEY" ] || return 1
  grep -qF "$(cut -d' ' -f2 "$BOX_SSH_KEY.pub")" "$RUN_DIR/user-data" || return 1
  allow_ssh_from | /usr/bin/python3 -c '
import ipaddress, sys
host = ipaddress.ip_address(sys.argv[1])
sys.exit(0 if any(host in ipaddress.ip_network(c.strip(), strict=False) for c in sys.stdin if c.strip()) else 1)' \
    "$(state_get "$RUN_DIR" HOST_IP)"
}

# box_ssh USER COMMAND...: one login as USER (a new connection each time, as a user's terminal makes)
box_ssh() {
  local user=$1
  shift
  ssh -F /dev/null -i "$BOX_SSH_KEY" -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10 \
    "$user@$(state_get "$RUN_DIR" BOX_IP)" "$@"
}

ssh_whoami_is() { # USER: logs in as USER, and is USER there
  local out
  out=$(box_ssh "$1" id -un 2>&1)
  echo "$out"
  [ "$out" = "$1" ]
}
ssh_attach_target() { # the attach command's target, over ssh as the agent: the session, showing Claude Code
  local out
  out=$(box_ssh "$AGENT" "tmux -L agentbox has-session -t $SESSION && tmux -L agentbox capture-pane -p -t $SESSION" 2>&1)
  grep -q 'Claude Code' <<<"$out" || {
    echo "$out" | tail -n 15
    return 1
  }
}
ssh_refused() { # USER: the box refuses the login
  local out rc=0
  out=$(box_ssh "$1" true 2>&1) || rc=$?
  echo "exit $rc: $out"
  [ "$rc" = 255 ] && grep -q 'Permission denied' <<<"$out"
}
ssh_no_sudo() { # USER: logs in, and sudo refuses
  local out rc=0
  out=$(box_ssh "$1" sudo -n true 2>&1) || rc=$?
  echo "exit $rc: $out"
  [ "$rc" = 1 ] && grep -qi 'password is required\|not in the sudoers\|may not run sudo' <<<"$out"
}
ssh_status() { # agentbox-status over ssh as the agent, as npm run status runs it
  local out
  out=$(box_ssh "$AGENT" agentbox-status 2>&1)
  grep -Eq '^agent: +active/running' <<<"$out" || {
    echo "$out"
    return 1
  }
}
ssh_dropped() { # no allowSshFrom: the host firewall drops SSH from here (the connection times out, nothing answers)
  local out rc=0
  out=$(ssh -F /dev/null -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null "$AGENT@$(state_get "$RUN_DIR" BOX_IP)" true 2>&1) || rc=$?
  echo "exit $rc: $out"
  [ "$rc" = 255 ] && grep -q 'timed out' <<<"$out"
}

# check_ssh_logins LABEL: the user's way in, on this boot of the box
check_ssh_logins() {
  local label=$1
  if ! ssh_from_harness; then
    if [ -z "$(allow_ssh_from)" ]; then
      check "${label}ssh: without allowSshFrom the host firewall drops SSH from outside (no answer)" ssh_dropped
    else
      not_ok "${label}ssh: the run's key and an allowSshFrom covering $(state_get "$RUN_DIR" HOST_IP)" \
        "BOX_SSH_KEY=${BOX_SSH_KEY:-unset}; allowSshFrom: $(allow_ssh_from | paste -sd, -)"
    fi
    return
  fi
  check "${label}ssh $AGENT@box with the user's key: logged in as $AGENT" eventually 60 ssh_whoami_is "$AGENT"
  check "${label}ssh: the attach command's target (tmux -L agentbox, session $SESSION) shows Claude Code" eventually 40 ssh_attach_target
  check "${label}ssh: agentbox-status as $AGENT (what npm run status runs)" ssh_status
  if [ -n "$ADMIN" ]; then
    check "${label}ssh $ADMIN@box: sudo -n true works" box_ssh "$ADMIN" sudo -n true
    check "${label}ssh $AGENT@box: sudo refused (the agent is not root)" ssh_no_sudo "$AGENT"
  fi
  check "${label}ssh root@box: refused" ssh_refused root
}
