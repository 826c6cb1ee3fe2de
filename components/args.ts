import * as pulumi from "@pulumi/pulumi";
import {
  CONFIG_KEYS,
  type ConfigKey,
  NAMESPACE,
  type RawConfig,
  SECRET_KEYS,
  type SecretKey,
  parseList,
} from "./config";

/*
 * AgentBox's arguments: the stack keys of agentbox:, typed. They are checked by turning them back into the text a
 * stack holds (rawConfigOf) and reading that with parseConfig, the one place that knows what a good value is, so a
 * program's arguments and a stack's config cannot be judged differently.
 *
 * Everything but the secrets is a plain value, not a pulumi.Input: it decides which resources exist (a volume, the
 * tailnet key, the cloud's modules), so it must be known when the program runs. The package schema marks them plain.
 *
 * The choices are `as const` objects with a type of the same name: the form Pulumi's schema inference turns into
 * an enum (a bare union of string literals is refused there).
 */

/** Where the box runs. */
export const Cloud = { hetzner: "hetzner", digitalocean: "digitalocean" } as const;
export type Cloud = (typeof Cloud)[keyof typeof Cloud];
/** What the agent's user may reach: everything, or only the hosts it needs (see the README's Configuration). */
export const EgressMode = { open: "open", allowlist: "allowlist" } as const;
export type EgressMode = (typeof EgressMode)[keyof typeof EgressMode];
/** How Claude Code gets onto the box: the npm registry's package, or Anthropic's release server. */
export const ClaudeInstallMethod = { npm: "npm", download: "download" } as const;
export type ClaudeInstallMethod = (typeof ClaudeInstallMethod)[keyof typeof ClaudeInstallMethod];
/** Claude Code's `--permission-mode` (see the README's Permission modes). */
export const PermissionMode = {
  default: "default",
  acceptEdits: "acceptEdits",
  plan: "plan",
  auto: "auto",
  dontAsk: "dontAsk",
  bypassPermissions: "bypassPermissions",
} as const;
export type PermissionMode = (typeof PermissionMode)[keyof typeof PermissionMode];

/** One agent of `agents`: its name and its work (one of worktree, repoUrl, or neither for an empty folder). */
export interface AgentArgs {
  /** Names its systemd unit, tmux session and folder: lower-case letters, digits and "-", at most 24. */
  name: string;
  /** A git worktree of `repoUrl` on this branch of its own. */
  worktree?: string;
  /** A repository of its own to clone instead. */
  repoUrl?: string;
  /** The branch of that repository to check out. */
  repoBranch?: string;
}

/**
 * Tailscale API credentials, with which destroy removes the box's device from the tailnet (and create removes an
 * offline leftover with its name). Without them, destroy leaves the device behind. An API key wins over an OAuth
 * client (which needs the devices:core scope).
 */
export interface TailnetApiArgs {
  /**
   * The tailnet's name.
   * Default: "-" (the tailnet the credential belongs to).
   */
  tailnet?: string;
  apiKey?: pulumi.Input<string>;
  oauthClientId?: pulumi.Input<string>;
  oauthClientSecret?: pulumi.Input<string>;
}

/**
 * The box, as a program declares it. Every argument is the stack key of the same name (the README's Configuration
 * has the details); they are checked with the same messages before any resource is created.
 */
