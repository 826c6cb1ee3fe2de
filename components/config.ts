/**
 * Stack configuration: every `agentbox:*` key, validated with zod before any resource exists.
 *
 * Pure: it reads a plain record of raw strings (what `pulumi config` stores) and returns a typed config or throws a
 * ConfigError whose lines each name the key, the value and the fix. Secret values are validated too, but never
 * echoed back.
 */
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import * as z from "zod";
import { type Cloud, type CloudCatalogue, type ServerType, catalogueFor, cheapestType } from "./catalogue";

export const NAMESPACE = "agentbox";

/** Claude Code release this project's boot test last proved; `claudeCodeVersion` pins another. */
export const DEFAULT_CLAUDE_CODE_VERSION = "2.1.332";
export const MIN_MEMORY_GB = 16;
export const MAX_MEMORY_GB = 32;
/** Claude Code's Remote Control arrived in this release. */
export const REMOTE_CONTROL_MIN_VERSION = "2.1.51";
export const DEFAULT_READY_TIMEOUT_MINUTES = 15;
export const DEFAULT_WORKFLOW_TIMEOUT_MINUTES = 60;
/** A workflow may run for a week at most: beyond that a box is not "ending itself". */
export const MAX_WORKFLOW_TIMEOUT_MINUTES = 7 * 24 * 60;
/** The box frees what is safe to free (Claude Code's debug logs and caches, old workflow runs) from this fill level. */
export const DEFAULT_DISK_WARN_PERCENT = 80;
/** Workflow runs kept on the box (a volume collects one per box); older ones are removed. */
export const DEFAULT_WORKFLOW_KEEP_RUNS = 20;
/** How long a permission request waits for a tap on the phone before it is left to the terminal. */
export const DEFAULT_APPROVAL_TIMEOUT_SECONDS = 900;
/** The port of the approvals receiver, on the box's tailnet address only: below 1024, so that no process of the agent can take it while the receiver restarts. */
export const APPROVE_PORT = 876;
/**
 * Claude Code's permission modes (its "Permission modes" page): `default` asks for everything but reads,
 * `acceptEdits` also lets file edits and common filesystem commands through, `plan` only reads and plans, `auto` has
 * a classifier approve (some plans only), `dontAsk` denies whatever would ask, `bypassPermissions` asks nothing.
 */
export const PERMISSION_MODES = ["default", "acceptEdits", "plan", "auto", "dontAsk", "bypassPermissions"] as const;
export type PermissionMode = (typeof PERMISSION_MODES)[number];
/**
 * Claude Code deletes conversations older than its `cleanupPeriodDays` (30 by default) at every start; an always-on
 * box that resumes its conversation keeps them a year unless the stack says otherwise.
 */
export const DEFAULT_CONVERSATION_RETENTION_DAYS = 365;

export type ClaudeInstallMethod = "npm" | "download";
export type AgentAuth =
  | { kind: "none" }
  | { kind: "oauthToken"; key: "claudeOauthToken"; value: string }
  | { kind: "apiKey"; key: "anthropicApiKey"; value: string };

export interface AgentBoxConfig {
  project: string;
  stack: string;
  /**
   * What the cloud calls the server and its companions (SSH key, firewall, volume), and the default tailnet name:
   * `<project>-<stack>`, with the box's name after it when a program has several (see boxIdentity).
   */
  cloudName: string;
  cloud: Cloud;
  catalogue: CloudCatalogue;
  location: string;
  serverType: ServerType;
  image: string;
  sshPublicKeys: string[];
  user: string;
  /** Passwordless sudo for the agent user itself. */
  sudo: boolean;
  /** When the agent has no sudo: a second login, with the same keys, that has it. */
  adminUser?: string;
  unattendedUpgrades: boolean;
  /** `allowlist`: the agent's user may reach only the hosts it needs (see cloud-init/firewall.ts). */
  egress: { mode: "open" | "allowlist"; extraHosts: string[] };
  allowSshFrom: string[];
  tailscale: { enabled: boolean; hostname: string; tags: string[]; ssh: boolean };
  claudeCode: { version: string; installMethod: ClaudeInstallMethod };
  auth: AgentAuth;
  repo?: { url: string; branch?: string };
  /** `pulumi up` waits (over SSH) until cloud-init is done and the agent runs, at most this long. */
  ready: { wait: boolean; timeoutMinutes: number };
  /**
   * A private key file for SSH to the box (CI): the readiness wait and the release before destroy use it instead of
   * the ssh-agent. Its public half must be one of sshPublicKeys (checked before anything is created).
   */
  sshKeyFile?: string;
  /** A persistent volume for the workspace and Claude Code's history, kept when the box is destroyed. */
  volume?: { sizeGb: number };
  /** A headless Claude Code run the box starts once it is ready. */
  workflow?: { prompt: string; from: "workflowPrompt" | "workflowPromptFile"; timeoutMinutes: number };
  /** Push notifications to an ntfy topic (the URL names the topic; both values are secrets). */
  notify?: { url: string; token?: string };
  /**
   * Permission requests answered from a phone: the notification's buttons reach a receiver on the box's tailnet
   * address; an answer counts only from another device of the tailnet (an approver's, when named).
   */
  approvals?: { timeoutSeconds: number; approvers: string[]; url: string; token?: string };
  /** Claude Code's permission mode for the agent and for the workflow (unset: Claude Code's own default). */
  permissionMode?: PermissionMode;
  workflowPermissionMode?: PermissionMode;
  /** Claude Code's Remote Control: continue the box's session from the Claude app. */
  remoteControl: boolean;
  /**
   * Several agents on the box (agentbox:agents), each supervised on its own; without the key, the one agent of
   * every earlier stack (unit claude-agent.service, tmux session claude, workspace ~/workspace).
   */
  agents?: AgentSpec[];
  /** The weeks-long box: when it frees disk space, how many workflow runs it keeps, how long conversations live. */
  upkeep: { diskWarnPercent: number; workflowKeepRuns: number; conversationRetentionDays: number };
  /** When the box may reboot by itself for updates that need it (UTC); without it, it only says so. */
  maintenanceWindow?: MaintenanceWindow;
  /** A baked image (`npm run bake`): the cloud's snapshot id, checked against the stack before anything is created. */
  bakedImage?: { id: string };
  /** Things worth saying that are not errors (printed with pulumi.log.warn). */
  warnings: string[];
}

/** One agent of agentbox:agents: its name and its work. */
export interface AgentSpec {
  name: string;
  /**
   * `worktree`: a git worktree of the stack's repository (agentbox:repoUrl, cloned to ~/workspace) on a branch of
   * its own; `repo`: a clone of a repository of its own; `empty`: an empty folder.
   */
  work: { kind: "worktree"; branch: string } | { kind: "repo"; url: string; branch?: string } | { kind: "empty" };
}

/**
 * What one agent needs: Claude Code's documented minimum ("4 GB+ RAM", its setup page) for claude itself and what
 * it runs (tests, builds, language servers). The agents together get AGENTS_MEMORY_SHARE of the RAM (app.slice,
 * files/memory-app-slice.conf); so a 16 GB box holds 3 agents, a 32 GB box 6.
 */
export const AGENT_MEMORY_GB = 4;
export const AGENTS_MEMORY_SHARE = 0.8;
export const maxAgentsFor = (memoryGb: number) => Math.floor((memoryGb * AGENTS_MEMORY_SHARE) / AGENT_MEMORY_GB);
/**
 * Names an agent may not take: the agents' tmux socket (agentbox), the records of the one default agent beside
 * which each named agent's own folder sits (/var/lib/agentbox/agent/{turn,auth}), and the workflow's folder and unit.
 */
export const RESERVED_AGENT_NAMES = ["agentbox", "auth", "turn", "workflow"] as const;
/** A systemd instance, a tmux session, a folder and a Remote Control name alike: no escaping needed anywhere. */
const AGENT_NAME = /^[a-z][a-z0-9-]{0,22}[a-z0-9]$|^[a-z]$/;

/** Days of the week (ISO numbers, Monday 1 … Sunday 7) and a span of the day in minutes after 00:00 UTC. */
export interface MaintenanceWindow {
  /** As the stack wrote it. */
  text: string;
  days: number[];
  startMinute: number;
  /** Up to 1440 (24:00); always after the start, at least 30 minutes later. */
  endMinute: number;
}

const WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MAINTENANCE_EXAMPLE = '"Sun 03:00-05:00"';

/**
 * `DAYS HH:MM-HH:MM` in UTC: DAYS is `daily`, a day (`Sun`), a list (`Sat,Sun`) or a range (`Mon-Fri`). A parser
 * of its own: no library reads this small a format, and the messages must name the key and the fix.
 */
