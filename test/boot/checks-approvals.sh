# shellcheck shell=bash
# agentbox:approvals on the running box: the agent's permission requests, answered from a phone. Sourced by box.sh
# after checks-life.sh (its stand-in ntfy server records each notification's Actions header).
#
# Tailscale cannot be installed here (its servers are unreachable), so the harness makes what the receiver meets on
# a real box itself: an interface named tailscale0 in the box's network namespace, a veth whose other end is in a
# namespace of its own standing in for the phone (100.64.77.2, its owner phone-owner@example.com) and for a device
# of someone else (100.64.77.3), and a stand-in for tailscaled's LocalAPI socket that answers whois for them.
# Everything else is the box's own: the receiver, its unit, the hook Claude Code runs, the firewall.

APPROVE_PORT=876
TAILNET_BOX=100.64.77.1
TAILNET_PHONE=100.64.77.2
TAILNET_STRANGER=100.64.77.3
HOOK_OUT=/run/agentbox-test-hook

wants_approvals() { ud_has '^ *APPROVALS=1$'; }

# awaited_every INTERVAL SECONDS COMMAND...: COMMAND every INTERVAL seconds until it succeeds, for up to SECONDS;
# prints the output of the attempt that succeeded (eventually keeps only the last failure's)
awaited_every() {
  local every=$1 deadline=$(($(date +%s) + $2)) out
  shift 2
  until out=$("$@" 2>/dev/null); do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep "$every"
  done
  printf '%s\n' "$out"
}
awaited() { awaited_every 1 "$@"; }
# every 0.1 s, for the figures
awaited_fast() { awaited_every 0.1 "$@"; }

# the phone's namespace, joined to the box's by a veth whose box end is its tailscale0 (net_down removes both)
phone_up() {
  local netns phone
  netns=$(state_get "$RUN_DIR" NETNS)
  phone=${netns}p
  ip netns add "$phone" || return 1
  state_set "$RUN_DIR" PHONE_NETNS "$phone"
  ip -n "$netns" link add tailscale0 type veth peer name phone0 netns "$phone" &&
    ip -n "$netns" addr add "$TAILNET_BOX/24" dev tailscale0 && ip -n "$netns" link set tailscale0 up &&
    ip -n "$phone" addr add "$TAILNET_PHONE/24" dev phone0 && ip -n "$phone" addr add "$TAILNET_STRANGER/24" dev phone0 &&
    ip -n "$phone" link set lo up && ip -n "$phone" link set phone0 up
}

# A stand-in for tailscaled's LocalAPI (/run/tailscale/tailscaled.sock), run by the box's systemd: whois answers
# for the phone and the stranger's device as tailscaled does (Node, UserProfile), 404 for anything else.
start_tailscaled_stand_in() {
  cin mkdir -p /run/tailscale
  # shellcheck disable=SC2016 # Python, run inside the box
  cin systemd-run --quiet --unit=agentbox-test-tailscaled python3 -c '
import http.server, json, os, socketserver, sys, urllib.parse
PEERS = {sys.argv[2]: ("phone-owner@example.com", "phone"), sys.argv[3]: ("stranger@example.com", "laptop-of-someone-else")}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        q = urllib.parse.urlsplit(self.path)
        addr = urllib.parse.parse_qs(q.query).get("addr", [""])[0].rsplit(":", 1)[0]
        if q.path != "/localapi/v0/whois" or addr not in PEERS or self.headers.get("Host") != "local-tailscaled.sock":
            self.send_response(404); self.end_headers(); return
        login, name = PEERS[addr]
        body = json.dumps({"Node": {"ID": 7, "Name": name + ".tailnet.ts.net.", "ComputedName": name},
                           "UserProfile": {"ID": 9, "LoginName": login, "DisplayName": login}}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def address_string(self): return "unix"
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer): pass
if os.path.exists(sys.argv[1]): os.unlink(sys.argv[1])
s = S(sys.argv[1], H); os.chmod(sys.argv[1], 0o666); s.serve_forever()' \
    /run/tailscale/tailscaled.sock "$TAILNET_PHONE" "$TAILNET_STRANGER"
}

# tap URL [SOURCE]: a POST to URL from the phone's namespace (from SOURCE, default the phone's own address):
# prints the status and the answer's text
tap() {
  ip netns exec "$(state_get "$RUN_DIR" PHONE_NETNS)" /usr/bin/python3 - "$1" "${2:-$TAILNET_PHONE}" <<'EOF'
import http.client, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port, timeout=10, source_address=(sys.argv[2], 0))
c.request("POST", u.path)
r = c.getresponse()
print(r.status, r.read().decode().strip())
EOF
}

