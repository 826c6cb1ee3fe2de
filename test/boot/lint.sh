#!/bin/bash
# Static checks of a #cloud-config user-data, without booting (a few seconds), using the
# tools of the box's own release: the rootfs's cloud-init and systemd, run in a chroot on a
# throw-away overlay, without network. Catches what a boot would reveal only slowly:
#  - `cloud-init schema` errors and deprecations, unknown top-level keys
#  - shellcheck of runcmd/bootcmd as the /bin/sh script cloud-init makes of them, and of
#    every write_files script with a sh/bash shebang
#  - `systemd-analyze verify` (--user for user units) of every unit in write_files, failing
#    on ANY output: it exits 0 for misspelt keys and values, printing only a warning.
#    Executables the user-data installs later (packages, runcmd) do not exist yet: they are
#    stubbed here, and the boot checks verify the units again on the real box.
#
# usage: lint.sh USER_DATA [ROOTFS]     (ROOTFS defaults to build-rootfs.sh's cached one)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ud=$(readlink -f "${1:?usage: lint.sh USER_DATA [ROOTFS]}")
require_root
ensure_host_packages
rootfs=${2:-$("$BOOT_DIR/build-rootfs.sh")}

t=$(mktemp -d)
r=$t/root
cleanup() {
  if mountpoint -q "$r"; then umount "$r"; fi
  rm -rf "$t"
}
trap cleanup EXIT
mkdir -p "$t"/{upper,work,root}
mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$t/upper,workdir=$t/work" "$r"
mkdir -p "$r/lint"
user_data_text "$ud" >"$r/lint/user-data"

# a chroot of the overlay: private mounts, pids and /proc, no network at all
inroot() { unshare --mount --net --pid --fork --mount-proc="$r/proc" chroot "$r" env -i PATH="$BOX_PATH" HOME=/root "$@"; }

if ! is_cloud_config_text "$ud"; then
  log "the user-data is gzip+base64 (Hetzner's delivery): $(wc -c <"$ud") bytes for a $(wc -c <"$r/lint/user-data")-byte document"
fi
if [ "$(head -n 1 "$r/lint/user-data")" = "#cloud-config" ]; then ok "first line is #cloud-config"; else not_ok "first line is #cloud-config" "$(head -n 1 "$r/lint/user-data")"; fi

ver=$(inroot cloud-init --version 2>&1 | awk '{ print $2 }')
# (its "datasource not detected" warning is noise here)
if out=$(inroot cloud-init schema --config-file /lint/user-data 2>&1 | grep -v "datasource not detected"); then ok "cloud-init schema ($ver)"; else not_ok "cloud-init schema ($ver)" "$out"; fi
deprecations=$(grep -i 'deprecat' <<<"$out" || true)
if [ -z "$deprecations" ]; then ok "no deprecated cloud-init keys"; else not_ok "no deprecated cloud-init keys" "$deprecations"; fi

# Split the document with the rootfs's python3 and cloud-init's own write_files decoding:
# write every write_files entry to its path in the overlay (as the box would have it), and
# list what to check. Owners are ignored: the users do not exist here.
if ! out=$(inroot python3 - 2>&1 <<'EOF'
import json, os, shlex, yaml
from cloudinit.config.cc_write_files import canonicalize_extraction, decode_perms, extract_contents
doc = yaml.safe_load(open("/lint/user-data")) or {}
schema = json.load(open("/usr/lib/python3/dist-packages/cloudinit/config/schemas/schema-cloud-config-v1.json"))
known = set(schema.get("properties", {}))
for part in schema.get("allOf", []):
    known |= set(schema["$defs"][part["$ref"].split("/")[-1]].get("properties", {}))
with open("/lint/unknown-keys", "w") as f:
    f.write("".join(k + "\n" for k in sorted(set(doc) - known)))
for key in ("bootcmd", "runcmd"):
    if doc.get(key):
        lines = ["#!/bin/sh"]
        for c in doc[key]:
            lines.append(c if isinstance(c, str) else " ".join(shlex.quote(str(a)) for a in c))
        open("/lint/%s.sh" % key, "w").write("\n".join(lines) + "\n")
units, scripts = [], []
for f in doc.get("write_files") or []:
    path = f.get("path", "")
    if not path.startswith("/") or "source" in f:
        continue
    content = extract_contents(f.get("content", ""), canonicalize_extraction(f.get("encoding")))
    if isinstance(content, str):
        content = content.encode()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "ab" if f.get("append") else "wb") as out:
        out.write(content)
    os.chmod(path, decode_perms(f.get("permissions"), 0o644))
    first = content.split(b"\n", 1)[0]
    if first.startswith(b"#!") and first.split(b"/")[-1].split()[0] in (b"sh", b"bash", b"dash"):
        scripts.append(path)
    elif "/systemd/" in path and os.path.splitext(path)[1] in (".service", ".socket", ".timer", ".path", ".target", ".mount"):
        units.append(path)
open("/lint/units", "w").write("".join(u + "\n" for u in units))
open("/lint/scripts", "w").write("".join(s + "\n" for s in scripts))
EOF
); then
  not_ok "user-data parses as YAML" "$out"
  summary
  exit 1
fi

if [ -s "$r/lint/unknown-keys" ]; then not_ok "no unknown top-level keys" "$(cat "$r/lint/unknown-keys")"; else ok "no unknown top-level keys"; fi

lint_script() { # lint_script NAME FILE [SHELL]
  local out
  # -x -P: follow what a script sources, from beside it or from agentbox's library, as the box has them
  if out=$(cd "$r" && shellcheck -x -P SCRIPTDIR:usr/local/lib/agentbox ${3:+-s "$3"} "${2#"$r"/}" 2>&1); then ok "shellcheck $1"; else not_ok "shellcheck $1" "$out"; fi
}
for key in bootcmd runcmd; do
  [ -e "$r/lint/$key.sh" ] && lint_script "$key (as the /bin/sh script cloud-init runs)" "$r/lint/$key.sh" sh
done
while read -r path; do lint_script "$path" "$r$path"; done <"$r/lint/scripts"

# stub the executables the units name that only a later stage installs
while read -r unit; do
  sed -n 's/^Exec[A-Za-z]*=[-@:+!|]*\(\/[^ ]*\).*/\1/p' "$r$unit" | while read -r exe; do
    [ -e "$r$exe" ] && continue
    mkdir -p "$(dirname "$r$exe")"
    printf '#!/bin/sh\n' >"$r$exe" && chmod 755 "$r$exe"
    log "$(basename "$unit"): $exe stubbed (installed later by the user-data)"
  done
done <"$r/lint/units"
while read -r unit; do
  case $unit in
    /etc/systemd/user/* | /usr/lib/systemd/user/* | */.config/systemd/user/*)
      mode=(--user) home=$(sed -n 's#^\(/home/[^/]*\)/\.config/.*#\1#p' <<<"$unit") ;;
    *) mode=() home= ;;
  esac
  mkdir -p "$r/lint/xdg"
  what="systemd-analyze ${mode[*]}${mode[*]:+ }verify $unit (silent)"
  if out=$(inroot env HOME="${home:-/root}" XDG_RUNTIME_DIR=/lint/xdg systemd-analyze "${mode[@]}" verify --man=no "$unit" 2>&1) &&
    [ -z "$out" ]; then ok "$what"; else not_ok "$what" "$out"; fi
done <"$r/lint/units"

summary