export function parseMaintenanceWindow(text: string): MaintenanceWindow | { problem: string } {
  const key = `${NAMESPACE}:maintenanceWindow`;
  const fix = `Fix: pulumi config set ${key} ${MAINTENANCE_EXAMPLE} (days: daily, Mon, Sat,Sun or Mon-Fri; times in UTC, 24-hour, end after start)`;
  const m = /^\s*([A-Za-z,-]+)\s+(\d{2}):(\d{2})-(\d{2}):(\d{2})\s*$/.exec(text);
  if (!m) return { problem: `${key}: ${show(text)} is not a window of the form DAYS HH:MM-HH:MM. ${fix}` };
  const day = (d: string) => WEEKDAYS.indexOf(d.toLowerCase()) + 1;
  const days = new Set<number>();
  for (const part of m[1]!.split(",")) {
    if (part.toLowerCase() === "daily") [1, 2, 3, 4, 5, 6, 7].forEach((d) => days.add(d));
    else if (part.includes("-")) {
      const [a, b] = part.split("-").map(day);
      if (!a || !b || a > b) return { problem: `${key}: ${show(part)} is not a range of days (Mon-Fri). ${fix}` };
      for (let d = a; d <= b; d++) days.add(d);
    } else if (day(part)) days.add(day(part));
    else return { problem: `${key}: ${show(part)} is not a day (Mon … Sun, or daily). ${fix}` };
  }
  const [h1, m1, h2, m2] = m.slice(2).map(Number) as [number, number, number, number];
  const startMinute = h1 * 60 + m1;
  const endMinute = h2 * 60 + m2;
  if (h1 > 23 || m1 > 59 || m2 > 59 || endMinute > 1440) {
    return { problem: `${key}: ${show(text)} has a time that is not on a 24-hour clock (00:00 to 24:00). ${fix}` };
  }
  if (endMinute - startMinute < 30) {
    return {
      problem: `${key}: ${show(text)} ends less than 30 minutes after it starts (or before; a window does not run past midnight: split it, e.g. "daily 22:00-24:00"). The box looks every 5 minutes and waits for the agent to finish its turn. ${fix}`,
    };
  }
  return { text: text.trim(), days: [...days].sort(), startMinute, endMinute };
}

/** Whose problems a ConfigError lists by default: the stack program's config. */
export const STACK_SUBJECT = "the stack configuration";

export class ConfigError extends Error {
  /**
   * @param subject who has the problems: the stack's config, or an AgentBox of a program (whose arguments are the
   *   keys of the same name: agentbox:memoryGb is the argument memoryGb)
   */
  constructor(
    public readonly problems: string[],
    subject: string = STACK_SUBJECT,
  ) {
    const args = subject === STACK_SUBJECT ? "" : " (each agentbox:<key> below is its argument <key>)";
    super(
      `agentbox: ${subject === STACK_SUBJECT ? `${subject} has` : `${subject}'s arguments have`} ${problems.length} problem${problems.length === 1 ? "" : "s"}${args}:\n` +
        problems.map((p) => `  - ${p}`).join("\n"),
    );
    this.name = "ConfigError";
  }
}

/** The keys a stack may set, with what `pulumi config set` would show; anything else under `agentbox:` is a typo. */
export const CONFIG_KEYS = [
  "cloud",
  "location",
  "memoryGb",
  "serverType",
  "image",
  "sshPublicKeys",
  "user",
  "sudo",
  "adminUser",
  "unattendedUpgrades",
  "egress",
  "egressAllowHosts",
  "allowSshFrom",
  "tailscale",
  "tailscaleHostname",
  "tailscaleTags",
  "tailscaleSsh",
  "claudeCodeVersion",
  "claudeInstallMethod",
  "claudeOauthToken",
  "anthropicApiKey",
  "repoUrl",
  "repoBranch",
  "waitForReady",
  "readyTimeoutMinutes",
  "sshPrivateKeyFile",
  "volumeGb",
  "workflowPrompt",
  "workflowPromptFile",
  "workflowTimeoutMinutes",
  "ntfyUrl",
  "ntfyToken",
  "remoteControl",
  "bakedImage",
  "diskWarnPercent",
  "workflowKeepRuns",
  "conversationRetentionDays",
  "maintenanceWindow",
  "agents",
  "approvals",
  "approvalsNtfyUrl",
  "approvalsNtfyToken",
  "approvalTimeoutSeconds",
  "approvers",
  "permissionMode",
  "workflowPermissionMode",
] as const;
export type ConfigKey = (typeof CONFIG_KEYS)[number];
export const SECRET_KEYS = [
  "claudeOauthToken",
  "anthropicApiKey",
  "ntfyUrl",
  "ntfyToken",
  "approvalsNtfyUrl",
  "approvalsNtfyToken",
] as const satisfies readonly ConfigKey[];
export type SecretKey = (typeof SECRET_KEYS)[number];

/** Raw stack config: key (without namespace) → the string Pulumi stores (lists arrive as JSON text). */
export type RawConfig = Partial<Record<string, string>>;

/** The `agentbox:*` entries of a stack's whole config (namespaced keys, as Pulumi hands them over), unprefixed. */
export function agentboxKeys(all: Record<string, string>): RawConfig {
  const raw: RawConfig = {};
  for (const [key, value] of Object.entries(all)) {
    if (key.startsWith(`${NAMESPACE}:`)) raw[key.slice(NAMESPACE.length + 1)] = value;
  }
  return raw;
}

const set = (key: string, value: string) => `pulumi config set ${NAMESPACE}:${key} ${value}`;
/** `~/x` as the shell would read it (config values are not expanded by Pulumi). */
const expandHome = (path: string) => (path === "~" || path.startsWith("~/") ? join(homedir(), path.slice(1)) : path);
export const show = (value: string) => JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);

// Names that already exist on Debian and Ubuntu cloud images or that services rely on.
const RESERVED_USERS = new Set([
  "root",
  "daemon",
  "bin",
  "sys",
  "sync",
  "games",
  "man",
  "lp",
  "mail",
  "news",
  "uucp",
  "proxy",
  "www-data",
  "backup",
  "list",
  "irc",
  "gnats",
  "nobody",
  "_apt",
  "messagebus",
  "sshd",
  "polkitd",
  "syslog",
  "uuidd",
  "tcpdump",
  "tss",
  "landscape",
  "fwupd-refresh",
  "debian",
  "ubuntu",
  "admin",
  "tailscale",
]);

const SSH_KEY_TYPES = [
  "ssh-ed25519",
  "ssh-rsa",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "sk-ssh-ed25519@openssh.com",
  "sk-ecdsa-sha2-nistp256@openssh.com",
];
const SSH_KEY = new RegExp(
  `^(${SSH_KEY_TYPES.map((t) => t.replace(/\./g, "\\.")).join("|")}) [A-Za-z0-9+/]{16,}={0,3}( [\\x20-\\x7e]{1,200})?$`,
);

/** Parses a list key: a JSON array (what `pulumi config set --path 'k[0]' v` stores) or comma-separated text. */
/** A list key's stack text as a list: JSON (what `--path` stores) or comma-separated; anything else as it is. */
export function parseList(raw: string | undefined): unknown {
  if (raw === undefined || raw.trim() === "") return [];
  const text = raw.trim();
  if (text.startsWith("[") || text.startsWith("{")) {
    try {
      const value = JSON.parse(text) as unknown;
      // anything but an array is reported as the text the user wrote
      return Array.isArray(value) ? value : raw;
    } catch {
      return raw;
    }
  }
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

function parseBool(raw: string | undefined): unknown {
  if (raw === undefined) return undefined;
  const t = raw.trim().toLowerCase();
  if (t === "true") return true;
  if (t === "false") return false;
  return raw;
}

const boolKey = (key: ConfigKey, dflt: boolean) =>
  z.preprocess(
    parseBool,
    z
      .boolean({
        error: (i) =>
          `${NAMESPACE}:${key}: ${show(String(i.input))} is not true or false. Fix: ${set(key, String(dflt))}`,
      })
      .default(dflt),
  );

/** A whole number in [min, max]; unset gives the default (undefined: not set). */
const intKey = (key: ConfigKey, opts: { min: number; max: number; dflt?: number; unit: string; example: number }) =>
  z
    .string()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined) return opts.dflt;
      const n = Number(v.trim());
      const fix = `Fix: ${set(key, String(opts.example))}`;
      if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) {
        ctx.addIssue({
          code: "custom",
          message: `${NAMESPACE}:${key}: ${show(v)} is not a whole number of ${opts.unit}. ${fix}`,
        });
        return z.NEVER;
      }
      if (n < opts.min || n > opts.max) {
        ctx.addIssue({
          code: "custom",
          message: `${NAMESPACE}:${key}: ${n} is outside ${opts.min}–${opts.max} ${opts.unit}. ${fix}`,
        });
        return z.NEVER;
      }
      return n;
    });

/** a.b.c >= x.y.z */
function versionAtLeast(v: string, min: string): boolean {
  const a = v.split(".").map(Number);
  const b = min.split(".").map(Number);
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  return true;
}

function ipv4Octets(addr: string): number[] | undefined {
  const parts = addr.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p))) return undefined;
  const nums = parts.map(Number);
  return nums.every((n) => n <= 255) ? nums : undefined;
}

