#!/bin/bash
# Fills the host firewall's egress allow-list (egress=allowlist), at boot and every 15 minutes: the allowed hosts'
# addresses into egress4/egress6 with a timeout, the box's resolvers into resolvers4/resolvers6. A name that does
# not resolve is logged and keeps its addresses until they time out.
set -uo pipefail
# shellcheck source=lib.sh
. /usr/local/lib/agentbox/lib.sh
# the tests point it elsewhere
ETC=${AGENTBOX_ETC:-/etc/agentbox}
agentbox_load_env "$ETC/box.env"
TTL=${AGENTBOX_EGRESS_TTL:-2h}
# systemd-resolved's resolv.conf names the servers behind its stub
RESOLV=${AGENTBOX_RESOLV:-/etc/resolv.conf /run/systemd/resolve/resolv.conf}

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
  # the repositories of agentbox:agents' own (root's list; a file:/// one has no host)
  [ -r "$ETC/agents" ] && awk -F '\t' '$2 == "repo" && $3 !~ /^file:/ { print $3 }' "$ETC/agents" | host_of
  return 0
}

# "SET { a, b }": one family's addresses but loopback (one odd word would fail the whole transaction)
# elements SET v4|v6 ADDRESSES [TIMEOUT]
elements() {
  local re='^[0-9]{1,3}(\.[0-9]{1,3}){3}$' a
  [ "$2" = v6 ] && re='^[0-9a-f]*:[0-9a-f:.]*$'
  a=$(grep -E "$re" <<<"$3" | grep -v -e '^127\.' -e '^::1$' -e '^::ffff:' | sort -u | sed "s/\$/${4:+ timeout $4}/")
  [ -n "$a" ] && echo "$1 { ${a//$'\n'/, } }"
}

# `add` leaves an existing element's timeout as it was on most kernels: add, delete, add again
# refresh SET v4|v6 ADDRESSES
refresh() {
  local with
  with=$(elements "$@" "$TTL") || return 0
  printf '%s element inet agentbox %s\n' add "$with" delete "$(elements "$@")" add "$with"
}
# replace SET v4|v6 ADDRESSES: the set holds exactly these
replace() {
  echo "flush set inet agentbox $1"
  elements "$@" | sed 's/^/add element inet agentbox /'
}

resolved=0 dead=0 addresses=
while read -r host; do
  [ -n "$host" ] || continue
  a=$(timeout 5 getent ahosts "$host" | awk '{ print $1 }')
  if [ -z "$a" ]; then
    echo "egress: $host does not resolve; skipped"
    dead=$((dead + 1))
    continue
  fi
  addresses+=$a$'\n'
  resolved=$((resolved + 1))
done < <(allowed_hosts | tr '[:upper:]' '[:lower:]' | sort -u)
# shellcheck disable=SC2086 # a list of files
servers=$(awk '$1 == "nameserver" { print $2 }' $RESOLV 2>/dev/null)

tx=$(
  refresh egress4 v4 "$addresses"
  refresh egress6 v6 "$addresses"
  replace resolvers4 v4 "$servers"
  replace resolvers6 v6 "$servers"
)
nft -f - <<<"$tx" || { printf 'egress: nft refused the refresh:\n%s\n' "$tx"; exit 1; }
echo "egress: $resolved hosts allowed, $dead did not resolve"
