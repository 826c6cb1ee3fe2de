#!/bin/bash
# agentbox-notify: records what Claude Code's hooks say of the agent (its turn, its login) and sends one push
# notification to the stack's ntfy topic. Never fails, never waits long: an unsent notification is logged and dropped.
# usage: notify [--detach] EVENT [TEXT]    EVENT: hook, agent-exit, workflow-end, disk, updates, test
set -u
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
agentbox_load_env /etc/agentbox/box.env

#   hook          a Claude Code hook (its JSON on stdin): UserPromptSubmit, Notification, Stop, StopFailure
#   agent-exit    from claude-agent.service's ExecStopPost (systemd's SERVICE_RESULT, EXIT_CODE, EXIT_STATUS)
#   workflow-end  TEXT is the workflow's end state; disk, updates: root's reports (agentbox-watch); test: a test
#   --detach      from a transient unit of its own, so that a slow or unreachable server never delays the caller
#                 (ExecStopPost would hold back the restart)
# The ntfy settings: AGENTBOX_NOTIFY_ENV, else ~/.config/agentbox/notify.env (root's reports: /etc/agentbox/notify.env).
#
# The hooks run on every box, with notifications or without: they first record the agent's turn (the watcher reboots
# for updates only between turns) and whether its login still works, in files of the agent's own that every reader
# validates (/var/lib/agentbox/agent/turn, .../auth: state=, since=, ...).
AGENT_STATE=/var/lib/agentbox/agent
# One of agentbox:agents (its unit and its session set AGENTBOX_AGENT): its turn in a folder of its own, its name in
# every message. The login is the box's (one credential for all): one record.
agent=''
if [[ ${AGENTBOX_AGENT:-} =~ ^[a-z][a-z0-9-]{0,23}$ ]]; then agent=$AGENTBOX_AGENT; fi
TURN=turn
if [ -n "$agent" ]; then
  TURN=$agent/turn
  [ -d "$AGENT_STATE/$agent" ] || mkdir -m 0755 "$AGENT_STATE/$agent" 2>/dev/null
fi
# record FILE KEY=VALUE...: the whole file, replaced at once (nothing when the folder is not there)
record() {
  local name=$1 dir tmp
  shift
  dir=$AGENT_STATE/$(dirname "$name")
  [ -d "$dir" ] && [ -w "$dir" ] || return 0
  tmp=$(mktemp "$dir/.${name##*/}.XXXXXX") || return 0
  { printf '%s\n' "$@" >"$tmp" && chmod 0644 "$tmp" && mv -f "$tmp" "$AGENT_STATE/$name"; } || rm -f "$tmp"
}
# recorded FILE KEY
recorded() { sed -n "s/^$2=//p" "$AGENT_STATE/$1" 2>/dev/null | head -n 1; }
# jq when the box has it; else a plain string value of the top level, which is all the hooks need
field() {
  if command -v jq >/dev/null; then
    jq -r ".$1 // empty | tostring" 2>/dev/null <<<"$input"
  else
    sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\([^\"\\\\]*\)\".*/\1/p" <<<"$input" | head -n 1
  fi
}
# Claude Code names the failure in error_type (and the short code in error): an expired or revoked credential, or an
# account that may not use it, is one the user must replace; a rate limit or a server error passes by itself.
auth_error() {
  local e
  for e in "$(field error_type)" "$(field error)"; do
    case $e in authentication_failed | oauth_org_not_allowed | billing_error) echo "$e" && return 0 ;; esac
  done
  return 1
}
# which credential the box gave the agent: the fix differs
credential() {
  if grep -q '^ANTHROPIC_API_KEY=' "$HOME/.config/agentbox/agent.env" 2>/dev/null; then echo api_key
  elif grep -q '^CLAUDE_CODE_OAUTH_TOKEN=' "$HOME/.config/agentbox/agent.env" 2>/dev/null; then echo oauth_token
  else echo login; fi
}
# auth_fix CREDENTIAL: what the user does about a failed login
auth_fix() {
  case $1 in
    api_key) echo "set a new key: pulumi config set --secret agentbox:anthropicApiKey, then npm run up" ;;
    oauth_token) echo "a new token: claude setup-token on your laptop, then pulumi config set --secret agentbox:claudeOauthToken and npm run up (or attach and /login)" ;;
    *) echo "attach (tmux -L agentbox attach -t ${agent:-claude}) and /login" ;;
  esac
}
# The workflow's headless claude has hooks too, but its run is the workflow's state: its turns are not the agent's.
in_workflow() { grep -q '/agentbox-workflow\.service' /proc/self/cgroup 2>/dev/null; }
# a turn in another conversation (a session the user started by hand) is not ended by this one's Stop
session_id() { field session_id | tr -cd 'A-Za-z0-9_-' | cut -c 1-64; }
turn_ended() {
  local session
  session=$(session_id)
  if [ "$(recorded "$TURN" state)" = busy ] && [ -n "$(recorded "$TURN" session)" ] && [ "$(recorded "$TURN" session)" != "$session" ]; then
    return 0
  fi
  record "$TURN" state=idle "since=$(date +%s)" "session=$session"
}

detach=''
if [ "${1:-}" = --detach ]; then
  detach=1
  shift