function ipv6Groups(addr: string): number[] | undefined {
  if (!/^[0-9a-fA-F:]+$/.test(addr) || addr.split("::").length > 2) return undefined;
  const [head, tail] = addr.includes("::") ? addr.split("::") : [addr, undefined];
  const hs = head ? head.split(":") : [];
  const ts = tail ? tail.split(":") : [];
  if (![...hs, ...ts].every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return undefined;
  const missing = 8 - hs.length - ts.length;
  if (tail === undefined ? missing !== 0 : missing < 1) return undefined;
  return [...hs, ...Array<string>(tail === undefined ? 0 : missing).fill("0"), ...ts].map((g) => parseInt(g, 16));
}

/** Checks one CIDR; returns the problem in words, or undefined when it is a valid network address. */
export function cidrProblem(cidr: string): string | undefined {
  const m = /^([^/\s]+)\/(\d{1,3})$/.exec(cidr);
  if (!m) return "is not in CIDR form (address/prefix, e.g. 203.0.113.7/32 or 2001:db8::/64)";
  const [, addr = "", prefixText = ""] = m;
  const prefix = Number(prefixText);
  const v4 = ipv4Octets(addr);
  const v6 = v4 ? undefined : ipv6Groups(addr);
  if (!v4 && !v6) return "has an address that is neither IPv4 nor IPv6";
  const bits = v4 ? 32 : 128;
  if (prefix > bits) return `has a prefix longer than ${bits} bits`;
  const groups = v4 ?? v6 ?? [];
  const width = v4 ? 8 : 16;
  const hostBitsSet = groups.some((g, i) => {
    const keep = Math.max(0, Math.min(width, prefix - i * width));
    return (g & ((1 << width) - 1) & ~(((1 << width) - 1) << (width - keep))) !== 0;
  });
  if (hostBitsSet) return `has host bits set after /${prefix} (write the network address, or /${bits} for one host)`;
  return undefined;
}

const listOf = (key: ConfigKey, example: string) =>
  z.preprocess(
    parseList,
    z.array(
      z.string({
        error: `${NAMESPACE}:${key}: every entry must be a string. Fix: pulumi config set --path '${NAMESPACE}:${key}[0]' ${example}`,
      }),
      {
        error: (i) =>
          `${NAMESPACE}:${key}: ${show(String(i.input))} is not a list. Fix: pulumi config set --path '${NAMESPACE}:${key}[0]' ${example}`,
      },
    ),
  );

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const HOSTNAME = /^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$/;
// https://host[:port]/topic (ntfy topics: letters, digits, "-" and "_", at most 64); no credentials in the URL.
const NTFY_URL = /^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?\/[A-Za-z0-9_-]{1,64}$/;
const TAG = /^tag:[a-zA-Z][a-zA-Z0-9-]{0,62}$/;
const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$/;
// Claude Code tokens and Anthropic API keys are URL-safe base64-ish text; anything else is a paste accident.
const TOKEN = /^[A-Za-z0-9._~+/=-]{20,1024}$/;
// https://host/path, ssh://[user@]host[:port]/path or scp-style user@host:path. No spaces, no leading "-".
const REPO_URL =
  /^(file:\/\/\/[A-Za-z0-9._~/-]+|https:\/\/[A-Za-z0-9.-]+(:\d{1,5})?\/[A-Za-z0-9._~/-]+|ssh:\/\/([A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+(:\d{1,5})?\/[A-Za-z0-9._~/-]+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[A-Za-z0-9._~/-]+)$/;

/** git check-ref-format's rules for a branch name, as far as they matter here. */
function branchProblem(b: string): boolean {
  return (
    !/^[A-Za-z0-9._/-]{1,200}$/.test(b) ||
    b.startsWith("-") ||
    b.startsWith("/") ||
    b.endsWith("/") ||
    b.endsWith(".") ||
    b.endsWith(".lock") ||
    b.includes("..") ||
    b.includes("//") ||
    b.split("/").some((c) => c.startsWith("."))
  );
}

/** The default admin login beside an agent user without sudo: `<user>-admin`, cut to a valid length. */
export function adminLoginFor(user: string): string {
  return `${user.slice(0, 26)}-admin`;
}

/** The name of the one box of a stack program (index.ts); a box of that name keeps the names of earlier stacks. */
export const DEFAULT_BOX_NAME = "agentbox";

/**
 * The part of the cloud's names that tells a stack's boxes apart: none for the default box (so that its names are
 * those every earlier stack has), else the box's own name.
 */
export const boxIdentity = (box: string | undefined) => (box === undefined || box === DEFAULT_BOX_NAME ? [] : [box]);

/**
 * The default Tailscale hostname and the cloud's name for the box: `<project>-<stack>` folded into one DNS label,
 * and `<project>-<stack>--<name>` for a box of a fleet (see boxIdentity).
 */
export function defaultHostname(project: string, stack: string, box?: string): string {
  const fold = (text: string) =>
    text
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, "-")
      .replace(/-+/g, "-")
      .replace(/^-|-$/g, "");
  const label = fold(`${project}-${stack}`);
  const [own] = boxIdentity(box);
  // A box of a fleet: "--" before its name, which a folded `<project>-<stack>` never holds, so that no other stack's
  // box can have its names (stack prod's box api is not stack prod-api's box). A long project and stack give way to
  // the box's name, and the whole stays within 58 characters: its volume's name ("-home" after it) keeps all of it.
  if (own !== undefined) return `${label.slice(0, 56 - own.length).replace(/-$/, "") || "agentbox"}--${own}`;
  return label.slice(0, 63).replace(/-$/, "") || "agentbox";
}

/** memoryGb as given (unset: the minimum), or the problem with it in words. */
function parseMemoryGb(v: string | undefined): number | { problem: string } {
  const key = `${NAMESPACE}:memoryGb`;
  if (v === undefined) return MIN_MEMORY_GB;
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) {
    return { problem: `${key}: ${show(v)} is not a whole number of gigabytes. Fix: ${set("memoryGb", "16")} (or 32)` };
  }
  if (n < MIN_MEMORY_GB) {
    return {
      problem: `${key}: ${n} GB is below ${MIN_MEMORY_GB} GB; agent boxes with 8 GB were OOM-killed under agent load (Claude Code, language servers, test runs). Fix: ${set("memoryGb", "16")}`,
    };
  }
  if (n > MAX_MEMORY_GB) {
    return {
      problem: `${key}: ${n} GB is above ${MAX_MEMORY_GB} GB, the largest size agentbox picks from its catalogue. Fix: ${set("memoryGb", "32")}`,
    };
  }
  return n;
}

function schemaFor(project: string, stack: string, box: string | undefined) {
  const k = (key: ConfigKey) => `${NAMESPACE}:${key}`;
  const secret = (key: ConfigKey, how: string) =>
    z
      .string()
      .optional()
      .refine((v) => v === undefined || TOKEN.test(v), {
        error: `${k(key)}: the value (hidden) has spaces, quotes, newlines or other characters no ${how} has, or is too short. Fix: copy it again and run pulumi config set --secret ${k(key)} (it prompts for the value, which keeps it out of your shell history)`,
      });

  // never echoed: on a public ntfy server the topic name is the only password
  const ntfyTopic = (key: ConfigKey) =>
    z
      .string()
      .optional()
      .refine((v) => v === undefined || NTFY_URL.test(v), {
        error: `${k(key)}: the value (hidden) is not an ntfy topic URL (https://host/topic, the topic being letters, digits, "-" and "_"; no spaces, query or user:password). Fix: pulumi config set --secret ${k(key)} https://ntfy.sh/<a long random topic>`,
      });

  const permissionMode = (key: ConfigKey) =>
    z
      .enum(PERMISSION_MODES, {
        error: (i) =>
          `${k(key)}: ${show(String(i.input))} is not one of Claude Code's permission modes (${PERMISSION_MODES.join(", ")}). Fix: ${set(key, "acceptEdits")}, or pulumi config rm ${k(key)} for Claude Code's default`,
      })
      .optional();

  const login = (key: ConfigKey, example: string) =>
    z.string().superRefine((v, ctx) => {
      if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(v)) {
        ctx.addIssue({
          code: "custom",
          message: `${k(key)}: ${show(v)} is not a valid Linux login (lower-case letters, digits, "_" and "-", starting with a letter or "_", at most 32). Fix: ${set(key, example)}`,
        });
      } else if (RESERVED_USERS.has(v)) {
        ctx.addIssue({
          code: "custom",
          message: `${k(key)}: ${show(v)} already exists on the image or belongs to a system service. Fix: ${set(key, example)}`,
        });
      }
    });

  return z
    .object({
      cloud: z
        .enum(["hetzner", "digitalocean"], {
          error: (i) =>
            `${k("cloud")}: ${show(String(i.input))} is not a supported cloud. Fix: ${set("cloud", "hetzner")} (or digitalocean)`,
        })
        .default("hetzner"),
      location: z.string().optional(),
      memoryGb: z
        .string()
        .optional()
        .transform((v, ctx) => {
          const memory = parseMemoryGb(v);
          if (typeof memory === "number") return memory;
          ctx.addIssue({ code: "custom", message: memory.problem });
          return z.NEVER;
        }),
      serverType: z.string().optional(),
      image: z.string().optional(),
      sshPublicKeys: listOf("sshPublicKeys", '"ssh-ed25519 AAAA... you@laptop"').pipe(
        z
          .array(z.string())
          .min(1, {
            error: `${k("sshPublicKeys")}: at least one SSH public key is required (without one the cloud mails a root password and nobody can log in as the agent user). Fix: pulumi config set --path '${k("sshPublicKeys")}[0]' "$(cat ~/.ssh/id_ed25519.pub)"`,
          })
          .superRefine((keys, ctx) => {
            keys.forEach((key, i) => {
              if (key.includes("PRIVATE KEY")) {
                ctx.addIssue({
                  code: "custom",
                  message: `${k("sshPublicKeys")}[${i}]: this is a PRIVATE key, and it is now stored unencrypted in the stack config. Fix: pulumi config rm ${k("sshPublicKeys")}, then pulumi config set --path '${k("sshPublicKeys")}[0]' "$(cat ~/.ssh/id_ed25519.pub)"; if Pulumi.${stack}.yaml was committed or shared, replace that key pair`,
                });
              } else if (!SSH_KEY.test(key.trim())) {
                ctx.addIssue({
                  code: "custom",
                  message: `${k("sshPublicKeys")}[${i}]: ${show(key)} is not an OpenSSH public key (one line: type, base64 key, optional comment; types: ${SSH_KEY_TYPES.join(", ")}). Fix: pulumi config set --path '${k("sshPublicKeys")}[${i}]' "$(cat ~/.ssh/id_ed25519.pub)"`,
                });
              }
            });
          })
          .transform((keys) => keys.map((key) => key.trim())),
      ),
      user: login("user", "agent").default("agent"),
      adminUser: login("adminUser", "agent-admin").optional(),
      sudo: boolKey("sudo", false),
      unattendedUpgrades: boolKey("unattendedUpgrades", true),
      egress: z
        .enum(["open", "allowlist"], {
          error: (i) =>
            `${k("egress")}: ${show(String(i.input))} is not an egress mode. Fix: ${set("egress", "allowlist")} (the agent reaches only its API, the package registries and your git host) or open`,
        })
        .default("open"),
      egressAllowHosts: listOf("egressAllowHosts", "pypi.org").pipe(
        z.array(z.string()).superRefine((hosts, ctx) => {
          hosts.forEach((h, i) => {
            if (!HOSTNAME.test(h.trim()))
              ctx.addIssue({
                code: "custom",
                message: `${k("egressAllowHosts")}[${i}]: ${show(h)} is not a host name (letters, digits, "-" and ".", no scheme, port or path). Fix: pulumi config set --path '${k("egressAllowHosts")}[${i}]' pypi.org`,
              });
          });
        }),
      ),
      allowSshFrom: listOf("allowSshFrom", "203.0.113.7/32").pipe(
        z.array(z.string()).superRefine((cidrs, ctx) => {
          cidrs.forEach((c, i) => {
            const problem = cidrProblem(c.trim());
            if (problem)
              ctx.addIssue({
                code: "custom",
                message: `${k("allowSshFrom")}[${i}]: ${show(c)} ${problem}. Fix: pulumi config set --path '${k("allowSshFrom")}[${i}]' 203.0.113.7/32`,
              });
          });
        }),
      ),
      tailscale: boolKey("tailscale", true),
      tailscaleHostname: z
        .string()
        .optional()
        .refine((v) => v === undefined || DNS_LABEL.test(v), {
          error: (i) =>
            `${k("tailscaleHostname")}: ${show(String(i.input))} is not a valid hostname (one DNS label: a-z, 0-9 and "-", at most 63, not starting or ending with "-"). Fix: ${set("tailscaleHostname", defaultHostname(project, stack, box))}`,
        }),
      tailscaleTags: listOf("tailscaleTags", "tag:agentbox").pipe(
        z.array(z.string()).superRefine((tags, ctx) => {
          tags.forEach((t, i) => {
            if (!TAG.test(t))
              ctx.addIssue({
                code: "custom",
                message: `${k("tailscaleTags")}[${i}]: ${show(t)} is not a Tailscale tag (tag:<name>, a letter then letters, digits or "-"). Fix: pulumi config set --path '${k("tailscaleTags")}[${i}]' tag:agentbox`,
              });
          });
        }),
      ),
      tailscaleSsh: boolKey("tailscaleSsh", false),
      claudeCodeVersion: z
        .string()
        .optional()
        .transform((v) => v ?? DEFAULT_CLAUDE_CODE_VERSION)
        .refine((v) => SEMVER.test(v), {
          error: (i) =>
            `${k("claudeCodeVersion")}: ${show(String(i.input))} is not an exact version (x.y.z; ranges and "latest" would make boxes differ). Fix: ${set("claudeCodeVersion", DEFAULT_CLAUDE_CODE_VERSION)}`,
        }),
      claudeInstallMethod: z
        .enum(["npm", "download"], {
          error: (i) =>
            `${k("claudeInstallMethod")}: ${show(String(i.input))} is not an install method. Fix: ${set("claudeInstallMethod", "npm")} (the npm registry's per-platform package) or download (Anthropic's release server, checked against its manifest)`,
        })
        .default("npm"),
      claudeOauthToken: secret("claudeOauthToken", "token from `claude setup-token`"),
      anthropicApiKey: secret("anthropicApiKey", "Anthropic API key"),
      repoUrl: z
        .string()
        .optional()
        .superRefine((v, ctx) => {
          if (v === undefined) return;
          if (/^https:\/\/[^/]*@/.test(v)) {
            ctx.addIssue({
              code: "custom",
              message: `${k("repoUrl")}: the URL carries credentials, which would sit in the server's user-data. Fix: ${set("repoUrl", "https://github.com/you/repo.git")} and give the box a deploy key or use a public repository`,
            });
          } else if (!REPO_URL.test(v)) {
            ctx.addIssue({
              code: "custom",
              message: `${k("repoUrl")}: ${show(v)} is not a git URL agentbox can clone (https://host/path, ssh://host/path, user@host:path or file:///path on the box, without spaces). Fix: ${set("repoUrl", "https://github.com/you/repo.git")}`,
            });
          }
        }),
      repoBranch: z
        .string()
        .optional()
        .refine((v) => v === undefined || !branchProblem(v), {
          error: (i) =>
            `${k("repoBranch")}: ${show(String(i.input))} is not a valid branch name. Fix: ${set("repoBranch", "main")}`,
        }),
      waitForReady: boolKey("waitForReady", true),
      sshPrivateKeyFile: z
        .string()
        .optional()
        .refine((v) => v === undefined || (v.trim() !== "" && !/[\r\n\0]/.test(v)), {
          error: () =>
            `${k("sshPrivateKeyFile")}: not a file path. Fix: ${set("sshPrivateKeyFile", "~/.ssh/agentbox_ci")} (a key whose public half is in ${k("sshPublicKeys")}), or pulumi config rm ${k("sshPrivateKeyFile")} to use your ssh-agent`,
        }),
      readyTimeoutMinutes: intKey("readyTimeoutMinutes", {
        min: 1,
        max: 120,
        dflt: DEFAULT_READY_TIMEOUT_MINUTES,
        unit: "minutes",
        example: DEFAULT_READY_TIMEOUT_MINUTES,
      }),
      // 0 means "no volume"; the cloud's own limits are checked with the location below
      volumeGb: intKey("volumeGb", { min: 0, max: 16384, unit: "GB", example: 20 }),
      workflowPrompt: z.string().optional(),
      workflowPromptFile: z.string().optional(),
      workflowTimeoutMinutes: intKey("workflowTimeoutMinutes", {
        min: 1,
        max: MAX_WORKFLOW_TIMEOUT_MINUTES,
        unit: "minutes",
        example: DEFAULT_WORKFLOW_TIMEOUT_MINUTES,
      }),
      ntfyUrl: ntfyTopic("ntfyUrl"),
      ntfyToken: secret("ntfyToken", "ntfy access token"),
      approvalsNtfyUrl: ntfyTopic("approvalsNtfyUrl"),
      approvalsNtfyToken: secret("approvalsNtfyToken", "ntfy access token"),
      remoteControl: boolKey("remoteControl", false),
      diskWarnPercent: intKey("diskWarnPercent", {
        min: 50,
        max: 95,
        dflt: DEFAULT_DISK_WARN_PERCENT,
        unit: "percent",
        example: DEFAULT_DISK_WARN_PERCENT,
      }),
      workflowKeepRuns: intKey("workflowKeepRuns", {
        min: 1,
        max: 1000,
        dflt: DEFAULT_WORKFLOW_KEEP_RUNS,
        unit: "runs",
        example: DEFAULT_WORKFLOW_KEEP_RUNS,
      }),
      // 0 would stop Claude Code from writing conversations at all, not keep them forever
      conversationRetentionDays: intKey("conversationRetentionDays", {
        min: 1,
        max: 36500,
        dflt: DEFAULT_CONVERSATION_RETENTION_DAYS,
        unit: "days",
        example: DEFAULT_CONVERSATION_RETENTION_DAYS,
      }),
      maintenanceWindow: z
        .string()
        .optional()
        .transform((v, ctx) => {
          if (v === undefined || v.trim() === "") return undefined;
          const w = parseMaintenanceWindow(v);
          if ("problem" in w) {
            ctx.addIssue({ code: "custom", message: w.problem });
            return z.NEVER;
          }
          return w;
        }),
      approvals: boolKey("approvals", false),
      approvalTimeoutSeconds: intKey("approvalTimeoutSeconds", {
        min: 30,
        max: 3600,
        unit: "seconds",
        example: DEFAULT_APPROVAL_TIMEOUT_SECONDS,
      }),
      // Tailscale login names (what the admin console shows as the device's owner): alice@example.com, bob@github
      approvers: listOf("approvers", "you@example.com").pipe(
        z.array(z.string()).superRefine((logins, ctx) => {
          logins.forEach((l, i) => {
            if (!/^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}$/.test(l.trim()))
              ctx.addIssue({
                code: "custom",
                message: `${k("approvers")}[${i}]: ${show(l)} is not a Tailscale login name (user@domain, as the admin console names a device's owner, e.g. alice@example.com or alice@github). Fix: pulumi config set --path '${k("approvers")}[${i}]' you@example.com`,
              });
          });
        }),
      ),
      permissionMode: permissionMode("permissionMode"),
      workflowPermissionMode: permissionMode("workflowPermissionMode"),
      // a list of objects: parsed and checked by agentsOf, which needs the server's memory and the stack's repository
      agents: z.string().optional(),
      // Both clouds number their snapshots; the image itself is read from the cloud and checked in bakedImage.ts.
      bakedImage: z
        .string()
        .optional()
        .transform((v) => v?.trim())
        .refine((v) => v === undefined || /^[1-9][0-9]{0,17}$/.test(v), {
          error: (i) =>
            `${k("bakedImage")}: ${show(String(i.input))} is not an image id (Hetzner and DigitalOcean number their snapshots, e.g. 123456789). Fix: npm run bake -- --stack ${stack} (it makes the image and sets the key), or pulumi config rm ${k("bakedImage")}`,
        }),
    })
    .superRefine((c, ctx) => {
      if (c.claudeOauthToken && c.anthropicApiKey) {
        ctx.addIssue({
          code: "custom",
          path: ["anthropicApiKey"],
          message: `${k("anthropicApiKey")}: both it and ${k("claudeOauthToken")} are set; Claude Code would bill the API key and ignore your subscription. Fix: pulumi config rm ${k("anthropicApiKey")} (or rm ${k("claudeOauthToken")})`,
        });
      }
      if (c.sudo && c.adminUser !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["adminUser"],
          message: `${k("adminUser")}: set while ${k("sudo")} is true; the admin login exists only to keep root away from the agent. Fix: pulumi config rm ${k("adminUser")}, or ${set("sudo", "false")}`,
        });
      }
      if (c.adminUser !== undefined && c.adminUser === c.user) {
        ctx.addIssue({
          code: "custom",
          path: ["adminUser"],
          message: `${k("adminUser")}: ${show(c.adminUser)} is also ${k("user")}; the admin login must be another user. Fix: ${set("adminUser", `${c.user}-admin`)}`,
        });
      }
      if (c.egress !== "allowlist" && c.egressAllowHosts.length > 0) {
        ctx.addIssue({
          code: "custom",
          path: ["egressAllowHosts"],
          message: `${k("egressAllowHosts")}: set while ${k("egress")} is open, where every host is reachable anyway. Fix: ${set("egress", "allowlist")}, or pulumi config rm ${k("egressAllowHosts")}`,
        });
      }
      if (c.repoBranch !== undefined && c.repoUrl === undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["repoBranch"],
          message: `${k("repoBranch")}: set without ${k("repoUrl")}, so there is nothing to check out. Fix: ${set("repoUrl", "https://github.com/you/repo.git")} or pulumi config rm ${k("repoBranch")}`,
        });
      }
      if (!c.tailscale) {
        const given = {
          tailscaleHostname: c.tailscaleHostname !== undefined,
          tailscaleTags: c.tailscaleTags.length > 0,
          tailscaleSsh: c.tailscaleSsh,
        };
        for (const key of ["tailscaleHostname", "tailscaleTags", "tailscaleSsh"] as const) {
          if (!given[key]) continue;
          ctx.addIssue({
            code: "custom",
            path: ["tailscale"],
            message: `${k("tailscale")}: false, but ${k(key)} is set, which only applies with Tailscale. Fix: pulumi config rm ${k(key)}, or ${set("tailscale", "true")}`,
          });
        }
      }
      if (c.workflowPrompt !== undefined && c.workflowPromptFile !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["workflowPrompt"],
          message: `${k("workflowPrompt")}: set together with ${k("workflowPromptFile")}; a workflow has one prompt. Fix: pulumi config rm ${k("workflowPrompt")} (or rm ${k("workflowPromptFile")})`,
        });
      }
      // the keys that only a workflow uses, each with the fix its message names
      const withoutWorkflow = c.workflowPrompt === undefined && c.workflowPromptFile === undefined;
      const workflowKeys = [
        ["workflowTimeoutMinutes", ` or ${set("workflowPromptFile", "prompts/nightly.md")}`],
        ["workflowPermissionMode", ""],
      ] as const;
      for (const [key, orFile] of workflowKeys)
        if (withoutWorkflow && c[key] !== undefined)
          ctx.addIssue({
            code: "custom",
            path: [key],
            message: `${k(key)}: set, but the stack has no workflow prompt. Fix: ${set("workflowPrompt", '"Fix the failing tests and commit"')}${orFile}, or pulumi config rm ${k(key)}`,
          });
      if (c.ntfyToken !== undefined && c.ntfyUrl === undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["ntfyToken"],
          message: `${k("ntfyToken")}: set without ${k("ntfyUrl")}, so there is nowhere to send notifications. Fix: pulumi config set --secret ${k("ntfyUrl")} https://ntfy.sh/<topic>, or pulumi config rm ${k("ntfyToken")}`,
        });
      }
      if (c.remoteControl) {
        const login =
          c.anthropicApiKey !== undefined
            ? "anthropicApiKey"
            : c.claudeOauthToken !== undefined
              ? "claudeOauthToken"
              : undefined;
        if (login) {
          ctx.addIssue({
            code: "custom",
            path: ["remoteControl"],
            message: `${k("remoteControl")}: true, but ${k(login)} is set; Remote Control needs a full claude.ai login (Pro, Max, Team or Enterprise) and is off whenever Claude Code runs on ${login === "anthropicApiKey" ? "an API key" : "a setup-token token"}. Fix: pulumi config rm ${k(login)}, then after pulumi up log in once on the box (attach, then /login); or ${set("remoteControl", "false")}`,
          });
        }
        if (!versionAtLeast(c.claudeCodeVersion, REMOTE_CONTROL_MIN_VERSION)) {
          ctx.addIssue({
            code: "custom",
            path: ["remoteControl"],
            message: `${k("remoteControl")}: true, but ${k("claudeCodeVersion")} ${c.claudeCodeVersion} predates Remote Control (${REMOTE_CONTROL_MIN_VERSION}). Fix: ${set("claudeCodeVersion", DEFAULT_CLAUDE_CODE_VERSION)}`,
          });
        }
      }
      if (c.approvals) {
        // The agent holds ntfyUrl and ntfyToken (its hooks send the notifications): on that topic it could read a
        // request's one-time buttons and post a harmless-looking notification of its own that carries them.
        if (c.approvalsNtfyUrl === undefined)
          ctx.addIssue({
            code: "custom",
            path: ["approvals"],
            message: `${k("approvals")}: true, but ${k("approvalsNtfyUrl")} is not set; the requests travel on an ntfy topic of their own, which the agent never sees. Fix: pulumi config set --secret ${k("approvalsNtfyUrl")} https://ntfy.sh/<another long random topic>, or ${set("approvals", "false")}`,
          });
        else if (c.ntfyUrl !== undefined && c.approvalsNtfyUrl === c.ntfyUrl)
          ctx.addIssue({
            code: "custom",
            path: ["approvalsNtfyUrl"],
            message: `${k("approvalsNtfyUrl")}: the same topic as ${k("ntfyUrl")}, which the agent reads and writes: it could post a notification of its own carrying a request's buttons. Fix: pulumi config set --secret ${k("approvalsNtfyUrl")} https://ntfy.sh/<another long random topic>`,
          });
        if (c.approvalsNtfyToken !== undefined && c.approvalsNtfyToken === c.ntfyToken)
          ctx.addIssue({
            code: "custom",
            path: ["approvalsNtfyToken"],
            message: `${k("approvalsNtfyToken")}: the same token as ${k("ntfyToken")}, which the agent holds. Fix: make a token (on the ntfy server) that only reaches the approvals topic, then pulumi config set --secret ${k("approvalsNtfyToken")}`,
          });
        if (!c.tailscale)
          ctx.addIssue({
            code: "custom",
            path: ["approvals"],
            message: `${k("approvals")}: true, but ${k("tailscale")} is false; a tap reaches the box over the tailnet only. Fix: ${set("tailscale", "true")}, or ${set("approvals", "false")}`,
          });
        for (const mode of ["bypassPermissions", "dontAsk"] as const)
          if (c.permissionMode === mode)
            ctx.addIssue({
              code: "custom",
              path: ["approvals"],
              message: `${k("approvals")}: true, but ${k("permissionMode")} is ${mode}, in which the agent never asks. Fix: ${set("permissionMode", "acceptEdits")} (or default), or ${set("approvals", "false")}`,
            });
      } else {
        for (const key of ["approvalTimeoutSeconds", "approvers", "approvalsNtfyUrl", "approvalsNtfyToken"] as const)
          if (key === "approvers" ? c.approvers.length > 0 : c[key] !== undefined)
            ctx.addIssue({
              code: "custom",
              path: [key],
              message: `${k(key)}: set while ${k("approvals")} is false, where it does nothing. Fix: ${set("approvals", "true")}, or pulumi config rm ${k(key)}`,
            });
      }
      // bypassPermissions runs every command unasked: with sudo, that is root on the box for anything the agent reads
      for (const key of ["permissionMode", "workflowPermissionMode"] as const)
        if (c[key] === "bypassPermissions" && c.sudo)
          ctx.addIssue({
            code: "custom",
            path: [key],
            message: `${k(key)}: bypassPermissions while ${k("sudo")} is true would let any command the agent is talked into (by a file, a web page, an issue) run as root without asking. Fix: ${set("sudo", "false")} (the default; the admin login keeps sudo), or another mode such as acceptEdits`,
          });
      if (!c.tailscale && c.allowSshFrom.length === 0) {
        ctx.addIssue({
          code: "custom",
          path: ["allowSshFrom"],
          message: `${k("allowSshFrom")}: empty while ${k("tailscale")} is false, so nothing could ever reach the box. Fix: pulumi config set --path '${k("allowSshFrom")}[0]' <your address>/32, or ${set("tailscale", "true")}`,
        });
      }
    });
}

