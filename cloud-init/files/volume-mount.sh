#!/bin/bash
# Main process of agentbox-volume.service, on every boot after the first: mounts the persistent volume on the
# agent's home before the agent's user manager starts (its drop-in requires this unit). Mounts only the volume that
# the first boot formatted or adopted (its UUID is recorded), and waits for it as long as it takes: a volume
# attached late (or only after a `pulumi up`) starts the agent by itself. While it waits, /run/agentbox/volume-wait
# says so (since=, uuid=, glob=: agentbox-status and the login banner read it), and after VOLUME_NOTIFY_AFTER_S
# (60 s) root sends one notification when the stack has them.
# nosuid,nodev: the volume is the agent's, and an earlier box's agent may have left set-uid files or device nodes.
# Not an fstab line: that would wait on udev's by-uuid link, and mount nothing in a container (the boot test).
set -uo pipefail
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
agentbox_load_env /etc/agentbox/box.env

WAIT_FILE=/run/agentbox/volume-wait
uuid=$(sed -n 's/^uuid=//p' /var/lib/agentbox/volume)
[ -n "$uuid" ] || { echo "no volume recorded in /var/lib/agentbox/volume" >&2; exit 1; }
if mountpoint -q "$AGENT_HOME"; then exit 0; fi

# the usual boot: the cloud has attached it and udev linked it within seconds
if ! dev=$(agentbox_volume_device 10 "$uuid"); then
  since=$(date +%s)
  install -d -m 0755 /run/agentbox
  printf 'since=%s\nuuid=%s\nglob=%s\n' "$since" "$uuid" "$VOLUME_GLOB" >"$WAIT_FILE.tmp" && mv "$WAIT_FILE.tmp" "$WAIT_FILE"
  echo "the volume $uuid is not at $VOLUME_GLOB: waiting for it (the agent starts once it is there)"
  notified=0 tries=0
  until dev=$(agentbox_volume_device 5 "$uuid"); do
    # One notification; tried again every half minute while it cannot be sent (early in a boot the network may not
    # be up yet): notify never fails, and says on stderr when a message was dropped.
    if [ $notified = 0 ] && [ $tries -lt 20 ] && [ $(($(date +%s) - since)) -ge $((${VOLUME_NOTIFY_AFTER_S:-60} + tries * 30)) ]; then
      tries=$((tries + 1))
      if ! AGENTBOX_NOTIFY_ENV=/etc/agentbox/notify.env /usr/local/lib/agentbox/notify volume-missing \
        "the volume $uuid is not attached; the agent waits for it: check the cloud console / pulumi up" 2>&1 |
        grep 'could not send' >&2; then
        notified=1
      fi
    fi
  done
  echo "the volume $uuid appeared after $(($(date +%s) - since)) s"
fi
if mount -t ext4 -o nosuid,nodev,errors=remount-ro "$dev" "$AGENT_HOME"; then
  rm -f "$WAIT_FILE"
  exit 0
fi
echo "could not mount the volume $uuid ($dev) on $AGENT_HOME: the agent stays stopped rather than work on an empty home" >&2
exit 1
