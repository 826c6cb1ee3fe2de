#!/bin/bash
# First-boot provisioning of an agentbox, run once by cloud-init (runcmd) as root, after packages are installed.
#
# Each step records its result in /var/lib/agentbox/status (KEY=VALUE lines) and the whole run is logged to
# /var/log/agentbox/provision.log. Optional steps (the repository, Tailscale) may fail without stopping the agent.
# The status file ends with result=ready (all ok), degraded (an optional step failed) or failed (the agent is not
# running). Exit status: 0 only when ready, so that cloud-init's own result reports anything else.
#
# `provision --resume` (agentbox-resume.service, on every boot once cloud-init is done) finishes a first boot that a
# reboot or a crash cut short, and does nothing on any other boot (see "Resuming" below).
set -uo pipefail
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
# `provision --bake` makes a baked image instead of a box, `provision --seal` ends that (see "The baked image"
# below): no box settings, no agent and no status file then.
MODE=box RESUME=0
case ${1:-} in
  '') ;;
  --resume) RESUME=1 ;;
  --bake) MODE=bake ;;
  --seal) MODE=seal ;;
  *)
    echo "usage: provision [--resume | --bake | --seal]" >&2
    exit 2
    ;;
esac

STATUS_DIR=/var/lib/agentbox
STATUS=$STATUS_DIR/status
LOG_DIR=/var/log/agentbox
TAILSCALE_KEY=/run/agentbox/tailscale-authkey
IMAGE_FILE=/etc/agentbox/image
BAKE_ENV=/etc/agentbox/bake.env
status_of() { sed -n "s/^$1=//p" "$STATUS" 2>/dev/null | tail -n 1; }

# Resuming. cloud-init runs runcmd's script once per instance, and marks a module as run BEFORE running it: its
# semaphore (/var/lib/cloud/instance/sem/config_scripts_user) is written first, and is not removed when the run
# never ends (cloudinit/helpers.py of Debian 13's cloud-init 25.1.4: FileSemaphores.lock yields the lock
# _acquire has written, and clears it only for clear_on_fail, which Runners.run passes as False). A first boot cut
# short in provisioning is therefore never provisioned again by cloud-init, while the modules after it run on the
# next boot. So: with a status file that still says provisioning (or none at all, once that semaphore exists),
# this boot finishes the job; with ready, degraded or failed there is nothing to do.
if [ $RESUME = 1 ]; then
  [ -r /etc/agentbox/box.env ] || exit 0
  case $(status_of result) in
    provisioning) ;;
    '') [ -e /var/lib/cloud/instance/sem/config_scripts_user ] || exit 0 ;;
    *) exit 0 ;;
  esac
fi
if [ $MODE = box ]; then
  agentbox_load_env /etc/agentbox/box.env
  mkdir -p "$STATUS_DIR" "$LOG_DIR"
  chmod 0755 "$STATUS_DIR" "$LOG_DIR"
  exec > >(tee -a "$LOG_DIR/provision.log") 2>&1
  AGENT_UID=$(id -u "$AGENT_USER")
  AGENT_GROUP=$(id -gn "$AGENT_USER")
  # one provisioning at a time (a resume started by hand while cloud-init's run goes on); /run/agentbox is root's
  install -d -m 0755 /run/agentbox
  # 0600: the agent could otherwise open it and hold the lock (flock needs no write access)
  (umask 077 && : >>/run/agentbox/provision.lock)
  exec 9>>/run/agentbox/provision.lock
  if ! flock -n 9; then
    echo "agentbox: provisioning is already running (see $LOG_DIR/provision.log)"
    exit $((RESUME ? 0 : 1))
  fi
else
  [ $MODE = seal ] || agentbox_load_env "$BAKE_ENV"
  mkdir -p "$LOG_DIR"
  exec > >(tee -a "$LOG_DIR/bake.log") 2>&1
fi
REASON=