/** Suggests the closest known key for a typo (edit distance ≤ 3). */
function closestKey(key: string): string | undefined {
  const dist = (a: string, b: string) => {
    const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
    for (let j = 1; j <= b.length; j++) d[0]![j] = j;
    for (let i = 1; i <= a.length; i++)
      for (let j = 1; j <= b.length; j++)
        d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    return d[a.length]![b.length]!;
  };
  const scored = CONFIG_KEYS.map((c) => [c, dist(key.toLowerCase(), c.toLowerCase())] as const).sort(
    (x, y) => x[1] - y[1],
  );
  return scored[0] && scored[0][1] <= 3 ? scored[0][0] : undefined;
}

function resolveSizing(
  catalogue: CloudCatalogue,
  location: string,
  memoryGb: number,
  serverType: string | undefined,
  memoryGiven: boolean,
): { type?: ServerType; problems: string[] } {
  const k = (key: ConfigKey) => `${NAMESPACE}:${key}`;
  const kind = catalogue.cloud === "hetzner" ? "server type" : "droplet size";
  if (!catalogue.locations.includes(location)) {
    return {
      problems: [
        `${k("location")}: ${show(location)} is not a ${catalogue.cloud} ${catalogue.cloud === "hetzner" ? "location" : "region"}; valid: ${catalogue.locations.join(", ")}. Fix: ${set("location", catalogue.defaultLocation)}`,
      ],
    };
  }
  if (serverType !== undefined) {
    const type = catalogue.types.find((t) => t.name === serverType);
    const successor = catalogue.retired?.[serverType];
    if (!type && successor) {
      return {
        problems: [
          `${k("serverType")}: ${show(serverType)} is no longer sold by ${catalogue.cloud}; its successor is ${successor}. Fix: ${set("serverType", successor)}`,
        ],
      };
    }
    if (!type) {
      return {
        problems: [
          `${k("serverType")}: ${show(serverType)} is not a ${catalogue.cloud} ${kind} agentbox knows (catalogue of ${catalogue.asOf}); valid: ${catalogue.types.map((t) => t.name).join(", ")}. Fix: ${set("serverType", cheapestType(catalogue, MIN_MEMORY_GB, location)?.name ?? catalogue.types[0]!.name)}, or pulumi config rm ${k("serverType")} and set ${k("memoryGb")}`,
        ],
      };
    }
    if (!type.sold.includes(location)) {
      const here = catalogue.types.filter((t) => t.sold.includes(location)).map((t) => t.name);
      return {
        problems: [
          `${k("serverType")}: ${type.name} is not sold in ${location}; it is sold in ${type.sold.join(", ")}; ${location} sells ${here.join(", ")}. Fix: ${set("location", type.sold[0]!)} or ${set("serverType", here[0] ?? "")}`,
        ],
      };
    }
    if (memoryGiven && type.memoryGb < memoryGb) {
      return {
        problems: [
          `${k("serverType")}: ${type.name} has ${type.memoryGb} GB, less than ${k("memoryGb")} = ${memoryGb}. Fix: pulumi config rm ${k("serverType")} to let agentbox pick, or rm ${k("memoryGb")}`,
        ],
      };
    }
    return { type, problems: [] };
  }
  const type = cheapestType(catalogue, memoryGb, location);
  if (!type) {
    const where = catalogue.locations.filter((l) => cheapestType(catalogue, memoryGb, l));
    return {
      problems: [
        `${k("location")}: no ${kind} with ${memoryGb} GB is sold in ${location}; try ${where.join(", ")}. Fix: ${set("location", where[0] ?? catalogue.defaultLocation)}`,
      ],
    };
  }
  return { type, problems: [] };
}

