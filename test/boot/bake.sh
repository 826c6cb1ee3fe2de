#!/bin/bash
# The boot harness's baked-image mode: what `npm run bake` makes in the cloud, made here the same way. The cached
# stock rootfs boots with the image builder's user-data (`npm run render -- --bake`); the builder bakes, seals the
# image and powers off; its disk (the overlay over the stock rootfs, merged) becomes a "baked rootfs", cached by the
# user-data, the stock rootfs and this script. Boot boxes on it with BOX_ROOTFS=<path> box.sh test|bench|try.
#
# usage: bake.sh [--rebuild] BAKE_USER_DATA   bake (or reuse) the image, check it holds no box and no secret;
#                                             prints the baked rootfs path (nothing else on stdout)
#        bake.sh bare                         boot the stock rootfs with cloud-init off, then with an empty
#                                             user-data: the "bare boot" the baked box is compared with
# env:   BAKE_TIMEOUT (900 s), AGENTBOX_BOOT_CACHE (see lib.sh), KEEP_RUN=1 (keep the builder's run directory)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
HERE=$(dirname "$0")
# shellcheck source=lib.sh
. "$HERE/lib.sh"
# shellcheck source=net.sh
. "$HERE/net.sh"
# shellcheck source=container.sh
. "$HERE/container.sh"

BAKE_TIMEOUT=${BAKE_TIMEOUT:-900}
NAME='' RUN_DIR='' T_BOOT=''

boot_root() { # boot_root ROOTFS USER_DATA [NO_CLOUD_INIT]: a run of its own (box.sh's building blocks); sets T_BOOT
  NAME=agentbox-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
  RUN_DIR=$BOOT_RUNS/$NAME
  mkdir -p "$RUN_DIR"
  state_set "$RUN_DIR" ROOTFS "$1"
  net_up "$RUN_DIR" "$NAME"
  box_prepare "$RUN_DIR" "$NAME" "$1" "$2"
  # cloud-init's own switch: the boot then runs nothing of cloud-init's at all
  if [ -n "${3:-}" ]; then touch "$RUN_DIR/merged/etc/cloud/cloud-init.disabled"; fi
  T_BOOT=$(now)
  box_boot "$RUN_DIR" "$NAME" "$RUN_DIR/console.log"
}

end_run() { # end_run KEEP: tear the run down; keep its directory (to look at) when KEEP is 1
  trap '' PIPE
  [ -n "$RUN_DIR" ] || return 0
  box_teardown "$RUN_DIR"
  if [ "$1" = 1 ] || [ "${KEEP_RUN:-0}" = 1 ]; then
    log "run directory kept: $RUN_DIR (console.log; upper/ is the builder's disk, upper/var/log/agentbox/bake.log)"
  else
    rm -rf "$RUN_DIR"
  fi
  RUN_DIR=''
}

# Until the builder has sealed the image and powered itself off. A failed bake is never sealed, so the builder
# would stay up until the timeout: cloud-init's result with an error ends the wait at once. The result is read
# through /proc from outside, never with nsenter: systemd-shutdown stops every process in the box (SIGSTOP), an
# nsenter whose child it stopped stops itself too, never gets SIGCONT, and the box's PID 1 then waits for ever.
wait_for_poweroff() {
  local deadline=$(($(date +%s) + BAKE_TIMEOUT)) result
  while box_running "$RUN_DIR"; do
    result=/proc/$LEADER/root/run/cloud-init/result.json
    if [ -s "$result" ] && ! tr -d ' \n' <"$result" 2>/dev/null | grep -q '"errors":\[\]'; then
      log "the bake failed: cloud-init reports: $(cat "$result" 2>/dev/null)"
      tail -n 30 "$RUN_DIR/upper/var/log/agentbox/bake.log" "$RUN_DIR/upper/var/log/cloud-init-output.log" >&2 2>/dev/null || true
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "the builder did not power off within $BAKE_TIMEOUT s"
      return 1
    fi
    sleep 1
  done
}

none_exist() { # none_exist PATH...: prints the first that exists
  local f
  for f; do
    if [ -e "$f" ] || [ -L "$f" ]; then
      echo "$f"
      return 1
    fi
  done
}

