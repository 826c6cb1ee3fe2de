#!/bin/bash
# Debian packages the tests use, installed when missing (needs root; CI starts from a fresh machine):
#   cloud-init, shellcheck          external validators of the rendered user-data (unit tests)
#   tmux                            named by the agent unit, for systemd-analyze verify
#   nftables                        nft --check of the host firewall (in a throwaway network namespace)
#   mmdebstrap, systemd-container,  the boot test: build a Debian root filesystem and boot it with
#   tinyproxy-bin, iproute2          systemd-nspawn in a network namespace behind a filtering proxy
set -euo pipefail
packages=(shellcheck cloud-init tmux nftables mmdebstrap systemd-container tinyproxy-bin iproute2 util-linux procps)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
((${#missing[@]})) || exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