/** Location, size and image, from the raw strings; quiet about keys the schema already reports. */
function checkPlacement(raw: RawConfig): {
  catalogue: CloudCatalogue;
  location: string;
  image: string;
  type?: ServerType;
  problems: string[];
} {
  const cloud = (raw.cloud ?? "hetzner").trim();
  const catalogue = catalogueFor(cloud === "digitalocean" ? "digitalocean" : "hetzner");
  const location = raw.location ?? catalogue.defaultLocation;
  const image = raw.image ?? catalogue.images.debian13;
  if (cloud !== "hetzner" && cloud !== "digitalocean") return { catalogue, location, image, problems: [] };
  // a bad memoryGb is the schema's to report: size by the minimum meanwhile
  const memory = parseMemoryGb(raw.memoryGb);
  const memoryValid = typeof memory === "number";
  const sizing = resolveSizing(
    catalogue,
    location,
    memoryValid ? memory : MIN_MEMORY_GB,
    raw.serverType,
    memoryValid && raw.memoryGb !== undefined,
  );
  const problems = [...sizing.problems];
  const images = Object.values(catalogue.images);
  if (!images.includes(image)) {
    problems.push(
      `${NAMESPACE}:image: ${show(image)} is not an image agentbox supports on ${cloud}; valid: ${images.join(", ")}. Fix: ${set("image", catalogue.images.debian13)}`,
    );
  }
  return { catalogue, location, image, type: sizing.type, problems };
}

