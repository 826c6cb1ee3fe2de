#!/bin/bash
# Build (or reuse) a Debian 13 rootfs close to a cloud image, to boot with systemd-nspawn.
# The result is cached under $BOOT_CACHE/rootfs-<hash of this file>; a change to this file
# (e.g. the package list) builds a new one. Prints the rootfs path on stdout.
#
# Everything written here besides the packages is harness-only and never part of the
# user-data under test. Per-run settings (the proxy address) are written by container.sh.
#
# usage: build-rootfs.sh          env: AGENTBOX_BOOT_CACHE (see lib.sh)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

SUITE=trixie
# What a Debian cloud image has that matters here: a real init with logind (linger,
# user@.service), cloud-init, sudo, sshd (so `sshd -T` can be checked), curl.
PACKAGES=(systemd systemd-sysv dbus libpam-systemd cloud-init sudo ca-certificates locales
  iproute2 procps openssh-server curl less)

require_root
ensure_host_packages

key=$(sha256sum "$0" | cut -c1-12)
ROOTFS=$BOOT_CACHE/rootfs-$key
mkdir -p "$BOOT_CACHE"
exec 9>"$BOOT_CACHE/rootfs.lock"
flock 9 # one build at a time; a second caller waits and then reuses it

if [ -e "$ROOTFS/.built" ]; then
  log "reusing rootfs $ROOTFS (built in $(cat "$ROOTFS/.built") s)"
  echo "$ROOTFS"
  exit 0
fi

mirror=$(debian_mirror)
security=$(security_mirror)
[ -n "$mirror" ] || die "no Debian mirror found in the host's apt sources"
[ -n "$security" ] || die "no security mirror found in the host's apt sources"
hosts=$(allowed_hosts | tr '\n' ' ')
registry=$(npm_registry)

t0=$(now)
tmp=$ROOTFS.tmp
rm -rf "$tmp"
log "building $SUITE rootfs (mmdebstrap, ~2 min) into $ROOTFS"
(
  IFS=,
  mmdebstrap --quiet --variant=minbase --include="${PACKAGES[*]}" "$SUITE" "$tmp" \
    "deb $mirror $SUITE main" "deb $mirror $SUITE-updates main" "deb $security $SUITE-security main"
)

# cloud-init: NoCloud seed only; never configure networking (the harness owns the veth)
cat >"$tmp/etc/cloud/cloud.cfg.d/90-agentbox-boot.cfg" <<'EOF'
# agentbox boot harness only, not part of the user-data under test
datasource_list: [ NoCloud ]
network: {config: disabled}
EOF

# TLS to the registries is intercepted on these machines: trust the host's extra CAs,
# and tell Node (npm, claude) to use the system bundle, which it ignores otherwise.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$tmp/usr/local/share/ca-certificates/"
  chroot "$tmp" update-ca-certificates >/dev/null 2>"$tmp.err" || die "update-ca-certificates: $(cat "$tmp.err")"
  # expected: the bundle itself is not a single certificate
  grep -v 'skipping ca-certificates.crt' "$tmp.err" >&2 || true
  rm -f "$tmp.err"
fi
for manager in system user; do
  mkdir -p "$tmp/etc/systemd/$manager.conf.d"
  printf '[Manager]\nDefaultEnvironment=NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt\n' \
    >"$tmp/etc/systemd/$manager.conf.d/90-agentbox-boot-ca.conf"
done
# npm inside the box uses the same registry as this machine: Debian's npm reads /etc/npmrc; an npm that corepack
# fetches, and corepack itself, read the environment
printf 'registry=%s\ncafile=/etc/ssl/certs/ca-certificates.crt\n' "$registry" >"$tmp/etc/npmrc"
for manager in system user; do
  printf '[Manager]\nDefaultEnvironment="npm_config_registry=%s" "COREPACK_NPM_REGISTRY=%s"\n' "$registry" "${registry%/}" \
    >"$tmp/etc/systemd/$manager.conf.d/90-agentbox-boot-npm.conf"
done

# Debian's locale-gen ignores its argument and builds only what /etc/locale.gen enables, so
# cloud-init's locale module fails unless the locale exists, as it does on a cloud image.
sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' "$tmp/etc/locale.gen"
chroot "$tmp" locale-gen >/dev/null
echo 'LANG=en_US.UTF-8' >"$tmp/etc/default/locale"

# first boot initialises machine-id from the container's UUID; hostname comes from meta-data;
# no resolver: the box resolves nothing itself, apt and npm ask the proxy (mmdebstrap left the host's)
: >"$tmp/etc/machine-id"
: >"$tmp/etc/hostname"
: >"$tmp/etc/resolv.conf"

secs=$(since "$t0")
echo "$secs" >"$tmp/.built"
echo "$hosts" >"$tmp/.allowed-hosts"
mv "$tmp" "$ROOTFS"

# drop older builds that no running box still uses as its lower layer
for old in "$BOOT_CACHE"/rootfs-*; do
  if [ "$old" != "$ROOTFS" ] && [ -d "$old" ] && ! grep -q "lowerdir=${old}[,:]" /proc/mounts; then
    rm -rf "$old"
  fi
done

log "rootfs built in ${secs} s, $(du -sm "$ROOTFS" | cut -f1) MB"
echo "# bench: rootfs_build_s=$secs" >&2
echo "$ROOTFS"
