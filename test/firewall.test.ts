import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, test } from "vitest";
import { renderFirewall } from "../cloud-init/firewall";

test("default: nothing public accepts a connection, neither the agent nor a container reaches the metadata service", () => {
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
      "  chain forward {",
      "    type filter hook forward priority filter; policy accept;",
      '    ip daddr 169.254.169.254 counter drop comment "metadata: no user-data for containers"',
      '    ip6 daddr fd00:ec2::254 counter drop comment "metadata: no user-data for containers"',
      '    ct state new ct status dnat iifname != { "lo", "tailscale0" } counter drop comment "published container ports: from the tailnet only"',
      "  }",
      "  chain output {",
      "    type filter hook output priority filter; policy accept;",
      "    ct state established,related accept",
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

const nftCheck = (text: string) => {
  const dir = mkdtempSync(join(tmpdir(), "agentbox-nft-"));
  writeFileSync(join(dir, "firewall.nft"), text);
  return spawnSync("unshare", ["--net", "nft", "--check", "--file", join(dir, "firewall.nft")], { encoding: "utf8" });
};
const chain = (text: string, name: string) => {
  const lines = text.split("\n");
  const start = lines.indexOf(`  chain ${name} {`);
  return lines.slice(start + 1, lines.indexOf("  }", start));
};

test("egress allow-list: the agent's user may reach its resolvers' DNS and the allowed sets only; nft accepts it", () => {
  const text = renderFirewall({ denyMetadataTo: ["root"], allowSshFrom: [], egressAllowlistFor: ["root"] });
  expect(text.split("\n").filter((l) => l.startsWith("  set "))).toEqual([
    '  set egress4 { type ipv4_addr; flags timeout; comment "filled by agentbox-egress.service"; }',
    '  set egress6 { type ipv6_addr; flags timeout; comment "filled by agentbox-egress.service"; }',
    '  set resolvers4 { type ipv4_addr; comment "filled by agentbox-egress.service"; }',
    '  set resolvers6 { type ipv6_addr; comment "filled by agentbox-egress.service"; }',
  ]);
  // port 53 only to the resolvers, even on an allowed host
  expect(chain(text, "allowlist")).toEqual([
    "    ip daddr @resolvers4 meta l4proto { tcp, udp } th dport 53 accept",
    "    ip6 daddr @resolvers6 meta l4proto { tcp, udp } th dport 53 accept",
    `    meta l4proto { tcp, udp } th dport 53 counter reject comment "DNS: the box's own resolvers only"`,
    "    ip daddr @egress4 accept",
    "    ip6 daddr @egress6 accept",
  ]);
  // established first: replies to the tailnet, and connections made before their address expired, keep flowing;
  // the metadata refusal comes before any accept of the agent's, so no allowed set can ever let it through
  expect(chain(text, "output")).toEqual([
    "    type filter hook output priority filter; policy accept;",
    "    ct state established,related accept",
    '    meta skuid "root" ip daddr 169.254.169.254 reject comment "metadata: no user-data for the agent"',
    '    meta skuid "root" ip6 daddr fd00:ec2::254 reject comment "metadata: no user-data for the agent"',
    '    meta skuid "root" oif lo accept',
    '    meta skuid "root" jump allowlist',
    '    meta skuid "root" reject comment "egress allow-list: not an allowed host"',
  ]);
  const r = nftCheck(text);
  expect(`${r.stdout}${r.stderr}`).toBe("");
  expect(r.status).toBe(0);
});

test("egress allow-list: forwarded traffic (containers) gets the same allow-list, or comes from the tailnet", () => {
  const text = renderFirewall({ denyMetadataTo: ["root"], allowSshFrom: [], egressAllowlistFor: ["root"] });
  expect(chain(text, "forward")).toEqual([
    "    type filter hook forward priority filter; policy drop;",
    '    ip daddr 169.254.169.254 counter drop comment "metadata: no user-data for containers"',
    '    ip6 daddr fd00:ec2::254 counter drop comment "metadata: no user-data for containers"',
    '    ct state new ct status dnat iifname != { "lo", "tailscale0" } counter drop comment "published container ports: from the tailnet only"',
    "    ct state established,related accept",
    '    iifname "tailscale0" accept',
    "    jump allowlist",
    '    counter drop comment "egress allow-list: not an allowed host"',
  ]);
});

test("egress open: the forward chain refuses only the metadata service and published ports from outside the tailnet", () => {
  const text = renderFirewall({ denyMetadataTo: ["agent"], allowSshFrom: ["198.51.100.7/32"] });
  expect(chain(text, "forward")).toEqual([
    "    type filter hook forward priority filter; policy accept;",
    '    ip daddr 169.254.169.254 counter drop comment "metadata: no user-data for containers"',
    '    ip6 daddr fd00:ec2::254 counter drop comment "metadata: no user-data for containers"',
    '    ct state new ct status dnat iifname != { "lo", "tailscale0" } counter drop comment "published container ports: from the tailnet only"',
  ]);
  expect(text).not.toContain("allowlist");
  expect(text).not.toContain("@egress4");
});