/**
 * Validates raw stack config. `raw` holds every `agentbox:*` key the stack sets, keyed without the namespace.
 * Throws ConfigError listing every problem at once, so one `pulumi up` shows them all.
 */
export function parseConfig(
  given: RawConfig,
  ctx: {
    project: string;
    stack: string;
    /** The AgentBox's name, when a program has several boxes (see boxIdentity). */
    box?: string;
    readFile?: (path: string) => string;
  },
): AgentBoxConfig {
  // An empty value means "not set" (`pulumi new` stores the template's empty defaults that way).
  const raw: RawConfig = Object.fromEntries(
    Object.entries(given).filter(([, v]) => v !== undefined && v.trim() !== ""),
  );
  const problems: string[] = [];
  for (const key of Object.keys(raw)) {
    if (!(CONFIG_KEYS as readonly string[]).includes(key)) {
      const near = closestKey(key);
      problems.push(
        `${NAMESPACE}:${key}: not a setting agentbox knows.${near ? ` Did you mean ${NAMESPACE}:${near}?` : ""} Fix: pulumi config rm ${NAMESPACE}:${key}${near ? ` and set ${NAMESPACE}:${near}` : ""}`,
      );
    }
  }
  const parsed = schemaFor(ctx.project, ctx.stack, ctx.box).safeParse(raw);
  if (!parsed.success) problems.push(...parsed.error.issues.map((i) => i.message));
  // Where the box goes is checked even when other keys are wrong, so that one run reports everything.
  const placement = checkPlacement(raw);
  problems.push(...placement.problems);
  const volumeGb = parsed.success ? (parsed.data.volumeGb ?? 0) : 0;
  if (volumeGb > 0) problems.push(...volumeProblems(placement.catalogue, placement.location, volumeGb));
  const prompt = parsed.success ? workflowPrompt(parsed.data, ctx.readFile ?? ((f) => readFileSync(f, "utf8"))) : {};
  if (prompt.problem) problems.push(prompt.problem);
  const agents = parseAgents(raw.agents, {
    repo: parsed.success ? parsed.data.repoUrl !== undefined : raw.repoUrl !== undefined,
    repoBranch: parsed.success ? parsed.data.repoBranch : undefined,
    memoryGb: placement.type?.memoryGb,
  });
  if ("problems" in agents) problems.push(...agents.problems);
  if (!parsed.success || problems.length > 0 || !placement.type) throw new ConfigError(problems);
  const c = parsed.data;
  const { catalogue, location, image } = placement;

  const warnings: string[] = [];
  const open = c.allowSshFrom.map((x) => x.trim()).filter((x) => x.endsWith("/0"));
  if (open.length) {
    warnings.push(
      `${NAMESPACE}:allowSshFrom: ${open.join(", ")} opens SSH to the whole internet; password login stays off, but prefer Tailscale or your own address/32.`,
    );
  }
  const auth: AgentAuth = c.claudeOauthToken
    ? { kind: "oauthToken", key: "claudeOauthToken", value: c.claudeOauthToken }
    : c.anthropicApiKey
      ? { kind: "apiKey", key: "anthropicApiKey", value: c.anthropicApiKey }
      : { kind: "none" };
  if (auth.kind === "none") {
    warnings.push(
      `${NAMESPACE}:claudeOauthToken is not set: Claude Code on the box will ask you to log in the first time you attach (set it from \`claude setup-token\` to skip that).`,
    );
  }

  const cloudName = defaultHostname(ctx.project, ctx.stack, ctx.box);
  return {
    project: ctx.project,
    stack: ctx.stack,
    cloudName,
    cloud: c.cloud,
    catalogue,
    location,
    serverType: placement.type,
    image,
    sshPublicKeys: c.sshPublicKeys,
    user: c.user,
    sudo: c.sudo,
    adminUser: c.sudo ? undefined : (c.adminUser ?? adminLoginFor(c.user)),
    unattendedUpgrades: c.unattendedUpgrades,
    egress: { mode: c.egress, extraHosts: c.egressAllowHosts.map((h) => h.trim().toLowerCase()) },
    allowSshFrom: c.allowSshFrom.map((x) => x.trim()),
    tailscale: {
      enabled: c.tailscale,
      hostname: c.tailscaleHostname ?? cloudName,
      tags: c.tailscale ? (c.tailscaleTags.length ? c.tailscaleTags : ["tag:agentbox"]) : [],
      ssh: c.tailscaleSsh,
    },
    claudeCode: { version: c.claudeCodeVersion, installMethod: c.claudeInstallMethod },
    auth,
    repo: c.repoUrl ? { url: c.repoUrl, ...(c.repoBranch ? { branch: c.repoBranch } : {}) } : undefined,
    ready: { wait: c.waitForReady, timeoutMinutes: c.readyTimeoutMinutes ?? DEFAULT_READY_TIMEOUT_MINUTES },
    ...(c.sshPrivateKeyFile ? { sshKeyFile: expandHome(c.sshPrivateKeyFile.trim()) } : {}),
    volume: volumeGb > 0 ? { sizeGb: volumeGb } : undefined,
    workflow:
      prompt.text !== undefined && prompt.from
        ? {
            prompt: prompt.text,
            from: prompt.from,
            timeoutMinutes: c.workflowTimeoutMinutes ?? DEFAULT_WORKFLOW_TIMEOUT_MINUTES,
          }
        : undefined,
    notify: c.ntfyUrl ? { url: c.ntfyUrl, ...(c.ntfyToken ? { token: c.ntfyToken } : {}) } : undefined,
    ...(c.approvals
      ? {
          approvals: {
            timeoutSeconds: c.approvalTimeoutSeconds ?? DEFAULT_APPROVAL_TIMEOUT_SECONDS,
            approvers: c.approvers.map((a) => a.trim().toLowerCase()),
            url: c.approvalsNtfyUrl ?? "",
            ...(c.approvalsNtfyToken ? { token: c.approvalsNtfyToken } : {}),
          },
        }
      : {}),
    ...(c.permissionMode ? { permissionMode: c.permissionMode } : {}),
    ...(c.workflowPermissionMode ? { workflowPermissionMode: c.workflowPermissionMode } : {}),
    remoteControl: c.remoteControl,
    ...("list" in agents && agents.list ? { agents: agents.list } : {}),
    upkeep: {
      diskWarnPercent: c.diskWarnPercent ?? DEFAULT_DISK_WARN_PERCENT,
      workflowKeepRuns: c.workflowKeepRuns ?? DEFAULT_WORKFLOW_KEEP_RUNS,
      conversationRetentionDays: c.conversationRetentionDays ?? DEFAULT_CONVERSATION_RETENTION_DAYS,
    },
    ...(c.maintenanceWindow ? { maintenanceWindow: c.maintenanceWindow } : {}),
    ...(c.bakedImage !== undefined ? { bakedImage: { id: c.bakedImage } } : {}),
    warnings,
  };
}

