import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { KEY_MARGIN_MS, spentKeyReplacements } from "../scripts/spent-key.mjs";

// A tailnet key minted for a server that was never created, expired by the next try: replaced by that up
// (scripts/spent-key.mjs), never for a box that runs.
const KEY =
  "urn:pulumi:dev::agentbox::agentbox:index:AgentBox$tailscale:index/tailnetKey:TailnetKey::agentbox-tailnet-key";
const NOW = Date.parse("2026-12-01T10:00:00Z");
const key = (expiresAt?: string) => ({
  urn: KEY,
  type: "tailscale:index/tailnetKey:TailnetKey",
  outputs: expiresAt ? { expiresAt } : {},
});
const state = (...resources: object[]) => ({ version: 3, deployment: { resources } });
const server = (type: string) => ({ urn: `urn:x::${type}::agentbox-server`, type, outputs: {} });

describe("which tailnet keys an up must replace", () => {
  test.each([
    ["expired an hour ago, no server: replaced", state(key("2026-12-01T09:00:00Z")), [KEY]],
    ["expires within the margin, no server: replaced", state(key("2026-12-01T10:05:00Z")), [KEY]],
    ["valid long enough, no server: kept", state(key("2026-12-01T10:30:00Z")), []],
    ["no expiry recorded, no server: replaced", state(key()), [KEY]],
    [
      "expired, but a Hetzner server runs on it (spent): kept",
      state(key("2026-12-01T09:00:00Z"), server("hcloud:index/server:Server")),
      [],
    ],
    [
      "expired, but a droplet runs on it (spent): kept",
      state(key("2026-12-01T09:00:00Z"), server("digitalocean:index/droplet:Droplet")),
      [],
    ],
    ["a new stack (empty state)", state(), []],
  ])("%s", (_, exported, want) => {
    expect(spentKeyReplacements(exported, NOW)).toEqual(want);
    expect(spentKeyReplacements(JSON.stringify(exported), NOW)).toEqual(want);
  });

  test("the margin leaves the new box a quarter of an hour to boot and join", () => {
    expect(KEY_MARGIN_MS).toBe(15 * 60 * 1000);
  });
});

test("npm run up passes the replacement to pulumi up, and says why", () => {
  const dir = mkdtempSync(join(tmpdir(), "agentbox-spent-key-"));
  const bin = join(dir, "pulumi");
  // a stand-in CLI: records its arguments; `stack export` prints a state with an expired key and no server
  writeFileSync(
    bin,
    `#!/bin/sh\nprintf '%s\\n' "$*" >>"${dir}/calls"\n[ "$1 $2" = "stack export" ] && printf '%s' "$STATE"\nexit 0\n`,
  );
  chmodSync(bin, 0o755);
  const code = `import("./scripts/pulumi.mjs").then(async (m) => process.exit(await m.main(["up", "--stack", "dev", "--yes"], ${JSON.stringify(bin)})))`;
  const r = spawnSync(process.execPath, ["-e", code], {
    encoding: "utf8",
    env: { ...process.env, PULUMI_BACKEND_URL: "file://x", STATE: JSON.stringify(state(key("2020-01-01T00:00:00Z"))) },
  });
  expect(r.status).toBe(0);
  expect(readFileSync(join(dir, "calls"), "utf8").trim().split("\n")).toEqual([
    "stack select --create dev",
    "stack export --stack dev",
    `up --stack dev --yes --replace=${KEY}`,
  ]);
  expect(r.stderr).toContain(
    `agentbox: the stack's tailnet key (${KEY}) has expired or soon will, and no server exists yet: this up replaces it, so that the new box gets a fresh one`,
  );
});
