import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, test } from "vitest";

// The egress refresh script, run for real with stand-ins for the two things it touches: the resolver (getent) and
// the kernel (nft). Its settings come from a temporary folder (AGENTBOX_ETC) and its library from a private mount
// namespace; nothing on this machine changes.
const FILES = join(__dirname, "..", "cloud-init", "files");

test("resolves every allowed host into the sets, skips a dead one, and still succeeds", () => {
  const dir = mkdtempSync(join(tmpdir(), "agentbox-egress-"));
  const bin = join(dir, "bin");
  const fake = (name: string, body: string) => {
    writeFileSync(join(bin, name), `#!/bin/bash\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  };
  spawnSync("mkdir", ["-p", bin]);
  fake(
    "getent",
    `case "$1 $2" in
       "ahostsv4 api.anthropic.com") echo "192.0.2.10 STREAM api.anthropic.com"; echo "192.0.2.11 STREAM";;
       "ahostsv6 api.anthropic.com") echo "2001:db8::10 STREAM api.anthropic.com";;
       "ahostsv4 git.example.com") echo "192.0.2.20 STREAM git.example.com";;
       "ahostsv4 registry.example.org") echo "192.0.2.30 STREAM";;
       *) exit 2;;
     esac`,
  );
  fake("nft", `echo "$*" >>"${dir}/nft.log"`);
  writeFileSync(join(dir, "egress-hosts"), "# comment\napi.anthropic.com\ndead.invalid\n");
  writeFileSync(join(dir, "box.env"), "REPO_URL=git@git.example.com:team/repo.git\n");
  writeFileSync(join(dir, "npm-registry"), "https://registry.example.org/\n");
  const script = [
    "set -e",
    "mount -t tmpfs agentbox-test /usr/local/lib",
    "mkdir -p /usr/local/lib/agentbox",
    'cp "$2/lib.sh" /usr/local/lib/agentbox/',
    // no apt sources in this namespace: the registry comes from npm-registry alone here
    "mount -t tmpfs agentbox-test /etc/apt",
    'AGENTBOX_ETC="$1" PATH="$1/bin:$PATH" bash "$2/egress-refresh.sh"',
  ].join("\n");
  const r = spawnSync("unshare", ["-m", "bash", "-c", script, "egress", dir, FILES], { encoding: "utf8" });
  expect(r.stderr).toBe("");
  expect(r.stdout).toBe("egress: dead.invalid does not resolve; skipped\negress: 3 hosts allowed, 1 did not resolve\n");
  expect(r.status).toBe(0);
  expect(readFileSync(join(dir, "nft.log"), "utf8")).toBe(
    [
      "add element inet agentbox egress4 { 192.0.2.10 timeout 2h, 192.0.2.11 timeout 2h }",
      "add element inet agentbox egress6 { 2001:db8::10 timeout 2h }",
      "add element inet agentbox egress4 { 192.0.2.20 timeout 2h }",
      "add element inet agentbox egress4 { 192.0.2.30 timeout 2h }",
      "",
    ].join("\n"),
  );
});