/**
 * agentbox:agents: a list of agents, each `{name, worktree?, repoUrl?, repoBranch?}` (a bare string is a name).
 * `worktree` names the branch of a worktree of the stack's repository; without `worktree` or `repoUrl`, an agent of a
 * stack with a repository works in a worktree on the branch `agentbox/<name>`, and one of a stack without in an
 * empty folder. Every problem is named with the agent's place in the list and the fix.
 */
export function parseAgents(
  text: string | undefined,
  ctx: { repo: boolean; repoBranch?: string; memoryGb?: number },
): { list?: AgentSpec[] } | { problems: string[] } {
  const key = `${NAMESPACE}:agents`;
  if (text === undefined) return {};
  const example = `pulumi config set --path '${key}[0].name' api (and '${key}[0].worktree' fix-login for its own branch)`;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  if (!Array.isArray(value)) {
    return { problems: [`${key}: ${show(text)} is not a list of agents. Fix: ${example}`] };
  }
  if (value.length === 0) {
    return {
      problems: [
        `${key}: an empty list; a box runs at least one agent. Fix: pulumi config rm ${key} (one agent, as without the key) or ${example}`,
      ],
    };
  }
  const problems: string[] = [];
  const list: AgentSpec[] = [];
  const seen = new Set<string>();
  value.forEach((entry: unknown, i) => {
    const at = `${key}[${i}]`;
    const e: Record<string, unknown> = typeof entry === "string" ? { name: entry } : (entry as Record<string, unknown>);
    if (typeof e !== "object" || e === null || Array.isArray(e)) {
      problems.push(`${at}: not an agent (an object with a name). Fix: pulumi config set --path '${at}.name' api`);
      return;
    }
    const unknownKeys = Object.keys(e).filter((k) => !["name", "worktree", "repoUrl", "repoBranch"].includes(k));
    if (unknownKeys.length) {
      problems.push(
        `${at}: ${unknownKeys.map((k) => show(k)).join(", ")} ${unknownKeys.length === 1 ? "is not a setting" : "are not settings"} of an agent (name, worktree, repoUrl, repoBranch). Fix: pulumi config rm --path '${at}.${unknownKeys[0]}'`,
      );
    }
    const name = e.name;
    if (typeof name !== "string" || !AGENT_NAME.test(name)) {
      problems.push(
        `${at}.name: ${name === undefined ? "missing" : show(String(name))}${name === undefined ? "" : " is not an agent name"}; it names a systemd unit, a tmux session and a folder, so: lower-case letters, digits and "-", starting with a letter, at most 24. Fix: pulumi config set --path '${at}.name' api`,
      );
      return;
    }
    if ((RESERVED_AGENT_NAMES as readonly string[]).includes(name)) {
      problems.push(
        `${at}.name: ${show(name)} is taken on the box (${name === "agentbox" ? "the agents' tmux socket" : name === "workflow" ? "the workflow's folder and unit" : "a record of the box's agent"}). Fix: pulumi config set --path '${at}.name' ${name}-1`,
      );
      return;
    }
    if (seen.has(name)) {
      problems.push(
        `${at}.name: ${show(name)} is the name of an earlier agent; each agent has its own. Fix: pulumi config set --path '${at}.name' ${name}-2`,
      );
      return;
    }
    seen.add(name);
    const str = (k: string) => (typeof e[k] === "string" ? (e[k] as string) : e[k] === undefined ? undefined : "");
    const worktree = str("worktree");
    const repoUrl = str("repoUrl");
    const repoBranch = str("repoBranch");
    if (worktree !== undefined && repoUrl !== undefined) {
      problems.push(
        `${at}: both worktree and repoUrl; an agent works either in a worktree of the stack's repository or in a repository of its own. Fix: pulumi config rm --path '${at}.worktree' (or '${at}.repoUrl')`,
      );
      return;
    }
    if (repoBranch !== undefined && repoUrl === undefined) {
      problems.push(
        `${at}.repoBranch: set without ${at}.repoUrl (a worktree's branch is its worktree key). Fix: pulumi config set --path '${at}.repoUrl' https://github.com/you/repo.git, or rm --path '${at}.repoBranch'`,
      );
      return;
    }
    if (repoUrl !== undefined) {
      if (!REPO_URL.test(repoUrl) || /^https:\/\/[^/]*@/.test(repoUrl)) {
        problems.push(
          `${at}.repoUrl: ${show(repoUrl)} is not a git URL agentbox can clone (https://host/path, ssh://host/path, user@host:path or file:///path, without spaces or credentials). Fix: pulumi config set --path '${at}.repoUrl' https://github.com/you/repo.git`,
        );
        return;
      }
      if (repoBranch !== undefined && branchProblem(repoBranch)) {
        problems.push(
          `${at}.repoBranch: ${show(repoBranch)} is not a valid branch name. Fix: pulumi config set --path '${at}.repoBranch' main`,
        );
        return;
      }
      list.push({ name, work: { kind: "repo", url: repoUrl, ...(repoBranch ? { branch: repoBranch } : {}) } });
      return;
    }
    if (worktree !== undefined && !ctx.repo) {
      problems.push(
        `${at}.worktree: a worktree of the stack's repository, but the stack has none (${NAMESPACE}:repoUrl). Fix: ${set("repoUrl", "https://github.com/you/repo.git")}, or give the agent a repository of its own: pulumi config set --path '${at}.repoUrl' <url>`,
      );
      return;
    }
    if (worktree !== undefined && branchProblem(worktree)) {
      problems.push(
        `${at}.worktree: ${show(worktree)} is not a valid branch name. Fix: pulumi config set --path '${at}.worktree' ${name}`,
      );
      return;
    }
    if (worktree !== undefined && ctx.repoBranch !== undefined && worktree === ctx.repoBranch) {
      problems.push(
        `${at}.worktree: ${show(worktree)} is the branch ~/workspace (the stack's clone, ${NAMESPACE}:repoBranch) has checked out, and git checks a branch out in one place only. Fix: pulumi config set --path '${at}.worktree' ${name}`,
      );
      return;
    }
    if (worktree !== undefined || ctx.repo) {
      list.push({ name, work: { kind: "worktree", branch: worktree ?? `agentbox/${name}` } });
    } else {
      list.push({ name, work: { kind: "empty" } });
    }
  });
  if (ctx.memoryGb !== undefined && value.length > maxAgentsFor(ctx.memoryGb)) {
    const most = maxAgentsFor(ctx.memoryGb);
    problems.push(
      `${key}: ${value.length} agents, but a ${ctx.memoryGb} GB box holds ${most}: each agent needs ${AGENT_MEMORY_GB} GB (Claude Code's minimum, for claude and what it runs) of the ${Math.round(AGENTS_MEMORY_SHARE * 100)}% of the RAM the agents share. Fix: list at most ${most} (pulumi config rm --path '${key}[${value.length - 1}]' removes the last)${ctx.memoryGb < MAX_MEMORY_GB ? `, or ${set("memoryGb", String(MAX_MEMORY_GB))} (${maxAgentsFor(MAX_MEMORY_GB)} agents)` : ""}`,
    );
  }
  return problems.length ? { problems } : { list };
}

