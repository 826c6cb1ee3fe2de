import { describe, expect, test } from "vitest";
import { type ServerType, digitalOceanCatalogue, hetznerCatalogue } from "../components/catalogue";
import {
  type AgentBoxConfig,
  CONFIG_KEYS,
  ConfigError,
  DEFAULT_CLAUDE_CODE_VERSION,
  type RawConfig,
  cidrProblem,
  credentialProblems,
  defaultHostname,
  parseConfig,
  parseMaintenanceWindow,
} from "../components/config";

const ctx = { project: "agentbox", stack: "dev" };

// A real public key (ssh-keygen -t ed25519); its private half was deleted.
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIInYML3Xvce62W4QKX9g6HyeH09KwZSXD8qIFr4t9GCL you@laptop";
const KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDfZgwWjWTKbEInjqhJiqvBau6HzMb5tnGquuo5R9A7N ci@agentbox";
/** The smallest valid stack config: one SSH key, stored the way `pulumi config set --path` stores a list. */
const ok: RawConfig = { sshPublicKeys: JSON.stringify([KEY]) };

const OAUTH_TOKEN = "sk-ant-oat01-Zq3xV9mT2pL8wR4nY6bK1cJ5hF7dG0sA";
const API_KEY = "sk-ant-api03-Hn4kP8vB2xQ6mW1zR9tL3yC7jD5fS0gE";
const REPO = "https://github.com/you/repo.git";

const ssh0Fix = `Fix: pulumi config set --path 'agentbox:sshPublicKeys[0]' "$(cat ~/.ssh/id_ed25519.pub)"`;
const SSH_KEY_RULES =
  "(one line: type, base64 key, optional comment; types: ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com)";
const LOGIN_RULES =
  '(lower-case letters, digits, "_" and "-", starting with a letter or "_", at most 32). Fix: pulumi config set agentbox:user agent';
const HOSTNAME_RULES =
  '(one DNS label: a-z, 0-9 and "-", at most 63, not starting or ending with "-"). Fix: pulumi config set agentbox:tailscaleHostname agentbox-dev';
const cidrFix = (i: number) => `Fix: pulumi config set --path 'agentbox:allowSshFrom[${i}]' 203.0.113.7/32`;
const secretProblem = (key: string, what: string) =>
  `agentbox:${key}: the value (hidden) has spaces, quotes, newlines or other characters no ${what} has, or is too short. Fix: copy it again and run pulumi config set --secret agentbox:${key} (it prompts for the value, which keeps it out of your shell history)`;
const HETZNER_TYPES = "cx43, cx53, cax31, cax41, cpx42, cpx62, ccx23, ccx33";