# The documented PermissionRequest input (Claude Code's hooks reference), with this call's own command
request_json() { # request_json COMMAND
  printf '{"session_id":"s-%s","transcript_path":"/tmp/t.jsonl","cwd":"/home/%s/workspace","permission_mode":"default","hook_event_name":"PermissionRequest","tool_name":"Bash","tool_input":{"command":"%s","description":"a test"},"permission_suggestions":[{"type":"addRules","rules":[{"toolName":"Bash","ruleContent":"%s"}],"behavior":"allow","destination":"localSettings"}]}' \
    "$2" "$AGENT" "$1" "$1"
}

# hook_start NAME COMMAND [AGENT]: the hook as Claude Code runs it, in the background: the agent's user, the JSON on
# stdin, (with agentbox:agents) the agent's name from its unit; its output and exit status into $HOOK_OUT/NAME.*
hook_start() {
  cin install -d -m 0777 "$HOOK_OUT"
  request_json "$2" "$1" | as_agent env HOME="/home/$AGENT" AGENTBOX_AGENT="${3:-}" sh -c \
    "/usr/local/lib/agentbox/approve hook >$HOOK_OUT/$1.out; echo \$? >$HOOK_OUT/$1.rc" &
}
hook_done() { cin test -s "$HOOK_OUT/$1.rc"; }
hook_result() { cin cat "$HOOK_OUT/$1.out"; }

# button_url LABEL TEXT: the URL of the LABEL button (Allow, Deny) of the notification whose body has TEXT, once it came
button_url() {
  cin cat "$NTFY_LOG" 2>/dev/null | /usr/bin/python3 -c '
import json, re, sys
label, text = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    r = json.loads(line)
    if text in r["body"] and r.get("actions"):
        m = re.search(r"http, %s, (http://[^,]+/%s), clear=true" % (label, label.lower()), r["actions"])
        if m: print(m.group(1)); sys.exit(0)
sys.exit(1)' "$1" "$2"
}
notified() { button_url Allow "$1"; }
denied_by() { button_url Deny "$1"; }
notification_cut() { # notification_cut TEXT: its only button is Deny, and its text says it was cut
  local r
  r=$(notification_of "$1")
  echo "$r" | cut -c 1-300
  grep -q 'too long to show' <<<"$r" && ! grep -q 'http, Allow' <<<"$r" && grep -q 'http, Deny' <<<"$r"
}
notification_of() { # notification_of COMMAND: its record
  cin cat "$NTFY_LOG" | /usr/bin/python3 -c '
import json, sys
for line in sys.stdin:
    if sys.argv[1] in json.loads(line)["body"]: print(line.strip())' "$1"
}

# the decision the hook printed, against Claude Code's documented form
decision_is() { # decision_is NAME allow|always|deny COMMAND
  hook_result "$1" | /usr/bin/python3 -c '
import json, sys
out = json.loads(sys.stdin.read())
want = {"behavior": "allow"}
if sys.argv[1] == "always":
    want["updatedPermissions"] = [{"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": sys.argv[2]}], "behavior": "allow", "destination": "localSettings"}]
if sys.argv[1] == "deny":
    want = {"behavior": "deny", "message": "Denied from the phone (agentbox approvals)."}
sys.exit(0 if out == {"hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": want}} else 1)' "$2" "$3"
}

