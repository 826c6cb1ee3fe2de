#!/bin/bash
# agentbox-home-files: puts folders and files in the agent's home AS THE AGENT (provisioning runs it with runuser).
# What the agent left where these paths go (a link, a FIFO, a file for a folder) is removed, never followed.
# usage: home-files ROOT dir REL...          each REL (relative to ROOT) becomes a real folder (mode 0700 when new)
#        home-files ROOT file SRC REL MODE   SRC's bytes become the regular file REL, with MODE (folders as above)
#        home-files ROOT rm REL...           each REL removed if it is there (a link is removed, never followed)
set -euo pipefail
if [ "$(id -u)" = 0 ]; then
  echo "home-files: run it as the agent, not as root" >&2
  exit 2
fi
[ $# -ge 2 ] || {
  echo "usage: home-files ROOT dir|file|rm ..." >&2
  exit 2
}
root=$1 what=$2
shift 2
if [ -L "$root" ] || [ ! -d "$root" ]; then
  echo "home-files: $root is not a folder" >&2
  exit 1
fi

# relative REL: a path below ROOT, without "..", "." or a leading "/"
relative() {
  case /$1/ in
    *'/../'* | *'/./'* | '//') echo "home-files: bad path '$1'" >&2 && return 1 ;;
  esac
  [[ $1 != /* ]] || {
    echo "home-files: bad path '$1'" >&2
    return 1
  }
}

# real_dir REL: every folder from ROOT down to REL a real folder
real_dir() {
  local path=$root part
  local -a parts
  relative "$1"
  IFS=/ read -ra parts <<<"$1"
  for part in "${parts[@]}"; do
    [ -n "$part" ] || continue
    path=$path/$part
    if [ -L "$path" ] || { [ -e "$path" ] && [ ! -d "$path" ]; }; then rm -f -- "$path"; fi
    [ -d "$path" ] || mkdir -m 0700 -- "$path"
    # an earlier agent may have left it read-only to itself
    chmod u+rwx -- "$path"
  done
}

# below_real_dirs REL: true when every folder above REL is a real folder (else REL is not really there)
below_real_dirs() {
  local path=$root part
  local -a parts
  IFS=/ read -ra parts <<<"${1%/*}"
  [[ $1 == */* ]] || return 0
  for part in "${parts[@]}"; do
    [ -n "$part" ] || continue
    path=$path/$part
    if [ -L "$path" ] || [ ! -d "$path" ]; then return 1; fi
  done
}

case $what in
  dir)
    for rel in "$@"; do real_dir "$rel"; done
    ;;
  file)
    [ $# = 3 ] || {
      echo "usage: home-files ROOT file SRC REL MODE" >&2
      exit 2
    }
    src=$1 rel=$2 mode=$3
    relative "$rel"
    case $rel in */*) real_dir "${rel%/*}" ;; esac
    dst=$root/$rel
    if [ -L "$dst" ] || { [ -e "$dst" ] && [ ! -f "$dst" ]; }; then rm -rf -- "$dst"; fi
    # a new file renamed over the old one: never written through whatever was there
    tmp=$(mktemp "${dst%/*}/.agentbox.XXXXXX")
    cat -- "$src" >"$tmp"
    chmod "$mode" "$tmp"
    mv -f -- "$tmp" "$dst"
    ;;
  rm)
    for rel in "$@"; do
      relative "$rel"
      if below_real_dirs "$rel"; then rm -rf -- "${root:?}/$rel"; fi
    done
    ;;
  *)
    echo "home-files: unknown action $what" >&2
    exit 2
    ;;
esac