function problemsOf(raw: RawConfig): string[] {
  try {
    parseConfig(raw, ctx);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("parseConfig accepted a configuration it should have refused");
}

function errorOf(raw: RawConfig): ConfigError {
  try {
    parseConfig(raw, ctx);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("parseConfig accepted a configuration it should have refused");
}

interface Bad {
  name: string;
  raw: RawConfig;
  problems: string[];
}

const BAD: Bad[] = [
  // cloud and location
  {
    name: "cloud: not a supported cloud",
    raw: { ...ok, cloud: "aws" },
    problems: [
      'agentbox:cloud: "aws" is not a supported cloud. Fix: pulumi config set agentbox:cloud hetzner (or digitalocean)',
    ],
  },
  {
    name: "location: a DigitalOcean region on hetzner",
    raw: { ...ok, location: "fra1" },
    problems: [
      'agentbox:location: "fra1" is not a hetzner location; valid: fsn1, nbg1, hel1, ash, hil, sin. Fix: pulumi config set agentbox:location fsn1',
    ],
  },
  {
    name: "location: a Hetzner location on digitalocean",
    raw: { ...ok, cloud: "digitalocean", location: "fsn1" },
    problems: [
      'agentbox:location: "fsn1" is not a digitalocean region; valid: ams3, atl1, blr1, fra1, lon1, nyc1, nyc3, sfo2, sfo3, sgp1, syd1, tor1. Fix: pulumi config set agentbox:location fra1',
    ],
  },

  // memoryGb
  {
    name: "memoryGb: 8 is below the minimum",
    raw: { ...ok, memoryGb: "8" },
    problems: [
      "agentbox:memoryGb: 8 GB is below 16 GB; agent boxes with 8 GB were OOM-killed under agent load (Claude Code, language servers, test runs). Fix: pulumi config set agentbox:memoryGb 16",
    ],
  },
  {
    // The catalogue stops at 32 GB and serverType must come from it, so "name a larger type" would be a dead end.
    name: "memoryGb: 64 is above the maximum",
    raw: { ...ok, memoryGb: "64" },
    problems: [
      "agentbox:memoryGb: 64 GB is above 32 GB, the largest size agentbox picks from its catalogue. Fix: pulumi config set agentbox:memoryGb 32",
    ],
  },
  {
    name: "memoryGb: a fraction",
    raw: { ...ok, memoryGb: "16.5" },
    problems: [
      'agentbox:memoryGb: "16.5" is not a whole number of gigabytes. Fix: pulumi config set agentbox:memoryGb 16 (or 32)',
    ],
  },
  {
    name: "memoryGb: not a number",
    raw: { ...ok, memoryGb: "lots" },
    problems: [
      'agentbox:memoryGb: "lots" is not a whole number of gigabytes. Fix: pulumi config set agentbox:memoryGb 16 (or 32)',
    ],
  },
  {
    name: "memoryGb: negative",
    raw: { ...ok, memoryGb: "-16" },
    problems: [
      'agentbox:memoryGb: "-16" is not a whole number of gigabytes. Fix: pulumi config set agentbox:memoryGb 16 (or 32)',
    ],
  },

  // serverType
  {
    name: "serverType: unknown on hetzner",
    raw: { ...ok, serverType: "cx99" },
    problems: [
      `agentbox:serverType: "cx99" is not a hetzner server type agentbox knows (catalogue of 2026-09-29); valid: ${HETZNER_TYPES}. Fix: pulumi config set agentbox:serverType cx43, or pulumi config rm agentbox:serverType and set agentbox:memoryGb`,
    ],
  },
  {
    name: "serverType: retired cx42",
    raw: { ...ok, serverType: "cx42" },
    problems: [
      'agentbox:serverType: "cx42" is no longer sold by hetzner; its successor is cx43. Fix: pulumi config set agentbox:serverType cx43',
    ],
  },
  {
    name: "serverType: retired cpx41",
    raw: { ...ok, serverType: "cpx41" },
    problems: [
      'agentbox:serverType: "cpx41" is no longer sold by hetzner; its successor is cpx42. Fix: pulumi config set agentbox:serverType cpx42',
    ],
  },
  {
    name: "serverType: a Hetzner type on digitalocean",
    raw: { ...ok, cloud: "digitalocean", serverType: "cx43" },
    problems: [
      'agentbox:serverType: "cx43" is not a digitalocean droplet size agentbox knows (catalogue of 2026-08-15); valid: s-4vcpu-16gb-amd, m-2vcpu-16gb, s-8vcpu-16gb, s-8vcpu-16gb-amd, s-8vcpu-16gb-intel, g-4vcpu-16gb, c-8, s-8vcpu-32gb-amd, m-4vcpu-32gb, g-8vcpu-32gb, c-16. Fix: pulumi config set agentbox:serverType s-4vcpu-16gb-amd, or pulumi config rm agentbox:serverType and set agentbox:memoryGb',
    ],
  },
  {
    // "sold in fsn1, nbg1, hel1, and ash sells ..." reads as if ash were in the list: the two lists need a clear break.
    name: "serverType: cx43 is not sold in ash",
    raw: { ...ok, serverType: "cx43", location: "ash" },
    problems: [
      "agentbox:serverType: cx43 is not sold in ash; it is sold in fsn1, nbg1, hel1; ash sells ccx23, ccx33. Fix: pulumi config set agentbox:location fsn1 or pulumi config set agentbox:serverType ccx23",
    ],
  },
  {
    name: "serverType: too small for memoryGb",
    raw: { ...ok, serverType: "cx43", memoryGb: "32" },
    problems: [
      "agentbox:serverType: cx43 has 16 GB, less than agentbox:memoryGb = 32. Fix: pulumi config rm agentbox:serverType to let agentbox pick, or rm agentbox:memoryGb",
    ],
  },

  // image
  {
    name: "image: unknown",
    raw: { ...ok, image: "archlinux" },
    problems: [
      'agentbox:image: "archlinux" is not an image agentbox supports on hetzner; valid: debian-13, ubuntu-24.04. Fix: pulumi config set agentbox:image debian-13',
    ],
  },
  {
    name: "image: DigitalOcean's slug on hetzner",
    raw: { ...ok, image: "debian-13-x64" },
    problems: [
      'agentbox:image: "debian-13-x64" is not an image agentbox supports on hetzner; valid: debian-13, ubuntu-24.04. Fix: pulumi config set agentbox:image debian-13',
    ],
  },
  {
    name: "image: Hetzner's name on digitalocean",
    raw: { ...ok, cloud: "digitalocean", image: "debian-13" },
    problems: [
      'agentbox:image: "debian-13" is not an image agentbox supports on digitalocean; valid: debian-13-x64, ubuntu-24-04-x64. Fix: pulumi config set agentbox:image debian-13-x64',
    ],
  },

  // sshPublicKeys
  {
    name: "sshPublicKeys: missing",
    raw: {},
    problems: [
      `agentbox:sshPublicKeys: at least one SSH public key is required (without one the cloud mails a root password and nobody can log in as the agent user). ${ssh0Fix}`,
    ],
  },
  {
    name: "sshPublicKeys: an empty list",
    raw: { sshPublicKeys: "[]" },
    problems: [
      `agentbox:sshPublicKeys: at least one SSH public key is required (without one the cloud mails a root password and nobody can log in as the agent user). ${ssh0Fix}`,
    ],
  },
  {
    name: "sshPublicKeys: garbage",
    raw: { sshPublicKeys: JSON.stringify(["my laptop key"]) },
    problems: [`agentbox:sshPublicKeys[0]: "my laptop key" is not an OpenSSH public key ${SSH_KEY_RULES}. ${ssh0Fix}`],
  },
  {
    name: "sshPublicKeys: garbage as the second comma-separated entry",
    raw: { sshPublicKeys: `${KEY}, AAAAC3NzaC1lZDI1NTE5AAAAIDfZgwWjWTKbEInjqhJiqvBau6HzMb5tnGquuo5R9A7N` },
    problems: [
      `agentbox:sshPublicKeys[1]: "AAAAC3NzaC1lZDI1NTE5AAAAIDfZgwWjWTKbEInjqhJiqvBau6HzMb5tnGquuo5R9A7N" is not an OpenSSH public key ${SSH_KEY_RULES}. Fix: pulumi config set --path 'agentbox:sshPublicKeys[1]' "$(cat ~/.ssh/id_ed25519.pub)"`,
    ],
  },
  {
    // The key now sits unencrypted in Pulumi.dev.yaml: the message must say so and still end in a Fix.
    name: "sshPublicKeys: a private key pasted",
    raw: {
      sshPublicKeys: JSON.stringify([
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----",
      ]),
    },
    problems: [
      `agentbox:sshPublicKeys[0]: this is a PRIVATE key, and it is now stored unencrypted in the stack config. Fix: pulumi config rm agentbox:sshPublicKeys, then pulumi config set --path 'agentbox:sshPublicKeys[0]' "$(cat ~/.ssh/id_ed25519.pub)"; if Pulumi.dev.yaml was committed or shared, replace that key pair`,
    ],
  },
  {
    name: "sshPublicKeys: a key with a newline inside",
    raw: { sshPublicKeys: JSON.stringify([KEY.replace("AAAAI", "AAAAI\n")]) },
    problems: [
      `agentbox:sshPublicKeys[0]: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI\\nInYML3Xvce62W4QKX9g6HyeH09KwZSXD8qIFr4t..." is not an OpenSSH public key ${SSH_KEY_RULES}. ${ssh0Fix}`,
    ],
  },
  {
    // A JSON object is not a list; reporting it as entry [0] would send the user looking for the wrong mistake.
    name: "sshPublicKeys: a JSON object instead of a list",
    raw: { sshPublicKeys: JSON.stringify({ laptop: KEY }) },
    problems: [
      `agentbox:sshPublicKeys: "{\\"laptop\\":\\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIInYML3Xvce62W4QKX9g6HyeH09KwZ..." is not a list. Fix: pulumi config set --path 'agentbox:sshPublicKeys[0]' "ssh-ed25519 AAAA... you@laptop"`,
    ],
  },
  {
    name: "sshPublicKeys: broken JSON",
    raw: { sshPublicKeys: '["ssh-ed25519 AAAA' },
    problems: [
      `agentbox:sshPublicKeys: "[\\"ssh-ed25519 AAAA" is not a list. Fix: pulumi config set --path 'agentbox:sshPublicKeys[0]' "ssh-ed25519 AAAA... you@laptop"`,
    ],
  },
  {
    name: "sshPublicKeys: a list entry that is not a string",
    raw: { sshPublicKeys: "[42]" },
    problems: [
      `agentbox:sshPublicKeys: every entry must be a string. Fix: pulumi config set --path 'agentbox:sshPublicKeys[0]' "ssh-ed25519 AAAA... you@laptop"`,
    ],
  },

  // user
  {
    name: "user: root",
    raw: { ...ok, user: "root" },
    problems: [
      'agentbox:user: "root" already exists on the image or belongs to a system service. Fix: pulumi config set agentbox:user agent',
    ],
  },
  {
    name: "user: ubuntu, the image's own user",
    raw: { ...ok, user: "ubuntu" },
    problems: [
      'agentbox:user: "ubuntu" already exists on the image or belongs to a system service. Fix: pulumi config set agentbox:user agent',
    ],
  },
  {
    name: "user: upper case",
    raw: { ...ok, user: "Agent" },
    problems: [`agentbox:user: "Agent" is not a valid Linux login ${LOGIN_RULES}`],
  },
  {
    name: "user: starts with a digit",
    raw: { ...ok, user: "1abc" },
    problems: [`agentbox:user: "1abc" is not a valid Linux login ${LOGIN_RULES}`],
  },
  {
    name: "user: 33 characters",
    raw: { ...ok, user: "a".repeat(33) },
    problems: [`agentbox:user: "${"a".repeat(33)}" is not a valid Linux login ${LOGIN_RULES}`],
  },
  {
    name: "user: with a space",
    raw: { ...ok, user: "my agent" },
    problems: [`agentbox:user: "my agent" is not a valid Linux login ${LOGIN_RULES}`],
  },

  // sudo
  {
    name: "sudo: yes",
    raw: { ...ok, sudo: "yes" },
    problems: ['agentbox:sudo: "yes" is not true or false. Fix: pulumi config set agentbox:sudo false'],
  },

  // allowSshFrom
  {
    name: "allowSshFrom: octet above 255",
    raw: { ...ok, allowSshFrom: JSON.stringify(["999.1.1.1/32"]) },
    problems: [`agentbox:allowSshFrom[0]: "999.1.1.1/32" has an address that is neither IPv4 nor IPv6. ${cidrFix(0)}`],
  },
  {
    name: "allowSshFrom: host bits set",
    raw: { ...ok, allowSshFrom: JSON.stringify(["10.0.0.1/24"]) },
    problems: [
      `agentbox:allowSshFrom[0]: "10.0.0.1/24" has host bits set after /24 (write the network address, or /32 for one host). ${cidrFix(0)}`,
    ],
  },
  {
    name: "allowSshFrom: no prefix",
    raw: { ...ok, allowSshFrom: JSON.stringify(["1.2.3.4"]) },
    problems: [
      `agentbox:allowSshFrom[0]: "1.2.3.4" is not in CIDR form (address/prefix, e.g. 203.0.113.7/32 or 2001:db8::/64). ${cidrFix(0)}`,
    ],
  },
  {
    name: "allowSshFrom: IPv6 prefix 129",
    raw: { ...ok, allowSshFrom: JSON.stringify(["2001:db8::/129"]) },
    problems: [`agentbox:allowSshFrom[0]: "2001:db8::/129" has a prefix longer than 128 bits. ${cidrFix(0)}`],
  },
  {
    name: "allowSshFrom: IPv6 prefix 200",
    raw: { ...ok, allowSshFrom: JSON.stringify(["::1/200"]) },
    problems: [`agentbox:allowSshFrom[0]: "::1/200" has a prefix longer than 128 bits. ${cidrFix(0)}`],
  },
  {
    name: "allowSshFrom: garbage",
    raw: { ...ok, allowSshFrom: JSON.stringify(["my house"]) },
    problems: [
      `agentbox:allowSshFrom[0]: "my house" is not in CIDR form (address/prefix, e.g. 203.0.113.7/32 or 2001:db8::/64). ${cidrFix(0)}`,
    ],
  },
  {
    name: "allowSshFrom: the second of two comma-separated entries",
    raw: { ...ok, allowSshFrom: "203.0.113.7/32, 10.0.0.1/24" },
    problems: [
      `agentbox:allowSshFrom[1]: "10.0.0.1/24" has host bits set after /24 (write the network address, or /32 for one host). ${cidrFix(1)}`,
    ],
  },

  // tailscale*
  {
    name: "tailscale: maybe",
    raw: { ...ok, tailscale: "maybe" },
    problems: ['agentbox:tailscale: "maybe" is not true or false. Fix: pulumi config set agentbox:tailscale true'],
  },
  {
    name: "tailscaleHostname: with an underscore",
    raw: { ...ok, tailscaleHostname: "my_box" },
    problems: [`agentbox:tailscaleHostname: "my_box" is not a valid hostname ${HOSTNAME_RULES}`],
  },
  {
    name: "tailscaleHostname: leading dash",
    raw: { ...ok, tailscaleHostname: "-box" },
    problems: [`agentbox:tailscaleHostname: "-box" is not a valid hostname ${HOSTNAME_RULES}`],
  },
  {
    name: "tailscaleHostname: 64 characters",
    raw: { ...ok, tailscaleHostname: "a".repeat(64) },
    problems: [`agentbox:tailscaleHostname: "${"a".repeat(64)}" is not a valid hostname ${HOSTNAME_RULES}`],
  },
  {
    name: 'tailscaleTags: missing the "tag:" prefix',
    raw: { ...ok, tailscaleTags: JSON.stringify(["agentbox"]) },
    problems: [
      `agentbox:tailscaleTags[0]: "agentbox" is not a Tailscale tag (tag:<name>, a letter then letters, digits or "-"). Fix: pulumi config set --path 'agentbox:tailscaleTags[0]' tag:agentbox`,
    ],
  },
  {
    name: "tailscaleTags: a name starting with a digit, comma-separated",
    raw: { ...ok, tailscaleTags: "tag:agentbox,tag:1abc" },
    problems: [
      `agentbox:tailscaleTags[1]: "tag:1abc" is not a Tailscale tag (tag:<name>, a letter then letters, digits or "-"). Fix: pulumi config set --path 'agentbox:tailscaleTags[1]' tag:agentbox`,
    ],
  },
  {
    name: "tailscaleSsh: maybe",
    raw: { ...ok, tailscaleSsh: "maybe" },
    problems: [
      'agentbox:tailscaleSsh: "maybe" is not true or false. Fix: pulumi config set agentbox:tailscaleSsh false',
    ],
  },
  {
    // Which key is set, and the command that removes it: "those keys" leaves the user to guess.
    name: "tailscale false with tailscaleSsh set",
    raw: { ...ok, tailscale: "false", tailscaleSsh: "true", allowSshFrom: "203.0.113.7/32" },
    problems: [
      "agentbox:tailscale: false, but agentbox:tailscaleSsh is set, which only applies with Tailscale. Fix: pulumi config rm agentbox:tailscaleSsh, or pulumi config set agentbox:tailscale true",
    ],
  },
  {
    name: "tailscale false with tailscaleHostname set",
    raw: { ...ok, tailscale: "false", tailscaleHostname: "box", allowSshFrom: "203.0.113.7/32" },
    problems: [
      "agentbox:tailscale: false, but agentbox:tailscaleHostname is set, which only applies with Tailscale. Fix: pulumi config rm agentbox:tailscaleHostname, or pulumi config set agentbox:tailscale true",
    ],
  },
  {
    name: "tailscale false with no allowSshFrom",
    raw: { ...ok, tailscale: "false" },
    problems: [
      "agentbox:allowSshFrom: empty while agentbox:tailscale is false, so nothing could ever reach the box. Fix: pulumi config set --path 'agentbox:allowSshFrom[0]' <your address>/32, or pulumi config set agentbox:tailscale true",
    ],
  },

  // the admin login
  {
    name: "adminUser: with sudo on",
    raw: { ...ok, sudo: "true", adminUser: "ops" },
    problems: [
      "agentbox:adminUser: set while agentbox:sudo is true; the admin login exists only to keep root away from the agent. Fix: pulumi config rm agentbox:adminUser, or pulumi config set agentbox:sudo false",
    ],
  },
  {
    name: "adminUser: the agent's own login",
    raw: { ...ok, adminUser: "agent" },
    problems: [
      'agentbox:adminUser: "agent" is also agentbox:user; the admin login must be another user. Fix: pulumi config set agentbox:adminUser agent-admin',
    ],
  },
  {
    name: "adminUser: root",
    raw: { ...ok, adminUser: "root" },
    problems: [
      'agentbox:adminUser: "root" already exists on the image or belongs to a system service. Fix: pulumi config set agentbox:adminUser agent-admin',
    ],
  },
  {
    name: "unattendedUpgrades: not a boolean",
    raw: { ...ok, unattendedUpgrades: "weekly" },
    problems: [
      'agentbox:unattendedUpgrades: "weekly" is not true or false. Fix: pulumi config set agentbox:unattendedUpgrades true',
    ],
  },

  // egress
  {
    name: "egress: unknown mode",
    raw: { ...ok, egress: "closed" },
    problems: [
      'agentbox:egress: "closed" is not an egress mode. Fix: pulumi config set agentbox:egress allowlist (the agent reaches only its API, the package registries and your git host) or open',
    ],
  },
  {
    name: "egressAllowHosts: a URL instead of a host",
    raw: { ...ok, egress: "allowlist", egressAllowHosts: "https://pypi.org/simple" },
    problems: [
      `agentbox:egressAllowHosts[0]: "https://pypi.org/simple" is not a host name (letters, digits, "-" and ".", no scheme, port or path). Fix: pulumi config set --path 'agentbox:egressAllowHosts[0]' pypi.org`,
    ],
  },
  {
    name: "egressAllowHosts: without the allow-list",
    raw: { ...ok, egressAllowHosts: "pypi.org" },
    problems: [
      "agentbox:egressAllowHosts: set while agentbox:egress is open, where every host is reachable anyway. Fix: pulumi config set agentbox:egress allowlist, or pulumi config rm agentbox:egressAllowHosts",
    ],
  },

  // Claude Code
  {
    name: "claudeCodeVersion: latest",
    raw: { ...ok, claudeCodeVersion: "latest" },
    problems: [
      'agentbox:claudeCodeVersion: "latest" is not an exact version (x.y.z; ranges and "latest" would make boxes differ). Fix: pulumi config set agentbox:claudeCodeVersion 2.1.332',
    ],
  },
  {
    name: "claudeCodeVersion: a range",
    raw: { ...ok, claudeCodeVersion: "^2.1.0" },
    problems: [
      'agentbox:claudeCodeVersion: "^2.1.0" is not an exact version (x.y.z; ranges and "latest" would make boxes differ). Fix: pulumi config set agentbox:claudeCodeVersion 2.1.332',
    ],
  },
  {
    name: "claudeCodeVersion: two parts",
    raw: { ...ok, claudeCodeVersion: "2.1" },
    problems: [
      'agentbox:claudeCodeVersion: "2.1" is not an exact version (x.y.z; ranges and "latest" would make boxes differ). Fix: pulumi config set agentbox:claudeCodeVersion 2.1.332',
    ],
  },
  {
    name: "claudeInstallMethod: curl",
    raw: { ...ok, claudeInstallMethod: "curl" },
    problems: [
      `agentbox:claudeInstallMethod: "curl" is not an install method. Fix: pulumi config set agentbox:claudeInstallMethod npm (the npm registry's per-platform package) or download (Anthropic's release server, checked against its manifest)`,
    ],
  },
  {
    name: "claudeOauthToken: with a space",
    raw: { ...ok, claudeOauthToken: "sk-ant-oat01-Zq3xV9mT2pL8 wR4nY6bK1cJ5hF7dG0sA" },
    problems: [secretProblem("claudeOauthToken", "token from `claude setup-token`")],
  },
  {
    name: "claudeOauthToken: with a newline",
    raw: { ...ok, claudeOauthToken: "sk-ant-oat01-Zq3xV9mT2pL8\nwR4nY6bK1cJ5hF7dG0sA" },
    problems: [secretProblem("claudeOauthToken", "token from `claude setup-token`")],
  },
  {
    name: "claudeOauthToken: too short",
    raw: { ...ok, claudeOauthToken: "sk-ant-oat01-Zq3" },
    problems: [secretProblem("claudeOauthToken", "token from `claude setup-token`")],
  },
  {
    name: "anthropicApiKey: in quotes",
    raw: { ...ok, anthropicApiKey: `"${API_KEY}"` },
    problems: [secretProblem("anthropicApiKey", "Anthropic API key")],
  },
  {
    name: "anthropicApiKey together with claudeOauthToken",
    raw: { ...ok, claudeOauthToken: OAUTH_TOKEN, anthropicApiKey: API_KEY },
    problems: [
      "agentbox:anthropicApiKey: both it and agentbox:claudeOauthToken are set; Claude Code would bill the API key and ignore your subscription. Fix: pulumi config rm agentbox:anthropicApiKey (or rm agentbox:claudeOauthToken)",
    ],
  },

  // repo
  {
    name: "repoUrl: credentials in an https URL",
    raw: { ...ok, repoUrl: "https://you:ghp_R4nD0mT0k3nV4lu3@github.com/you/repo.git" },
    problems: [
      "agentbox:repoUrl: the URL carries credentials, which would sit in the server's user-data. Fix: pulumi config set agentbox:repoUrl https://github.com/you/repo.git and give the box a deploy key or use a public repository",
    ],
  },
  {
    // a repository on the box itself is a file:/// URL (an absolute path); anything else under file: is not
    name: "repoUrl: a file URL that is not absolute",
    raw: { ...ok, repoUrl: "file://etc" },
    problems: [
      'agentbox:repoUrl: "file://etc" is not a git URL agentbox can clone (https://host/path, ssh://host/path, user@host:path or file:///path on the box, without spaces). Fix: pulumi config set agentbox:repoUrl https://github.com/you/repo.git',
    ],
  },
  {
    name: "repoUrl: an option in disguise",
    raw: { ...ok, repoUrl: "-oProxyCommand=x" },
    problems: [
      'agentbox:repoUrl: "-oProxyCommand=x" is not a git URL agentbox can clone (https://host/path, ssh://host/path, user@host:path or file:///path on the box, without spaces). Fix: pulumi config set agentbox:repoUrl https://github.com/you/repo.git',
    ],
  },
  {
    name: "repoUrl: with a space",
    raw: { ...ok, repoUrl: "https://github.com/you/my repo.git" },
    problems: [
      'agentbox:repoUrl: "https://github.com/you/my repo.git" is not a git URL agentbox can clone (https://host/path, ssh://host/path, user@host:path or file:///path on the box, without spaces). Fix: pulumi config set agentbox:repoUrl https://github.com/you/repo.git',
    ],
  },
  {
    name: "repoBranch without repoUrl",
    raw: { ...ok, repoBranch: "main" },
    problems: [
      "agentbox:repoBranch: set without agentbox:repoUrl, so there is nothing to check out. Fix: pulumi config set agentbox:repoUrl https://github.com/you/repo.git or pulumi config rm agentbox:repoBranch",
    ],
  },
  {
    name: "repoBranch: two dots",
    raw: { ...ok, repoUrl: REPO, repoBranch: "a..b" },
    problems: [
      'agentbox:repoBranch: "a..b" is not a valid branch name. Fix: pulumi config set agentbox:repoBranch main',
    ],
  },
  {
    name: "repoBranch: leading dash",
    raw: { ...ok, repoUrl: REPO, repoBranch: "-x" },
    problems: ['agentbox:repoBranch: "-x" is not a valid branch name. Fix: pulumi config set agentbox:repoBranch main'],
  },
  {
    name: "repoBranch: ends in .lock",
    raw: { ...ok, repoUrl: REPO, repoBranch: "x.lock" },
    problems: [
      'agentbox:repoBranch: "x.lock" is not a valid branch name. Fix: pulumi config set agentbox:repoBranch main',
    ],
  },

  // keys agentbox does not know
  {
    name: "typo: memoryGB",
    raw: { ...ok, memoryGB: "32" },
    problems: [
      "agentbox:memoryGB: not a setting agentbox knows. Did you mean agentbox:memoryGb? Fix: pulumi config rm agentbox:memoryGB and set agentbox:memoryGb",
    ],
  },
  {
    name: "typo: sshPublicKey",
    raw: { ...ok, sshPublicKey: KEY2 },
    problems: [
      "agentbox:sshPublicKey: not a setting agentbox knows. Did you mean agentbox:sshPublicKeys? Fix: pulumi config rm agentbox:sshPublicKey and set agentbox:sshPublicKeys",
    ],
  },
  {
    name: "unknown key with nothing close",
    raw: { ...ok, flavour: "large" },
    problems: ["agentbox:flavour: not a setting agentbox knows. Fix: pulumi config rm agentbox:flavour"],
  },

  // the weeks-long box: disk, workflow runs, conversations, maintenance window
  {
    name: "diskWarnPercent above 95",
    raw: { ...ok, diskWarnPercent: "99" },
    problems: [
      "agentbox:diskWarnPercent: 99 is outside 50–95 percent. Fix: pulumi config set agentbox:diskWarnPercent 80",
    ],
  },
  {
    name: "workflowKeepRuns zero",
    raw: { ...ok, workflowKeepRuns: "0" },
    problems: [
      "agentbox:workflowKeepRuns: 0 is outside 1–1000 runs. Fix: pulumi config set agentbox:workflowKeepRuns 20",
    ],
  },
  {
    name: "conversationRetentionDays zero (Claude Code would keep no conversation at all)",
    raw: { ...ok, conversationRetentionDays: "0" },
    problems: [
      "agentbox:conversationRetentionDays: 0 is outside 1–36500 days. Fix: pulumi config set agentbox:conversationRetentionDays 365",
    ],
  },
  {
    name: "maintenanceWindow not a window",
    raw: { ...ok, maintenanceWindow: "sundays at 3" },
    problems: [
      `agentbox:maintenanceWindow: "sundays at 3" is not a window of the form DAYS HH:MM-HH:MM. Fix: pulumi config set agentbox:maintenanceWindow "Sun 03:00-05:00" (days: daily, Mon, Sat,Sun or Mon-Fri; times in UTC, 24-hour, end after start)`,
    ],
  },
  {
    name: "maintenanceWindow with an unknown day",
    raw: { ...ok, maintenanceWindow: "Sun,Funday 03:00-05:00" },
    problems: [
      `agentbox:maintenanceWindow: "Funday" is not a day (Mon … Sun, or daily). Fix: pulumi config set agentbox:maintenanceWindow "Sun 03:00-05:00" (days: daily, Mon, Sat,Sun or Mon-Fri; times in UTC, 24-hour, end after start)`,
    ],
  },
  {
    name: "maintenanceWindow past midnight",
    raw: { ...ok, maintenanceWindow: "daily 23:00-01:00" },
    problems: [
      `agentbox:maintenanceWindow: "daily 23:00-01:00" ends less than 30 minutes after it starts (or before; a window does not run past midnight: split it, e.g. "daily 22:00-24:00"). The box looks every 5 minutes and waits for the agent to finish its turn. Fix: pulumi config set agentbox:maintenanceWindow "Sun 03:00-05:00" (days: daily, Mon, Sat,Sun or Mon-Fri; times in UTC, 24-hour, end after start)`,
    ],
  },
  {
    name: "maintenanceWindow at 25 o'clock",
    raw: { ...ok, maintenanceWindow: "Mon-Fri 25:00-26:00" },
    problems: [
      `agentbox:maintenanceWindow: "Mon-Fri 25:00-26:00" has a time that is not on a 24-hour clock (00:00 to 24:00). Fix: pulumi config set agentbox:maintenanceWindow "Sun 03:00-05:00" (days: daily, Mon, Sat,Sun or Mon-Fri; times in UTC, 24-hour, end after start)`,
    ],
  },

  // the box's life: readiness wait, volume, workflow
  {
    name: "waitForReady not a boolean",
    raw: { ...ok, waitForReady: "sometimes" },
    problems: [
      'agentbox:waitForReady: "sometimes" is not true or false. Fix: pulumi config set agentbox:waitForReady true',
    ],
  },
  {
    name: "readyTimeoutMinutes zero",
    raw: { ...ok, readyTimeoutMinutes: "0" },
    problems: [
      "agentbox:readyTimeoutMinutes: 0 is outside 1–120 minutes. Fix: pulumi config set agentbox:readyTimeoutMinutes 15",
    ],
  },
  {
    name: "readyTimeoutMinutes not a number",
    raw: { ...ok, readyTimeoutMinutes: "10m" },
    problems: [
      'agentbox:readyTimeoutMinutes: "10m" is not a whole number of minutes. Fix: pulumi config set agentbox:readyTimeoutMinutes 15',
    ],
  },
  {
    name: "volume below Hetzner's minimum",
    raw: { ...ok, volumeGb: "5" },
    problems: [
      "agentbox:volumeGb: 5 GB is outside what hetzner accepts for a volume (10–10240 GB). Fix: pulumi config set agentbox:volumeGb 20",
    ],
  },
  {
    name: "volume size not a number",
    raw: { ...ok, volumeGb: "20GB" },
    problems: ['agentbox:volumeGb: "20GB" is not a whole number of GB. Fix: pulumi config set agentbox:volumeGb 20'],
  },
  {
    name: "volume beyond any cloud's maximum",
    raw: { ...ok, cloud: "digitalocean", volumeGb: "20000" },
    problems: ["agentbox:volumeGb: 20000 is outside 0–16384 GB. Fix: pulumi config set agentbox:volumeGb 20"],
  },
  {
    name: "workflow timeout without a prompt",
    raw: { ...ok, workflowTimeoutMinutes: "30" },
    problems: [
      'agentbox:workflowTimeoutMinutes: set, but the stack has no workflow prompt. Fix: pulumi config set agentbox:workflowPrompt "Fix the failing tests and commit" or pulumi config set agentbox:workflowPromptFile prompts/nightly.md, or pulumi config rm agentbox:workflowTimeoutMinutes',
    ],
  },
  {
    name: "workflow timeout of zero",
    raw: { ...ok, workflowPrompt: "Run the tests", workflowTimeoutMinutes: "0" },
    problems: [
      "agentbox:workflowTimeoutMinutes: 0 is outside 1–10080 minutes. Fix: pulumi config set agentbox:workflowTimeoutMinutes 60",
    ],
  },
  {
    name: "workflow prompt twice",
    raw: { ...ok, workflowPrompt: "Run the tests", workflowPromptFile: "test/fixtures/prompt.md" },
    problems: [
      "agentbox:workflowPrompt: set together with agentbox:workflowPromptFile; a workflow has one prompt. Fix: pulumi config rm agentbox:workflowPrompt (or rm agentbox:workflowPromptFile)",
    ],
  },
  {
    name: "workflow prompt file missing",
    raw: { ...ok, workflowPromptFile: "prompts/none.md" },
    problems: [
      'agentbox:workflowPromptFile: "prompts/none.md" cannot be read (ENOENT; paths are relative to the project directory). Fix: pulumi config set agentbox:workflowPromptFile prompts/task.md naming an existing file, or use agentbox:workflowPrompt',
    ],
  },
  {
    name: "workflow prompt too long",
    raw: { ...ok, workflowPrompt: "x".repeat(9000) },
    problems: [
      "agentbox:workflowPrompt: 9000 bytes; a workflow prompt may be 4 KiB at most (it travels in the server's user-data). Fix: shorten it, or commit the details to the repository and point the prompt at them",
    ],
  },

  // notifications and Remote Control
  {
    name: "ntfy URL with credentials",
    raw: { ...ok, ntfyUrl: "https://me:pw@ntfy.sh/topic" },
    problems: [
      'agentbox:ntfyUrl: the value (hidden) is not an ntfy topic URL (https://host/topic, the topic being letters, digits, "-" and "_"; no spaces, query or user:password). Fix: pulumi config set --secret agentbox:ntfyUrl https://ntfy.sh/<a long random topic>',
    ],
  },
  {
    name: "ntfy token without a URL",
    raw: { ...ok, ntfyToken: "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2" },
    problems: [
      "agentbox:ntfyToken: set without agentbox:ntfyUrl, so there is nowhere to send notifications. Fix: pulumi config set --secret agentbox:ntfyUrl https://ntfy.sh/<topic>, or pulumi config rm agentbox:ntfyToken",
    ],
  },
  {
    name: "Remote Control with a setup-token token",
    raw: { ...ok, remoteControl: "true", claudeOauthToken: OAUTH_TOKEN },
    problems: [
      "agentbox:remoteControl: true, but agentbox:claudeOauthToken is set; Remote Control needs a full claude.ai login (Pro, Max, Team or Enterprise) and is off whenever Claude Code runs on a setup-token token. Fix: pulumi config rm agentbox:claudeOauthToken, then after pulumi up log in once on the box (attach, then /login); or pulumi config set agentbox:remoteControl false",
    ],
  },
  {
    name: "Remote Control with an API key",
    raw: { ...ok, remoteControl: "true", anthropicApiKey: API_KEY },
    problems: [
      "agentbox:remoteControl: true, but agentbox:anthropicApiKey is set; Remote Control needs a full claude.ai login (Pro, Max, Team or Enterprise) and is off whenever Claude Code runs on an API key. Fix: pulumi config rm agentbox:anthropicApiKey, then after pulumi up log in once on the box (attach, then /login); or pulumi config set agentbox:remoteControl false",
    ],
  },
  {
    name: "Remote Control on a Claude Code that predates it",
    raw: { ...ok, remoteControl: "true", claudeCodeVersion: "2.1.50" },
    problems: [
      "agentbox:remoteControl: true, but agentbox:claudeCodeVersion 2.1.50 predates Remote Control (2.1.51). Fix: pulumi config set agentbox:claudeCodeVersion 2.1.332",
    ],
  },

  // several at once
  {
    name: "several problems in the schema, reported together",
    raw: { ...ok, memoryGB: "32", cloud: "aws", memoryGb: "8", user: "root", claudeCodeVersion: "latest" },
    problems: [
      "agentbox:memoryGB: not a setting agentbox knows. Did you mean agentbox:memoryGb? Fix: pulumi config rm agentbox:memoryGB and set agentbox:memoryGb",
      'agentbox:cloud: "aws" is not a supported cloud. Fix: pulumi config set agentbox:cloud hetzner (or digitalocean)',
      "agentbox:memoryGb: 8 GB is below 16 GB; agent boxes with 8 GB were OOM-killed under agent load (Claude Code, language servers, test runs). Fix: pulumi config set agentbox:memoryGb 16",
      'agentbox:user: "root" already exists on the image or belongs to a system service. Fix: pulumi config set agentbox:user agent',
      'agentbox:claudeCodeVersion: "latest" is not an exact version (x.y.z; ranges and "latest" would make boxes differ). Fix: pulumi config set agentbox:claudeCodeVersion 2.1.332',
    ],
  },
  {
    // The cloud is valid, so location and image can be checked in the same run: one `pulumi up` shows them all.
    name: "schema, location and image problems, reported together",
    raw: { ...ok, sizeGb: "32", user: "root", location: "mars", image: "archlinux" },
    problems: [
      "agentbox:sizeGb: not a setting agentbox knows. Fix: pulumi config rm agentbox:sizeGb",
      'agentbox:user: "root" already exists on the image or belongs to a system service. Fix: pulumi config set agentbox:user agent',
      'agentbox:location: "mars" is not a hetzner location; valid: fsn1, nbg1, hel1, ash, hil, sin. Fix: pulumi config set agentbox:location fsn1',
      'agentbox:image: "archlinux" is not an image agentbox supports on hetzner; valid: debian-13, ubuntu-24.04. Fix: pulumi config set agentbox:image debian-13',
    ],
  },
];

describe("the maintenance window", () => {
  test.each([
    ["Sun 03:00-05:00", [7], 180, 300],
    ["daily 00:00-24:00", [1, 2, 3, 4, 5, 6, 7], 0, 1440],
    ["Mon-Fri 22:00-23:30", [1, 2, 3, 4, 5], 1320, 1410],
    [" sat,SUN 01:15-02:00 ", [6, 7], 75, 120],
  ])("%s", (text, days, startMinute, endMinute) => {
    expect(parseMaintenanceWindow(text)).toEqual({ text: text.trim(), days, startMinute, endMinute });
    const c = parseConfig({ ...ok, maintenanceWindow: text }, ctx);
    expect(c.maintenanceWindow).toEqual({ text: text.trim(), days, startMinute, endMinute });
  });

  test("none by default: the box reports updates that need a reboot but never reboots by itself", () => {
    expect(parseConfig(ok, ctx).maintenanceWindow).toBeUndefined();
    expect(parseConfig({ ...ok, maintenanceWindow: "" }, ctx).maintenanceWindow).toBeUndefined();
  });
});

describe("parseConfig refuses bad configuration", () => {
  test.each(BAD)("$name", ({ raw, problems }) => {
    expect(problemsOf(raw)).toEqual(problems);
  });

  test("every problem in the table names its agentbox: key and says Fix:", () => {
    const known: readonly string[] = CONFIG_KEYS;
    const unclear = BAD.flatMap(({ name, raw }) =>
      problemsOf(raw)
        .filter((p) => {
          const key = /^agentbox:([A-Za-z]+)(\[\d+\])?: /.exec(p)?.[1];
          return key === undefined || !(known.includes(key) || key in raw) || !p.includes(" Fix: ");
        })
        .map((p) => `${name}: ${p}`),
    );
    expect(unclear).toEqual([]);
  });

  test("the error's message lists every problem under a count", () => {
    const err = errorOf({ ...ok, cloud: "aws", sudo: "yes" });
    expect(err.name).toBe("ConfigError");
    expect(err.message).toBe(
      "agentbox: the stack configuration has 2 problems:\n" +
        '  - agentbox:cloud: "aws" is not a supported cloud. Fix: pulumi config set agentbox:cloud hetzner (or digitalocean)\n' +
        '  - agentbox:sudo: "yes" is not true or false. Fix: pulumi config set agentbox:sudo false',
    );
  });

  const leaks = [
    { key: "claudeOauthToken", value: "sk-ant-oat01-Zq3xV9mT2pL8 wR4nY6bK1cJ5hF7dG0sA", hidden: ["Zq3xV9mT2pL8"] },
    { key: "claudeOauthToken", value: "sk-ant-oat01-Zq3xV9mT2pL8\nwR4nY6bK1cJ5hF7dG0sA", hidden: ["wR4nY6bK1cJ5"] },
    { key: "claudeOauthToken", value: "sk-ant-oat01-Zq3", hidden: ["oat01-Zq3"] },
    { key: "anthropicApiKey", value: `"${API_KEY}"`, hidden: ["Hn4kP8vB2xQ6"] },
    {
      key: "repoUrl",
      value: "https://you:ghp_R4nD0mT0k3nV4lu3@github.com/you/repo.git",
      hidden: ["ghp_R4nD0mT0k3nV4lu3"],
    },
    { key: "ntfyUrl", value: "https://ntfy.sh/secret-Topic-Zq3xV9?x=1", hidden: ["secret-Topic-Zq3xV9"] },
    { key: "ntfyToken", value: "tk_AgQdq7mV BoFD37zQVN29RhuMzNIz2", hidden: ["AgQdq7mV"] },
  ];
  test.each(leaks)("a bad $key is not echoed back", ({ key, value, hidden }) => {
    const err = errorOf({ ...ok, [key]: value });
    for (const secret of hidden) expect(err.message).not.toContain(secret);
  });
});

const type = (name: string): ServerType => {
  const found = [...hetznerCatalogue.types, ...digitalOceanCatalogue.types].find((t) => t.name === name);
  if (!found) throw new Error(`no type ${name} in the catalogues`);
  return found;
};

const NO_TOKEN_WARNING =
  "agentbox:claudeOauthToken is not set: Claude Code on the box will ask you to log in the first time you attach (set it from `claude setup-token` to skip that).";

describe("parseConfig accepts good configuration", () => {
  test("hetzner defaults", () => {
    const expected: AgentBoxConfig = {
      project: "agentbox",
      stack: "dev",
      cloudName: "agentbox-dev",
      cloud: "hetzner",
      catalogue: hetznerCatalogue,
      location: "fsn1",
      serverType: type("cx43"),
      image: "debian-13",
      sshPublicKeys: [KEY],
      user: "agent",
      sudo: false,
      adminUser: "agent-admin",
      unattendedUpgrades: true,
      egress: { mode: "open", extraHosts: [] },
      allowSshFrom: [],
      tailscale: { enabled: true, hostname: "agentbox-dev", tags: ["tag:agentbox"], ssh: false },
      claudeCode: { version: DEFAULT_CLAUDE_CODE_VERSION, installMethod: "npm" },
      auth: { kind: "none" },
      repo: undefined,
      ready: { wait: true, timeoutMinutes: 15 },
      volume: undefined,
      workflow: undefined,
      notify: undefined,
      remoteControl: false,
      upkeep: { diskWarnPercent: 80, workflowKeepRuns: 20, conversationRetentionDays: 365 },
      warnings: [NO_TOKEN_WARNING],
    };
    expect(parseConfig(ok, ctx)).toStrictEqual(expected);
  });

  test("the box's life and notifications, when set", () => {
    const files: Record<string, string> = { "prompts/nightly.md": "Run the test suite and fix what fails.\n" };
    const readFile = (f: string) => {
      if (f in files) return files[f]!;
      throw Object.assign(new Error("no such file"), { code: "ENOENT" });
    };
    const config = parseConfig(
      {
        ...ok,
        waitForReady: "false",
        readyTimeoutMinutes: "5",
        volumeGb: "20",
        workflowPromptFile: "prompts/nightly.md",
        workflowTimeoutMinutes: "90",
        ntfyUrl: "https://ntfy.sh/agentbox-Zq3xV9mT2pL8",
        ntfyToken: "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2",
        remoteControl: "true",
      },
      { ...ctx, readFile },
    );
    expect(config.ready).toEqual({ wait: false, timeoutMinutes: 5 });
    expect(config.volume).toEqual({ sizeGb: 20 });
    expect(config.workflow).toEqual({
      prompt: "Run the test suite and fix what fails.\n",
      from: "workflowPromptFile",
      timeoutMinutes: 90,
    });
    expect(config.notify).toEqual({
      url: "https://ntfy.sh/agentbox-Zq3xV9mT2pL8",
      token: "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2",
    });
    expect(config.remoteControl).toBe(true);
  });

  test("volumeGb 0 means no volume; an inline workflow prompt gets the default timeout", () => {
    const config = parseConfig({ ...ok, volumeGb: "0", workflowPrompt: "Summarise open TODOs" }, ctx);
    expect(config.volume).toBeUndefined();
    expect(config.workflow).toEqual({ prompt: "Summarise open TODOs", from: "workflowPrompt", timeoutMinutes: 60 });
  });

  test("digitalocean defaults", () => {
    const config = parseConfig({ ...ok, cloud: "digitalocean" }, ctx);
    expect(config.catalogue).toBe(digitalOceanCatalogue);
    expect([config.location, config.serverType.name, config.image]).toEqual([
      "fra1",
      "s-4vcpu-16gb-amd",
      "debian-13-x64",
    ]);
  });

  test("empty values are treated as unset", () => {
    const blank = Object.fromEntries(CONFIG_KEYS.map((k) => [k, k === "tailscale" ? "  " : ""]));
    expect(parseConfig({ ...blank, ...ok }, ctx)).toStrictEqual(parseConfig(ok, ctx));
  });

  test.each([
    { cloud: "hetzner", location: "fsn1", memoryGb: "16", serverType: "cx43" },
    { cloud: "hetzner", location: "fsn1", memoryGb: "32", serverType: "cx53" },
    { cloud: "hetzner", location: "hel1", memoryGb: "32", serverType: "cx53" },
    { cloud: "hetzner", location: "ash", memoryGb: "16", serverType: "ccx23" },
    { cloud: "hetzner", location: "ash", memoryGb: "32", serverType: "ccx33" },
    { cloud: "hetzner", location: "hil", memoryGb: "32", serverType: "ccx33" },
    { cloud: "hetzner", location: "sin", memoryGb: "16", serverType: "cpx42" },
    { cloud: "hetzner", location: "sin", memoryGb: "32", serverType: "cpx62" },
    { cloud: "hetzner", location: "fsn1", memoryGb: "20", serverType: "cx53" },
    { cloud: "digitalocean", location: "fra1", memoryGb: "16", serverType: "s-4vcpu-16gb-amd" },
    { cloud: "digitalocean", location: "fra1", memoryGb: "32", serverType: "s-8vcpu-32gb-amd" },
    { cloud: "digitalocean", location: "sgp1", memoryGb: "32", serverType: "s-8vcpu-32gb-amd" },
  ])("memoryGb $memoryGb on $cloud in $location picks $serverType", ({ serverType, ...raw }) => {
    const config = parseConfig({ ...ok, ...raw }, ctx);
    expect(config.serverType).toBe(type(serverType));
    expect(config.location).toBe(raw.location);
  });

  test.each([
    { raw: { serverType: "cax31" }, name: "cax31", arch: "arm64" },
    { raw: { serverType: "cax41", memoryGb: "32" }, name: "cax41", arch: "arm64" },
    { raw: { serverType: "cx53", memoryGb: "16" }, name: "cx53", arch: "x86_64" },
    { raw: { serverType: "ccx23", location: "ash" }, name: "ccx23", arch: "x86_64" },
    { raw: { cloud: "digitalocean", serverType: "c-8", location: "nyc3" }, name: "c-8", arch: "x86_64" },
  ])("explicit serverType $name runs $arch", ({ raw, name, arch }) => {
    const config = parseConfig({ ...ok, ...raw }, ctx);
    expect([config.serverType.name, config.serverType.arch]).toEqual([name, arch]);
  });

  test.each([
    { cloud: "hetzner", image: "ubuntu-24.04" },
    { cloud: "digitalocean", image: "ubuntu-24-04-x64" },
  ])("the Ubuntu image $image is accepted on $cloud", (raw) => {
    expect(parseConfig({ ...ok, ...raw }, ctx).image).toBe(raw.image);
  });

  test.each([
    { name: "a JSON list", raw: JSON.stringify([KEY, KEY2]) },
    { name: "comma-separated text", raw: `${KEY}, ${KEY2}` },
    { name: "a JSON list with padding", raw: JSON.stringify([` ${KEY}`, `${KEY2} `]) },
  ])("sshPublicKeys as $name", ({ raw }) => {
    expect(parseConfig({ sshPublicKeys: raw }, ctx).sshPublicKeys).toEqual([KEY, KEY2]);
  });

  test.each([
    { name: "a JSON list", raw: JSON.stringify(["203.0.113.7/32", "2001:db8::/64"]) },
    { name: "comma-separated text", raw: "203.0.113.7/32, 2001:db8::/64" },
  ])("allowSshFrom as $name", ({ raw }) => {
    expect(parseConfig({ ...ok, allowSshFrom: raw }, ctx).allowSshFrom).toEqual(["203.0.113.7/32", "2001:db8::/64"]);
  });

  test.each([
    { name: "a JSON list", raw: JSON.stringify(["tag:agentbox", "tag:dev-boxes"]) },
    { name: "comma-separated text", raw: "tag:agentbox,tag:dev-boxes" },
  ])("tailscaleTags as $name", ({ raw }) => {
    expect(parseConfig({ ...ok, tailscaleTags: raw }, ctx).tailscale.tags).toEqual(["tag:agentbox", "tag:dev-boxes"]);
  });

  test.each([
    {
      name: "hostname, tags and Tailscale SSH",
      raw: { tailscaleHostname: "box-7", tailscaleTags: "tag:ci", tailscaleSsh: "TRUE" },
      tailscale: { enabled: true, hostname: "box-7", tags: ["tag:ci"], ssh: true },
    },
    {
      name: "Tailscale off, SSH from one address",
      raw: { tailscale: "False", allowSshFrom: "203.0.113.7/32" },
      tailscale: { enabled: false, hostname: "agentbox-dev", tags: [], ssh: false },
    },
    {
      name: "Tailscale off with tailscaleSsh explicitly false",
      raw: { tailscale: "false", tailscaleSsh: "false", allowSshFrom: "203.0.113.7/32" },
      tailscale: { enabled: false, hostname: "agentbox-dev", tags: [], ssh: false },
    },
  ])("tailscale: $name", ({ raw, tailscale }) => {
    expect(parseConfig({ ...ok, ...raw }, ctx).tailscale).toEqual(tailscale);
  });

  test.each([
    {
      name: "user, sudo off",
      raw: { user: "dev_1", sudo: "false" },
      pick: { user: "dev_1", sudo: false, adminUser: "dev_1-admin" },
    },
    {
      name: "egress allow-list with extra hosts",
      raw: { egress: "allowlist", egressAllowHosts: "PyPI.org, files.pythonhosted.org" },
      pick: { egress: { mode: "allowlist", extraHosts: ["pypi.org", "files.pythonhosted.org"] } },
    },
    {
      name: "sudo on: no admin login",
      raw: { sudo: "true" },
      pick: { sudo: true, adminUser: undefined },
    },
    {
      name: "an admin login of one's own, no unattended upgrades",
      raw: { adminUser: "ops", unattendedUpgrades: "false" },
      pick: { adminUser: "ops", unattendedUpgrades: false },
    },
    {
      name: "Claude Code pinned and downloaded",
      raw: { claudeCodeVersion: "2.0.14", claudeInstallMethod: "download" },
      pick: { claudeCode: { version: "2.0.14", installMethod: "download" } },
    },
    {
      name: "repo with branch",
      raw: { repoUrl: REPO, repoBranch: "feature/agent-box" },
      pick: { repo: { url: REPO, branch: "feature/agent-box" } },
    },
    {
      name: "scp-style repo without branch",
      raw: { repoUrl: "git@github.com:you/repo.git" },
      pick: { repo: { url: "git@github.com:you/repo.git" } },
    },
    {
      name: "ssh:// repo with user and port",
      raw: { repoUrl: "ssh://git@git.example.com:2222/team/repo.git" },
      pick: { repo: { url: "ssh://git@git.example.com:2222/team/repo.git" } },
    },
  ])("$name changes only those fields", ({ raw, pick }) => {
    expect(parseConfig({ ...ok, ...raw }, ctx)).toStrictEqual({ ...parseConfig(ok, ctx), ...pick });
  });

  test.each([
    { name: "no token", raw: {}, auth: { kind: "none" } },
    {
      name: "an OAuth token",
      raw: { claudeOauthToken: OAUTH_TOKEN },
      auth: { kind: "oauthToken", key: "claudeOauthToken", value: OAUTH_TOKEN },
    },
    {
      name: "an API key",
      raw: { anthropicApiKey: API_KEY },
      auth: { kind: "apiKey", key: "anthropicApiKey", value: API_KEY },
    },
  ])("auth from $name", ({ raw, auth }) => {
    expect(parseConfig({ ...ok, ...raw }, ctx).auth).toEqual(auth);
  });

  const OPEN_WARNING = (cidrs: string) =>
    `agentbox:allowSshFrom: ${cidrs} opens SSH to the whole internet; password login stays off, but prefer Tailscale or your own address/32.`;
  test.each([
    {
      name: "a token and a narrow allowSshFrom",
      raw: { claudeOauthToken: OAUTH_TOKEN, allowSshFrom: "203.0.113.0/24" },
      warnings: [],
    },
    { name: "no token", raw: {}, warnings: [NO_TOKEN_WARNING] },
    {
      name: "0.0.0.0/0 and ::/0",
      raw: { claudeOauthToken: OAUTH_TOKEN, allowSshFrom: "0.0.0.0/0, ::/0" },
      warnings: [OPEN_WARNING("0.0.0.0/0, ::/0")],
    },
    {
      // cidrProblem accepts the padded entry, so the warning must see it too.
      name: "0.0.0.0/0 padded inside a JSON list",
      raw: { anthropicApiKey: API_KEY, allowSshFrom: JSON.stringify(["0.0.0.0/0 "]) },
      warnings: [OPEN_WARNING("0.0.0.0/0")],
    },
    {
      name: "0.0.0.0/0 and no token",
      raw: { allowSshFrom: "0.0.0.0/0" },
      warnings: [OPEN_WARNING("0.0.0.0/0"), NO_TOKEN_WARNING],
    },
  ])("warnings for $name", ({ raw, warnings }) => {
    expect(parseConfig({ ...ok, ...raw }, ctx).warnings).toEqual(warnings);
  });
});

describe("defaultHostname", () => {
  test.each([
    { project: "agentbox", stack: "dev", hostname: "agentbox-dev" },
    { project: "My_Project", stack: "dev.01", hostname: "my-project-dev-01" },
    { project: "--x--", stack: "--y--", hostname: "x-y" },
    { project: "Ägent", stack: "prod", hostname: "gent-prod" },
    { project: "a".repeat(70), stack: "dev", hostname: "a".repeat(63) },
    // The cut at 63 lands just after a "-", which a DNS label may not end with.
    { project: "a".repeat(62), stack: "dev", hostname: "a".repeat(62) },
    { project: "___", stack: "...", hostname: "agentbox" },
  ])("$project + $stack → $hostname", ({ project, stack, hostname }) => {
    expect(defaultHostname(project, stack)).toBe(hostname);
  });
});

describe("cidrProblem", () => {
  test.each([
    { cidr: "203.0.113.7/32", problem: undefined },
    { cidr: "10.0.0.0/8", problem: undefined },
    { cidr: "0.0.0.0/0", problem: undefined },
    { cidr: "2001:db8::/32", problem: undefined },
    { cidr: "2001:db8:0:0:0:0:0:1/128", problem: undefined },
    { cidr: "::/0", problem: undefined },
    { cidr: "fe80::/10", problem: undefined },
    { cidr: "10.0.0.1/24", problem: "has host bits set after /24 (write the network address, or /32 for one host)" },
    {
      cidr: "2001:db8::1/64",
      problem: "has host bits set after /64 (write the network address, or /128 for one host)",
    },
    { cidr: "10.0.0.0/33", problem: "has a prefix longer than 32 bits" },
    { cidr: "2001:db8::/129", problem: "has a prefix longer than 128 bits" },
    { cidr: "256.0.0.0/8", problem: "has an address that is neither IPv4 nor IPv6" },
    { cidr: "010.0.0.0/8", problem: "has an address that is neither IPv4 nor IPv6" },
    { cidr: "1::2::3/64", problem: "has an address that is neither IPv4 nor IPv6" },
    { cidr: "1:2:3:4:5:6:7:8:9/128", problem: "has an address that is neither IPv4 nor IPv6" },
    {
      cidr: "1.2.3.4",
      problem: "is not in CIDR form (address/prefix, e.g. 203.0.113.7/32 or 2001:db8::/64)",
    },
    {
      cidr: "1.2.3.4/",
      problem: "is not in CIDR form (address/prefix, e.g. 203.0.113.7/32 or 2001:db8::/64)",
    },
  ])("$cidr", ({ cidr, problem }) => {
    expect(cidrProblem(cidr)).toBe(problem);
  });
});

describe("credentialProblems", () => {
  const HCLOUD =
    "hcloud:token: not set, and HCLOUD_TOKEN is empty. Fix: pulumi config set --secret hcloud:token (it prompts; Hetzner Console → your project → Security → API tokens, read & write)";
  const DIGITALOCEAN =
    "digitalocean:token: not set, and DIGITALOCEAN_TOKEN is empty. Fix: pulumi config set --secret digitalocean:token (it prompts; DigitalOcean → API → Tokens, read & write)";
  const TAILSCALE =
    "tailscale:apiKey: not set (nor tailscale:oauthClientId/oauthClientSecret, nor their TAILSCALE_* variables). Fix: pulumi config set --secret tailscale:apiKey (it prompts; Tailscale admin console → Settings → Keys), or pulumi config set agentbox:tailscale false and open SSH with agentbox:allowSshFrom";
  // Half an OAuth client: say which half is missing rather than "nor oauthClientId/oauthClientSecret".
  const TAILSCALE_OAUTH_SECRET =
    "tailscale:oauthClientSecret: not set (nor TAILSCALE_OAUTH_CLIENT_SECRET), but tailscale:oauthClientId is; the OAuth client needs both. Fix: pulumi config set --secret tailscale:oauthClientSecret (it prompts; Tailscale admin console → Settings → OAuth clients), or use tailscale:apiKey instead";

  const box = (cloud: "hetzner" | "digitalocean", tailscale: boolean) => ({
    cloud,
    tailscale: { enabled: tailscale, hostname: "agentbox-dev", tags: tailscale ? ["tag:agentbox"] : [], ssh: false },
  });

  interface Case {
    name: string;
    config: ReturnType<typeof box>;
    all: Record<string, string>;
    env: NodeJS.ProcessEnv;
    problems: string[];
  }
  test.each<Case>([
    { name: "hetzner with nothing set", config: box("hetzner", true), all: {}, env: {}, problems: [HCLOUD, TAILSCALE] },
    {
      name: "hetzner token and Tailscale API key in config",
      config: box("hetzner", true),
      all: { "hcloud:token": "h", "tailscale:apiKey": "t" },
      env: {},
      problems: [],
    },
    {
      name: "hetzner token and Tailscale API key from the environment only",
      config: box("hetzner", true),
      all: {},
      env: { HCLOUD_TOKEN: "h", TAILSCALE_API_KEY: "t" },
      problems: [],
    },
    {
      name: "hetzner, Tailscale off, no Tailscale credentials",
      config: box("hetzner", false),
      all: {},
      env: { HCLOUD_TOKEN: "h" },
      problems: [],
    },
    {
      name: "digitalocean with nothing set",
      config: box("digitalocean", true),
      all: {},
      env: {},
      problems: [DIGITALOCEAN, TAILSCALE],
    },
    {
      name: "digitalocean, a Hetzner token does not count",
      config: box("digitalocean", false),
      all: { "hcloud:token": "h" },
      env: { HCLOUD_TOKEN: "h" },
      problems: [DIGITALOCEAN],
    },
    {
      name: "digitalocean token from the environment, Tailscale OAuth pair in config",
      config: box("digitalocean", true),
      all: { "tailscale:oauthClientId": "id", "tailscale:oauthClientSecret": "s" },
      env: { DIGITALOCEAN_TOKEN: "d" },
      problems: [],
    },
    {
      name: "Tailscale OAuth pair from the environment",
      config: box("hetzner", true),
      all: { "hcloud:token": "h" },
      env: { TAILSCALE_OAUTH_CLIENT_ID: "id", TAILSCALE_OAUTH_CLIENT_SECRET: "s" },
      problems: [],
    },
    {
      name: "Tailscale OAuth client id without its secret",
      config: box("hetzner", true),
      all: { "hcloud:token": "h", "tailscale:oauthClientId": "id" },
      env: {},
      problems: [TAILSCALE_OAUTH_SECRET],
    },
  ])("$name", ({ config, all, env, problems }) => {
    expect(credentialProblems(config, all, env)).toEqual(problems);
  });
});
