# shellcheck shell=bash
# The box itself: an overlay over the cached rootfs, a NoCloud seed, and systemd-nspawn
# booting it inside the run's network namespace. Sourced by box.sh; functions work on one
# run directory and record what they create in its `state` file.
#
# PID 1 of the host is not systemd here: nspawn cannot register with machined or get a
# scope, so it runs with --register=no --keep-unit in a cgroup we make for it.

LEADER=           # the box's PID 1, as seen from the host
BOX_NSPAWN_ARGS=() # more systemd-nspawn arguments for the next box_boot (a volume's device, see box_volume)

box_prepare() { # box_prepare RUN_DIR NAME ROOTFS USER_DATA
  local dir=$1 name=$2 rootfs=$3 user_data=$4 proxy m
  mkdir -p "$dir"/{upper,work,merged}
  mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$dir/upper,workdir=$dir/work" "$dir/merged"
  state_set "$dir" MOUNT "$dir/merged"
  m=$dir/merged

  mkdir -p "$m/var/lib/cloud/seed/nocloud"
  # as secret as cloud-init keeps its own copy (a cloud serves it from the metadata service, not a file)
  install -m 0600 "$user_data" "$m/var/lib/cloud/seed/nocloud/user-data"
  printf 'instance-id: %s\nlocal-hostname: %s\n' "$name" "$name" >"$m/var/lib/cloud/seed/nocloud/meta-data"

  # A repository on the box itself, for a stack whose agentbox:repoUrl is file:///srv/agentbox-fixture.git (the
  # digitalocean CI stack's agents work in its worktrees): the boot test reaches no git host.
  [ -d "$m/srv/agentbox-fixture.git" ] || fixture_repo "$m/srv/agentbox-fixture.git"

  # harness-only, per run because the proxy's address is: apt and every service use the proxy
  proxy=$(state_get "$dir" PROXY)
  printf 'Acquire::http::Proxy "%s/";\nAcquire::https::Proxy "%s/";\n' "$proxy" "$proxy" \
    >"$m/etc/apt/apt.conf.d/90agentbox-boot-proxy"
  for manager in system user; do
    printf '[Manager]\nDefaultEnvironment=%s\n' \
      "http_proxy=$proxy https_proxy=$proxy HTTP_PROXY=$proxy HTTPS_PROXY=$proxy no_proxy=localhost,127.0.0.1 NO_PROXY=localhost,127.0.0.1" \
      >"$m/etc/systemd/$manager.conf.d/90-agentbox-boot-proxy.conf"
  done
}

# fixture_repo DEST: a bare repository with a commit on main and a branch fix-api (an agent's worktree takes it)
fixture_repo() {
  local tmp
  tmp=$(mktemp -d)
  git -c init.defaultBranch=main init -q "$tmp/work"
  echo "agentbox boot test fixture" >"$tmp/work/README"
  git -C "$tmp/work" add README
  git -C "$tmp/work" -c user.name=agentbox -c user.email=boot@agentbox.test commit -q -m "fixture"
  git -C "$tmp/work" branch fix-api
  mkdir -p "${1%/*}"
  git clone -q --bare "$tmp/work" "$1"
  rm -rf "$tmp"
}