export interface AgentBoxArgs {
  /**
   * The cloud.
   * Default: "hetzner".
   */
  cloud?: Cloud;
  /**
   * A Hetzner location (fsn1 nbg1 hel1 ash hil sin) or DigitalOcean region (ams3 fra1 nyc3 ...).
   * Default: "fsn1" on Hetzner, "fra1" on DigitalOcean.
   */
  location?: string;
  /**
   * RAM in GB, 16 to 32: the cheapest type with at least this much sold in the location is picked.
   * Default: 16.
   */
  memoryGb?: number;
  /** An exact Hetzner server type or DigitalOcean droplet slug instead of memoryGb (cax31 for arm64, say). */
  serverType?: string;
  /**
   * debian-13 or ubuntu-24.04 (Hetzner), debian-13-x64 or ubuntu-24-04-x64 (DigitalOcean).
   * Default: Debian 13.
   */
  image?: string;
  /** Your SSH public keys for the agent's user: at least one. */
  sshPublicKeys: string[];
  /**
   * The Linux login that runs the agent.
   * Default: "agent".
   */
  user?: string;
  /**
   * Passwordless sudo for the agent's user itself (it is then root on the box).
   * Default: false.
   */
  sudo?: boolean;
  /**
   * Without sudo: a second login with your keys that has passwordless sudo.
   * Default: "<user>-admin".
   */
  adminUser?: string;
  /**
   * Daily security updates, never rebooting (unless maintenanceWindow allows it).
   * Default: true.
   */
  unattendedUpgrades?: boolean;
  /**
   * allowlist: the agent's user may reach only Claude Code's hosts, the package registries, its git hosts and
   * egressAllowHosts.
   * Default: "open".
   */
  egress?: EgressMode;
  /** More host names for the allow-list. */
  egressAllowHosts?: string[];
  /**
   * CIDRs that may reach SSH on the public address.
   * Default: [] (no public inbound at all: use Tailscale).
   */
  allowSshFrom?: string[];
  /**
   * Join the tailnet (the Tailscale provider needs its credentials).
   * Default: true.
   */
  tailscale?: boolean;
  /**
   * The box's name on the tailnet.
   * Default: "<project>-<stack>", and "<project>-<stack>--<name>" for a box not named "agentbox".
   */
  tailscaleHostname?: string;
  /**
   * Tags of the box's device, each tag:<name>.
   * Default: ["tag:agentbox"].
   */
  tailscaleTags?: string[];
  /**
   * Tailscale SSH on the box.
   * Default: false.
   */
  tailscaleSsh?: boolean;
  /**
   * The exact Claude Code version; the box never updates it by itself.
   * Default: the version this release of agentbox was tested with.
   */
  claudeCodeVersion?: string;
  /**
   * npm: the registry's package for the platform; download: Anthropic's release server.
   * Default: "npm".
   */
  claudeInstallMethod?: ClaudeInstallMethod;
  /** A token from `claude setup-token` (Pro/Max). Secret. Without it, log in on the box the first time you attach. */
  claudeOauthToken?: pulumi.Input<string>;
  /** An Anthropic API key instead (not both). Secret. */
  anthropicApiKey?: pulumi.Input<string>;
  /** A git repository to clone into the workspace; no credentials in the URL. */
  repoUrl?: string;
  /** The branch of repoUrl to check out. */
  repoBranch?: string;
  /**
   * `pulumi up` returns only when the box is ready, waiting over SSH with your ssh-agent (or sshPrivateKeyFile).
   * Default: true.
   */
  waitForReady?: boolean;
  /**
   * How long that wait may take, 1 to 120 minutes.
   * Default: 15.
   */
  readyTimeoutMinutes?: number;
  /** A private key file without a passphrase for `pulumi up`'s SSH to the box instead of the ssh-agent (CI). */
  sshPrivateKeyFile?: string;
  /**
   * A persistent volume of this size that becomes the agent's home, kept when the box is destroyed.
   * Default: 0 (none).
   */
  volumeGb?: number;
  /** A prompt the box runs headless once it is ready, once per box; at most 4 KiB. */
  workflowPrompt?: string;
  /** The prompt from a file instead, relative to the program's directory. */
  workflowPromptFile?: string;
  /**
   * The workflow's time limit in minutes.
   * Default: 60.
   */
  workflowTimeoutMinutes?: number;
  /** An ntfy topic URL for push notifications. Secret (on a public server the topic is the password). */
  ntfyUrl?: pulumi.Input<string>;
  /** An ntfy access token for a protected topic. Secret. */
  ntfyToken?: pulumi.Input<string>;
  /**
   * Claude Code's Remote Control (needs a claude.ai login made on the box).
   * Default: false.
   */
  remoteControl?: boolean;
  /** A baked image's id (`npm run bake`); the stack program checks it against the cloud first. */
  bakedImage?: string;
  /**
   * Free disk space when the disk is this full, in percent.
   * Default: 80.
   */
  diskWarnPercent?: number;
  /**
   * How many workflow runs the box keeps.
   * Default: 20.
   */
  workflowKeepRuns?: number;
  /**
   * How long Claude Code keeps conversations, in days.
   * Default: 365.
   */
  conversationRetentionDays?: number;
  /** When the box may reboot by itself for updates that need it (UTC), e.g. "Sun 03:00-05:00". */
  maintenanceWindow?: string;
  /** Several agents on the box, each supervised on its own (3 at most on 16 GB, 6 on 32 GB). */
  agents?: AgentArgs[];
  /**
   * Answer the agent's permission requests from your phone (needs approvalsNtfyUrl, Tailscale and DigitalOcean).
   * Default: false.
   */
  approvals?: boolean;
  /** The ntfy topic URL for permission requests: another topic than ntfyUrl. Secret. */
  approvalsNtfyUrl?: pulumi.Input<string>;
  /** An ntfy access token for that topic, not ntfyToken. Secret. */
  approvalsNtfyToken?: pulumi.Input<string>;
  /**
   * How long a request waits for a tap, 30 to 3600 seconds.
   * Default: 900.
   */
  approvalTimeoutSeconds?: number;
  /** Tailscale login names whose devices may answer; without it, any device of the tailnet but the box. */
  approvers?: string[];
  /** Claude Code's permission mode for the agent. Without it, Claude Code's own default. */
  permissionMode?: PermissionMode;
  /** The same for the workflow's headless run. Needs a workflow. */
  workflowPermissionMode?: PermissionMode;
  /** Tailscale API credentials for removing the box's device on destroy. */
  tailnetApi?: TailnetApiArgs;
}

