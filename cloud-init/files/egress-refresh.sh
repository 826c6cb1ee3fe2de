#!/bin/bash
# Fills the egress allow-list of the host firewall (egress=allowlist): resolves every allowed host name and adds its
# addresses to the nft sets with a timeout, so that addresses a host stops using fall out again. A name that does
# not resolve is skipped and logged: one dead entry never stops the others, nor the box. Run at boot and every
# 15 minutes by agentbox-egress.timer.
set -uo pipefail
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
ETC=${AGENTBOX_ETC:-/etc/agentbox} # the tests point it elsewhere
agentbox_load_env "$ETC/box.env"

TTL=2h

# the host part of a URL or scp-style git address: scheme, user, port and path removed
host_of() { sed -E 's#^[a-zA-Z][a-zA-Z0-9+.-]*://##; s#^[^@/]*@##; s#[:/].*$##'; }

allowed_hosts() {
  grep -v -e '^#' -e '^$' "$ETC/egress-hosts"
  # the package registries, as this box is configured to use them (apt sources, npm's registry)
  sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n' | host_of
  grep -h '^deb' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '{ for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; break } }' | host_of
  [ -s "$ETC/npm-registry" ] && host_of <"$ETC/npm-registry"
  [ -n "${REPO_URL:-}" ] && host_of <<<"$REPO_URL"
}

resolved=0 dead=0
while read -r host; do
  [ -n "$host" ] || continue
  v4=$(timeout 5 getent ahostsv4 "$host" | awk '{ print $1 }' | sort -u | paste -sd, -)
  v6=$(timeout 5 getent ahostsv6 "$host" | awk '$1 !~ /^::ffff:/ { print $1 }' | sort -u | paste -sd, -)
  if [ -z "$v4$v6" ]; then
    echo "egress: $host does not resolve; skipped"
    dead=$((dead + 1))
    continue
  fi
  [ -n "$v4" ] && nft add element inet agentbox egress4 "{ ${v4//,/ timeout $TTL, } timeout $TTL }"
  [ -n "$v6" ] && nft add element inet agentbox egress6 "{ ${v6//,/ timeout $TTL, } timeout $TTL }"
  resolved=$((resolved + 1))
done < <(allowed_hosts | tr '[:upper:]' '[:lower:]' | sort -u)
echo "egress: $resolved hosts allowed, $dead did not resolve"
