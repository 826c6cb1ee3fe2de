#!/bin/bash
# Try a stack's box before paying for a VM: renders the stack's user-data (secrets as placeholders, so Claude Code
# asks you to log in and Tailscale is skipped) and boots it on this Linux machine with the boot harness, in a
# container with its own network namespace. It stays up for `tmux attach` until you stop it.
#
#   npm run try -- --stack my-project        (root; prints how to attach and how to stop it)
set -euo pipefail
cd "$(dirname "$0")/.."
ud=$(mktemp --suffix=.yaml)
trap 'rm -f "$ud"' EXIT
npx tsx scripts/render.ts --without-secrets "$@" >"$ud"
bash test/boot/box.sh try "$ud"