# start the box in the background; sets LEADER. box_boot RUN_DIR NAME CONSOLE_LOG
box_boot() {
  local dir=$1 name=$2 console=$3 h pid
  for h in systemd unified; do mkdir -p "/sys/fs/cgroup/$h/$name"; done
  state_set "$dir" CGROUP "$name"
  (
    for h in systemd unified; do echo "$BASHPID" >"/sys/fs/cgroup/$h/$name/cgroup.procs"; done
    # systemd 256 deprecated cgroup v1 (258 removes it), which nspawn would give the box on
    # this cgroup v1 host: give it the unified hierarchy alone (it copes without controllers).
    # CAP_NET_ADMIN: the box loads its own firewall, as on a VM; it only ever sees the box's own namespace.
    SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 exec setsid systemd-nspawn --quiet -b -D "$dir/merged" -M "$name" \
      --network-namespace-path="/run/netns/$name" --capability=CAP_NET_ADMIN \
      --resolv-conf=off --timezone=off \
      --link-journal=no --console=read-only --register=no --keep-unit "${BOX_NSPAWN_ARGS[@]}"
  ) </dev/null >"$console" 2>&1 &
  pid=$!
  state_set "$dir" NSPAWN_PID "$pid"
  # up to 30 s: on a busy machine nspawn takes a while to start the box's pid 1
  for _ in $(seq 300); do
    LEADER=$(ps -o pid=,comm= --ppid "$pid" | awk '$2 == "systemd" { print $1; exit }' || true) # none yet: ps fails
    [ -n "$LEADER" ] && break
    sleep 0.1
  done
  [ -n "$LEADER" ] || {
    cat "$console" >&2
    die "the box did not start (console: $console)"
  }
  state_set "$dir" LEADER "$LEADER"
}

# A cloud volume, as the box sees one: a loop device over a sparse file in the run directory, bound into the
# box at the by-id path the cloud's udev would make (e.g. /dev/disk/by-id/scsi-0HC_Volume_4242). The same file
# serves a later box of the same run (a box re-created on the same volume).
box_volume() { # box_volume RUN_DIR DEVICE_PATH
  local dir=$1 loop
  loop=$(state_get "$dir" LOOP)
  if [ -z "$loop" ]; then
    truncate -s 1G "$dir/volume.img"
    loop=$(losetup -f --show "$dir/volume.img") || die "no loop device for the volume"
    state_set "$dir" LOOP "$loop"
  fi
  BOX_NSPAWN_ARGS=("--bind=$loop:$2")
}

# a new server on the same run: a pristine root disk (the overlay's upper layer emptied) and a new instance id,
# so that cloud-init runs as on a first boot. box_recreate RUN_DIR NAME USER_DATA
box_recreate() {
  local dir=$1 name=$2
  box_poweroff "$dir"
  if mountpoint -q "$dir/merged"; then umount "$dir/merged"; fi
  rm -rf "$dir/upper" "$dir/work"
  box_prepare "$dir" "$name" "$(state_get "$dir" ROOTFS)" "$3"
  printf 'instance-id: %s\nlocal-hostname: %s\n' "$name-2" "$name" >"$dir/merged/var/lib/cloud/seed/nocloud/meta-data"
}

# run a command inside the box: all its namespaces, a clean environment
cin() { nsenter -t "$LEADER" -a env -i PATH="$BOX_PATH" LANG=C.UTF-8 TERM=dumb "$@"; }

# our own nspawn, still running? (the pid must still be nspawn booting this run's overlay)
box_running() { # box_running RUN_DIR
  local pid
  pid=$(state_get "$1" NSPAWN_PID)
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-D $1/merged"
}

box_wait_cloud_init() { # box_wait_cloud_init RUN_DIR TIMEOUT_S; 0 when result.json exists
  local dir=$1 deadline=$(($(date +%s) + $2))
  # not `cloud-init status --wait`: it can return at the first recorded error while later
  # stages still run. result.json is written when the final stage ends, whatever happened.
  until cin test -e /run/cloud-init/result.json 2>/dev/null; do
    box_running "$dir" || {
      log "the box stopped before cloud-init finished"
      return 1
    }
    [ "$(date +%s)" -lt "$deadline" ] || {
      log "cloud-init did not finish within $2 s"
      return 1
    }
    sleep 1
  done
}

# until the box's systemd has finished starting up (its bus appears only some way into boot)
box_wait_booted() { # box_wait_booted TIMEOUT_S
  local deadline=$(($(date +%s) + $1)) state
  while [ "$(date +%s)" -lt "$deadline" ]; do
    state=$(cin timeout 30 systemctl is-system-running --wait 2>/dev/null || true)
    case $state in running | degraded | maintenance | stopping) return 0 ;; esac
    sleep 0.5
  done
  return 1
}

