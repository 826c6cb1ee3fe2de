#!/bin/bash
# Time to a working agent, in one run: the CI stack's box booted SAMPLES times (default 3) on the stock image and on
# a baked one (baked afresh here first, as `npm run bake` bakes it in the cloud; see test/boot/bake.sh), alternately,
# plus bare boots of the stock root to compare with, and how long the Pulumi program takes beyond loading the SDKs.
# Prints medians; figures, never assertions.
#
#   sudo npm run bench            (SAMPLES=5 npm run bench for more)
set -euo pipefail
cd "$(dirname "$0")/.."
samples=${SAMPLES:-3}
stack=test/stacks/Pulumi.ci-hetzner.yaml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
npx tsx scripts/render.ts --config "$stack" >"$work/stock.yaml"
npx tsx scripts/render.ts --config "$stack" --bake >"$work/bake.yaml"
npx tsx scripts/render.ts --config "$stack" --baked >"$work/baked.yaml"
keep() { grep '^# bench:' | tee -a "$work/lines" >&2; }

echo "## baking the image (once)" >&2
if ! baked=$(bash test/boot/bake.sh --rebuild "$work/bake.yaml" 2>"$work/bake.err"); then
  cat "$work/bake.err" >&2
  exit 1
fi
keep <"$work/bake.err"

for i in $(seq "$samples"); do
  echo "## boot $i of $samples: stock image" >&2
  bash test/boot/box.sh bench "$work/stock.yaml" stock | keep
  echo "## boot $i of $samples: baked image" >&2
  BOX_ROOTFS=$baked bash test/boot/box.sh bench "$work/baked.yaml" baked | keep
  echo "## boot $i of $samples: bare (cloud-init off, then an empty user-data)" >&2
  bash test/boot/bake.sh bare | keep
done

median() { sort -n | awk '$1 != "-" { v[++n] = $1 } END { if (!n) print "-"; else printf "%.1f", n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }'; }
field() { grep "^# bench: $1" "$work/lines" | sed -n "s/.* $2=\([^ ]*\).*/\1/p" | median; } # field LINE_PREFIX KEY
layer=$(field bake_s bake_layer_mb)
bare=$(field bare_ bare_boot_to_multi_user_s)
baked_agent=$(field stack=baked boot_to_agent_active_s)

printf '\n| image | boots | boot -> cloud-init done (s) | boot -> agent active (s) | downloaded (MB) | disk used (MB) |\n'
printf '| --- | --- | --- | --- | --- | --- |\n'
printf '| stock | %s | %s | %s | %s | %s |\n' "$samples" \
  "$(field stack=stock boot_to_cloudinit_s)" "$(field stack=stock boot_to_agent_active_s)" \
  "$(field stack=stock proxy_to_box_mb)" "$(field stack=stock disk_used_mb)"
printf '| baked | %s | %s | %s | %s | %s |\n' "$samples" \
  "$(field stack=baked boot_to_cloudinit_s)" "$baked_agent" "$(field stack=baked proxy_to_box_mb)" \
  "$(awk -v a="$layer" -v b="$(field stack=baked disk_used_mb)" 'BEGIN { printf "%d (%d image + %d box)", a + b, a, b }')"
printf '| bare stock root, cloud-init off | %s | - | - (multi-user.target: %s) | 0 | 0 |\n' "$samples" "$bare"
printf '| stock root, empty user-data | %s | %s | - (multi-user.target: %s) | - | - |\n' "$samples" \
  "$(field bare_ empty_boot_to_cloudinit_s)" "$(field bare_ empty_boot_to_multi_user_s)"
echo
echo "bake (once, as npm run bake does it): $(field bake_s bake_s) s in all, builder boot -> sealed and powered off" \
  "$(field bake_s bake_boot_to_poweroff_s) s, $(field bake_s bake_downloaded_mb) MB downloaded, image layer $layer MB over the stock root"
echo "goal (issue 6): baked boot -> agent active $baked_agent s; 2 x bare boot = $(awk -v b="$bare" 'BEGIN { printf "%.1f", 2 * b }') s"
echo
npx tsx scripts/bench-program.ts 5
