# shellcheck shell=bash
# Shared helpers of the boot harness: paths, logging, host packages, and the
# package sources this machine may reach. Sourced, never run.
#
# No registry or mirror host is named anywhere in the harness: they are read at
# run time from the host's apt sources and from `npm config get registry`.

# shellcheck disable=SC2034 # these are used by the scripts that source this file
BOOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BOOT_CACHE=${AGENTBOX_BOOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentbox/boot}
# shellcheck disable=SC2034
BOOT_RUNS=$BOOT_CACHE/runs
# PATH for commands run inside the box (nsenter does not give it one)
# shellcheck disable=SC2034
BOX_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "# $*" >&2; }
die() {
  echo "error: $*" >&2
  exit 2
}
now() { date +%s.%N; }
# seconds from $1 to $2 (`now` values), one decimal; since: from $1 until now
seconds_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
since() { seconds_between "$1" "$(now)"; }

require_root() { [ "$(id -u)" = 0 ] || die "the boot harness must run as root (it uses namespaces, mounts and cgroups)"; }

# Host packages the harness uses; installed when missing, as CI starts from a fresh machine.
# tinyproxy-bin, not tinyproxy: the latter ships a system service we do not want started.
HOST_PACKAGES=(mmdebstrap systemd-container tinyproxy-bin iproute2 procps shellcheck util-linux)
ensure_host_packages() {
  local missing=() p
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing host packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# "URI SUITE..." for every enabled source of the host's apt configuration
# (deb822 *.sources and one-line sources.list), deb types only.
apt_source_lines() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    awk '
      function flush() {
        if (uris != "" && enabled != "no" && types ~ /(^| )deb( |$)/) {
          n = split(uris, u, " ")
          for (i = 1; i <= n; i++) print u[i], suites
        }
        uris = ""; suites = ""; enabled = ""; types = ""
      }
      /^[[:space:]]*$/ { flush(); next }
      /^#/ { next }
      { key = tolower($1); val = $0; sub(/^[^:]*:[[:space:]]*/, "", val) }
      key == "uris:" { uris = val }
      key == "suites:" { suites = val }
      key == "types:" { types = val }
      key == "enabled:" { enabled = tolower(val) }
      END { flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -e "$f" ] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" { print $2, $3 }'
  done
}

# The Debian mirror (a source with a suite that is not *-security) and the security mirror.
debian_mirror() { apt_source_lines | awk '$0 !~ /-security/ && $1 ~ /^https?:/ { print $1; exit }'; }
security_mirror() { apt_source_lines | awk '$0 ~ /-security/ && $1 ~ /^https?:/ { print $1; exit }'; }

npm_registry() {
  local r
  command -v npm >/dev/null || die "npm is needed to learn the npm registry (npm config get registry)"
  r=$(npm config get registry) || die "npm config get registry failed"
  echo "${r%/}/"
}

# host part of a URL
url_host() { sed -E 's#^[a-zA-Z0-9+.-]+://##; s#^[^@/]*@##; s#[:/].*$##' <<<"$1"; }

# Every host the box may reach through the proxy: the apt sources' and the npm registry's.
allowed_hosts() {
  {
    apt_source_lines | awk '$1 ~ /^https?:/ { print $1 }' | while read -r u; do url_host "$u"; done
    url_host "$(npm_registry)"
  } | sort -u
}

# A user-data file as a cloud receives it is either #cloud-config text, or (Hetzner's delivery, see
# USER_DATA_DELIVERY in cloud-init/render.ts) that text gzip-compressed and base64-encoded. user_data_text FILE
# prints the text; user_data_seed FILE prints what cloud-init's datasource hands on (Hetzner's base64-decodes it,
# and cloud-init itself unpacks the gzip), for the box's NoCloud seed.
is_cloud_config_text() { [ "$(head -c 13 "$1")" = "#cloud-config" ]; }
user_data_text() { if is_cloud_config_text "$1"; then cat "$1"; else base64 -d "$1" | gunzip; fi; }
user_data_seed() { if is_cloud_config_text "$1"; then cat "$1"; else base64 -d "$1"; fi; }
# box_env KEY: a setting the run's user-data gives the box (its first KEY=VALUE line; the ntfy settings are there twice)
box_env() { sed -n "s/^ *$1=//p" "$RUN_DIR/user-data" | head -n 1; }

# A run directory's `state` file records what the run created, so that teardown (also
# from another shell: `box.sh stop NAME`) undoes exactly that and nothing else.
state_set() { echo "$2=$3" >>"$1/state"; }
state_get() { [ -e "$1/state" ] && sed -n "s/^$2=//p" "$1/state" | tail -n 1; }

# TAP-like results: "ok - …" / "not ok - …" (evidence indented below), then summary's
# final line "N passed, N failed".
PASSED=0 FAILED=0
ok() {
  PASSED=$((PASSED + 1))
  echo "ok - $1"
}
not_ok() { # not_ok DESCRIPTION [EVIDENCE]
  FAILED=$((FAILED + 1))
  echo "not ok - $1"
  if [ -n "${2:-}" ]; then head -n 40 <<<"$2" | sed 's/^/#   /'; fi
}
check() { # check DESCRIPTION COMMAND...: ok when the command succeeds (it runs in a subshell)
  local d=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$d"; else not_ok "$d" "$out"; fi
}
summary() {
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ]
}
