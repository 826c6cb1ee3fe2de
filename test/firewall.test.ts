import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, test } from "vitest";
import { renderFirewall } from "../cloud-init/firewall";

test("default: nothing public accepts a connection, the agent is refused the metadata service", () => {
  expect(renderFirewall({ denyMetadataTo: ["agent"], allowSshFrom: [] })).toBe(
    [
      "#!/usr/sbin/nft -f",
      "# agentbox host firewall; loaded by agentbox-firewall.service. Only this table is touched: tailscaled and",
      "# others keep their own tables.",
      "table inet agentbox",
      "delete table inet agentbox",
      "table inet agentbox {",
      "  chain input {",
      "    type filter hook input priority filter; policy drop;",
      "    iif lo accept",
      "    ct state established,related accept",
      "    ct state invalid drop",
      '    iifname "tailscale0" accept comment "the tailnet: SSH, mosh and anything else, as the tailnet policy allows"',
      '    meta l4proto { icmp, ipv6-icmp } accept comment "ping, path MTU, IPv6 neighbour discovery"',
      '    udp sport 67 udp dport 68 accept comment "DHCPv4 replies"',
      '    udp sport 547 udp dport 546 accept comment "DHCPv6 replies"',
      "  }",
      "  chain output {",
      "    type filter hook output priority filter; policy accept;",
      '    meta skuid "agent" ip daddr 169.254.169.254 reject comment "metadata: no user-data for the agent"',
      '    meta skuid "agent" ip6 daddr fd00:ec2::254 reject comment "metadata: no user-data for the agent"',
      "  }",
      "}",
      "",
    ].join("\n"),
  );
});

test("allowSshFrom opens TCP 22 to exactly those networks, per family", () => {
  const rules = renderFirewall({
    denyMetadataTo: ["agent"],
    allowSshFrom: ["198.51.100.7/32", "2001:db8::/48", "10.0.0.0/8"],
  })
    .split("\n")
    .filter((l) => l.includes("dport 22"));
  expect(rules).toEqual([
    '    ip saddr { 198.51.100.7/32, 10.0.0.0/8 } tcp dport 22 accept comment "agentbox:allowSshFrom"',
    '    ip6 saddr { 2001:db8::/48 } tcp dport 22 accept comment "agentbox:allowSshFrom"',
  ]);
});

test("nft itself accepts the ruleset (checked in a throwaway network namespace, nothing loaded)", () => {
  // user names must exist where nft runs: root and nobody stand in for the box's users
  const dir = mkdtempSync(join(tmpdir(), "agentbox-nft-"));
  const file = join(dir, "firewall.nft");
  writeFileSync(
    file,
    renderFirewall({ denyMetadataTo: ["root", "nobody"], allowSshFrom: ["198.51.100.0/24", "2001:db8::/32"] }),
  );
  const r = spawnSync("unshare", ["--net", "nft", "--check", "--file", file], { encoding: "utf8" });
  if (r.error)
    throw new Error(`unshare or nft is missing here (apt-get install nftables util-linux): ${r.error.message}`);
  expect(`${r.stdout}${r.stderr}`).toBe("");
  expect(r.status).toBe(0);
});

test("egress allow-list: the agent's user may reach DNS and the allowed sets only; nft accepts it", () => {
  const text = renderFirewall({ denyMetadataTo: ["root"], allowSshFrom: [], egressAllowlistFor: ["root"] });
  expect(text.split("\n").filter((l) => l.includes("egress"))).toEqual([
    '  set egress4 { type ipv4_addr; flags timeout; comment "filled by agentbox-egress.service"; }',
    '  set egress6 { type ipv6_addr; flags timeout; comment "filled by agentbox-egress.service"; }',
    '    meta skuid "root" ip daddr @egress4 accept',
    '    meta skuid "root" ip6 daddr @egress6 accept',
    '    meta skuid "root" reject comment "egress allow-list: not an allowed host"',
  ]);
  // the metadata refusal comes first: an allowed set can never let the agent reach it
  expect(text.indexOf("169.254.169.254")).toBeLessThan(text.indexOf("@egress4"));
  const dir = mkdtempSync(join(tmpdir(), "agentbox-nft-"));
  writeFileSync(join(dir, "firewall.nft"), text);
  const r = spawnSync("unshare", ["--net", "nft", "--check", "--file", join(dir, "firewall.nft")], {
    encoding: "utf8",
  });
  expect(`${r.stdout}${r.stderr}`).toBe("");
  expect(r.status).toBe(0);
});
