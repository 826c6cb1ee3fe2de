# shellcheck shell=bash
# The box's life and its notifications, checked on the running box: the readiness wait `pulumi up` runs, the
# persistent volume (a loop device standing in for the cloud's), a box re-created on the same volume, the
# workflow, and the ntfy notifications (a receiver on the box's own loopback stands in for the ntfy server).
# Sourced by box.sh after checks.sh; each check runs only when the user-data asks for the feature.

NTFY_PORT=8091
NTFY_LOG=/run/agentbox-test-ntfy.jsonl
WAIT_READY=/usr/local/bin/agentbox-wait-ready
WORKFLOW_STATE=/var/lib/agentbox/workflow/state
# where the cloud's udev would put a Hetzner volume (agentbox looks for scsi-0HC_Volume_*)
VOLUME_DEVICE=/dev/disk/by-id/scsi-0HC_Volume_4242
WORKFLOW_RUN= # the first boot's workflow run id
WAIT_READY_PID= # the background job above (finish_test ends it if it is still there)
T_WAIT_READY=- # seconds from boot until agentbox-wait-ready returned (what `pulumi up` waits, less SSH dialling)

ud_has() { grep -q "$1" "$RUN_DIR/user-data"; } # ud_has PATTERN: the box settings ask for something
wants_volume() { ud_has '^ *VOLUME=1$'; }
wants_workflow() { ud_has '^ *WORKFLOW=1$'; }
on_baked_image() { ud_has '^package_update: false$'; }
wants_notify() { ud_has 'path: /home/[a-z_-]*/.config/agentbox/notify.env$'; }

# --- the readiness wait ---------------------------------------------------------------------

# Started in the background right after boot: as soon as the agent user and the command exist, run the command
# as `pulumi up` does over SSH (as the agent) and record when it returned and what it said.
start_wait_ready() {
  (
    if ssh_from_harness; then
      # over SSH with the user's key, as pulumi up dials it: until sshd lets the agent in, every try fails (255)
      for _ in $(seq 600); do
        box_ssh "$AGENT" "$WAIT_READY" --timeout 600 >"$RUN_DIR/wait-ready.out" 2>&1
        rc=$?
        [ $rc = 255 ] || break
        sleep 1
      done
      echo "$rc $(now) ssh" >"$RUN_DIR/wait-ready.rc"
      exit
    fi
    for _ in $(seq 600); do
      cin id "$AGENT" >/dev/null 2>&1 && cin test -x "$WAIT_READY" && break
      sleep 0.5
    done
    cin runuser -u "$AGENT" -- "$WAIT_READY" --timeout 600 >"$RUN_DIR/wait-ready.out" 2>&1
    echo "$? $(now) nsenter" >"$RUN_DIR/wait-ready.rc"
  ) &
  # shellcheck disable=SC2034 # box.sh ends it
  WAIT_READY_PID=$!
}

check_wait_ready() {
  local rc t how out
  for _ in $(seq 120); do
    [ -s "$RUN_DIR/wait-ready.rc" ] && break
    sleep 1
  done
  read -r rc t how <"$RUN_DIR/wait-ready.rc" 2>/dev/null || rc=none
  # never left running: a process entered from outside would keep the box from powering off
  cin pkill -f "$WAIT_READY" 2>/dev/null
  out=$(cat "$RUN_DIR/wait-ready.out" 2>/dev/null)
  [ -n "${t:-}" ] && T_WAIT_READY=$(seconds_between "$T_BOOT" "$t")
  log "agentbox-wait-ready (${how:-?}) returned $rc, $T_WAIT_READY s after boot; it said:"
  while IFS= read -r line; do log "  $line"; done <<<"$out"
  if [ "$rc" = 0 ] && grep -q "^agentbox: ready after [0-9]* s of waiting: degraded, $(units_text) active\$" <<<"$out" &&
    grep -q '^  tailscale=failed: ' <<<"$out" && grep -q '^agentbox: waiting ([0-9]* s): ' <<<"$out"; then
    ok "agentbox-wait-ready (what pulumi up runs): progress while waiting, then ready, naming the failed optional step"
  else
    not_ok "agentbox-wait-ready (what pulumi up runs): progress while waiting, then ready, naming the failed optional step" "exit $rc: $out"
  fi
}