/**
 * The arguments that are not plain values although they must be: an Output or a promise (another resource's
 * output, a secret config value) where the argument decides what exists. Named with the fix, for the check.
 */
export function notPlainProblems(args: AgentBoxArgs): string[] {
  const pending = (v: unknown): boolean =>
    pulumi.Output.isInstance(v) ||
    v instanceof Promise ||
    (Array.isArray(v) ? v.some(pending) : typeof v === "object" && v !== null && Object.values(v).some(pending));
  return Object.entries(args ?? {})
    .filter(([key]) => !(SECRET_KEYS as readonly string[]).includes(key))
    .flatMap(([key, value]) => {
      const v: unknown = key === "tailnetApi" ? (value as TailnetApiArgs | undefined)?.tailnet : value;
      return pending(v)
        ? [
            `${key === "tailnetApi" ? "tailnetApi.tailnet" : `${NAMESPACE}:${key}`}: an Output or a promise, but this argument decides which resources the box has, so its value must be known when the program runs. Fix: pass a plain value (a literal, or config read with config.require, not requireSecret or another resource's output)`,
          ]
        : [];
    });
}

/** The arguments that are secrets: the stack's secret keys. */
export type SecretArg = SecretKey;
/** The arguments that are stack keys (all but tailnetApi, which comes from the Tailscale provider's own config). */
type KeyArg = Extract<keyof AgentBoxArgs, ConfigKey>;

/**
 * The text a stack would hold for these arguments, which parseConfig reads: strings as they are, numbers and booleans
 * as Pulumi stores them, lists and objects as JSON. A secret argument is given by `secret`, which turns an Output
 * into a stand-in of the right form (its value is not known yet) and a string into itself.
 */
export function rawConfigOf(
  args: AgentBoxArgs,
  secret: (key: SecretArg, value: pulumi.Input<string>) => string,
): RawConfig {
  const raw: RawConfig = {};
  for (const [key, value] of Object.entries(args)) {
    // null is how some languages' SDKs say "not set"; a stack's agentbox:tailnetApi is text, and an unknown key
    if (value === undefined || value === null || (key === "tailnetApi" && typeof value === "object")) continue;
    if ((SECRET_KEYS as readonly string[]).includes(key)) {
      raw[key] = secret(key as SecretArg, value as pulumi.Input<string>);
    } else {
      // an unknown key is passed on too: parseConfig names it, with the key it probably meant
      raw[key] = typeof value === "string" ? value : JSON.stringify(value);
    }
  }
  return raw;
}