# What the image must hold, and what it must not: nothing of a box, no secret, no identity of the builder.
image_records() { # image_records ROOT VERSION BUILDER
  local f=$1/etc/agentbox/image
  if ! grep -qx "claude_version=$2" "$f" || ! grep -qx "builder=$3" "$f" || ! grep -q '^packages=.' "$f" ||
    ! grep -q '^created=' "$f"; then
    cat "$f"
    return 1
  fi
}
packages_installed() { # packages_installed ROOT: every package the image records is in dpkg's status
  local p rc=0
  for p in $(sed -n 's/^packages=//p' "$1/etc/agentbox/image" | tr , ' '); do
    grep -qx "Package: $p" "$1/var/lib/dpkg/status" || {
      echo "missing: $p"
      rc=1
    }
  done
  return $rc
}
no_users() { ! awk -F: '$3 >= 1000 && $3 < 65534 { print }' "$1/etc/passwd" | grep .; }
no_machine_id() { # empty (the builder's is gone; no first-boot presets either), and D-Bus's is a link to it or absent
  local f=$1/var/lib/dbus/machine-id
  [ ! -s "$1/etc/machine-id" ] || {
    echo "/etc/machine-id: $(cat "$1/etc/machine-id")"
    return 1
  }
  [ -L "$f" ] || [ ! -s "$f" ] || {
    echo "/var/lib/dbus/machine-id: $(cat "$f")"
    return 1
  }
}
no_package_lists() { ! find "$1/var/lib/apt/lists" -type f -name '*_Packages*' | grep .; }

