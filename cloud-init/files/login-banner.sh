# shellcheck shell=sh
# agentbox: one line about the box when an interactive shell starts (details: agentbox-status), and one more for each
# thing that needs the user: a full disk, a reboot for updates, a login the agent lost, a missing home volume.
if [ -n "${PS1:-}" ] && [ -r /var/lib/agentbox/status ]; then
  if [ -r /etc/agentbox/agents ]; then
    # agentbox:agents: each on the same tmux server (prefix s switches between them)
    printf 'agentbox: %s. Agents: %s (tmux -L agentbox attach -t <agent>). Details: agentbox-status\n' \
      "$(sed -n 's/^result=//p' /var/lib/agentbox/status)" "$(cut -f 1 /etc/agentbox/agents | paste -sd, - | sed 's/,/, /g')"
  else
    printf 'agentbox: %s. Claude Code: tmux -L agentbox attach -t claude. Details: agentbox-status\n' \
      "$(sed -n 's/^result=//p' /var/lib/agentbox/status)"
  fi
  # Only root's files (the watcher's findings, the volume's wait): the banner runs in every login, the agent's files
  # are not for other users to read. Values are checked against patterns before they are printed.
  # (every command succeeds: the shell sourcing this may run with set -e)
  agentbox_watch() { sed -n "s/^$1=//p" /var/lib/agentbox/watch 2>/dev/null | head -n 1 | grep -E "^($2)\$" || :; }
  if [ "$(agentbox_watch disk_level warning)" = warning ]; then
    printf 'agentbox: WARNING: disk at or above %s%% (%s) after freeing what is safe: make room\n' \
      "$(agentbox_watch disk_warn_pct '[0-9]{1,3}')" "$(agentbox_watch disk_full '[a-z,]{1,20}')"
  fi
  if [ "$(agentbox_watch reboot_required 1)" = 1 ]; then
    agentbox_what="deferred, $(agentbox_watch reboot_reason "[A-Za-z0-9 ,:()'.-]{1,200}")"
    if [ "$(agentbox_watch reboot rebooting)" = rebooting ]; then agentbox_what="rebooting now"; fi
    printf 'agentbox: WARNING: updates need a reboot (%s): %s\n' \
      "$(agentbox_watch reboot_pkgs '[A-Za-z0-9.+:~,-]{1,400}')" "$agentbox_what"
  fi
  if [ "$(agentbox_watch auth failed)" = failed ]; then
    printf 'agentbox: WARNING: Claude Code cannot log in (%s): it needs a new credential, see agentbox-status\n' \
      "$(agentbox_watch auth_error '[a-z_]{1,40}')"
  fi
  agentbox_since=$(sed -n 's/^since=//p' /run/agentbox/volume-wait 2>/dev/null | grep -E '^[0-9]{1,12}$' | head -n 1 || :)
  if [ -n "$agentbox_since" ]; then
    printf 'agentbox: WARNING: the home volume is missing (waited since %s): the agent starts once it is attached\n' \
      "$(date -u -d "@$agentbox_since" '+%F %H:%M UTC')"
  fi
  unset -f agentbox_watch
  unset agentbox_since agentbox_what
fi