# status_set KEY VALUE: replaces the key's line, keeps the others in order
status_set() {
  local tmp
  tmp=$(mktemp "$STATUS_DIR/.status.XXXXXX")
  # one line, no control characters: a reason may quote what a command of the agent's printed
  { grep -v "^$1=" "$STATUS" 2>/dev/null || true; printf '%s=%s\n' "$1" "$(printf '%s' "$2" | tr '\n\t' '  ' | agentbox_printable | cut -c 1-300)"; } >"$tmp"
  chmod 0644 "$tmp"
  mv "$tmp" "$STATUS"
}
fail() { REASON=$*; return 1; }
# step NAME FUNCTION: runs one step and records ok / failed: <reason>
step() {
  local name=$1 started
  # a resumed run keeps what an earlier boot did: every step's effect outlives a reboot (enabled units, linger,
  # installed files, the volume's mount on every boot)
  if [ $RESUME = 1 ] && [ "$(status_of "$name")" = ok ]; then
    echo "agentbox: $name ok on an earlier boot"
    return 0
  fi
  started=$(date +%s)
  REASON=
  echo "agentbox: $name ..."
  if "$2"; then
    status_set "$name" ok
    echo "agentbox: $name ok ($(($(date +%s) - started)) s)"
  else
    status_set "$name" "failed: ${REASON:-see $LOG_DIR/provision.log}"
    echo "agentbox: $name FAILED: ${REASON:-see above}"
    return 1
  fi
}
# npm, the cheapest way this image offers it. Debian 13's nodejs brings corepack, which fetches one pinned npm
# release from the npm registry in seconds; Debian's own npm package pulls ~380 packages through apt (minutes).
# Corepack is not everywhere (Ubuntu 24.04's nodejs lacks it) and may fail: then apt's npm, without recommends.
NPM_VERSION=10.9.2
npm_cli() {
  if command -v npm >/dev/null; then
    npm "$@"
  elif command -v corepack >/dev/null && COREPACK_ENABLE_DOWNLOAD_PROMPT=0 corepack "npm@$NPM_VERSION" "$@"; then
    return 0
  else
    echo "agentbox: corepack unavailable or failed; installing npm with apt"
    apt_lists && apt_get install -y -qq --no-install-recommends npm >/dev/null && npm "$@"
  fi
}

