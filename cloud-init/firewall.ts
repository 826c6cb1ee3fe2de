/**
 * The box's own firewall, as an nftables ruleset. It holds when the cloud firewall is detached or misconfigured:
 * nothing on a public interface accepts a connection unless `allowSshFrom` lets SSH in (a published container
 * port neither), and neither the agent's user nor a container can reach the cloud's metadata service (which
 * serves the user-data to anyone on the box who asks).
 *
 * Written by hand because it is data, not code: nftables' own syntax is the clearest statement of the rules, and
 * every value placed in it (user names, CIDRs) is validated before it gets here.
 */

/** The metadata service of Hetzner and DigitalOcean (169.254.169.254), and the IPv6 form some clouds use. */
export const METADATA_ADDRESSES = { ipv4: "169.254.169.254", ipv6: "fd00:ec2::254" } as const;

export interface FirewallSpec {
  /** Logins refused the metadata service. */
  denyMetadataTo: readonly string[];
  /** CIDRs allowed to reach SSH (TCP 22) on any interface. */
  allowSshFrom: readonly string[];
  /**
   * Logins that may reach only the addresses in the egress sets, and DNS on the box's own resolvers; forwarded
   * traffic (containers) is held to the same sets. The sets are filled by agentbox-egress.service from host names
   * and resolv.conf; nothing else may leave the box under these users' uids or through it.
   * @default [] (egress open)
   */
  egressAllowlistFor?: readonly string[];
}

/** Hosts Claude Code needs (Anthropic's documentation); the registries and the git host are added on the box. */
export const CLAUDE_EGRESS_HOSTS = [
  "api.anthropic.com",
  "claude.ai",
  "claude.com",
  "platform.claude.com",
  "downloads.claude.ai",
  "mcp-proxy.anthropic.com",
  "raw.githubusercontent.com",
] as const;

export function renderFirewall(spec: FirewallSpec): string {
  const v4 = spec.allowSshFrom.filter((c) => !c.includes(":"));
  const v6 = spec.allowSshFrom.filter((c) => c.includes(":"));
  const ssh = [
    ...(v4.length ? [`    ip saddr { ${v4.join(", ")} } tcp dport 22 accept comment "agentbox:allowSshFrom"`] : []),
    ...(v6.length ? [`    ip6 saddr { ${v6.join(", ")} } tcp dport 22 accept comment "agentbox:allowSshFrom"`] : []),
  ];
  const metadata = spec.denyMetadataTo.flatMap((user) => [
    `    meta skuid "${user}" ip daddr ${METADATA_ADDRESSES.ipv4} reject comment "metadata: no user-data for the agent"`,
    `    meta skuid "${user}" ip6 daddr ${METADATA_ADDRESSES.ipv6} reject comment "metadata: no user-data for the agent"`,
  ]);
  const restricted = spec.egressAllowlistFor ?? [];
  const allowlist = restricted.length > 0;
  const egress = restricted.flatMap((user) => [
    `    meta skuid "${user}" oif lo accept`,
    `    meta skuid "${user}" jump allowlist`,
    `    meta skuid "${user}" reject comment "egress allow-list: not an allowed host"`,
  ]);
  // The allow-list, once for the agent's uid (output) and for forwarded traffic. Port 53 is DNS only to the box's
  // own resolvers: to any other host, an allowed one too, it would be a way out.
  const allowlistChain = [
    "  chain allowlist {",
    "    ip daddr @resolvers4 meta l4proto { tcp, udp } th dport 53 accept",
    "    ip6 daddr @resolvers6 meta l4proto { tcp, udp } th dport 53 accept",
    `    meta l4proto { tcp, udp } th dport 53 counter reject comment "DNS: the box's own resolvers only"`,
    "    ip daddr @egress4 accept",
    "    ip6 daddr @egress6 accept",
    "  }",
  ];
  const sets = [
    '  set egress4 { type ipv4_addr; flags timeout; comment "filled by agentbox-egress.service"; }',
    '  set egress6 { type ipv6_addr; flags timeout; comment "filled by agentbox-egress.service"; }',
    '  set resolvers4 { type ipv4_addr; comment "filled by agentbox-egress.service"; }',
    '  set resolvers6 { type ipv6_addr; comment "filled by agentbox-egress.service"; }',
  ];
  // Forwarded traffic (Docker's containers) carries no socket uid: the output chain never sees it. A published
  // container port is DNAT'd before the input chain could refuse it, so it is refused here, but from the tailnet.
  // With egress open the policy stays accept, so that Docker's own forwarding rules decide the rest.
  const forward = [
    "  chain forward {",
    `    type filter hook forward priority filter; policy ${allowlist ? "drop" : "accept"};`,
    `    ip daddr ${METADATA_ADDRESSES.ipv4} counter drop comment "metadata: no user-data for containers"`,
    `    ip6 daddr ${METADATA_ADDRESSES.ipv6} counter drop comment "metadata: no user-data for containers"`,
    '    ct state new ct status dnat iifname != { "lo", "tailscale0" } counter drop comment "published container ports: from the tailnet only"',
    ...(allowlist
      ? [
          "    ct state established,related accept",
          '    iifname "tailscale0" accept',
          "    jump allowlist",
          '    counter drop comment "egress allow-list: not an allowed host"',
        ]
      : []),
    "  }",
  ];
  return [
    "#!/usr/sbin/nft -f",
    "# agentbox host firewall; loaded by agentbox-firewall.service. Only this table is touched: tailscaled and",
    "# others keep their own tables.",
    "table inet agentbox",
    "delete table inet agentbox",
    "table inet agentbox {",
    ...(allowlist ? [...sets, ...allowlistChain] : []),
    "  chain input {",
    "    type filter hook input priority filter; policy drop;",
    "    iif lo accept",
    "    ct state established,related accept",
    "    ct state invalid drop",
    '    iifname "tailscale0" accept comment "the tailnet: SSH, mosh and anything else, as the tailnet policy allows"',
    '    meta l4proto { icmp, ipv6-icmp } accept comment "ping, path MTU, IPv6 neighbour discovery"',
    '    udp sport 67 udp dport 68 accept comment "DHCPv4 replies"',
    '    udp sport 547 udp dport 546 accept comment "DHCPv6 replies"',
    ...ssh,
    "  }",
    ...forward,
    "  chain output {",
    "    type filter hook output priority filter; policy accept;",
    // replies (a dev server reached over the tailnet, mosh-server), and connections made while their address was
    // allowed: an address that leaves the egress sets stops new connections only
    "    ct state established,related accept",
    ...metadata,
    ...egress,
    "  }",
    "}",
    "",
  ].join("\n");
}
