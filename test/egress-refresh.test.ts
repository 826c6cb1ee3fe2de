import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, test } from "vitest";
import { renderFirewall } from "../cloud-init/firewall";

// The egress refresh script, run for real with stand-ins for the resolver (getent) and, but in the last test, the
// kernel (nft). Its settings come from a temporary folder (AGENTBOX_ETC, AGENTBOX_RESOLV) and its library from a
// private mount namespace; nothing on this machine changes. The last test loads the real firewall into a throwaway
// network namespace and refreshes it twice.
const FILES = join(__dirname, "..", "cloud-init", "files");

/** A folder with the box's settings and fake commands; getent answers from `answers` ("NAME ADDRESS" lines). */
function box(answers: string): string {
  const dir = mkdtempSync(join(tmpdir(), "agentbox-egress-"));
  const bin = join(dir, "bin");
  mkdirSync(bin);
  const fake = (name: string, body: string) => {
    writeFileSync(join(bin, name), `#!/bin/bash\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  };
  writeFileSync(join(dir, "answers"), answers);
  fake(
    "getent",
    `[ "$1" = ahosts ] || exit 2
     awk -v h="$2" '$1 == h { print $2, "STREAM", h; print $2, "DGRAM"; n++ } END { exit n ? 0 : 2 }' "${dir}/answers"`,
  );
  // resolv.conf names systemd-resolved's stub (loopback: allowed anyway), resolved's own names its upstreams
  writeFileSync(join(dir, "resolv.conf"), "# comment\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n");
  writeFileSync(
    join(dir, "resolved.conf"),
    "nameserver 192.0.2.53\nnameserver 2001:db8::53\nnameserver ::1\n nameserver 203.0.113.53\nnameserver 198.51.100.53\n",
  );
  writeFileSync(join(dir, "egress-hosts"), "# comment\napi.anthropic.com\ndead.invalid\n");
  writeFileSync(join(dir, "box.env"), "REPO_URL=git@git.example.com:team/repo.git\n");
  writeFileSync(join(dir, "npm-registry"), "https://registry.example.org/\n");
  return dir;
}

/** Bash that runs the script as the box would (library in place, no apt sources), ahead of `then`. */
function inNamespace(dir: string, then: string): string {
  return [
    "set -e",
    "mount -t tmpfs agentbox-test /usr/local/lib",
    "mkdir -p /usr/local/lib/agentbox",
    `cp "${FILES}/lib.sh" /usr/local/lib/agentbox/`,
    // no apt sources in this namespace: the registry comes from npm-registry alone here
    "mount -t tmpfs agentbox-test /etc/apt",
    `refresh() { AGENTBOX_ETC="${dir}" AGENTBOX_RESOLV="${dir}/resolv.conf ${dir}/resolved.conf" \\`,
    `  PATH="${dir}/bin:$PATH" bash "${FILES}/egress-refresh.sh"; }`,
    then,
  ].join("\n");
}

const ANSWERS = [
  "api.anthropic.com 192.0.2.11",
  "api.anthropic.com 192.0.2.10",
  "api.anthropic.com 2001:db8::10",
  "git.example.com 192.0.2.20",
  // the same address behind two names is one element
  "registry.example.org 192.0.2.10",
  "registry.example.org 192.0.2.30",
  "",
].join("\n");

test("one nft transaction per refresh: each address re-added with a fresh timeout, the resolvers replaced", () => {
  const dir = box(ANSWERS);
  writeFileSync(join(dir, "bin", "nft"), `#!/bin/bash\n{ echo "nft $*"; cat; } >>"${dir}/nft.log"\n`);
  chmodSync(join(dir, "bin", "nft"), 0o755);
  const r = spawnSync("unshare", ["-m", "bash", "-c", inNamespace(dir, "refresh")], { encoding: "utf8" });
  expect(r.stderr).toBe("");
  expect(r.stdout).toBe(
    ["egress: dead.invalid does not resolve; skipped", "egress: 3 hosts allowed, 1 did not resolve", ""].join("\n"),
  );
  expect(r.status).toBe(0);
  const e4 = "192.0.2.10 timeout 2h, 192.0.2.11 timeout 2h, 192.0.2.20 timeout 2h, 192.0.2.30 timeout 2h";
  expect(readFileSync(join(dir, "nft.log"), "utf8")).toBe(
    [
      "nft -f -",
      `add element inet agentbox egress4 { ${e4} }`,
      "delete element inet agentbox egress4 { 192.0.2.10, 192.0.2.11, 192.0.2.20, 192.0.2.30 }",
      `add element inet agentbox egress4 { ${e4} }`,
      "add element inet agentbox egress6 { 2001:db8::10 timeout 2h }",
      "delete element inet agentbox egress6 { 2001:db8::10 }",
      "add element inet agentbox egress6 { 2001:db8::10 timeout 2h }",
      "flush set inet agentbox resolvers4",
      "add element inet agentbox resolvers4 { 192.0.2.53, 198.51.100.53, 203.0.113.53 }",
      "flush set inet agentbox resolvers6",
      "add element inet agentbox resolvers6 { 2001:db8::53 }",
      "",
    ].join("\n"),
  );
});

test("nothing resolves and no resolver: the resolver sets are emptied, the egress sets left to time out", () => {
  const dir = box("");
  writeFileSync(join(dir, "resolv.conf"), "nameserver 127.0.0.53\n");
  writeFileSync(join(dir, "resolved.conf"), "");
  writeFileSync(join(dir, "bin", "nft"), `#!/bin/bash\n{ echo "nft $*"; cat; } >>"${dir}/nft.log"\n`);
  chmodSync(join(dir, "bin", "nft"), 0o755);
  const r = spawnSync("unshare", ["-m", "bash", "-c", inNamespace(dir, "refresh")], { encoding: "utf8" });
  expect(r.stderr).toBe("");
  expect(r.stdout.split("\n").at(-2)).toBe("egress: 0 hosts allowed, 4 did not resolve");
  expect(r.status).toBe(0);
  expect(readFileSync(join(dir, "nft.log"), "utf8")).toBe(
    ["nft -f -", "flush set inet agentbox resolvers4", "flush set inet agentbox resolvers6", ""].join("\n"),
  );
});

test("nft refuses the transaction: the refresh fails and says so", () => {
  const dir = box(ANSWERS);
  writeFileSync(
    join(dir, "bin", "nft"),
    "#!/bin/bash\ncat >/dev/null\necho 'Error: No such file or directory' >&2\nexit 1\n",
  );
  chmodSync(join(dir, "bin", "nft"), 0o755);
  const r = spawnSync("unshare", ["-m", "bash", "-c", inNamespace(dir, "refresh")], { encoding: "utf8" });
  expect(r.stderr).toBe("Error: No such file or directory\n");
  expect(r.stdout).toContain("egress: nft refused the refresh:\nadd element inet agentbox egress4");
  expect(r.status).toBe(1);
});

/** `nft -j list set`'s elements: plain addresses, or with a timeout { elem: { val, timeout, expires } }. */
type NftElement = string | { elem: { val: string; timeout: number; expires: number } };
const elements = (json: string): Record<string, { expires?: number }> =>
  Object.fromEntries(
    (JSON.parse(json) as { nftables: { set?: { elem?: NftElement[] } }[] }).nftables
      .flatMap((o) => o.set?.elem ?? [])
      .map((e) => (typeof e === "string" ? [e, {}] : [e.elem.val, { expires: e.elem.expires }])),
  );

test("on the real kernel: a second refresh moves the timeout forward, a dead host keeps its elements", () => {
  const dir = box(ANSWERS);
  writeFileSync(
    join(dir, "firewall.nft"),
    renderFirewall({ denyMetadataTo: ["nobody"], allowSshFrom: [], egressAllowlistFor: ["nobody"] }),
  );
  const list = (set: string, to: string) => `nft -j list set inet agentbox ${set} >"${dir}/${to}.json"`;
  const script = inNamespace(
    dir,
    [
      `nft -f "${dir}/firewall.nft"`,
      "export AGENTBOX_EGRESS_TTL=1m",
      "refresh >/dev/null",
      "sleep 2.2",
      list("egress4", "before"),
      // git.example.com stops resolving; api.anthropic.com moves to a new address
      `grep -v -e '^git.example.com' -e ' 192.0.2.11$' "${dir}/answers" >"${dir}/answers.new"`,
      `echo "api.anthropic.com 192.0.2.12" >>"${dir}/answers.new"`,
      `mv "${dir}/answers.new" "${dir}/answers"`,
      "refresh",
      list("egress4", "after"),
      list("resolvers4", "resolvers4"),
      list("resolvers6", "resolvers6"),
    ].join("\n"),
  );
  const r = spawnSync("unshare", ["-n", "-m", "bash", "-c", script], { encoding: "utf8" });
  expect(r.stderr).toBe("");
  expect(r.stdout).toContain("egress: 2 hosts allowed, 2 did not resolve\n");
  expect(r.status).toBe(0);
  const before = elements(readFileSync(join(dir, "before.json"), "utf8"));
  const after = elements(readFileSync(join(dir, "after.json"), "utf8"));
  expect(Object.keys(before).sort()).toEqual(["192.0.2.10", "192.0.2.11", "192.0.2.20", "192.0.2.30"]);
  // 2 s after the first refresh, at most 58 of 60 s are left; refreshed, the whole minute again
  const expires = (set: typeof before, a: string) => set[a]?.expires ?? NaN;
  for (const a of ["192.0.2.10", "192.0.2.30"]) {
    expect(expires(before, a)).toBeLessThanOrEqual(58);
    expect(expires(after, a)).toBeGreaterThanOrEqual(59);
  }
  // not resolved this time: still there, still counting down from the first refresh
  for (const a of ["192.0.2.11", "192.0.2.20"]) expect(expires(after, a)).toBeLessThanOrEqual(expires(before, a));
  expect(expires(after, "192.0.2.12")).toBeGreaterThanOrEqual(59);
  expect(Object.keys(after).sort()).toEqual(["192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.20", "192.0.2.30"]);
  expect(Object.keys(elements(readFileSync(join(dir, "resolvers4.json"), "utf8"))).sort()).toEqual([
    "192.0.2.53",
    "198.51.100.53",
    "203.0.113.53",
  ]);
  expect(Object.keys(elements(readFileSync(join(dir, "resolvers6.json"), "utf8")))).toEqual(["2001:db8::53"]);
});

test("agentbox:agents: a repository of an agent's own is allowed too (a file:/// one has no host; a worktree's is the stack's)", () => {
  const dir = box(`${ANSWERS}docs.example.net 192.0.2.40\n`);
  writeFileSync(
    join(dir, "agents"),
    "api\tworktree\tfix-login\t\ndocs\trepo\thttps://docs.example.net/team/docs.git\tmain\nlocal\trepo\tfile:///srv/x.git\t\n",
  );
  writeFileSync(join(dir, "bin", "nft"), `#!/bin/bash\n{ echo "nft $*"; cat; } >>"${dir}/nft.log"\n`);
  chmodSync(join(dir, "bin", "nft"), 0o755);
  const r = spawnSync("unshare", ["-m", "bash", "-c", inNamespace(dir, "refresh")], { encoding: "utf8" });
  expect(r.stderr).toBe("");
  expect(r.stdout).toContain("egress: 4 hosts allowed, 1 did not resolve");
  expect(readFileSync(join(dir, "nft.log"), "utf8")).toContain("192.0.2.40 timeout 2h");
});