# With the agent stopped, the wait fails with the box's own error: the unit's state and its last log lines.
check_wait_ready_failure() {
  local out rc=0
  ucl stop "$UNIT"
  out=$(cin runuser -u "$AGENT" -- "$WAIT_READY" --timeout 5 2>&1) || rc=$?
  if [ "$rc" = 1 ] && grep -qF "$(units_text) is inactive" <<<"$out" &&
    grep -qF -- "--- $(units_text): inactive" <<<"$out" && grep -q -- '--- /var/lib/agentbox/status' <<<"$out"; then
    ok "agentbox-wait-ready fails (exit 1) with the box's status and the agent unit's state and log when the agent is down"
  else
    not_ok "agentbox-wait-ready fails (exit 1) with the box's status and the agent unit's state and log when the agent is down" "exit $rc: $out"
  fi
  ucl start "$UNIT"
  check "the agent runs again after that check" eventually 30 ucl is-active "$UNIT"
}

# On a baked image the box skips what the image holds: no package download for Claude Code.
check_baked_skip() {
  on_baked_image || return 0
  check "baked image: Claude Code came from the image, not a download" \
    cin grep -q 'from the baked image$' /var/log/agentbox/provision.log
}

# --- notifications ----------------------------------------------------------------------------

# A stand-in ntfy server on the box's loopback, run by the box's own systemd (it dies with the box). It records
# each POST: path, headers that matter, body; the Authorization header only as a hash (the file is root's, 0600).
start_ntfy_receiver() {
  # the notifications, and the permission requests of agentbox:approvals (checks-approvals.sh)
  wants_notify || wants_approvals || return 0
  eventually 60 cin systemctl is-system-running --quiet >/dev/null 2>&1
  # shellcheck disable=SC2016 # Python, run inside the box
  cin systemd-run --quiet --unit=agentbox-test-ntfy --property=UMask=0077 python3 -c '
import hashlib, http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        auth = self.headers.get("Authorization") or ""
        rec = {"path": self.path, "title": self.headers.get("Title"), "priority": self.headers.get("Priority"), "actions": self.headers.get("Actions"),
               "auth_sha256": hashlib.sha256(auth.encode()).hexdigest() if auth else None, "body": body}
        with open(sys.argv[1], "a") as f: f.write(json.dumps(rec) + "\n")
        self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), H).serve_forever()' "$NTFY_LOG" "$NTFY_PORT" ||
    log "the stand-in ntfy server did not start"
}

# received BODY_PATTERN: a POST whose body matches, on the stack's topic, with the box's title and the token
received() {
  cin cat "$NTFY_LOG" 2>/dev/null | python3 -c '
import json, sys
want_path, want_auth, pattern = sys.argv[1], sys.argv[2], sys.argv[3]
import re
for line in sys.stdin:
    r = json.loads(line)
    if re.search(pattern, r["body"]) and r["path"] == want_path and r["auth_sha256"] == want_auth and (r["title"] or "").startswith("agentbox "):
        print("received:", r["priority"], r["body"]); sys.exit(0)
sys.exit(1)' "$NTFY_TOPIC_PATH" "$NTFY_AUTH_SHA" "$1"
}