check_approvals() {
  wants_approvals || return 0
  local url out first t0 elapsed t_notified t_decided long
  # shellcheck disable=SC2016 # jq's $t
  check "approvals: managed settings run the hook on PermissionRequest (not async, its limit above the wait) and on the events that settle one" \
    cin jq -e --argjson t "$(($(box_env APPROVAL_TIMEOUT) + 30))" '.hooks.PermissionRequest[0].hooks[0] == {"type": "command", "command": "/usr/local/lib/agentbox/approve hook", "timeout": $t}
      and ([.hooks.PostToolUse, .hooks.Stop, .hooks.UserPromptSubmit][] | any(.[].hooks[]; .command == "/usr/local/lib/agentbox/approve hook" and .async == true))' \
    /etc/claude-code/managed-settings.json
  check "approvals: the receiver runs as a user of its own (DynamicUser), not root and not the agent" \
    eventually 30 approve_user_own
  # before the tailnet: no listener anywhere, and a request waits in the terminal, the hook printing nothing
  hook_start early 'echo before-the-tailnet'
  check "approvals: before the tailnet is up, the hook leaves the prompt to the terminal (no output, exit 0)" \
    eventually 20 hook_says_nothing early
  check "approvals: agentbox-status says the receiver is not listening yet (no tailnet)" status_says 'approvals: *active, not listening yet'
  phone_up || log "could not make the phone's namespace"
  start_tailscaled_stand_in
  check "approvals: the receiver listens on the tailnet address only, once tailscale0 has one" \
    eventually 30 listens_on_tailnet_only
  check "approvals: the hook's socket is in a folder of the receiver's, that the agent cannot write" approve_socket_safe
  check "approvals: the agent cannot read the requests' topic (root's file, the receiver's credential)" \
    eval '! as_agent cat /etc/agentbox/approvals.env /run/credentials/agentbox-approve.service/ntfy 2>/dev/null'
  check "approvals: agentbox-status says the receiver listens" status_says "approvals: *listening (port $APPROVE_PORT on the tailnet)"

  # 1. allow, from the phone: the request names the agent and goes back to its hook
  first=${AGENTS%%,*}
  t0=$(now)
  hook_start one 'rm -rf node_modules' "$first"
  if url=$(awaited_fast 20 notified 'rm -rf node_modules'); then
    t_notified=$(since "$t0")
    ok "approvals: the request reached the ntfy server with Allow, Always allow and Deny buttons"
  else
    not_ok "approvals: the request reached the ntfy server with Allow, Always allow and Deny buttons" "$(cin cat "$NTFY_LOG")"
  fi
  check "approvals: the notification names the agent and how to attach to it" \
    notification_names "rm -rf node_modules" "$first"
  t0=$(now)
  out=$(tap "$url")
  awaited_fast 10 hook_done one >/dev/null
  t_decided=$(since "$t0")
  check "approvals: a tap on Allow from the owner's phone is accepted ($out)" grep -q "^200 Allow: Bash for $first" <<<"$out"
  check "approvals: the hook prints Claude Code's documented allow decision and exits 0" \
    eventually 10 decision_and_rc one allow 'rm -rf node_modules'
  # the harness's own calls (nsenter, a poll every 0.1 s) are in both figures
  echo "# bench: approvals hook_to_notification_s=${t_notified:--} tap_to_decision_s=$t_decided"
  out=$(tap "$url")
  check "approvals: the same token again is refused ($out)" grep -q '^410 Too late' <<<"$out"

  # 2. always allow: the rule Claude Code suggested goes back as updatedPermissions
  hook_start two 'npm test'
  url=$(awaited 20 notified 'npm test')
  out=$(tap "${url%/allow}/always")
  check "approvals: Always allow gives back Claude Code's own suggestion as updatedPermissions ($out)" \
    eventually 10 decision_and_rc two always 'npm test'

  # 3. refused callers, then deny: from the box itself (the agent), from a device of someone else, then the owner
  hook_start three 'git push --force'
  url=$(awaited 20 notified 'git push --force')
  out=$(as_agent /usr/bin/python3 -c 'import http.client, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1]); c = http.client.HTTPConnection(u.hostname, u.port, timeout=10); c.request("POST", u.path)
r = c.getresponse(); print(r.status, r.read().decode().strip())' "$url" 2>&1)
  check "approvals: a tap from inside the box (the agent itself) is refused ($out)" grep -q '^403 Refused: an answer must come from another device' <<<"$out"
  out=$(tap "$url" "$TAILNET_STRANGER")
  check "approvals: a tap from a tailnet device whose owner is not an approver is refused ($out)" \
    grep -q '^403 Refused: stranger@example.com is not one of' <<<"$out"
  check "approvals: after the refused taps the request still waits (the hook has not answered)" eval '! hook_done three'
  out=$(tap "${url%/allow}/deny")
  check "approvals: Deny from the owner's phone gives Claude Code's documented deny decision ($out)" \
    eventually 10 decision_and_rc three deny 'git push --force'

  # 4. answered in the terminal first: Claude Code runs the tool and its PostToolUse hook; a tap then is refused
  hook_start four 'make build'
  url=$(awaited 20 notified 'make build')
  request_json 'make build' four | sed 's/"PermissionRequest"/"PostToolUse"/' |
    as_agent env HOME="/home/$AGENT" /usr/local/lib/agentbox/approve hook
  check "approvals: once the terminal answered (the call's PostToolUse), the hook gives no decision" \
    eventually 10 hook_says_nothing four
  out=$(tap "$url")
  check "approvals: a tap after the terminal answered is refused and says so ($out)" grep -q '^410 Too late' <<<"$out"

  # 5. no answer: the hook gives up after agentbox:approvalTimeoutSeconds, leaving the prompt to the terminal
  t0=$(now)
  hook_start five 'sleep 1'
  url=$(awaited 20 notified 'sleep 1')
  eventually "$(($(box_env APPROVAL_TIMEOUT) + 20))" hook_done five >/dev/null
  elapsed=$(since "$t0")
  check "approvals: unanswered, the hook prints nothing after the wait (${elapsed} s of $(box_env APPROVAL_TIMEOUT) s)" \
    hook_says_nothing five
  out=$(tap "$url")
  check "approvals: a late tap is refused and says so ($out)" grep -q '^410 Too late' <<<"$out"

  # 6. a call too long to show whole: the notification offers Deny alone, and an Allow tap is refused
  long="echo $(printf 'x%.0s' $(seq 1200))"
  hook_start six "$long"
  url=$(awaited 20 denied_by 'echo xxxxxxxxxx')
  check "approvals: a call too long to show comes with Deny alone and says it was cut" notification_cut 'echo xxxxxxxxxx'
  out=$(tap "${url%/deny}/allow")
  check "approvals: Allow on a call too long to show is refused ($out)" grep -q '^403 Refused: this call was too long to show' <<<"$out"
  out=$(tap "$url")
  check "approvals: Deny on it is taken ($out)" eventually 10 decision_and_rc six deny "$long"

  check "approvals: the receiver is not reachable on the box's public address (from the harness's end of the veth)" \
    not_on_public_address
  check "approvals: the receiver logged the refusals and the answers, never a token" approve_log_clean
  check "permission mode: the agent's claude runs with --permission-mode acceptEdits (agentbox:permissionMode)" \
    permission_mode_applied
}

status_says() { # status_says PATTERN: a line of agentbox-status, as root runs it
  local out
  out=$(cin /usr/local/bin/agentbox-status 2>&1)
  grep "^approvals:" <<<"$out"
  grep -q "^$1" <<<"$out"
}
approve_user_own() {
  local user
  user=$(cin systemctl show -p User --value agentbox-approve.service)
  cin systemctl is-active --quiet agentbox-approve.service && [ -n "$user" ] && [ "$user" != root ] && [ "$user" != "$AGENT" ] &&
    cin systemctl show -p DynamicUser --value agentbox-approve.service | grep -qx yes
}
hook_says_nothing() { hook_done "$1" && [ "$(cin cat "$HOOK_OUT/$1.rc")" = 0 ] && [ -z "$(hook_result "$1")" ]; }
decision_and_rc() { hook_done "$1" && [ "$(cin cat "$HOOK_OUT/$1.rc")" = 0 ] && decision_is "$@"; }
listens_on_tailnet_only() {
  local l
  l=$(cin ss -Htln "sport = :$APPROVE_PORT")
  echo "$l"
  [ "$(wc -l <<<"$l")" = 1 ] && grep -q " $TAILNET_BOX:$APPROVE_PORT " <<<"$l"
}
approve_socket_safe() {
  local st
  st=$(cin stat -c '%U %a' /run/agentbox-approvals)
  echo "/run/agentbox-approvals: $st"
  [ "${st% *}" != "$AGENT" ] && [ "${st% *}" != root ] && [ "${st#* }" = 755 ] &&
    ! as_agent sh -c 'mkdir /run/agentbox-approvals/x || rm -f /run/agentbox-approvals/approve.sock || ln -s /tmp /run/agentbox-approvals/y' 2>/dev/null &&
    cin test -S /run/agentbox-approvals/approve.sock
}
notification_names() { # notification_names COMMAND AGENT
  notification_of "$1" | grep -F "[agentbox/$(box_env BOX_STACK)/$2] asks to use Bash: $1" | grep -qF "tmux -L agentbox attach -t $2"
}
approve_log_clean() {
  local log
  log=$(cin journalctl -u agentbox-approve.service --no-pager -o cat)
  echo "$log" | tail -n 20
  grep -q 'refused a tap from the box itself' <<<"$log" && grep -q 'not one of agentbox:approvers' <<<"$log" &&
    grep -q ': allow by phone-owner@example.com on phone$' <<<"$log" && grep -q 'answered in the terminal' <<<"$log" &&
    ! grep -Eq '/a/[A-Za-z0-9_-]{43}' <<<"$log"
}
not_on_public_address() {
  ! timeout 5 bash -c "echo >/dev/tcp/$(state_get "$RUN_DIR" BOX_IP)/$APPROVE_PORT" 2>/dev/null
}
permission_mode_applied() {
  local pids
  pids=$(cin pgrep -u "$AGENT" -f -- '--permission-mode acceptEdits')
  echo "claude with the mode: ${pids:-none}"
  [ -n "$pids" ]
}
