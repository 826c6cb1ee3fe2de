#!/bin/bash
# Main process of agentbox-volume.service, on every boot after the first: mounts the persistent volume on the
# agent's home before the agent's user manager starts (its drop-in requires this unit). Waits a bounded time for
# the device, and mounts only the volume that the first boot formatted or adopted (its UUID is recorded).
# nosuid,nodev: the volume is the agent's, and an earlier box's agent may have left set-uid files or device nodes.
# Not an fstab line: that would wait on udev's by-uuid link, and mount nothing in a container (the boot test).
set -uo pipefail
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
agentbox_load_env /etc/agentbox/box.env

uuid=$(sed -n 's/^uuid=//p' /var/lib/agentbox/volume)
[ -n "$uuid" ] || { echo "no volume recorded in /var/lib/agentbox/volume" >&2; exit 1; }
if mountpoint -q "$AGENT_HOME"; then exit 0; fi
if dev=$(agentbox_volume_device "${VOLUME_WAIT_S:-90}" "$uuid"); then exec mount -t ext4 -o nosuid,nodev,errors=remount-ro "$dev" "$AGENT_HOME"; fi
echo "the volume $uuid did not appear at $VOLUME_GLOB: the agent stays stopped rather than work on an empty home" >&2
exit 1