check_notifications() {
  wants_notify || return 0
  local token url event out t0 elapsed
  url=$(box_env NTFY_URL)
  token=$(box_env NTFY_TOKEN)
  NTFY_TOPIC_PATH=/${url##*/}
  NTFY_AUTH_SHA=$(printf 'Bearer %s' "$token" | sha256sum | cut -d' ' -f1)
  check "Claude Code's managed settings carry the hooks (valid JSON)" \
    cin jq -e '.hooks.Notification[0].hooks[0].async == true and .hooks.Stop[0].hooks[0].command == "/usr/local/lib/agentbox/notify hook"' \
    /etc/claude-code/managed-settings.json
  check "notify: the agent unit's restart reached the ntfy server (topic, token, box and project named)" \
    eventually 30 received '^\[agentbox/[a-z0-9-]+\] the agent stopped \('
  # the hooks, as Claude Code runs them: the agent's user, the event's JSON on stdin
  for event in 'Notification","message":"Claude needs your permission to use Bash","notification_type":"permission_prompt' 'Stop'; do
    as_agent env HOME="/home/$AGENT" sh -c "printf '%s' '{\"session_id\":\"9f1c\",\"transcript_path\":\"/tmp/t.jsonl\",\"cwd\":\"/home/$AGENT/workspace\",\"hook_event_name\":\"$event\"}' | /usr/local/lib/agentbox/notify hook"
  done
  check "notify: a Notification hook (permission prompt) arrives with its message and how to attach" \
    eventually 15 received 'waits for your permission: Claude needs your permission to use Bash \(attach: tmux -L agentbox attach -t claude\)$'
  check "notify: a Stop hook arrives" eventually 15 received 'finished a turn and waits for you$'
  # an unreachable server: the hook still returns at once with success, and says so on stderr only
  t0=$(now)
  out=$(as_agent env HOME="/home/$AGENT" sh -c "printf 'NTFY_URL=http://127.0.0.1:9/none\n' >/tmp/agentbox-test-notify.env &&
    printf '{\"hook_event_name\":\"Stop\"}' | AGENTBOX_NOTIFY_ENV=/tmp/agentbox-test-notify.env /usr/local/lib/agentbox/notify hook; echo \"exit \$?\"" 2>&1)
  elapsed=$(since "$t0")
  if grep -q '^exit 0$' <<<"$out" && awk -v e="$elapsed" 'BEGIN { exit !(e < 15) }'; then
    ok "notify: an unreachable ntfy server costs the hook ${elapsed} s and exits 0 (never blocks the agent)"
  else
    not_ok "notify: an unreachable ntfy server never blocks the agent" "after $elapsed s: $out"
  fi
}

# --- the workflow ---------------------------------------------------------------------------------

wf_get() { cin sed -n "s/^$1=//p" "$WORKFLOW_STATE"; }
workflow_is() { [ "$(wf_get run)" = "$1" ] && [ "$(wf_get state)" = "$2" ]; } # workflow_is RUN STATE
FIRST_RUN_OUTPUT= # the first box's workflow output, which a re-created box must still have
workflow_ended() { case $(wf_get state) in success | failure | timeout) return 0 ;; *) return 1 ;; esac; }

check_workflow() {
  wants_workflow || return 0
  local state started ended output minutes
  minutes=$(box_env WORKFLOW_TIMEOUT_MINUTES)
  if ! eventually $((minutes * 60 + 120)) workflow_ended >/dev/null; then
    not_ok "workflow: ends within its timeout" "$(cin cat "$WORKFLOW_STATE" 2>&1)"
    return
  fi
  state=$(wf_get state) started=$(wf_get started) ended=$(wf_get ended) output=$(wf_get output)
  # shellcheck disable=SC2034 # box.sh reads it after the reboot
  FIRST_RUN_OUTPUT=$output WORKFLOW_RUN=$(wf_get run)
  log "workflow: $(cin cat "$WORKFLOW_STATE" | tr '\n' ' ')"
  # Anthropic's API is out of reach here: Claude Code retries until the 1-minute timeout stops it
  if [ "$state" = timeout ] && [ $((ended - started)) -ge $((minutes * 60)) ] && [ $((ended - started)) -le $((minutes * 60 + 40)) ]; then
    ok "workflow: ended as timeout after $((ended - started)) s (its limit: $minutes min), never as success"
  else
    not_ok "workflow: ended as timeout within its limit, never as success" "$(cin cat "$WORKFLOW_STATE" 2>&1)"
  fi
  check "workflow: its full output is kept ($output), Claude Code's stream-json" \
    cin sh -c "test -s '$output' && head -n 1 '$output' | jq -e '.type == \"system\"'"
  check "workflow: the run's folder keeps a copy of the end state" cin cmp "$WORKFLOW_STATE" "${output%/*}/state"
  # agentbox:workflowPermissionMode: Claude Code's own first line says which mode the run is in
  # shellcheck disable=SC2016 # jq's $m
  if [ -n "$(box_env WORKFLOW_PERMISSION_MODE)" ]; then
    check "workflow: Claude Code runs it in permission mode $(box_env WORKFLOW_PERMISSION_MODE) (its init line says so)" \
      cin jq -se --arg m "$(box_env WORKFLOW_PERMISSION_MODE)" 'map(select(.type == "system" and .subtype == "init"))[0].permissionMode == $m' "$output"
  fi
  if wants_notify; then
    check "notify: the workflow's end reached the ntfy server" eventually 15 received 'the workflow ended: timeout after'
  fi
  if wants_volume; then
    check "workflow: the output is on the volume" on_home_mount "$output"
  fi
}