/** Text that a number gives back exactly (String(n) === text): anything else reaches the check as it is. */
const canonicalNumber = (text: string) => /^-?\d{1,15}$/.test(text) && String(Number(text)) === text;

/**
 * A stack's agentbox: config (unprefixed, as agentboxKeys gives it) as AgentBox's arguments: index.ts's whole reading
 * of the stack. Text that reads as its argument's type becomes that type; text that does not is passed on as it is,
 * so that the component's check (parseConfig again, through rawConfigOf) reports it with the stack's own words.
 * Secret keys are passed as the text Pulumi decrypted for the program; the component makes each a secret at once.
 */
export function stackArgs(raw: RawConfig): AgentBoxArgs {
  const out: Record<string, unknown> = {};
  for (const [key, text] of Object.entries(raw)) {
    if (text === undefined || text.trim() === "") continue;
    out[key] = stackValue(key as KeyArg, text);
  }
  return out as unknown as AgentBoxArgs;
}

/** The typed arguments' kinds, by key: what stackArgs turns each stack value into. */
const KINDS: Record<KeyArg, "string" | "number" | "boolean" | "list" | "json"> = {
  cloud: "string",
  location: "string",
  memoryGb: "number",
  serverType: "string",
  image: "string",
  sshPublicKeys: "list",
  user: "string",
  sudo: "boolean",
  adminUser: "string",
  unattendedUpgrades: "boolean",
  egress: "string",
  egressAllowHosts: "list",
  allowSshFrom: "list",
  tailscale: "boolean",
  tailscaleHostname: "string",
  tailscaleTags: "list",
  tailscaleSsh: "boolean",
  claudeCodeVersion: "string",
  claudeInstallMethod: "string",
  claudeOauthToken: "string",
  anthropicApiKey: "string",
  repoUrl: "string",
  repoBranch: "string",
  waitForReady: "boolean",
  readyTimeoutMinutes: "number",
  sshPrivateKeyFile: "string",
  volumeGb: "number",
  workflowPrompt: "string",
  workflowPromptFile: "string",
  workflowTimeoutMinutes: "number",
  ntfyUrl: "string",
  ntfyToken: "string",
  remoteControl: "boolean",
  bakedImage: "string",
  diskWarnPercent: "number",
  workflowKeepRuns: "number",
  conversationRetentionDays: "number",
  maintenanceWindow: "string",
  agents: "json",
  approvals: "boolean",
  approvalsNtfyUrl: "string",
  approvalsNtfyToken: "string",
  approvalTimeoutSeconds: "number",
  approvers: "list",
  permissionMode: "string",
  workflowPermissionMode: "string",
};

/** Every stack key has an argument of the same name (and the compiler holds KINDS to exactly the arguments). */
export const ARGUMENT_KEYS = Object.keys(KINDS) as KeyArg[];
const unmatched = CONFIG_KEYS.filter((k) => !(k in KINDS));
if (unmatched.length) throw new Error(`${NAMESPACE}: stack keys without an AgentBox argument: ${unmatched.join(", ")}`);

function stackValue(key: KeyArg, text: string): unknown {
  switch (KINDS[key] as (typeof KINDS)[KeyArg] | undefined) {
    case "number":
      return canonicalNumber(text) ? Number(text) : text;
    case "boolean":
      // what Pulumi stores; any other spelling reaches the check as it is, which reads it alike
      return text === "true" ? true : text === "false" ? false : text;
    case "list": {
      // read as parseConfig reads lists; a list of anything but strings is the stack's text
      const value = parseList(text);
      return Array.isArray(value) && value.every((v) => typeof v === "string") ? value : text;
    }
    case "json":
      // a list or an object, as `pulumi config set --path` stores it; anything else is the stack's text
      try {
        const value = JSON.parse(text) as unknown;
        return typeof value === "object" && value !== null ? value : text;
      } catch {
        return text;
      }
    default:
      // strings, and keys agentbox does not know (parseConfig reports them)
      return text;
  }
}
