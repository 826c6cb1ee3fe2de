#!/bin/bash
# First-boot provisioning of an agentbox, run once by cloud-init (runcmd) as root, after packages are installed.
#
# Each step records its result in /var/lib/agentbox/status (KEY=VALUE lines) and the whole run is logged to
# /var/log/agentbox/provision.log. Optional steps (the repository, Tailscale) may fail without stopping the agent.
# The status file ends with result=ready (all ok), degraded (an optional step failed) or failed (the agent is not
# running). Exit status: 0 only when ready, so that cloud-init's own result reports anything else.
set -uo pipefail
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
# `provision --bake` makes a baked image instead of a box, `provision --seal` ends that (see "The baked image"
# below): no box settings, no agent and no status file then.
MODE=box
case ${1:-} in
  '') ;;
  --bake) MODE=bake ;;
  --seal) MODE=seal ;;
  *)
    echo "usage: provision [--bake | --seal]" >&2
    exit 2
    ;;
esac

STATUS_DIR=/var/lib/agentbox
STATUS=$STATUS_DIR/status
LOG_DIR=/var/log/agentbox
TAILSCALE_KEY=/run/agentbox/tailscale-authkey
IMAGE_FILE=/etc/agentbox/image
BAKE_ENV=/etc/agentbox/bake.env
if [ $MODE = box ]; then
  agentbox_load_env /etc/agentbox/box.env
  mkdir -p "$STATUS_DIR" "$LOG_DIR"
  chmod 0755 "$STATUS_DIR" "$LOG_DIR"
  exec > >(tee -a "$LOG_DIR/provision.log") 2>&1
  AGENT_UID=$(id -u "$AGENT_USER")
  AGENT_GROUP=$(id -gn "$AGENT_USER")
else
  [ $MODE = seal ] || agentbox_load_env "$BAKE_ENV"
  mkdir -p "$LOG_DIR"
  exec > >(tee -a "$LOG_DIR/bake.log") 2>&1
fi
REASON=

status_set() { # KEY VALUE: replaces the key's line, keeps the others in order
  local tmp
  tmp=$(mktemp "$STATUS_DIR/.status.XXXXXX")
  { grep -v "^$1=" "$STATUS" 2>/dev/null || true; echo "$1=$2"; } >"$tmp"
  chmod 0644 "$tmp"
  mv "$tmp" "$STATUS"
}
fail() { REASON=$*; return 1; }
step() { # NAME FUNCTION: runs one step and records ok / failed: <reason>
  local name=$1 started
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
    apt_lists && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null && npm "$@"
  fi
}
# A baked image has no package lists, and a box that needs no packages has cloud-init fetch none: fetched before
# the first install after the agent is up.
apt_lists() { compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || apt-get update -qq; }
# As the agent, bounded (a kept home holds an earlier agent's settings, which could make a command wait forever):
# as_agent COMMAND... (2 minutes), as_agent_for SECONDS COMMAND...
as_agent_for() {
  local seconds=$1
  shift
  timeout -s TERM -k 10 "$seconds" runuser -u "$AGENT_USER" -- env HOME="$AGENT_HOME" XDG_RUNTIME_DIR="/run/user/$AGENT_UID" "$@"
}
as_agent() { as_agent_for 120 "$@"; }
fetch() { curl -fsSL --proto '=https' --retry 3 --retry-delay 2 --connect-timeout 15 --max-time 300 "$@"; }