# after a reboot the run is not started again
check_workflow_after_reboot() {
  wants_workflow || return 0
  check "after reboot: the workflow is not run again (same run, same end)" workflow_is "$1" timeout
}

# --- the volume -------------------------------------------------------------------------------------

# before boot: a loop device where the cloud's volume would be
prepare_volume() {
  wants_volume || return 0
  box_volume "$RUN_DIR" "$VOLUME_DEVICE"
}

volume_origin_is() { [ "$(cin sed -n 's/^origin=//p' /var/lib/agentbox/volume)" = "$1" ]; }
volume_unit_ok() { cin systemctl is-enabled --quiet agentbox-volume.service && cin systemctl is-active --quiet agentbox-volume.service; }
user_manager_requires_volume() { grep -qw agentbox-volume.service <<<"$(cin systemctl show -p Requires --value "user@$AUID.service")"; }
file_says() { [ "$(cin cat "$1")" = "$2" ]; } # file_says PATH TEXT
on_home_mount() { [ "$(cin findmnt -n -o TARGET -T "$1")" = "/home/$AGENT" ]; }
# the filesystem on /home/agent is the one the first boot recorded, on the device where the volume shows up
home_is_volume() {
  local got want
  got=$(cin findmnt -n -o SOURCE,UUID "/home/$AGENT")
  want="$VOLUME_DEVICE $(cin sed -n 's/^uuid=//p' /var/lib/agentbox/volume)"
  echo "/home/$AGENT: $got (want $want)"
  [ "$(tr -s ' ' <<<"$got")" = "$want" ]
}

check_volume() {
  wants_volume || return 0
  check "volume: formatted on first boot (origin=new)" volume_origin_is new
  check "volume: /home/$AGENT is the volume's filesystem" home_is_volume
  check "volume: agentbox-volume.service is enabled and active" volume_unit_ok
  check "volume: the agent's user manager requires it" user_manager_requires_volume
  # work the next box must find: a file in the workspace and one in Claude Code's folder
  as_agent sh -c "echo '$NAME' >~/workspace/agentbox-test-marker && echo '$NAME' >~/.claude/agentbox-test-marker"
}

check_volume_after_reboot() {
  wants_volume || return 0
  check "after reboot: /home/$AGENT is the volume again" home_is_volume
}