fi
event=${1:-test} input='' auth_failed='' hook_event=''
if [ "$event" = hook ]; then
  input=$(head -c 65536)
  hook_event=$(field hook_event_name)
  if ! in_workflow; then
    case $hook_event in
      UserPromptSubmit) record "$TURN" state=busy "since=$(date +%s)" "session=$(session_id)" ;;
      Stop | StopFailure) turn_ended ;;
    esac
  fi
  case $hook_event in
    Stop) [ "$(recorded auth state)" = ok ] || record auth state=ok "since=$(date +%s)" "credential=$(credential)" ;;
    StopFailure)
      if auth_failed=$(auth_error); then
        # the first failure's time is kept while the failures go on
        since=$(recorded auth since)
        [ "$(recorded auth state)" = failed ] && [[ $since =~ ^[0-9]+$ ]] || since=$(date +%s)
        record auth state=failed "error=$auth_failed" "since=$since" "credential=$(credential)"
      fi
      ;;
  esac
  # the start of a turn is the user's own doing: nothing to tell them
  [ "$hook_event" = UserPromptSubmit ] && exit 0
elif [ "$event" = agent-exit ]; then
  # claude is gone, and with it any turn it was in
  record "$TURN" state=idle "since=$(date +%s)" session=
fi

conf=${AGENTBOX_NOTIFY_ENV:-$HOME/.config/agentbox/notify.env}
[ -r "$conf" ] || exit 0 # notifications are off for this box

if [ -n "$detach" ]; then
  if systemd-run --user --quiet --collect --no-block \
    --setenv=SERVICE_RESULT="${SERVICE_RESULT:-}" --setenv=EXIT_CODE="${EXIT_CODE:-}" \
    --setenv=EXIT_STATUS="${EXIT_STATUS:-}" --setenv=AGENTBOX_AGENT="$agent" /usr/local/lib/agentbox/notify "$@" 2>/dev/null; then
    exit 0
  fi
  # no user manager to hand it to: send it from here, within the time limit below
fi

agentbox_load_env "$conf"
text=${2:-} priority=default tags=robot

case $event in
  hook)
    case $hook_event in
      Notification)
        # what the agent waits for (Claude Code's notification_type), and where to answer it
        attach="(attach: tmux -L agentbox attach -t ${agent:-claude})"
        case $(field notification_type) in
          # agentbox:approvals' receiver is up: the phone was asked with buttons when the prompt came up
          permission_prompt) [ -S /run/agentbox-approvals/approve.sock ] && exit 0
            text="waits for your permission: $(field message) $attach" ;;
          idle_prompt) text="waits for your next message $attach" ;;
          *) text="asks you: $(field message) $attach" ;;
        esac
        priority=high tags=bell
        ;;
      Stop) text="finished a turn and waits for you" ;;
      StopFailure)
        if [ -n "$auth_failed" ]; then
          text="cannot log in to Claude ($auth_failed): $(auth_fix "$(credential)")"
          priority=urgent tags=key
        else
          kind=$(field error_type)
          text="stopped on an error: ${kind:-$(field error)}"
          priority=high tags=warning
        fi
        ;;
      '') text="a hook without an event name" ;;
      *) text=$hook_event ;;
    esac
    ;;
  agent-exit)
    # a crash loop restarts every few seconds: one message a minute is enough
    stamp=${XDG_RUNTIME_DIR:-/tmp}/agentbox/notify-agent-exit${agent:+-$agent}
    mkdir -p "${stamp%/*}"
    if [ -e "$stamp" ] && [ $(($(date +%s) - $(stat -c %Y "$stamp"))) -lt 60 ]; then exit 0; fi
    touch "$stamp"
    text="the agent${agent:+ $agent} stopped (${SERVICE_RESULT:-unknown}, ${EXIT_CODE:-?} ${EXIT_STATUS:-?}); systemd restarts it"
    priority=high tags=warning
    ;;
  workflow-end)
    text="the workflow ended: ${text:-unknown}"
    case $text in *success*) tags=white_check_mark ;; *) priority=high tags=x ;; esac
    ;;
  # root's reports (the watcher): disk space, updates that need a reboot
  disk) text="disk: $text" priority=high tags=floppy_disk ;;
  updates) text="updates: $text" tags=arrows_counterclockwise ;;
  test) text="test notification${text:+: $text}" ;;
  *) text="$event${text:+: $text}" ;;
esac

# The topic URL and the token stay off the command line, which every user on the box can read: curl takes
# them from a config on a pipe.
curl_config() {
  printf 'url = "%s"\n' "$NTFY_URL"
  if [ -n "${NTFY_TOKEN:-}" ]; then printf 'header = "Authorization: Bearer %s"\n' "$NTFY_TOKEN"; fi
}
if ! curl -sS -o /dev/null --fail --max-time 10 --connect-timeout 5 \
  -H "Title: agentbox $(hostname)" -H "Priority: $priority" -H "Tags: $tags" \
  --config <(curl_config) --data-binary @- <<<"[${BOX_PROJECT:-agentbox}/${BOX_STACK:-?}${agent:+/$agent}] $text"; then
  echo "agentbox-notify: could not send the $event notification (dropped)" >&2
fi
exit 0