box_poweroff() { # box_poweroff RUN_DIR
  local dir=$1 pid leader
  box_running "$dir" || return 0
  pid=$(state_get "$dir" NSPAWN_PID)
  leader=$(state_get "$dir" LEADER)
  # = systemctl poweroff, sent only to the box's pid 1 (a child of our nspawn)
  if [ -n "$leader" ] && [ "$(ps -o ppid= -p "$leader" | tr -d ' ')" = "$pid" ]; then kill -RTMIN+4 "$leader" || true; fi
  for _ in $(seq 600); do
    [ -e "/proc/$pid" ] || return 0
    sleep 0.1
  done
  log "the box did not power off in 60 s: killing its systemd-nspawn"
  kill -KILL "$pid" || true
  for _ in $(seq 50); do
    [ -e "/proc/$pid" ] || return 0
    sleep 0.1
  done
}

# A crash or a power loss: the box's systemd-nspawn killed outright, no shutdown inside, and whatever of the box is
# left in the run's cgroup after it. The disk (the overlay), the network and the volume stay: box_boot boots the
# same disk again. box_kill RUN_DIR
box_kill() {
  local dir=$1 pid leader cg h
  pid=$(state_get "$dir" NSPAWN_PID)
  leader=$(state_get "$dir" LEADER)
  cg=$(state_get "$dir" CGROUP)
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
  # box_boot started it in the background of this shell: reaped here, or box_running would see a zombie
  wait "$pid" 2>/dev/null
  for _ in $(seq 50); do
    if [ -z "$leader" ] || [ ! -e "/proc/$leader" ]; then break; fi
    sleep 0.1
  done
  if [ -n "$cg" ] && [ -e "/sys/fs/cgroup/unified/$cg/cgroup.kill" ] &&
    [ -n "$(find "/sys/fs/cgroup/unified/$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)" ]; then
    echo 1 >"/sys/fs/cgroup/unified/$cg/cgroup.kill"
    for _ in $(seq 50); do
      [ -z "$(find "/sys/fs/cgroup/unified/$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  # the cgroups the box's systemd made below the run's: the next boot makes its own
  for h in systemd unified; do
    [ -n "$cg" ] && [ -d "/sys/fs/cgroup/$h/$cg" ] &&
      find "/sys/fs/cgroup/$h/$cg" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
  done
  return 0
}

# undo everything the run made, in reverse order; safe to call more than once
box_teardown() { # box_teardown RUN_DIR
  local dir=$1 cg h loop
  box_poweroff "$dir"
  cg=$(state_get "$dir" CGROUP)
  # A killed nspawn can leave the box's processes behind; all of them are in the run's own cgroup.
  if [ -n "$cg" ] && [ -e "/sys/fs/cgroup/unified/$cg/cgroup.kill" ] &&
    [ -n "$(find "/sys/fs/cgroup/unified/$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)" ]; then
    log "killing what is left in the run's cgroup $cg"
    echo 1 >"/sys/fs/cgroup/unified/$cg/cgroup.kill"
    for _ in $(seq 50); do
      [ -z "$(find "/sys/fs/cgroup/unified/$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  if mountpoint -q "$dir/merged"; then umount "$dir/merged"; fi
  loop=$(state_get "$dir" LOOP)
  if [ -n "$loop" ] && losetup "$loop" 2>/dev/null | grep -qF "$dir/volume.img"; then losetup -d "$loop"; fi
  if [ -n "$cg" ]; then
    for h in systemd unified; do
      if [ -d "/sys/fs/cgroup/$h/$cg" ]; then
        find "/sys/fs/cgroup/$h/$cg" -depth -type d -exec rmdir {} + 2>/dev/null || log "could not remove cgroup $h/$cg"
      fi
    done
  fi
  net_down "$dir"
}
