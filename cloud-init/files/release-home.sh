#!/bin/bash
# agentbox-release-home: stops the agent cleanly and unmounts its home, before the cloud takes the volume or the
# server away (pulumi destroy, a replacement): claude saves its conversation, the workflow ends, the volume's
# filesystem is clean. `pulumi destroy` runs it over SSH as the agent, through the agent's one sudo rule
# (/etc/sudoers.d/agentbox-release: this command, without arguments). It reads nothing the agent wrote.
# Exit: 0 released (also when there is nothing to release), 1 the home could not be unmounted (it says by whom).
set -uo pipefail
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
agentbox_load_env /etc/agentbox/box.env
[ "$(id -u)" = 0 ] || {
  echo "agentbox-release-home: run it as root (sudo)" >&2
  exit 2
}
uid=$(id -u "$AGENT_USER") || exit 1

# The agent's user manager and everything it runs (claude gets SIGTERM; the units' TimeoutStopSec bound it), and
# nothing brings it back on this server: a login of the agent would otherwise start it again on a bare home.
echo "agentbox: stopping the agent (user@$uid.service) ..."
systemctl mask --runtime --quiet "user@$uid.service"
systemctl stop "user@$uid.service"
sync

if [ "${VOLUME:-0}" = 1 ] && mountpoint -q "$AGENT_HOME"; then
  # What still uses the home. The agent's processes (a login of its own) are asked to end, then killed, with the
  # agent's rights: the kernel refuses to signal anything else, whatever a listed pid has become since. Anybody
  # else's are named and the home stays mounted. Never this command's own chain (its SSH session left the home:
  # `cd /` before sudo).
  ours=" $$ " p=$$
  while p=$(awk '/^PPid:/ { print $2 }' "/proc/$p/status" 2>/dev/null) && [ "${p:-0}" -gt 1 ]; do ours+="$p "; done
  # users_of_home WHO (agent|others): the pids that have their cwd or a file in the home
  users_of_home() {
    local d pid cwd owner
    for d in /proc/[0-9]*; do
      pid=${d#/proc/}
      [[ $ours == *" $pid "* ]] && continue
      cwd=$(readlink "$d/cwd" 2>/dev/null)
      if [ "$cwd" = "$AGENT_HOME" ] || [[ $cwd == "$AGENT_HOME"/* ]] ||
        find "$d/fd" -maxdepth 1 -lname "$AGENT_HOME/*" 2>/dev/null | grep -q .; then
        owner=$(awk '/^Uid:/ { print $2 }' "$d/status" 2>/dev/null)
        if [ "$owner" = "$uid" ]; then [ "$1" = agent ] && echo "$pid"; else [ "$1" = others ] && echo "$pid"; fi
      fi
    done
  }
  for sig in TERM TERM TERM KILL; do
    pids=$(users_of_home agent)
    [ -n "$pids" ] || break
    echo "agentbox: ending the agent's processes that still use $AGENT_HOME ($sig): ${pids//$'\n'/ }"
    # shellcheck disable=SC2086 # one pid a word
    runuser -u "$AGENT_USER" -- kill -s "$sig" $pids 2>/dev/null
    sleep 2
  done
  others=$(users_of_home others)
  if [ -n "$others" ]; then
    echo "agentbox: $AGENT_HOME is used by processes of other users (pids ${others//$'\n'/ }): left mounted"
    exit 1
  fi
  # the kernel's name for the volume, to see its filesystem really gone (a mount namespace could keep it alive)
  disk=$(basename "$(readlink -f "/sys/dev/block/$(mountpoint -d "$AGENT_HOME")")")
  if ! umount "$AGENT_HOME"; then
    echo "agentbox: $AGENT_HOME is still in use; the volume is detached from a mounted filesystem"
    exit 1
  fi
  if [ -n "$disk" ] && [ -e "/sys/fs/ext4/$disk" ]; then
    echo "agentbox: $AGENT_HOME is unmounted here, but its filesystem is still mounted elsewhere (another mount namespace)"
    exit 1
  fi
  echo "agentbox: $AGENT_HOME (the volume) is unmounted and clean"
fi
echo "agentbox: released: the agent is stopped and stays stopped on this server"
