# shellcheck shell=sh
# agentbox: one line about the box when an interactive shell starts (details: agentbox-status)
if [ -n "${PS1:-}" ] && [ -r /var/lib/agentbox/status ]; then
  printf 'agentbox: %s. Claude Code: tmux -L agentbox attach -t claude. Details: agentbox-status\n' \
    "$(sed -n 's/^result=//p' /var/lib/agentbox/status)"
fi
