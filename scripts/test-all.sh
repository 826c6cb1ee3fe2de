#!/bin/bash
# Everything CI runs: typecheck, lint, format, unit tests, then the boot test of the real user-data on a real
# systemd. Prints one closing line that counts both: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
bash scripts/install-test-deps.sh || exit 1
npm run --silent typecheck && npm run --silent lint && npm run --silent format:check || exit 1

report=$(mktemp)
trap 'rm -f "$report"' EXIT
npx vitest run --reporter=default --reporter=json --outputFile="$report"
unit_rc=$?
# a suite that fails to load has no failed test of its own: count it as one
read -r unit_passed unit_failed < <(node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const broken = r.testResults.filter((f) => f.status === "failed" && !f.assertionResults.some((a) => a.status === "failed"));
  console.log(r.numPassedTests, r.numFailedTests + broken.length);
' "$report" 2>/dev/null || echo "0 1")

boot_log=$(mktemp)
bash test/boot/run.sh 2>&1 | tee "$boot_log"
boot_rc=${PIPESTATUS[0]}
read -r boot_passed boot_failed < <(sed -n 's/^\([0-9]\+\) passed, \([0-9]\+\) failed$/\1 \2/p' "$boot_log" | tail -1)
rm -f "$boot_log"
boot_passed=${boot_passed:-0}
boot_failed=${boot_failed:-1}
[ "$boot_rc" = 0 ] || [ "$boot_failed" != 0 ] || boot_failed=1

# CI shows the end of this output: the failed unit tests' names go there, next to the totals
# shellcheck disable=SC2016 # JavaScript
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  for (const f of r.testResults) {
    const file = require("path").relative(process.cwd(), f.name);
    const failed = f.assertionResults.filter((a) => a.status === "failed");
    if (f.status === "failed" && !failed.length) console.log(`not ok - ${file}: ${(f.message || "did not load").split("\n")[0]}`);
    for (const a of failed) console.log(`not ok - ${file} > ${a.fullName}: ${(a.failureMessages[0] || "").split("\n")[0]}`);
  }
' "$report" 2>/dev/null || true
echo "unit tests: $unit_passed passed, $unit_failed failed (vitest exit $unit_rc); boot test: $boot_passed passed, $boot_failed failed (exit $boot_rc)"
echo "$((unit_passed + boot_passed)) passed, $((unit_failed + boot_failed)) failed"
[ "$unit_rc" = 0 ] && [ "$boot_rc" = 0 ]