# The home as cloud-init made it on the root disk (before any volume is mounted over it): write_files made the
# parent folders of the agent's files as root.
prepare_home() {
  if ! install -d -o "$AGENT_USER" -g "$AGENT_GROUP" -m 0755 "$AGENT_HOME/.config" "$WORKSPACE" ||
    ! install -d -o "$AGENT_USER" -g "$AGENT_GROUP" -m 0700 "$AGENT_HOME/.config/agentbox" "$AGENT_HOME/.claude" ||
    ! chown "$AGENT_USER:$AGENT_GROUP" "$AGENT_HOME/.claude.json" "$AGENT_HOME"/.config/agentbox/*; then
    fail "could not prepare $AGENT_HOME"
  fi
}

# Folders and files in the agent's home, written as the agent (see home-files.sh): root never writes into, or
# follows a link in, what the agent may have shaped. home_files ROOT dir|file|rm ...
home_files() { runuser -u "$AGENT_USER" -- "$LIB/home-files" "$@"; }
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
kept_volume_files() { # STAGE: this box's files on a kept volume, as the agent
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
  dev=$(agentbox_volume_device "${VOLUME_WAIT_S:-300}") ||
    fail "no volume at $VOLUME_GLOB after ${VOLUME_WAIT_S:-300} s (pulumi up attaches it; see the cloud console)" || return 1
  blkid -p "$dev" >/dev/null 2>&1
  rc=$?
  case $rc in
    0) ;;
    2)
      mkfs.ext4 -q -L agentbox-home -m 0 "$dev" || fail "mkfs.ext4 $dev failed" || return 1
      origin=new
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
  printf 'device=%s\nuuid=%s\norigin=%s\n' "$dev" "$uuid" "$origin" >"$VOLUME_STATE"
  # every boot from now on: agentbox-volume.service mounts it, and the agent's user manager waits for that
  mkdir -p "/etc/systemd/system/user@$AGENT_UID.service.d"
  printf '[Unit]\nRequires=agentbox-volume.service\nAfter=agentbox-volume.service\n' \
    >"/etc/systemd/system/user@$AGENT_UID.service.d/agentbox-volume.conf"
  systemctl daemon-reload
  systemctl enable --now agentbox-volume.service || fail "cannot mount the volume on $AGENT_HOME" || return 1
  echo "volume $dev ($([ $origin = new ] && echo "formatted now" || echo "kept from an earlier box")) is $AGENT_HOME"
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

use_claude() { # DIR: puts its claude on PATH and runs it once: as the agent, or on an image builder (no agent) as root
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
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends unattended-upgrades >/dev/null ||
    fail "apt could not install unattended-upgrades" || return 1
  systemctl enable --now apt-daily.timer apt-daily-upgrade.timer || fail "the apt timers did not start"
}

# What `systemctl --user enable UNIT` does, done as files: cloud-init runs as root with no login session, where
# `systemctl --user` has no manager to talk to. enable_user_unit UNIT (a unit in /etc/systemd/user)
enable_user_unit() {
  local wants=.config/systemd/user/default.target.wants
  home_files "$AGENT_HOME" dir "$wants" && home_files "$AGENT_HOME" rm "$wants/$1" &&
    as_agent ln -s "/etc/systemd/user/$1" "$AGENT_HOME/$wants/$1"
}

start_agent() {
  # enabled before linger, so the user manager starts it itself
  enable_user_unit claude-agent.service || fail "could not enable claude-agent.service" || return 1
  loginctl enable-linger "$AGENT_USER" || fail "loginctl enable-linger failed" || return 1
  # enable-linger returns before the user manager is up
  systemctl start "user@$AGENT_UID.service" || fail "user@$AGENT_UID.service did not start" || return 1
  as_agent systemctl --user daemon-reload
  # without waiting for the start job (a kept home's drop-in could make it last forever): the poll below decides
  as_agent systemctl --user start --no-block claude-agent.service || fail "claude-agent.service did not start" || return 1
  local _
  for _ in $(seq 30); do
    as_agent systemctl --user is-active --quiet claude-agent.service && return 0
    sleep 1
  done
  fail "claude-agent.service is not active: $(as_agent systemctl --user is-active claude-agent.service)"
}

start_workflow() {
  install -d -o "$AGENT_USER" -g "$AGENT_GROUP" -m 0755 /var/lib/agentbox/workflow
  # enabled, so that a run cut short by a reboot is marked as such (it never starts twice)
  enable_user_unit agentbox-workflow.service || fail "could not enable agentbox-workflow.service" || return 1
  as_agent systemctl --user daemon-reload
  as_agent systemctl --user start --no-block agentbox-workflow.service || fail "agentbox-workflow.service did not start"
}

install_tailscale() {
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
  if ! apt-get update -qq -o Dir::Etc::sourcelist=sources.list.d/tailscale.list -o Dir::Etc::sourceparts=- ||
    ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tailscale tailscale-archive-keyring; then
    fail "apt could not install tailscale"
  fi
}

join_tailnet() {
  local args=(up --auth-key="file:$TAILSCALE_KEY" --hostname="$TAILSCALE_HOSTNAME" --timeout=120s)
  [ -n "${TAILSCALE_TAGS:-}" ] && args+=(--advertise-tags="$TAILSCALE_TAGS")
  [ "${TAILSCALE_SSH:-0}" = 1 ] && args+=(--ssh)
  [ -s "$TAILSCALE_KEY" ] || fail "no auth key at $TAILSCALE_KEY (already used on an earlier boot?)" || return 1
  tailscale "${args[@]}" || { rm -f "$TAILSCALE_KEY"; fail "tailscale up failed (expired or used auth key?)"; return 1; }
  # single-use key: spent now, and never needed again
  rm -f "$TAILSCALE_KEY"
}

tailscale_step() {
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
claude_in_image() { # PLATFORM
  [ -x "/opt/claude-code/$CLAUDE_VERSION/claude" ] && [ -r "$IMAGE_FILE" ] &&
    [ "$(image_value claude_version)" = "$CLAUDE_VERSION" ] && [ "$(image_value claude_platform)" = "$1" ]
}

bake_image() {
  local p os missing=()
  for p in ${PACKAGES//,/ }; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] || fail "not installed: ${missing[*]} (see /var/log/cloud-init-output.log)" || return 1
  install_claude || return 1
  os=$(. /etc/os-release && echo "$ID-$VERSION_ID")
  printf '%s\n' "claude_version=$CLAUDE_VERSION" "claude_platform=$CLAUDE_PLATFORM" "claude_install=$CLAUDE_INSTALL" \
    "packages=$PACKAGES" "builder=$BUILDER" "os=$os" "created=$(date -u +%FT%TZ)" >"$IMAGE_FILE.tmp" &&
    mv "$IMAGE_FILE.tmp" "$IMAGE_FILE" || fail "could not write $IMAGE_FILE" || return 1
  cat "$IMAGE_FILE"
  # ordered after cloud-init's final stage, which would otherwise write its state back after the clean
  systemd-run --quiet --no-block --unit=agentbox-seal --property=After=cloud-final.service \
    /usr/local/lib/agentbox/provision --seal || fail "systemd-run could not queue the seal"
}

seal_image() {
  local rc=0
  cloud-init status --wait >/dev/null || rc=$?
  # 2 is "done, with recoverable errors"; 1 is a failure, which leaves the builder up to be looked at
  if [ $rc = 1 ]; then
    echo "agentbox: cloud-init reports an error (cloud-init status --long): the image is not sealed"
    return 1
  fi
  cloud-init clean --logs || return 1
  # Empty, not cloud-init's "uninitialized" (--machine-id): every boot of the image still gets a machine id of its
  # own, but no first-boot unit presets, which would enable units (networkd-wait-online...) the builder had not.
  : >/etc/machine-id
  find /var/lib/apt/lists -type f -delete
  apt-get clean
  rm -f /etc/ssh/ssh_host_*key* /root/.ssh/authorized_keys /var/lib/systemd/random-seed \
    /var/lib/systemd/credential.secret "$BAKE_ENV"
  echo "agentbox: image sealed; powering off"
  systemctl poweroff
}

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

: >"$STATUS"
status_set result provisioning
mandatory_ok=1 optional_ok=1 firewall_ok=1
# The host firewall first: until it loads, only the cloud's firewall and key-only sshd protect the box, and the
# volume below may be waited for a while. A firewall that did not load fails the box (result=failed) without
# stopping the agent: the cloud firewall remains.
step firewall start_firewall || firewall_ok=0
# The home cloud-init made, then the volume over it: everything after that writes into the agent's home, as the
# agent. Without the volume the agent does not start.
step home prepare_home || mandatory_ok=0
if [ "${VOLUME:-0}" = 1 ] && [ $mandatory_ok = 1 ]; then step volume attach_volume || mandatory_ok=0; fi
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
# Security updates: installed once the agent runs, so they are never on the way to a working box.
if [ "${UNATTENDED_UPGRADES:-0}" = 1 ]; then step updates enable_upgrades || optional_ok=0; fi

if [ $mandatory_ok = 0 ] || [ $firewall_ok = 0 ]; then
  status_set result failed
elif [ $optional_ok = 0 ]; then
  status_set result degraded
else
  status_set result ready
fi
echo "agentbox: $(grep '^result=' "$STATUS")"
grep -q '^result=ready$' "$STATUS"
