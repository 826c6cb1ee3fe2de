# shellcheck shell=bash
# The baked image's steps of provision.sh (`provision --bake`, `provision --seal`; see there and cloud-init/bake.ts).
# Sourced by provision on an image builder only: a box's user-data does not carry them.

bake_image() {
  local os missing
  mapfile -t missing < <(missing_packages)
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
