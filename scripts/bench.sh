#!/bin/bash
# Time to a working agent, measured on a real boot (the boot harness) and for the Pulumi program itself.
# Boots each CI stack's rendered user-data SAMPLES times (default 3) and prints medians; figures, never assertions.
#
#   sudo npm run bench            (SAMPLES=5 npm run bench for more)
set -euo pipefail
cd "$(dirname "$0")/.."
samples=${SAMPLES:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
npx tsx scripts/render.ts --config test/stacks/Pulumi.ci-hetzner.yaml >"$work/stock.yaml"

for i in $(seq "$samples"); do
  echo "## stock image, boot $i of $samples" >&2
  bash test/boot/box.sh bench "$work/stock.yaml" stock | grep '^# bench:' | tee -a "$work/lines" >&2
done

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" "$work/lines"; }
median() { sort -n | awk '{ v[++n] = $1 } END { if (!n) print "-"; else printf "%.1f", n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }'; }
printf '\n| image | boots | boot -> cloud-init done (s) | boot -> agent active (s) | downloaded (MB) | disk used (MB) |\n'
printf '| --- | --- | --- | --- | --- | --- |\n'
printf '| stock | %s | %s | %s | %s | %s |\n' "$samples" \
  "$(field boot_to_cloudinit_s | median)" "$(field boot_to_agent_active_s | median)" \
  "$(field proxy_to_box_mb | median)" "$(field disk_used_mb | median)"
echo
npx tsx scripts/bench-program.ts 5