/** Volume size and place against the cloud's own limits (the schema has already checked it is a number). */
function volumeProblems(catalogue: CloudCatalogue, location: string, sizeGb: number): string[] {
  const v = catalogue.volumes;
  const key = `${NAMESPACE}:volumeGb`;
  if (!catalogue.locations.includes(location)) return []; // the location's own problem is reported already
  if (!v.locations.includes(location)) {
    return [
      `${key}: ${catalogue.cloud} offers no volumes in ${location}; it does in ${v.locations.join(", ")}. Fix: ${set("location", v.locations[0] ?? catalogue.defaultLocation)}, or pulumi config rm ${key}`,
    ];
  }
  if (sizeGb < v.minGb || sizeGb > v.maxGb) {
    return [
      `${key}: ${sizeGb} GB is outside what ${catalogue.cloud} accepts for a volume (${v.minGb}–${v.maxGb} GB). Fix: ${set("volumeGb", String(Math.max(v.minGb, 20)))}`,
    ];
  }
  return [];
}

/** The prompt travels in the user-data, which Hetzner caps at 32 KiB in all. */
export const MAX_PROMPT_BYTES = 4096;

/** The workflow's prompt, inline or from a file (read relative to the project directory). */
function workflowPrompt(
  c: { workflowPrompt?: string; workflowPromptFile?: string },
  readFile: (path: string) => string,
): { text?: string; from?: "workflowPrompt" | "workflowPromptFile"; problem?: string } {
  const key = (k: string) => `${NAMESPACE}:${k}`;
  if (c.workflowPrompt !== undefined && c.workflowPromptFile !== undefined) return {}; // reported by the schema
  if (c.workflowPrompt !== undefined) {
    const bytes = Buffer.byteLength(c.workflowPrompt, "utf8");
    if (bytes > MAX_PROMPT_BYTES) {
      return {
        problem: `${key("workflowPrompt")}: ${bytes} bytes; a workflow prompt may be ${MAX_PROMPT_BYTES / 1024} KiB at most (it travels in the server's user-data). Fix: shorten it, or commit the details to the repository and point the prompt at them`,
      };
    }
    return { text: c.workflowPrompt, from: "workflowPrompt" };
  }
  if (c.workflowPromptFile === undefined) return {};
  let text: string;
  try {
    text = readFile(c.workflowPromptFile);
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code ?? String(e);
    return {
      problem: `${key("workflowPromptFile")}: ${show(c.workflowPromptFile)} cannot be read (${why}; paths are relative to the project directory). Fix: ${set("workflowPromptFile", "prompts/task.md")} naming an existing file, or use ${key("workflowPrompt")}`,
    };
  }
  if (text.trim() === "") {
    return {
      problem: `${key("workflowPromptFile")}: ${show(c.workflowPromptFile)} is empty, so the workflow would have no prompt. Fix: write the task into it, or pulumi config rm ${key("workflowPromptFile")}`,
    };
  }
  // The prompt travels in the user-data, which the clouds cap at 32 KiB (Hetzner) in all.
  if (Buffer.byteLength(text, "utf8") > MAX_PROMPT_BYTES) {
    return {
      problem: `${key("workflowPromptFile")}: ${show(c.workflowPromptFile)} is ${Buffer.byteLength(text, "utf8")} bytes; a workflow prompt may be ${MAX_PROMPT_BYTES / 1024} KiB at most (it travels in the server's user-data). Fix: shorten it, or commit the details to the repository and point the prompt at them`,
    };
  }
  return { text, from: "workflowPromptFile" };
}

/**
 * Provider credentials are the providers' own keys (or their environment variables). Checked before any resource
 * exists, so that a missing token is one clear line instead of a provider error halfway through `pulumi up`.
 */
export function credentialProblems(
  config: Pick<AgentBoxConfig, "cloud" | "tailscale">,
  allConfig: Record<string, string>,
  env: NodeJS.ProcessEnv,
): string[] {
  const has = (key: string, variable: string) => Boolean(allConfig[key] || env[variable]);
  const problems: string[] = [];
  if (config.cloud === "hetzner" && !has("hcloud:token", "HCLOUD_TOKEN")) {
    problems.push(
      "hcloud:token: not set, and HCLOUD_TOKEN is empty. Fix: pulumi config set --secret hcloud:token (it prompts; Hetzner Console → your project → Security → API tokens, read & write)",
    );
  }
  if (config.cloud === "digitalocean" && !has("digitalocean:token", "DIGITALOCEAN_TOKEN")) {
    problems.push(
      "digitalocean:token: not set, and DIGITALOCEAN_TOKEN is empty. Fix: pulumi config set --secret digitalocean:token (it prompts; DigitalOcean → API → Tokens, read & write)",
    );
  }
  if (config.tailscale.enabled) {
    const apiKey = has("tailscale:apiKey", "TAILSCALE_API_KEY");
    const oauthId = has("tailscale:oauthClientId", "TAILSCALE_OAUTH_CLIENT_ID");
    const oauthSecret = has("tailscale:oauthClientSecret", "TAILSCALE_OAUTH_CLIENT_SECRET");
    if (!apiKey && oauthId && !oauthSecret) {
      problems.push(
        "tailscale:oauthClientSecret: not set (nor TAILSCALE_OAUTH_CLIENT_SECRET), but tailscale:oauthClientId is; the OAuth client needs both. Fix: pulumi config set --secret tailscale:oauthClientSecret (it prompts; Tailscale admin console → Settings → OAuth clients), or use tailscale:apiKey instead",
      );
    } else if (!apiKey && !(oauthId && oauthSecret)) {
      problems.push(
        `tailscale:apiKey: not set (nor tailscale:oauthClientId/oauthClientSecret, nor their TAILSCALE_* variables). Fix: pulumi config set --secret tailscale:apiKey (it prompts; Tailscale admin console → Settings → Keys), or ${set("tailscale", "false")} and open SSH with ${NAMESPACE}:allowSshFrom`,
      );
    }
  }
  return problems;
}
