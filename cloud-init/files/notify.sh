#!/bin/bash
# agentbox-notify: one push notification to the stack's ntfy topic. It never fails and never waits long: a
# notification that cannot be sent is logged and dropped, and the agent goes on.
#
# usage: notify EVENT [TEXT]
#          hook          a Claude Code hook (its JSON on stdin): Notification, Stop, StopFailure, ...
#          agent-exit    from claude-agent.service's ExecStopPost (systemd's SERVICE_RESULT, EXIT_CODE, EXIT_STATUS)
#          workflow-end  TEXT is the workflow's end state
#          test          a test message
#        notify --detach EVENT [TEXT]   the same from a transient unit of its own, so that a slow or unreachable
#                                       server never delays the caller (ExecStopPost would hold back the restart)
set -u
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
agentbox_load_env /etc/agentbox/box.env

conf=${AGENTBOX_NOTIFY_ENV:-$HOME/.config/agentbox/notify.env}
[ -r "$conf" ] || exit 0 # notifications are off for this box

if [ "${1:-}" = --detach ]; then
  shift
  if systemd-run --user --quiet --collect --no-block \
    --setenv=SERVICE_RESULT="${SERVICE_RESULT:-}" --setenv=EXIT_CODE="${EXIT_CODE:-}" \
    --setenv=EXIT_STATUS="${EXIT_STATUS:-}" /usr/local/lib/agentbox/notify "$@" 2>/dev/null; then
    exit 0
  fi
  # no user manager to hand it to: send it from here, within the time limit below
fi

agentbox_load_env "$conf"
event=${1:-test} text=${2:-} priority=default tags=robot
json() { jq -r "$1 // empty" 2>/dev/null <<<"$input"; }

case $event in
  hook)
    input=$(head -c 65536)
    case $(json .hook_event_name) in
      Notification)
        text="needs you: $(json .message)"
        priority=high tags=bell
        ;;
      Stop) text="finished a turn and waits for you" ;;
      StopFailure)
        text="stopped on an error: $(json .error)"
        priority=high tags=warning
        ;;
      '') text="a hook without an event name" ;;
      *) text="$(json .hook_event_name)" ;;
    esac
    ;;
  agent-exit)
    # a crash loop restarts every few seconds: one message a minute is enough
    stamp=${XDG_RUNTIME_DIR:-/tmp}/agentbox/notify-agent-exit
    mkdir -p "${stamp%/*}"
    if [ -e "$stamp" ] && [ $(($(date +%s) - $(stat -c %Y "$stamp"))) -lt 60 ]; then exit 0; fi
    touch "$stamp"
    text="the agent stopped (${SERVICE_RESULT:-unknown}, ${EXIT_CODE:-?} ${EXIT_STATUS:-?}); systemd restarts it"
    priority=high tags=warning
    ;;
  workflow-end)
    text="the workflow ended: ${text:-unknown}"
    case $text in *success*) tags=white_check_mark ;; *) priority=high tags=x ;; esac
    ;;
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
  --config <(curl_config) --data-binary @- <<<"[${BOX_PROJECT:-agentbox}/${BOX_STACK:-?}] $text"; then
  echo "agentbox-notify: could not send the $event notification (dropped)" >&2
fi
exit 0