# apt on a busy box: a first boot may meet apt-daily or unattended-upgrades (Ubuntu starts them at boot). Every apt
# call waits for the package locks, and says so. apt-get's own wait (DPkg::Lock::Timeout) covers only dpkg's locks:
# apt 3.0's `update` takes the lists lock, and the download the archives lock, without waiting (pkgAcquire::GetLock
# fails at once), so a lock taken between the look below and apt's own is retried with backoff.
APT_LOCK_WAIT_S=${APT_LOCK_WAIT_S:-900}
APT_LOCKS=/var/lib/dpkg/lock-frontend,/var/lib/dpkg/lock,/var/lib/apt/lists/lock,/var/cache/apt/archives/lock
# "command (pid N)" for each of root's processes holding one of the locks (fcntl locks, as lslocks sees them): paths
# are as each process sees them, and the agent could lock a look-alike in a mount namespace of its own
apt_lock_holders() {
  local pid holders
  holders=$(lslocks --noheadings --raw --output PID,COMMAND,PATH 2>/dev/null |
    awk -v locks="$APT_LOCKS" 'BEGIN { n = split(locks, l, ","); for (i = 1; i <= n; i++) want[l[i]] = 1 }
      ($3 in want) && !seen[$1]++ { print $1, $2 }')
  while read -r pid command; do
    [ -n "$pid" ] && [ "$(stat -c %u "/proc/$pid" 2>/dev/null)" = 0 ] && printf '%s (pid %s), ' "$command" "$pid"
  done <<<"$holders" | sed 's/, $//'
}
# says so on stderr: apt's callers silence its stdout
wait_for_package_lock() {
  local holders started
  holders=$(apt_lock_holders)
  [ -n "$holders" ] || return 0
  started=$(date +%s)
  echo "agentbox: waiting for the package lock (held by $holders)" >&2
  while [ -n "$(apt_lock_holders)" ] && [ $(($(date +%s) - started)) -lt "$APT_LOCK_WAIT_S" ]; do sleep 2; done
  echo "agentbox: waited $(($(date +%s) - started)) s for the package lock" >&2
}
APT_RC=0 APT_ERR=
# true unless apt-get found a lock taken (then agentbox_retry tries again); its status in APT_RC
apt_get_once() {
  wait_for_package_lock
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$APT_LOCK_WAIT_S" "$@" 2>"$APT_ERR"
  APT_RC=$?
  cat "$APT_ERR" >&2
  [ $APT_RC = 0 ] || ! grep -q 'Could not get lock' "$APT_ERR"
}
# apt-get ARGS...
apt_get() {
  APT_ERR=$(mktemp)
  agentbox_retry 5 5 apt_get_once "$@"
  rm -f "$APT_ERR"
  return $APT_RC
}
# A baked image has no package lists, and a box that needs no packages has cloud-init fetch none: fetched before
# the first install after the agent is up.
apt_lists() { compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || apt_get update -qq; }

# The packages cloud-init installs (PACKAGES), when some are not there: a first boot cut short while cloud-init
# installed them (its module is not run again), or an install that failed. dpkg cut short in the middle is put
# right first, or apt refuses to work.
missing_packages() {
  local p
  for p in ${PACKAGES//,/ }; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}
dpkg_configure_all() { DEBIAN_FRONTEND=noninteractive dpkg --configure -a --force-confdef --force-confold; }
install_packages() {
  local missing
  mapfile -t missing < <(missing_packages)
  echo "missing: ${missing[*]}"
  if [ -n "$(dpkg --audit 2>/dev/null)" ]; then
    echo "dpkg was interrupted: dpkg --configure -a"
    wait_for_package_lock
    agentbox_retry 3 5 dpkg_configure_all || fail "dpkg --configure -a failed (see dpkg --audit)" || return 1
  fi
  apt_lists || fail "apt-get update failed" || return 1
  apt_get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null ||
    fail "apt could not install ${missing[*]}"
}
# As the agent, bounded (a kept home holds an earlier agent's settings, which could make a command wait forever):
# as_agent COMMAND... (2 minutes), as_agent_for SECONDS COMMAND...
as_agent_for() {
  local seconds=$1
  shift
  timeout -s TERM -k 10 "$seconds" runuser -u "$AGENT_USER" -- env HOME="$AGENT_HOME" XDG_RUNTIME_DIR="/run/user/$AGENT_UID" "$@" 9>&-
}
as_agent() { as_agent_for 120 "$@"; }
fetch() { curl -fsSL --proto '=https' --retry 3 --retry-delay 2 --connect-timeout 15 --max-time 300 "$@"; }

# The home as cloud-init made it on the root disk (before any volume is mounted over it): write_files made the
# parent folders of the agent's files as root.
prepare_home() {
  # Never on the volume: once the volume step has recorded it, every boot mounts it here, and root changes nothing
  # in a home the agent may have shaped (a resumed first boot skips this step then anyway).
  if [ -e "$VOLUME_STATE" ] || mountpoint -q "$AGENT_HOME"; then
    echo "$AGENT_HOME is the volume: nothing to prepare"
    return 0
  fi
  if ! install -d -o "$AGENT_USER" -g "$AGENT_GROUP" -m 0755 "$AGENT_HOME/.config" "$WORKSPACE" ||
    ! install -d -o "$AGENT_USER" -g "$AGENT_GROUP" -m 0700 "$AGENT_HOME/.config/agentbox" "$AGENT_HOME/.claude" ||
    ! chown -h "$AGENT_USER:$AGENT_GROUP" "$AGENT_HOME/.claude.json" "$AGENT_HOME"/.config/agentbox/*; then
    fail "could not prepare $AGENT_HOME"
  fi
}

# Folders and files in the agent's home, written as the agent (see home-files.sh): root never writes into, or
# follows a link in, what the agent may have shaped. home_files ROOT dir|file|rm ...
home_files() { runuser -u "$AGENT_USER" -- "$LIB/home-files" "$@" 9>&-; }
LIB=/usr/local/lib/agentbox

# The persistent volume becomes the agent's home: the workspace, Claude Code's history, settings and login, and
# the workflow runs all live there and outlive the server. A blank volume is formatted (only one with no
# signature at all: anything else is refused, never overwritten) and seeded with the home cloud-init made; a
# volume from an earlier box keeps everything but takes this box's keys and credentials. Mounted by
# agentbox-volume.service on every boot, which the agent's user manager requires: no agent on an empty home.
#
# A kept volume is hostile input: the earlier agent (root itself, with agentbox:sudo) may have left links, device
# nodes or set-uid files anywhere on it. So root mounts it nosymfollow here (no link on it is ever followed),
# nosuid and nodev always, changes only ownership (chown -h: a link itself, never its target), and puts this box's
# files in place as the agent.
VOLUME_STATE=/var/lib/agentbox/volume
# this box's keys and credentials, which replace an earlier box's: path in the home, mode
BOX_FILES=(.ssh/authorized_keys:0600 .config/agentbox/agent.env:0600 .config/agentbox/notify.env:0600
  .config/agentbox/workflow-prompt:0600)
# kept_volume_files STAGE: this box's files on a kept volume, as the agent
kept_volume_files() {
  local entry f
  for entry in "${BOX_FILES[@]}"; do
    f=${entry%:*}
    if [ -e "$AGENT_HOME/$f" ]; then
      home_files "$1" file "$AGENT_HOME/$f" "$f" "${entry##*:}" || fail "could not put $f on the kept volume" || return 1
    else
      home_files "$1" rm "$f" || fail "could not remove an earlier box's $f from the volume" || return 1
    fi
  done
  # Claude Code's settings and login stay; a missing, empty or odd one (a link, a FIFO) is this box's again
  if [ -L "$1/.claude.json" ] || [ ! -f "$1/.claude.json" ] || [ ! -s "$1/.claude.json" ]; then
    home_files "$1" file "$AGENT_HOME/.claude.json" .claude.json 0600 || fail "could not put .claude.json on the volume" || return 1
  fi
  home_files "$1" dir workspace .claude .config/agentbox || fail "could not make the home's folders on the volume" || return 1
  # sshd ignores keys in a folder others may write to
  runuser -u "$AGENT_USER" -- chmod 0700 "$1/.ssh" || fail "could not make $1/.ssh private"
}

attach_volume() {
  local dev uuid origin=kept stage=/run/agentbox-volume-stage rc
  # a first boot cut short once the volume was seeded and recorded: only its mount is left to do
  if [ -s "$VOLUME_STATE" ]; then
    mount_volume_on_every_boot
    return
  fi
  dev=$(agentbox_volume_device "${VOLUME_WAIT_S:-300}") ||
    fail "no volume at $VOLUME_GLOB after ${VOLUME_WAIT_S:-300} s (pulumi up attaches it; see the cloud console)" || return 1
  blkid -p "$dev" >/dev/null 2>&1
  rc=$?
  case $rc in
    0)
      # formatted by this box on a first boot cut short before the volume was recorded: seeded again (the volume
      # never was the agent's home, and the stage below follows no link on it)
      [ "$(blkid -s UUID -o value "$dev")" = "$(sed -n 's/^uuid=//p' "$VOLUME_STATE.formatted" 2>/dev/null)" ] && origin=new
      ;;
    2)
      mkfs.ext4 -q -L agentbox-home -m 0 "$dev" || fail "mkfs.ext4 $dev failed" || return 1
      origin=new
      echo "uuid=$(blkid -s UUID -o value "$dev")" >"$VOLUME_STATE.formatted"
      ;;
    *) fail "blkid cannot read $dev (status $rc)" || return 1 ;;
  esac
  [ "$(blkid -s TYPE -o value "$dev")" = ext4 ] ||
    fail "$dev holds $(blkid -s TYPE -o value "$dev"), not agentbox's ext4: left untouched" || return 1
  uuid=$(blkid -s UUID -o value "$dev")
  install -d -m 0755 "$stage"
  mount -t ext4 -o nosuid,nodev,nosymfollow,errors=remount-ro "$dev" "$stage" || fail "cannot mount $dev" || return 1
  if [ $origin = new ] && ! { cp -a "$AGENT_HOME/." "$stage/" && date -u +created=%FT%TZ >"$stage/.agentbox-volume"; }; then
    umount "$stage"
    fail "could not seed the new volume"
    return 1
  fi
  # Everything on the volume is the agent's (an earlier box may have given the agent another uid); -R walks any
  # depth (find's paths stop at PATH_MAX), -h changes a link itself.
  chown -R -h "$AGENT_USER:$AGENT_GROUP" "$stage" ||
    { umount "$stage"; fail "could not give the volume's files to $AGENT_USER"; return 1; }
  chmod --reference="$AGENT_HOME" "$stage"
  if [ $origin = kept ] && ! kept_volume_files "$stage"; then
    umount "$stage"
    return 1
  fi
  umount "$stage"
  printf 'device=%s\nuuid=%s\norigin=%s\n' "$dev" "$uuid" "$origin" >"$VOLUME_STATE.tmp" && mv "$VOLUME_STATE.tmp" "$VOLUME_STATE"
  rm -f "$VOLUME_STATE.formatted"
  mount_volume_on_every_boot || return 1
  echo "volume $dev ($([ $origin = new ] && echo "formatted now" || echo "kept from an earlier box")) is $AGENT_HOME"
}

# every boot from now on: agentbox-volume.service mounts it, and the agent's user manager waits for that
mount_volume_on_every_boot() {
  mkdir -p "/etc/systemd/system/user@$AGENT_UID.service.d"
  printf '[Unit]\nRequires=agentbox-volume.service\nAfter=agentbox-volume.service\n' \
    >"/etc/systemd/system/user@$AGENT_UID.service.d/agentbox-volume.conf"
  systemctl daemon-reload
  systemctl enable --now agentbox-volume.service || fail "cannot mount the volume on $AGENT_HOME"
}

expected_platform() {
  case $(dpkg --print-architecture) in
    amd64) echo linux-x64 ;;
    arm64) echo linux-arm64 ;;
    *) return 1 ;;
  esac
}

install_claude() {
  local platform dir tmp
  platform=$(expected_platform) || fail "unsupported architecture $(dpkg --print-architecture)" || return 1
  [ "$platform" = "$CLAUDE_PLATFORM" ] ||
    fail "this machine is $platform but the stack expected $CLAUDE_PLATFORM (check agentbox:serverType)" || return 1
  dir=/opt/claude-code/$CLAUDE_VERSION
  if claude_in_image "$platform"; then
    echo "Claude Code $CLAUDE_VERSION ($platform) from the baked image"
    use_claude "$dir"
    return
  fi
  tmp=$(mktemp -d)
  case $CLAUDE_INSTALL in
    npm)
      # Only the one native binary for this platform: npm checks the tarball against the registry's integrity
      # hash; the main package would pull Node-side wrappers and, with older npm, both libc variants.
      (cd "$tmp" && npm_cli pack --silent --cache "$tmp/cache" "@anthropic-ai/claude-code-$platform@$CLAUDE_VERSION" >/dev/null) ||
        fail "npm could not fetch @anthropic-ai/claude-code-$platform@$CLAUDE_VERSION" || return 1
      tar -xzf "$tmp"/*.tgz -C "$tmp" package/claude || fail "the package has no claude binary" || return 1
      install -D -m 0755 "$tmp/package/claude" "$dir/claude"
      ;;
    download)
      # Anthropic's release server; the manifest gives each platform's SHA-256.
      local base=https://downloads.claude.ai/claude-code-releases/$CLAUDE_VERSION sum
      fetch -o "$tmp/manifest.json" "$base/manifest.json" || fail "could not download the release manifest" || return 1
      sum=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["platforms"][sys.argv[2]]["checksum"])' \
        "$tmp/manifest.json" "$platform") || fail "the manifest has no checksum for $platform" || return 1
      fetch -o "$tmp/claude" "$base/$platform/claude" || fail "could not download claude" || return 1
      echo "$sum  $tmp/claude" | sha256sum -c --quiet || fail "checksum mismatch for the downloaded claude" || return 1
      install -D -m 0755 "$tmp/claude" "$dir/claude"
      ;;
    *) fail "unknown install method $CLAUDE_INSTALL" || return 1 ;;
  esac
  rm -rf "$tmp"
  use_claude "$dir"
}

# use_claude DIR: puts its claude on PATH and runs it once: as the agent, or on an image builder (no agent) as root
use_claude() {
  local home rc
  ln -sfn "$1/claude" /usr/local/bin/claude
  if [ $MODE = box ]; then as_agent claude --version || fail "claude does not run"; return; fi
  home=$(mktemp -d)
  HOME=$home claude --version
  rc=$?
  rm -rf "$home"
  [ $rc = 0 ] || fail "claude does not run"
}

clone_repo() {
  if [ -n "$(as_agent find "$WORKSPACE/" -mindepth 1 -maxdepth 1 2>/dev/null | head -n 1)" ]; then
    echo "workspace is not empty; leaving it as it is"
    return 0
  fi
  local args=(clone --quiet)
  [ -n "${REPO_BRANCH:-}" ] && args+=(--branch "$REPO_BRANCH")
  # A repository on the box itself (file:///path) is root's or an image's: git serves it to another user only when
  # told it is safe (its "dubious ownership" check), and the upload-pack it starts for a local clone reads neither
  # -c nor the environment's settings, only its own command line. (The path is config.ts's: no blanks, no quotes.)
  [[ $REPO_URL == file:///* ]] && args+=(--upload-pack "git -c safe.directory=${REPO_URL#file://} upload-pack")
  # none of a kept home's git or ssh settings (its hooks, helpers, ssh config): the clone runs during provisioning
  as_agent_for 1800 env GIT_SSH_COMMAND="ssh -F /dev/null -o StrictHostKeyChecking=accept-new -o BatchMode=yes" \
    GIT_TERMINAL_PROMPT=0 GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 \
    git -c core.hooksPath=/dev/null "${args[@]}" -- "$REPO_URL" "$WORKSPACE" ||
    fail "git clone failed (a private repository needs a deploy key on the box)"
}

# Memory: the slices' limits (user.slice, the agent's app.slice: their drop-ins came with the user-data) take
# effect with a reload; zram swap starts from the generator's unit. A container has no zram: nothing to start.
start_memory_limits() {
  systemctl daemon-reload || fail "systemctl daemon-reload failed" || return 1
  if systemd-detect-virt --quiet --container; then
    echo "in a container ($(systemd-detect-virt --container)): no zram swap here; the memory limits stand"
    return 0
  fi
  systemctl start dev-zram0.swap || fail "zram swap did not start (journalctl -u systemd-zram-setup@zram0)" || return 1
  swapon --show=NAME,SIZE --noheadings
}

start_firewall() {
  # enabled for every later boot, where it loads before the network comes up
  systemctl enable --now agentbox-firewall.service || fail "the host firewall did not load (nft -f /etc/agentbox/firewall.nft)"
}

start_egress_allowlist() {
  # npm's registry as this box's npm sees it: allowed for the agent (plugins, MCP servers fetched with npx)
  npm_cli config get registry >/etc/agentbox/npm-registry 2>/dev/null || rm -f /etc/agentbox/npm-registry
  if ! systemctl enable agentbox-egress.service agentbox-egress.timer ||
    ! systemctl start agentbox-egress.service agentbox-egress.timer; then
    fail "the egress allow-list did not load (journalctl -u agentbox-egress)"
  fi
}

enable_upgrades() {
  apt_lists
  apt_get install -y -qq --no-install-recommends unattended-upgrades >/dev/null ||
    fail "apt could not install unattended-upgrades" || return 1
  systemctl enable --now apt-daily.timer apt-daily-upgrade.timer || fail "the apt timers did not start"
}

# agentbox:approvals: the receiver (a user of its own, made by systemd) waits for the tailnet's address by itself
start_approvals() {
  systemctl enable --now agentbox-approve.service || fail "the approvals receiver did not start (journalctl -u agentbox-approve)"
}

start_watch() {
  # journald reads its cap (journald.conf.d, written by cloud-init after journald started) only when it starts
  systemctl restart systemd-journald || fail "journald did not restart with its cap" || return 1
  systemctl enable --now agentbox-watch.timer || fail "the watcher's timer did not start (systemctl status agentbox-watch.timer)"
}

# What `systemctl --user enable UNIT` does, done as files: cloud-init runs as root with no login session, where
# `systemctl --user` has no manager to talk to. enable_user_unit UNIT (a unit in /etc/systemd/user)
# enable_user_unit UNIT (a unit in /etc/systemd/user, or an instance of a template there)
WANTS=.config/systemd/user/default.target.wants
enable_user_unit() {
  local file=$1
  [[ $1 == *@?*.service ]] && file=${1%%@*}@.service
  home_files "$AGENT_HOME" dir "$WANTS" && home_files "$AGENT_HOME" rm "$WANTS/$1" &&
    as_agent ln -s "/etc/systemd/user/$file" "$AGENT_HOME/$WANTS/$1"
}

# An earlier box's home (a kept volume) may enable agents this box does not have (removed from agentbox:agents, or the
# one agent of a stack that has a list now): their links go, so that they never start here. The names are listed as
# the agent and only agentbox's own unit names are acted on.
disable_other_agents() {
  local link
  while read -r link; do
    [[ $link =~ ^claude-agent(@[a-z0-9-]{1,24})?\.service$ ]] || continue
    agentbox_agent_units | grep -qxF -- "$link" && continue
    echo "an earlier box's agent unit $link is not one of this box's agents: disabled"
    home_files "$AGENT_HOME" rm "$WANTS/$link" || return 1
  done < <(as_agent find -P "$AGENT_HOME/$WANTS" -mindepth 1 -maxdepth 1 -name 'claude-agent*.service' -printf '%f\n' 2>/dev/null |
    head -n 64)
}

start_agent() {
  # where the agent's hooks record its turn and its login (read, validated, by the watcher and agentbox-status)
  install -d -o "$AGENT_USER" -g "$AGENT_GROUP" -m 0755 /var/lib/agentbox/agent || fail "could not make /var/lib/agentbox/agent" || return 1
  local units unit _ inactive
  mapfile -t units < <(agentbox_agent_units)
  disable_other_agents || fail "could not disable an earlier box's agents" || return 1
  # enabled before linger, so the user manager starts them itself
  for unit in "${units[@]}"; do enable_user_unit "$unit" || fail "could not enable $unit" || return 1; done
  loginctl enable-linger "$AGENT_USER" || fail "loginctl enable-linger failed" || return 1
  # enable-linger returns before the user manager is up
  systemctl start "user@$AGENT_UID.service" || fail "user@$AGENT_UID.service did not start" || return 1
  as_agent systemctl --user daemon-reload
  # without waiting for the start job (a kept home's drop-in could make it last forever): the poll below decides
  as_agent systemctl --user start --no-block "${units[@]}" || fail "${units[*]} did not start" || return 1
  for _ in $(seq 30); do
    inactive=()
    for unit in "${units[@]}"; do as_agent systemctl --user is-active --quiet "$unit" || inactive+=("$unit"); done
    [ ${#inactive[@]} = 0 ] && return 0
    sleep 1
  done
  fail "$(for unit in "${inactive[@]}"; do printf '%s is not active: %s; ' "$unit" "$(as_agent systemctl --user is-active "$unit")"; done | sed 's/; $//')"
}

start_workflow() {
  install -d -o "$AGENT_USER" -g "$AGENT_GROUP" -m 0755 /var/lib/agentbox/workflow
  # enabled, so that a run cut short by a reboot is marked as such (it never starts twice)
  enable_user_unit agentbox-workflow.service || fail "could not enable agentbox-workflow.service" || return 1
  as_agent systemctl --user daemon-reload
  as_agent systemctl --user start --no-block agentbox-workflow.service || fail "agentbox-workflow.service did not start"
}

# Tailscale on a busy or slow first boot: the install (its repository, then apt) and the join are each tried 5 times
# with backoff (5, 10, 20, 40 s between tries), well within the single-use auth key's hour.
TAILSCALE_ATTEMPTS=5
install_tailscale_once() {
  # Tailscale's official apt repository, as its install script sets it up on Debian and Ubuntu. Both files are
  # fetched before either is put in place: a half-written source would break every later apt-get update.
  local id codename tmp
  id=$(. /etc/os-release && echo "$ID")
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  tmp=$(mktemp -d)
  if ! fetch -o "$tmp/keyring.gpg" "https://pkgs.tailscale.com/stable/$id/$codename.noarmor.gpg" ||
    ! fetch -o "$tmp/tailscale.list" "https://pkgs.tailscale.com/stable/$id/$codename.tailscale-keyring.list"; then
    rm -rf "$tmp"
    fail "could not reach Tailscale's package server"
    return 1
  fi
  install -m 0644 "$tmp/keyring.gpg" /usr/share/keyrings/tailscale-archive-keyring.gpg
  install -m 0644 "$tmp/tailscale.list" /etc/apt/sources.list.d/tailscale.list
  rm -rf "$tmp"
  apt_lists
  if ! apt_get update -qq -o Dir::Etc::sourcelist=sources.list.d/tailscale.list -o Dir::Etc::sourceparts=- ||
    ! apt_get install -y -qq tailscale tailscale-archive-keyring; then
    fail "apt could not install tailscale"
  fi
}
install_tailscale() {
  agentbox_retry $TAILSCALE_ATTEMPTS 5 install_tailscale_once || fail "$REASON ($TAILSCALE_ATTEMPTS attempts)"
}

# The auth key is in /run (write_files put it there: never on a disk), which a reboot empties. A resumed first boot
# takes it again from cloud-init's own copy of the user-data, root's alone, straight into root's /run/agentbox:
# nothing the agent could have shaped is read or written (unlike cloud-init's write_files, which would write into
# the agent's home again).
restore_tailscale_key() {
  local ud=/var/lib/cloud/instance/user-data.txt
  [ -r "$ud" ] || return 1
  (
    umask 077
    python3 - "$ud" "$TAILSCALE_KEY" >"$TAILSCALE_KEY.tmp" <<'EOF' && mv "$TAILSCALE_KEY.tmp" "$TAILSCALE_KEY"
import base64, gzip, sys, yaml
raw = open(sys.argv[1], "rb").read()
doc = yaml.safe_load(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw) or {}
for f in doc.get("write_files") or []:
    if f.get("path") == sys.argv[2]:
        content, enc = f.get("content", ""), (f.get("encoding") or "").lower()
        data = content.encode() if isinstance(content, str) else content
        if enc in ("b64", "base64"):
            data = base64.b64decode(data)
        elif enc in ("gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
            data = gzip.decompress(base64.b64decode(data))
        elif enc:
            sys.exit(1)
        sys.stdout.buffer.write(data)
        sys.exit(0 if data.strip() else 1)
sys.exit(1)
EOF
  ) || { rm -f "$TAILSCALE_KEY.tmp"; return 1; }
}

tailscale_joined() { tailscale status --json --peers=false 2>/dev/null | grep -q '"BackendState": *"Running"'; }
tailscale_up() { tailscale "$@" || fail "tailscale up failed (expired or used auth key?)"; }
join_tailnet() {
  local args=(up --auth-key="file:$TAILSCALE_KEY" --hostname="$TAILSCALE_HOSTNAME" --timeout=120s)
  [ -n "${TAILSCALE_TAGS:-}" ] && args+=(--advertise-tags="$TAILSCALE_TAGS")
  [ "${TAILSCALE_SSH:-0}" = 1 ] && args+=(--ssh)
  # a first boot cut short right after the join: the key is spent, and the device is on the tailnet
  if tailscale_joined; then
    echo "already on the tailnet"
    rm -f "$TAILSCALE_KEY"
    return 0
  fi
  [ -s "$TAILSCALE_KEY" ] || fail "no auth key at $TAILSCALE_KEY (already used on an earlier boot?)" || return 1
  if ! agentbox_retry $TAILSCALE_ATTEMPTS 5 tailscale_up "${args[@]}"; then
    # left for a retry by hand (root's alone, in memory: gone at the next reboot)
    fail "$REASON ($TAILSCALE_ATTEMPTS attempts; the key is left in $TAILSCALE_KEY: sudo tailscale up --auth-key=file:$TAILSCALE_KEY ...)"
    return 1
  fi
  # single-use key: spent now, and never needed again
  rm -f "$TAILSCALE_KEY"
}

tailscale_step() {
  # first, so that a failed install still leaves the key for a join by hand
  if [ $RESUME = 1 ] && [ ! -s "$TAILSCALE_KEY" ] && ! tailscale_joined; then
    if restore_tailscale_key; then
      echo "the auth key again from cloud-init's copy of the user-data"
    else
      echo "no auth key in cloud-init's copy of the user-data"
    fi
  fi
  install_tailscale || return 1
  join_tailnet
}

# The baked image (cloud-init/bake.ts). `--bake` runs on the image builder instead of a box: it checks the packages
# cloud-init installed, installs Claude Code as a box does and records both in /etc/agentbox/image, which a box on
# the image reads to skip the download. `--seal` runs once cloud-init is done: it clears what must differ per box
# or must not be in an image (cloud-init's state and logs, the machine id, host keys, package lists) and powers off,
# which is how the cloud side (npm run bake) and the boot harness know the image is ready. A failed bake is never
# sealed: the builder stays up.
image_value() { sed -n "s/^$1=//p" "$IMAGE_FILE" | tail -n 1; }
# claude_in_image PLATFORM
claude_in_image() {
  [ -x "/opt/claude-code/$CLAUDE_VERSION/claude" ] && [ -r "$IMAGE_FILE" ] &&
    [ "$(image_value claude_version)" = "$CLAUDE_VERSION" ] && [ "$(image_value claude_platform)" = "$1" ]
}

# the image's own steps (bake.sh) travel in the builder's user-data alone, not in every box's
if [ $MODE != box ]; then
  # shellcheck source=bake.sh disable=SC1091 # an image builder's alone
  . "$LIB/bake.sh"
fi
case $MODE in
  bake)
    bake_image && echo "agentbox: image baked; it is sealed once cloud-init is done" && exit 0
    echo "agentbox: bake FAILED: ${REASON:-see above}"
    exit 1
    ;;
  seal)
    seal_image
    exit
    ;;
esac

if [ $RESUME = 1 ]; then
  resumed=$(($(status_of resumed | grep -xE '[0-9]{1,6}' || echo 0) + 1))
  echo "agentbox: resuming provisioning after an interrupted first boot (resume $resumed; the steps ok before are kept)"
  status_set resumed "$resumed"
else
  : >"$STATUS"
fi
status_set result provisioning
mandatory_ok=1 optional_ok=1 firewall_ok=1
# What cloud-init did not install (its package module cut short, or failed): the firewall below needs nftables.
if [ -n "$(missing_packages)" ]; then step packages install_packages || optional_ok=0; fi
# The host firewall first: until it loads, only the cloud's firewall and key-only sshd protect the box, and the
# volume below may be waited for a while. A firewall that did not load fails the box (result=failed) without
# stopping the agent: the cloud firewall remains.
step firewall start_firewall || firewall_ok=0
# The home cloud-init made, then the volume over it: everything after that writes into the agent's home, as the
# agent. Without the volume the agent does not start.
step home prepare_home || mandatory_ok=0
if [ "${VOLUME:-0}" = 1 ] && [ $mandatory_ok = 1 ]; then step volume attach_volume || mandatory_ok=0; fi
# resumed: the volume recorded on an earlier boot is mounted by agentbox-volume.service, as long as it takes to appear
if [ $RESUME = 1 ] && [ "$(status_of volume)" = ok ] && ! mountpoint -q "$AGENT_HOME"; then
  echo "agentbox: waiting for the volume on $AGENT_HOME (agentbox-volume.service, /run/agentbox/volume-wait)"
  if ! systemctl start agentbox-volume.service; then
    status_set volume "failed: not mounted on this boot (systemctl status agentbox-volume)"
    mandatory_ok=0
  fi
fi
step claude install_claude || mandatory_ok=0
step memory start_memory_limits || optional_ok=0
# Before the agent starts, so that it never runs unrestricted; a failure fails the box like the firewall's.
if [ "${EGRESS:-open}" = allowlist ]; then step egress start_egress_allowlist || firewall_ok=0; fi
if [ -n "${REPO_URL:-}" ]; then step repo clone_repo || optional_ok=0; fi
if [ $mandatory_ok = 1 ]; then
  step agent start_agent || mandatory_ok=0
else
  status_set agent "failed: not started, an earlier step failed"
fi
if [ "${WORKFLOW:-0}" = 1 ] && [ $mandatory_ok = 1 ]; then step workflow start_workflow || mandatory_ok=0; fi
# Tailscale even when the agent failed: it is how the user gets in to look.
if [ "${TAILSCALE:-0}" = 1 ]; then step tailscale tailscale_step || optional_ok=0; fi
if [ "${APPROVALS:-0}" = 1 ]; then step approvals start_approvals || optional_ok=0; fi
# Security updates: installed once the agent runs, so they are never on the way to a working box.
if [ "${UNATTENDED_UPGRADES:-0}" = 1 ]; then step updates enable_upgrades || optional_ok=0; fi
# The weeks-long box: the watcher (disk, updates that need a reboot, the agent's login) from now on, every 5 minutes.
step watch start_watch || optional_ok=0

# the resume, last but for the result: `agentbox-status` lists it after the steps that did not end ok
if [ $RESUME = 1 ]; then status_set resumed "$resumed"; fi
if [ $mandatory_ok = 0 ] || [ $firewall_ok = 0 ]; then
  status_set result failed
elif [ $optional_ok = 0 ]; then
  status_set result degraded
else
  status_set result ready
fi
echo "agentbox: $(grep '^result=' "$STATUS")"
# A resumed run fails its unit only when the box failed: degraded is the status file's, the banner's and
# agentbox-status's to say (cloud-init, on a first boot, has no other way to tell it than an error).
if [ $RESUME = 1 ]; then
  ! grep -q '^result=failed$' "$STATUS"
else
  grep -q '^result=ready$' "$STATUS"
fi
