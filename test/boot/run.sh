#!/bin/bash
# CI entry of the boot test. For each user-data: the static checks (lint.sh), then the boot
# test (box.sh test). Without arguments, the user-data of every CI stack is rendered first.
# Prints per-stack results and, last, the combined "N passed, N failed"; exits non-zero if
# anything failed. Takes ~2 min for the rootfs (cached afterwards) plus a few minutes a stack.
#
# usage: run.sh [USER_DATA...]
# env:   AGENTBOX_STACKS  stack files to render (default: test/stacks/Pulumi.*.yaml)
#        AGENTBOX_RENDER  command printing a stack's user-data, run from the repository root
#                         with the stack file appended (default: npx tsx scripts/render.ts --config)
#        BOX_TEST_TIMEOUT seconds one boot test may take in all (default 1800)
#        AGENTBOX_SKIP_BAKED=1  leave out the baked-image part (bake the hetzner stack's image, boot a box on it)
#        Each rendered stack gets one more SSH key, made for the run (BOX_SSH_KEY, for box.sh's login checks).
#        and those of box.sh (EXPECT_CLAUDE_VERSION, CLOUD_INIT_TIMEOUT, KEEP_RUN, ...)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

REPO=$(cd "$BOOT_DIR/../.." && pwd)
RENDER=${AGENTBOX_RENDER:-npx tsx scripts/render.ts --config}
require_root
ensure_host_packages
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Ctrl-C: the running part tears its box down first (bash runs this after it returns)
trap 'exit 130' INT TERM

labels=() files=()
total_passed=0 total_failed=0
# The run's own SSH key, added to every stack it renders: the checks log in with it as the user does (box.sh).
ssh-keygen -q -t ed25519 -N '' -C agentbox-boot-test -f "$work/id_ed25519"
export BOX_SSH_KEY=$work/id_ed25519
mkdir -p "$work/stacks"
with_key() { # with_key STACK_FILE: a copy of it (same file name, so the same stack) with the run's key added
  local copy
  copy=$work/stacks/$(basename "$1")
  node "$BOOT_DIR/with-ssh-key.mjs" "$1" "$(cat "$BOX_SSH_KEY.pub")" >"$copy" && echo "$copy"
}
if (($#)); then
  for f in "$@"; do
    labels+=("$(basename "$f" .yaml)")
    files+=("$(readlink -f "$f")")
  done
else
  shopt -s nullglob
  if [ -n "${AGENTBOX_STACKS:-}" ]; then read -ra stacks <<<"$AGENTBOX_STACKS"; else stacks=("$REPO"/test/stacks/Pulumi.*.yaml); fi
  ((${#stacks[@]})) || die "no stack files to render (AGENTBOX_STACKS, or test/stacks/Pulumi.*.yaml)"
  for s in "${stacks[@]}"; do
    label=$(basename "$s" .yaml)
    label=${label#Pulumi.}
    label=${label#ci-}
    # the render command is a command line given by the caller: split into words on purpose
    # shellcheck disable=SC2086
    if keyed=$(with_key "$s" 2>"$work/$label.err") && (cd "$REPO" && $RENDER "$keyed") >"$work/$label.yaml" 2>>"$work/$label.err"; then
      labels+=("$label")
      files+=("$work/$label.yaml")
    else
      echo "not ok - render $s"
      sed 's/^/#   /' "$work/$label.err"
      total_failed=$((total_failed + 1))
    fi
  done
fi

rootfs=$("$BOOT_DIR/build-rootfs.sh")

# run_part LOG COMMAND...: show its output, add its final "N passed, N failed" to the totals
# (a part that ends without that line, or exits non-zero with no failure counted, counts one)
summaries=()
run_part() {
  local out=$1 rc p f
  shift
  set +e
  "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  set -e
  read -r p f < <(sed -n 's/^\([0-9]\+\) passed, \([0-9]\+\) failed$/\1 \2/p' "$out" | tail -n 1) || true
  p=${p:-0} f=${f:-1}
  [ "$rc" = 0 ] || [ "$f" != 0 ] || f=1
  total_passed=$((total_passed + p)) total_failed=$((total_failed + f))
  PART="$p passed, $f failed"
}

for i in "${!files[@]}"; do
  label=${labels[$i]}
  echo "## $label: static checks"
  run_part "$work/lint.out" "$BOOT_DIR/lint.sh" "${files[$i]}" "$rootfs"
  lint=$PART
  echo "## $label: boot test"
  run_part "$work/box.out" timeout --foreground "${BOX_TEST_TIMEOUT:-1800}" "$BOOT_DIR/box.sh" test "${files[$i]}" "$label"
  summaries+=("# $label: static checks $lint; boot test $PART")
  grep '^# bench:' "$work/box.out" >>"$work/bench" || true
done

# The baked image (CI): the hetzner stack's image builder run once on the stock rootfs (cached by its user-data),
# then that stack's box booted from the image and checked like any other. AGENTBOX_SKIP_BAKED=1 leaves it out.
bake_to() { "$BOOT_DIR/bake.sh" "$2" >"$1"; } # bake_to PATH_FILE BAKE_USER_DATA: the baked root's path into a file
stack=$REPO/test/stacks/Pulumi.ci-hetzner.yaml
if ((!$#)) && [ -z "${AGENTBOX_SKIP_BAKED:-}" ] && [ -f "$stack" ] && stack=$(with_key "$stack"); then
  echo "## hetzner-baked: the image (baked once, cached), then the boot test on it"
  # shellcheck disable=SC2086 # the render command is a command line given by the caller
  if (cd "$REPO" && $RENDER "$stack" --bake) >"$work/bake.yaml" 2>"$work/bake.err" &&
    (cd "$REPO" && $RENDER "$stack" --baked) >"$work/baked.yaml" 2>>"$work/bake.err"; then
    run_part "$work/bake.out" bake_to "$work/baked-root" "$work/bake.yaml"
    image=$PART
    baked=$(cat "$work/baked-root" 2>/dev/null || true)
    if [ -n "$baked" ] && [ -d "$baked" ]; then
      run_part "$work/box.out" env BOX_ROOTFS="$baked" timeout --foreground "${BOX_TEST_TIMEOUT:-1800}" \
        "$BOOT_DIR/box.sh" test "$work/baked.yaml" hetzner-baked
      summaries+=("# hetzner-baked: image $image; boot test $PART")
      grep '^# bench:' "$work/box.out" >>"$work/bench" || true
    else
      summaries+=("# hetzner-baked: image $image; no image to boot")
    fi
  else
    echo "not ok - render the hetzner stack's image builder and its baked box"
    sed 's/^/#   /' "$work/bake.err"
    total_failed=$((total_failed + 1))
  fi
fi

echo "## summary"
printf '%s\n' "${summaries[@]}"
cat "$work/bench" 2>/dev/null || true
echo "$total_passed passed, $total_failed failed"
[ "$total_failed" = 0 ]