# a new server on the same volume: everything the agent had is there, and nothing was formatted
check_recreated_on_volume() {
  local t0 t_active active
  wants_volume || return 0
  play_hostile_agent
  log "re-creating the box on the same volume (a fresh root disk, a new instance id)"
  box_recreate "$RUN_DIR" "$NAME" "$RUN_DIR/seed-user-data"
  t0=$(now)
  box_boot "$RUN_DIR" "$NAME" "$RUN_DIR/console-recreated.log"
  if box_wait_cloud_init "$RUN_DIR" "$CLOUD_INIT_TIMEOUT"; then
    ok "re-created box: cloud-init finished"
  else
    not_ok "re-created box: cloud-init finished" "$(tail -n 20 "$RUN_DIR/console-recreated.log")"
  fi
  AUID=$(cin id -u "$AGENT" 2>/dev/null)
  check_provisioning_not_held
  check "re-created box: the volume was kept, not formatted (origin=kept)" volume_origin_is kept
  check "re-created box: /home/$AGENT is the volume" home_is_volume
  check "re-created box: the workspace file of the first box is there" file_says "/home/$AGENT/workspace/agentbox-test-marker" "$NAME"
  check "re-created box: Claude Code's folder of the first box is there" file_says "/home/$AGENT/.claude/agentbox-test-marker" "$NAME"
  check "re-created box: the agent runs" eventually 60 ucl is-active "$UNIT"
  check_ssh_logins "re-created box: "
  check_hostile_volume_outcome
  active=$(unit_active_since) && t_active=$(seconds_between "$t0" "$active") && log "re-created box: agent active $t_active s after boot"
  if wants_workflow; then
    check "re-created box: the first box's workflow run is still on the volume" cin test -s "$FIRST_RUN_OUTPUT"
  fi
  collect_artifacts "-recreated"
}

# --- the release before destroy ----------------------------------------------------------------

# What `pulumi destroy` (and a replacement) runs before the volume is detached and the server deleted: the program's
# own RELEASE_SCRIPT, on this machine, with the user's key, as the engine runs it (components/agentBox.ts). On a
# stack the harness can reach, the agent then stops and stays stopped, and the home is unmounted clean; where it
# cannot (no allowSshFrom), the script says so and exits 0, so that destroy goes on.
release_script() { (cd "$BOOT_DIR/../.." && npx --no-install tsx -e 'process.stdout.write(require("./components/agentBox").RELEASE_SCRIPT)'); }
check_release_before_delete() {
  local script out rc=0 t0
  script=$(release_script) || {
    not_ok "release: the program's release script" "$script"
    return
  }
  t0=$(now)
  out=$(env -i PATH="$PATH" HOME="$HOME" AGENTBOX_SSH_TARGET="$AGENT@$(state_get "$RUN_DIR" BOX_IP)" \
    ${BOX_SSH_KEY:+AGENTBOX_SSH_KEY_FILE="$BOX_SSH_KEY"} sh -c "$script" 2>&1) || rc=$?
  log "release ($(since "$t0") s, exit $rc):"
  while IFS= read -r line; do log "  $line"; done <<<"$out"
  if ! ssh_from_harness; then
    if [ $rc = 0 ] && grep -q 'could not release the box over SSH' <<<"$out"; then
      ok "release: an unreachable box is reported and destroy goes on (exit 0)"
    else
      not_ok "release: an unreachable box is reported and destroy goes on (exit 0)" "exit $rc: $out"
    fi
    return
  fi
  if [ $rc = 0 ] && grep -q '^agentbox: released' <<<"$out"; then ok "release: run as pulumi destroy runs it, it released the box"; else not_ok "release: run as pulumi destroy runs it, it released the box" "exit $rc: $out"; fi
  check "release: the agent is stopped and stays stopped (user@$AUID.service inactive, masked until reboot)" release_stopped
  if wants_volume; then
    check "release: the home is unmounted" sh -c "! nsenter -t $LEADER -m findmnt -n /home/$AGENT >/dev/null"
    check "release: the volume's filesystem is clean (e2fsck -n)" e2fsck -n "$(state_get "$RUN_DIR" LOOP)"
  fi
}
release_stopped() {
  local state enabled
  state=$(cin systemctl is-active "user@$AUID.service")
  enabled=$(cin systemctl is-enabled "user@$AUID.service")
  echo "user@$AUID.service: $state, $enabled; claude: $(cin pgrep -u "$AGENT" -x claude || echo none)"
  [ "$state" != active ] && [ "$enabled" = masked-runtime ] && ! cin pgrep -u "$AGENT" -x claude >/dev/null
}