check_image() { # check_image ROOT USER_DATA
  local r=$1 version builder
  version=$(sed -n 's/^ *CLAUDE_VERSION=//p' "$2" | head -n 1)
  builder=$(sed -n 's/^ *BUILDER=//p' "$2" | head -n 1)
  check "the image records Claude Code $version and the builder $builder (/etc/agentbox/image)" \
    image_records "$r" "$version" "$builder"
  check "Claude Code $version is in the image (/opt/claude-code/$version/claude)" test -x "$r/opt/claude-code/$version/claude"
  check "every package the image records is installed" packages_installed "$r"
  check "no box settings or secrets (/etc/agentbox/box.env, bake.env, a tailnet key, tailscale state)" \
    none_exist "$r/etc/agentbox/box.env" "$r/etc/agentbox/bake.env" "$r/run/agentbox" "$r/var/lib/tailscale"
  check "no users beyond the stock image's (no agent, no admin login)" no_users "$r"
  check "not provisioned as a box (no /var/lib/agentbox, no provision.log)" \
    none_exist "$r/var/lib/agentbox" "$r/var/log/agentbox/provision.log"
  check "no cloud-init instance state or logs (the next boot is a first boot)" \
    none_exist "$r"/var/lib/cloud/instance "$r"/var/lib/cloud/instances/* "$r"/var/lib/cloud/data "$r"/var/log/cloud-init*.log
  check "no machine id (/etc/machine-id empty)" no_machine_id "$r"
  check "no SSH host keys, no root login keys, no random seed" \
    none_exist "$r"/etc/ssh/ssh_host_* "$r/root/.ssh/authorized_keys" "$r/var/lib/systemd/random-seed"
  check "no package lists (a box refreshes them when it installs something)" no_package_lists "$r"
  summary
}

cmd_bake() { # cmd_bake [--rebuild] USER_DATA
  local rebuild=0 ud stock key baked tmp t0 t_off veth mb layer
  if [ "${1:-}" = --rebuild ]; then
    rebuild=1
    shift
  fi
  [ -f "${1:-}" ] || die "usage: bake.sh [--rebuild] BAKE_USER_DATA"
  ud=$(readlink -f "$1")
  grep -q '^ *BUILDER=' "$ud" || die "$1 is not an image builder's user-data (npm run render -- --bake)"
  stock=$("$BOOT_DIR/build-rootfs.sh")
  key=$(cat "$ud" "$0" <(basename "$stock") | sha256sum | cut -c1-12)
  baked=$BOOT_CACHE/baked-$key
  exec 7>"$BOOT_CACHE/baked.lock"
  flock 7 # one bake at a time; a second caller waits and then reuses it
  if [ -e "$baked/.baked" ] && [ $rebuild = 0 ]; then
    log "reusing baked rootfs $baked ($(cat "$baked/.baked"))"
    # checked again (seconds): what a box boots from must still hold no box and no secret
    check_image "$baked" "$ud" >&2 || die "the cached baked image fails its checks: bake.sh --rebuild"
    echo "$baked"
    return 0
  fi
  if [ -e "$baked" ] && grep -q "lowerdir=${baked}[,:]" /proc/mounts; then
    die "$baked is in use by a running box: stop it first (box.sh list)"
  fi

  # the box's own cloud-init schema and shellcheck first: seconds, where a bad document would cost a boot
  "$BOOT_DIR/lint.sh" "$ud" "$stock" >&2 || die "$1 fails the static checks (lint.sh)"
  t0=$(now)
  trap 'end_run 1' EXIT
  trap 'exit 130' INT TERM
  boot_root "$stock" "$ud"
  log "baking: the builder $NAME boots the stock rootfs with $1 (up to $BAKE_TIMEOUT s)"
  wait_for_poweroff || exit 1
  t_off=$(since "$T_BOOT")
  veth=$(state_get "$RUN_DIR" VETH)
  mb=$(awk '{ printf "%.0f", $1 / 1048576 }' "/sys/class/net/$veth/statistics/tx_bytes")
  layer=$(du -sm "$RUN_DIR/upper" | cut -f1)

  # the builder's disk as the cloud would snapshot it: the overlay (still mounted) seen merged
  tmp=$baked.tmp
  rm -rf "$tmp"
  mkdir "$tmp"
  cp -a "$RUN_DIR/merged/." "$tmp/"
  # what box.sh wrote for this run only (the seed, the proxy), as every box gets its own
  rm -rf "$tmp/var/lib/cloud/seed/nocloud" "$tmp/etc/apt/apt.conf.d/90agentbox-boot-proxy" \
    "$tmp/etc/systemd/system.conf.d/90-agentbox-boot-proxy.conf" "$tmp/etc/systemd/user.conf.d/90-agentbox-boot-proxy.conf"
  if ! check_image "$tmp" "$ud" >&2; then
    rm -rf "$tmp"
    die "the baked image failed its checks"
  fi
  echo "baked in $(since "$t0") s from $(basename "$stock")" >"$tmp/.baked"
  rm -rf "$baked"
  mv "$tmp" "$baked"
  end_run 0
  trap - EXIT INT TERM

  # older bakes that no running box still uses as its lower layer
  for old in "$BOOT_CACHE"/baked-*; do
    if [ "$old" != "$baked" ] && [ -d "$old" ] && ! grep -q "lowerdir=${old}[,:]" /proc/mounts; then rm -rf "$old"; fi
  done
  echo "# bench: bake_s=$(since "$t0") bake_boot_to_poweroff_s=$t_off bake_downloaded_mb=$mb bake_layer_mb=$layer" >&2
  echo "$baked"
}

target_reached() { # seconds from T_BOOT until multi-user.target was reached, by the box's own record
  local ts
  ts=$(cin systemctl show --timestamp=us+utc -p ActiveEnterTimestamp --value multi-user.target 2>/dev/null) &&
    [ -n "$ts" ] && seconds_between "$T_BOOT" "$(date -d "$ts" +%s.%N)"
}

cmd_bare() {
  local stock bare=- empty=- empty_ci=-
  stock=$("$BOOT_DIR/build-rootfs.sh")
  trap 'end_run 0' EXIT
  trap 'exit 130' INT TERM
  printf '#cloud-config\n{}\n' >"$BOOT_CACHE/empty-user-data"
  boot_root "$stock" "$BOOT_CACHE/empty-user-data" no-cloud-init
  box_wait_booted 120 && bare=$(target_reached)
  end_run 0
  boot_root "$stock" "$BOOT_CACHE/empty-user-data"
  box_wait_cloud_init "$RUN_DIR" 300 && empty_ci=$(since "$T_BOOT")
  box_wait_booted 120 && empty=$(target_reached)
  end_run 0
  echo "# bench: bare_boot_to_multi_user_s=$bare empty_boot_to_multi_user_s=$empty empty_boot_to_cloudinit_s=$empty_ci"
}

require_root
ensure_host_packages
case ${1:-} in
  bare) cmd_bare ;;
  '' | -h | --help)
    sed -n '7,12s/^# \{0,1\}//p' "$0" >&2
    exit 2
    ;;
  *) cmd_bake "$@" ;;
esac
