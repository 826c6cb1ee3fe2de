/**
 * The box as a #cloud-config document: plain values in, one YAML string out. No Pulumi here.
 *
 * The scripts and units the box runs are real files under ./files (shellcheck and systemd-analyze read them as
 * they are); this builder only places them. User input never becomes shell text: it travels in KEY=VALUE files
 * that the scripts read literally (see files/lib.sh), and every value is checked to be one line first.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "fflate";
import { stringify } from "yaml";
import { CLAUDE_EGRESS_HOSTS, renderFirewall } from "./firewall";

/** Hetzner refuses larger user-data (DigitalOcean allows 64 KiB): the limit of the image builder's text document. */
export const USER_DATA_LIMIT_BYTES = 32 * 1024;

export const BOX_PATHS = {
  lib: "/usr/local/lib/agentbox",
  boxEnv: "/etc/agentbox/box.env",
  tailscaleKey: "/run/agentbox/tailscale-authkey",
  unit: "/etc/systemd/user/claude-agent.service",
  firewall: "/etc/agentbox/firewall.nft",
  firewallUnit: "/etc/systemd/system/agentbox-firewall.service",
  upgrades: "/etc/apt/apt.conf.d/52agentbox-unattended-upgrades",
  needrestart: "/etc/needrestart/conf.d/50-agentbox.conf",
  egressHosts: "/etc/agentbox/egress-hosts",
  egressService: "/etc/systemd/system/agentbox-egress.service",
  egressTimer: "/etc/systemd/system/agentbox-egress.timer",
  sshd: "/etc/ssh/sshd_config.d/01-agentbox.conf",
  status: "/var/lib/agentbox/status",
  statusCommand: "/usr/local/bin/agentbox-status",
  loginBanner: "/etc/profile.d/agentbox.sh",
  provisionLog: "/var/log/agentbox/provision.log",
  waitReady: "/usr/local/bin/agentbox-wait-ready",
  workflowUnit: "/etc/systemd/user/agentbox-workflow.service",
  volumeUnit: "/etc/systemd/system/agentbox-volume.service",
  workflowState: "/var/lib/agentbox/workflow/state",
  /** Memory: a ceiling for all logins and the agent together, a lower one for the agent's units, and zram swap. */
  userSliceMemory: "/etc/systemd/system/user.slice.d/50-agentbox-memory.conf",
  agentSliceMemory: "/etc/systemd/user/app.slice.d/50-agentbox-memory.conf",
  zram: "/etc/systemd/zram-generator.conf.d/50-agentbox.conf",
  /** Stops the agent and unmounts its home before destroy takes the volume or the server (the agent's one sudo rule). */
  releaseHome: "/usr/local/lib/agentbox/release-home",
  releaseSudoers: "/etc/sudoers.d/agentbox-release",
  /** Claude Code's managed settings: the hooks and the conversation retention, beside (never inside) the user's own. */
  claudeManagedSettings: "/etc/claude-code/managed-settings.json",
  /** The weeks-long box: a root watcher every 5 minutes (disk, updates needing a reboot, the agent's login). */
  watch: "/usr/local/lib/agentbox/watch",
  watchService: "/etc/systemd/system/agentbox-watch.service",
  watchTimer: "/etc/systemd/system/agentbox-watch.timer",
  watchState: "/var/lib/agentbox/watch",
  /** What the agent's hooks record (its turn, its login): the agent's to write, validated by every reader. */
  agentState: "/var/lib/agentbox/agent",
  journald: "/etc/systemd/journald.conf.d/50-agentbox.conf",
  logrotate: "/etc/logrotate.d/agentbox",
  /** Provisioning resumed on the next boot when a first boot was cut short (pulled in without an enable link). */
  resumeUnit: "/etc/systemd/system/agentbox-resume.service",
  resumeWants: "/etc/systemd/system/multi-user.target.d/50-agentbox-resume.conf",
  /** agentbox:agents: the list (lib.sh reads it), the agents' unit template and their shared tmux server. */
  agents: "/etc/agentbox/agents",
  agentUnit: "/etc/systemd/user/claude-agent@.service",
  agentsTmuxUnit: "/etc/systemd/user/agentbox-tmux.service",
  /** The notification settings for root's own reports (the agent's copy lives in its home, maybe on the volume). */
  rootNotifyEnv: "/etc/agentbox/notify.env",
  /** agentbox:approvals: the receiver and hook (one Python file), its unit, and the socket only the receiver makes. */
  approve: "/usr/local/lib/agentbox/approve",
  approveUnit: "/etc/systemd/system/agentbox-approve.service",
  approveSocket: "/run/agentbox-approvals/approve.sock",
  /** Its ntfy topic: root's, handed to the receiver as a systemd credential; never the agent's. */
  approveEnv: "/etc/agentbox/approvals.env",
} as const;

export const TMUX_SOCKET = "agentbox";
export const TMUX_SESSION = "claude";
/** Where each of agentbox:agents works: ~/agents/<name> (~/workspace stays the stack's clone, the worktrees' source). */
export const agentWorkspace = (user: string, name: string) => `${homeOf(user)}/agents/${name}`;
/** What the agents together may use (app.slice, files/memory-app-slice.conf), in percent of the RAM. */
export const AGENTS_MEMORY = { highPercent: 75, maxPercent: 80 } as const;
/** Each agent's share of AGENTS_MEMORY, whole percents (systemd's MemoryHigh=/MemoryMax= take them). */
export const agentMemoryShare = (agents: number) => ({
  highPercent: Math.floor(AGENTS_MEMORY.highPercent / agents),
  maxPercent: Math.floor(AGENTS_MEMORY.maxPercent / agents),
});

export interface BoxSpec {
  user: string;
  /** Passwordless sudo for the agent user itself. */
  sudo: boolean;
  /** A second login with the same keys and sudo, for when the agent has none. */
  adminUser?: string;
  /** CIDRs that may reach SSH on the public address (the host firewall's only public opening). */
  allowSshFrom: readonly string[];
  unattendedUpgrades: boolean;
  /** With an allow-list, the agent's user reaches only these hosts, Claude Code's own, the registries and the git host. */
  egressAllowlist?: { extraHosts: readonly string[] };
  sshPublicKeys: readonly string[];
  arch: "x86_64" | "arm64";
  claudeCode: { version: string; installMethod: "npm" | "download" };
  /** Claude Code's credential, if any: which variable carries it, and its value. */
  auth?: { variable: "CLAUDE_CODE_OAUTH_TOKEN" | "ANTHROPIC_API_KEY"; value: string };
  tailscale?: { authKey: string; hostname: string; tags: readonly string[]; ssh: boolean };
  repo?: { url: string; branch?: string };
  /** Which project and stack the box belongs to (notifications name them). */
  project: string;
  stack: string;
  /** The persistent volume that becomes the agent's home: where its block device shows up. */
  volume?: { deviceGlob: string };
  workflow?: { prompt: string; timeoutMinutes: number };
  notify?: { url: string; token?: string };
  /** Permission requests answered from a phone (files/approve.py): how long one waits, who may answer, the port. */
  approvals?: { timeoutSeconds: number; approvers: readonly string[]; port: number; url: string; token?: string };
  /** Claude Code's --permission-mode for the agent's sessions and for the workflow's run. */
  permissionMode?: string;
  workflowPermissionMode?: string;
  remoteControl: boolean;
  /** agentbox:agents (config.ts has checked names, URLs and branches); without it, the one agent "claude". */
  agents?: readonly BoxAgent[];
  /** Disk level at which the box frees space, workflow runs it keeps, days Claude Code keeps conversations. */
  upkeep: { diskWarnPercent: number; workflowKeepRuns: number; conversationRetentionDays: number };
  /** When the box may reboot for updates: ISO weekdays (1 = Monday) and minutes after 00:00 UTC. */
  maintenanceWindow?: { days: readonly number[]; startMinute: number; endMinute: number };
  /** The box boots a baked image (cloud-init/bake.ts) that already has these packages and Claude Code. */
  bakedImage?: { packages: readonly string[] };
}

export interface BoxAgent {
  name: string;
  work: { kind: "worktree"; branch: string } | { kind: "repo"; url: string; branch?: string } | { kind: "empty" };
}

/** /etc/agentbox/agents: NAME, KIND, VALUE, BRANCH separated by tabs, one agent a line (files/lib.sh reads it). */
export function agentsFile(agents: readonly BoxAgent[]): string {
  return agents
    .map((a) => {
      const fields =
        a.work.kind === "worktree"
          ? [a.name, "worktree", a.work.branch, ""]
          : a.work.kind === "repo"
            ? [a.name, "repo", a.work.url, a.work.branch ?? ""]
            : [a.name, "empty", "", ""];
      if (fields.some((f) => /[\t\r\n\0]/.test(f)))
        throw new Error(`agents file: agent ${a.name} has a tab or newline`);
      return `${fields.join("\t")}\n`;
    })
    .join("");
}

export function homeOf(user: string): string {
  return `/home/${user}`;
}

const FILES_DIR = join(__dirname, "files");
const fileCache = new Map<string, string>();
/**
 * A file from ./files as the box gets it, read once (one `pulumi up` renders the document more than once). Scripts,
 * units and settings keep their shebang and shellcheck directives but lose every other comment line: the commented
 * source is in this repository (each file on the box names it: see its path), and Hetzner's 32 KiB user-data limit is
 * shared by everything the box needs (the comments would take about a sixth of it).
 */
export function boxFile(name: string): string {
  let text = fileCache.get(name);
  if (text === undefined) {
    text = readFileSync(join(FILES_DIR, name), "utf8");
    if (/\.(sh|service|timer|conf|py)$/.test(name)) text = withoutInnerComments(text);
    if (name.endsWith(".sh")) text = withoutIndentation(text);
    fileCache.set(name, text);
  }
  return text;
}

/** Drops full-line comments but a shebang and shellcheck directives. */
export function withoutInnerComments(script: string): string {
  return script
    .split("\n")
    .filter((l, i) => !/^\s*#/.test(l) || (i === 0 && l.startsWith("#!")) || /^\s*# shellcheck /.test(l))
    .join("\n");
}

/**
 * Drops the leading blanks of a shell script's lines, which bash ignores, but inside a here-document (whose lines are
 * text: provision.sh's Python) and after a backslash-newline. The box's scripts have no other text that spans lines
 * but an awk program, to which blanks mean nothing either (test/cloud-init.test.ts compares every script's functions
 * before and after, and runs shellcheck on the result; the boot test runs it).
 */
export function withoutIndentation(script: string): string {
  let until: string | undefined;
  let previous = "";
  return script
    .split("\n")
    .map((line) => {
      if (until !== undefined) {
        if (line === until) until = undefined;
        return line;
      }
      const heredoc = /<<-?\s*(?:'([A-Za-z_]+)'|"([A-Za-z_]+)"|\\?([A-Za-z_]+))/.exec(line.replace(/<<</g, ""));
      if (heredoc) until = heredoc[1] ?? heredoc[2] ?? heredoc[3];
      // the line after a backslash-newline goes on the same line: its blanks may separate two words
      const continued = previous.endsWith("\\");
      previous = line;
      return continued ? line : line.replace(/^[ \t]+/, "");
    })
    .join("\n");
}

/** KEY=VALUE lines; refuses values that could end a line early or hide a second entry. */
export function envFile(entries: Record<string, string | undefined>): string {
  return Object.entries(entries)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([key, value]) => {
      if (!/^[A-Z_][A-Z0-9_]*$/.test(key)) throw new Error(`env file: bad key ${JSON.stringify(key)}`);
      if (/[\r\n\0]/.test(value)) throw new Error(`env file: the value of ${key} spans more than one line`);
      return `${key}=${value}\n`;
    })
    .join("");
}

export interface WriteFile {
  path: string;
  content: string;
  encoding?: "gz+b64";
  owner?: string;
  permissions: string;
  defer?: boolean;
}

export const claudePlatform = (arch: BoxSpec["arch"]) => (arch === "arm64" ? "linux-arm64" : "linux-x64");

/** Packages the box needs beyond the image; curl and ca-certificates are on cloud images but cost nothing to name. */
export function packagesFor(spec: BoxSpec): string[] {
  const base = [
    "tmux",
    "git",
    "mosh",
    "curl",
    "ca-certificates",
    "nftables",
    // compressed swap in RAM (see files/zram-generator.conf)
    "systemd-zram-generator",
    // agentbox's own logs, rotated by size (see files/logrotate.conf)
    "logrotate",
    // formats the volume (cloud images have it; naming it costs nothing)
    ...(spec.volume ? ["e2fsprogs"] : []),
    // the hooks read Claude Code's JSON on every box (their turn and login records), not only with notifications
    "jq",
  ];
  // npm fetches Claude Code's platform package (the binary itself does not need Node). Only nodejs is installed:
  // the provision script gets npm through corepack, far cheaper than Debian's npm package (see provision.sh).
  // python3: the download install's checksum check, and agentbox:approvals' receiver (cloud images have it anyway)
  const python = spec.claudeCode.installMethod === "download" || spec.approvals ? ["python3"] : [];
  return [...base, ...(spec.claudeCode.installMethod === "npm" ? ["nodejs"] : []), ...python];
}

/**
 * Package lists are refreshed and the packages installed; upgrades are left off the path to a running agent. On a
 * baked image (cloud-init/bake.ts) only what the image lacks is installed: with nothing missing, no list refresh.
 */
function packageSteps(spec: BoxSpec): Record<string, unknown> {
  const baked = spec.bakedImage?.packages;
  const missing = packagesFor(spec).filter((p) => !baked?.includes(p));
  return missing.length
    ? { package_update: true, package_upgrade: false, packages: missing }
    : { package_update: false, package_upgrade: false };
}

/** The document as an object, before serialisation: what the tests inspect. */
export function buildCloudConfig(spec: BoxSpec): Record<string, unknown> {
  const home = homeOf(spec.user);
  const workspace = `${home}/workspace`;
  const lib = BOX_PATHS.lib;

  const boxEnv = envFile({
    AGENT_USER: spec.user,
    AGENT_HOME: home,
    WORKSPACE: workspace,
    CLAUDE_VERSION: spec.claudeCode.version,
    CLAUDE_INSTALL: spec.claudeCode.installMethod,
    CLAUDE_PLATFORM: claudePlatform(spec.arch),
    REPO_URL: spec.repo?.url,
    REPO_BRANCH: spec.repo?.branch,
    TAILSCALE: spec.tailscale ? "1" : "0",
    TAILSCALE_HOSTNAME: spec.tailscale?.hostname,
    TAILSCALE_TAGS: spec.tailscale?.tags.length ? spec.tailscale.tags.join(",") : undefined,
    TAILSCALE_SSH: spec.tailscale ? (spec.tailscale.ssh ? "1" : "0") : undefined,
    UNATTENDED_UPGRADES: spec.unattendedUpgrades ? "1" : "0",
    EGRESS: spec.egressAllowlist ? "allowlist" : "open",
    BOX_PROJECT: spec.project,
    BOX_STACK: spec.stack,
    VOLUME: spec.volume ? "1" : undefined,
    VOLUME_GLOB: spec.volume?.deviceGlob,
    WORKFLOW: spec.workflow ? "1" : undefined,
    WORKFLOW_TIMEOUT_MINUTES: spec.workflow ? String(spec.workflow.timeoutMinutes) : undefined,
    REMOTE_CONTROL: spec.remoteControl ? "1" : undefined,
    PERMISSION_MODE: spec.permissionMode,
    WORKFLOW_PERMISSION_MODE: spec.workflowPermissionMode,
    APPROVALS: spec.approvals ? "1" : undefined,
    APPROVAL_TIMEOUT: spec.approvals ? String(spec.approvals.timeoutSeconds) : undefined,
    APPROVERS: spec.approvals?.approvers.length ? spec.approvals.approvers.join(",") : undefined,
    APPROVE_PORT: spec.approvals ? String(spec.approvals.port) : undefined,
    AGENTS: spec.agents?.map((a) => a.name).join(","),
    AGENT_MEMORY_HIGH_PCT: spec.agents ? String(agentMemoryShare(spec.agents.length).highPercent) : undefined,
    AGENT_MEMORY_MAX_PCT: spec.agents ? String(agentMemoryShare(spec.agents.length).maxPercent) : undefined,
    // what cloud-init installs, for provisioning resumed after a first boot that was cut short
    PACKAGES: packagesFor(spec).join(","),
    DISK_WARN_PCT: String(spec.upkeep.diskWarnPercent),
    WORKFLOW_KEEP_RUNS: String(spec.upkeep.workflowKeepRuns),
    MAINTENANCE_DAYS: spec.maintenanceWindow?.days.join(","),
    MAINTENANCE_START_MIN: spec.maintenanceWindow ? String(spec.maintenanceWindow.startMinute) : undefined,
    MAINTENANCE_END_MIN: spec.maintenanceWindow ? String(spec.maintenanceWindow.endMinute) : undefined,
  });

  const agentEnv = envFile({
    // The version is pinned by the stack: the box must not replace it behind the user's back.
    DISABLE_AUTOUPDATER: "1",
    ...(spec.auth ? { [spec.auth.variable]: spec.auth.value } : {}),
  });

  // Skips the first-run wizard and the folder-trust prompt, which nobody is there to answer on a fresh box. With
  // Remote Control, also its one-time "Enable Remote Control? (y/n)" (documented on Claude Code's Remote Control
  // page; where the answer is kept, `remoteDialogSeen`, is not: anthropics/claude-code#95892), which would hold a
  // supervised start forever.
  const claudeJson = `${JSON.stringify(
    {
      hasCompletedOnboarding: true,
      ...(spec.remoteControl ? { remoteDialogSeen: true } : {}),
      projects: Object.fromEntries(
        [workspace, ...(spec.agents ?? []).map((a) => agentWorkspace(spec.user, a.name))].map((w) => [
          w,
          { hasTrustDialogAccepted: true },
        ]),
      ),
    },
    null,
    2,
  )}\n`;

  // Claude Code's hooks record the agent's turn and login (the watcher reboots only between turns; a failed login is
  // reported) and send the notifications when the stack has them: asynchronous, never holding the agent up.
  const hook = (timeout: number) => ({
    hooks: [{ type: "command", command: `${lib}/notify hook`, timeout, async: true }],
  });
  // agentbox:approvals: the PermissionRequest hook asks the phone. Claude Code shows its prompt meanwhile and takes
  // the first answer; the hook's own limit is the request's plus a margin, so the receiver's "no answer" comes first.
  // The hooks after it (the call done, the turn over, a new prompt) tell the receiver what the terminal settled.
  const approve = (timeout: number, async: boolean) => ({
    hooks: [{ type: "command", command: `${BOX_PATHS.approve} hook`, timeout, ...(async ? { async } : {}) }],
  });
  const approvals = spec.approvals;
  const withApprovals = (event: string, groups: object[]) =>
    approvals ? { [event]: [...groups, approve(10, true)] } : { [event]: groups };
  const bypass = [spec.permissionMode, spec.workflowPermissionMode].includes("bypassPermissions");
  const managedSettings = `${JSON.stringify(
    {
      cleanupPeriodDays: spec.upkeep.conversationRetentionDays,
      // the stack chose bypassPermissions: its one-time warning, which nobody is there to accept, is not shown
      ...(bypass ? { skipDangerousModePermissionPrompt: true } : {}),
      hooks: {
        ...withApprovals("UserPromptSubmit", [hook(10)]),
        Notification: [hook(30)],
        ...withApprovals("Stop", [hook(30)]),
        ...withApprovals("StopFailure", [hook(30)]),
        ...(approvals
          ? { PermissionRequest: [approve(approvals.timeoutSeconds + 30, false)], PostToolUse: [approve(10, true)] }
          : {}),
      },
    },
    null,
    2,
  )}\n`;

  // Owned by the agent, readable by it alone. Deferred: the user does not exist yet when write_files normally runs.
  const agentFile = (path: string, content: string): WriteFile => ({
    path,
    content,
    owner: `${spec.user}:${spec.user}`,
    permissions: "0600",
    defer: true,
  });

  const writeFiles: WriteFile[] = [
    { path: `${lib}/lib.sh`, content: boxFile("lib.sh"), permissions: "0644" },
    { path: `${lib}/provision`, content: boxFile("provision.sh"), permissions: "0755" },
    { path: `${lib}/agent-service`, content: boxFile("agent-service.sh"), permissions: "0755" },
    { path: `${lib}/claude-session`, content: boxFile("claude-session.sh"), permissions: "0755" },
    { path: `${lib}/notify`, content: boxFile("notify.sh"), permissions: "0755" },
    { path: `${lib}/tmux.conf`, content: boxFile("tmux.conf"), permissions: "0644" },
    { path: `${lib}/home-files`, content: boxFile("home-files.sh"), permissions: "0755" },
    { path: BOX_PATHS.releaseHome, content: boxFile("release-home.sh"), permissions: "0755" },
    // the agent's one sudo rule: that command, without arguments (sudo's "" means none may be given)
    {
      path: BOX_PATHS.releaseSudoers,
      content: `${spec.user} ALL=(root) NOPASSWD: ${BOX_PATHS.releaseHome} ""\n`,
      permissions: "0440",
    },
    { path: BOX_PATHS.userSliceMemory, content: boxFile("memory-user-slice.conf"), permissions: "0644" },
    { path: BOX_PATHS.agentSliceMemory, content: boxFile("memory-app-slice.conf"), permissions: "0644" },
    { path: BOX_PATHS.zram, content: boxFile("zram-generator.conf"), permissions: "0644" },
    { path: BOX_PATHS.statusCommand, content: boxFile("agentbox-status.sh"), permissions: "0755" },
    { path: BOX_PATHS.waitReady, content: boxFile("wait-ready.sh"), permissions: "0755" },
    { path: BOX_PATHS.loginBanner, content: boxFile("login-banner.sh"), permissions: "0644" },
    // the one agent, or (agentbox:agents) the template of each agent's unit: never both, which a kept home could
    // otherwise start side by side on the same tmux socket
    ...(spec.agents
      ? [
          { path: BOX_PATHS.agents, content: agentsFile(spec.agents), permissions: "0644" },
          { path: `${lib}/agents.sh`, content: boxFile("agents.sh"), permissions: "0644" },
          { path: BOX_PATHS.agentUnit, content: boxFile("claude-agent@.service"), permissions: "0644" },
          { path: BOX_PATHS.agentsTmuxUnit, content: boxFile("agentbox-tmux.service"), permissions: "0644" },
        ]
      : [{ path: BOX_PATHS.unit, content: boxFile("claude-agent.service"), permissions: "0644" }]),
    { path: BOX_PATHS.sshd, content: boxFile("sshd.conf"), permissions: "0644" },
    { path: BOX_PATHS.watch, content: boxFile("watch.sh"), permissions: "0755" },
    { path: BOX_PATHS.watchService, content: boxFile("agentbox-watch.service"), permissions: "0644" },
    { path: BOX_PATHS.watchTimer, content: boxFile("agentbox-watch.timer"), permissions: "0644" },
    { path: BOX_PATHS.journald, content: boxFile("journald.conf"), permissions: "0644" },
    { path: BOX_PATHS.logrotate, content: boxFile("logrotate.conf"), permissions: "0644" },
    { path: BOX_PATHS.resumeUnit, content: boxFile("agentbox-resume.service"), permissions: "0644" },
    { path: BOX_PATHS.resumeWants, content: "[Unit]\nWants=agentbox-resume.service\n", permissions: "0644" },
    { path: BOX_PATHS.claudeManagedSettings, content: managedSettings, permissions: "0644" },
    ...(spec.approvals
      ? [
          { path: BOX_PATHS.approve, content: boxFile("approve.py"), permissions: "0755" },
          {
            path: BOX_PATHS.approveEnv,
            content: envFile({ NTFY_URL: spec.approvals.url, NTFY_TOKEN: spec.approvals.token }),
            owner: "root:root",
            permissions: "0600",
          },
          { path: BOX_PATHS.approveUnit, content: boxFile("agentbox-approve.service"), permissions: "0644" },
        ]
      : []),
    ...(spec.volume
      ? [
          { path: `${lib}/volume-mount`, content: boxFile("volume-mount.sh"), permissions: "0755" },
          { path: BOX_PATHS.volumeUnit, content: boxFile("agentbox-volume.service"), permissions: "0644" },
        ]
      : []),
    ...(spec.workflow
      ? [
          { path: `${lib}/workflow`, content: boxFile("workflow.sh"), permissions: "0755" },
          { path: BOX_PATHS.workflowUnit, content: boxFile("agentbox-workflow.service"), permissions: "0644" },
        ]
      : []),
    {
      path: BOX_PATHS.firewall,
      content: renderFirewall({
        denyMetadataTo: [spec.user],
        allowSshFrom: spec.allowSshFrom,
        ...(spec.egressAllowlist ? { egressAllowlistFor: [spec.user] } : {}),
      }),
      permissions: "0644",
    },
    { path: BOX_PATHS.firewallUnit, content: boxFile("agentbox-firewall.service"), permissions: "0644" },
    ...(spec.egressAllowlist
      ? [
          {
            path: BOX_PATHS.egressHosts,
            content: `# agentbox egress allow-list (the registries and the git host are added on the box)\n${[
              ...CLAUDE_EGRESS_HOSTS,
              ...spec.egressAllowlist.extraHosts,
            ].join("\n")}\n`,
            permissions: "0644",
          },
          { path: `${lib}/egress-refresh`, content: boxFile("egress-refresh.sh"), permissions: "0755" },
          { path: BOX_PATHS.egressService, content: boxFile("agentbox-egress.service"), permissions: "0644" },
          { path: BOX_PATHS.egressTimer, content: boxFile("agentbox-egress.timer"), permissions: "0644" },
        ]
      : []),
    ...(spec.unattendedUpgrades
      ? [
          { path: BOX_PATHS.upgrades, content: boxFile("unattended-upgrades.conf"), permissions: "0644" },
          { path: BOX_PATHS.needrestart, content: boxFile("needrestart.conf"), permissions: "0644" },
        ]
      : []),
    { path: BOX_PATHS.boxEnv, content: boxEnv, permissions: "0644" },
    ...(spec.notify
      ? [
          {
            path: BOX_PATHS.rootNotifyEnv,
            content: envFile({ NTFY_URL: spec.notify.url, NTFY_TOKEN: spec.notify.token }),
            owner: "root:root",
            permissions: "0600",
          },
        ]
      : []),
    ...(spec.tailscale
      ? [
          {
            path: BOX_PATHS.tailscaleKey,
            content: `${spec.tailscale.authKey}\n`,
            owner: "root:root",
            permissions: "0600",
          },
        ]
      : []),
    // the agent's private files, in its home
    agentFile(`${home}/.config/agentbox/agent.env`, agentEnv),
    ...(spec.notify
      ? [
          agentFile(
            `${home}/.config/agentbox/notify.env`,
            envFile({ NTFY_URL: spec.notify.url, NTFY_TOKEN: spec.notify.token }),
          ),
        ]
      : []),
    ...(spec.workflow
      ? [
          agentFile(
            `${home}/.config/agentbox/workflow-prompt`,
            spec.workflow.prompt.endsWith("\n") ? spec.workflow.prompt : `${spec.workflow.prompt}\n`,
          ),
        ]
      : []),
    agentFile(`${home}/.claude.json`, claudeJson),
  ];

  return {
    users: [
      {
        name: spec.user,
        gecos: "agentbox agent",
        shell: "/bin/bash",
        lock_passwd: true,
        ...(spec.sudo ? { sudo: "ALL=(ALL) NOPASSWD:ALL" } : {}),
        ssh_authorized_keys: [...spec.sshPublicKeys],
      },
      ...(spec.adminUser
        ? [
            {
              name: spec.adminUser,
              gecos: "agentbox admin",
              shell: "/bin/bash",
              lock_passwd: true,
              sudo: "ALL=(ALL) NOPASSWD:ALL",
              ssh_authorized_keys: [...spec.sshPublicKeys],
            },
          ]
        : []),
    ],
    disable_root: true,
    ssh_pwauth: false,
    ...packageSteps(spec),
    write_files: writeFiles,
    runcmd: [[`${lib}/provision`]],
  };
}

/** Files at least this large travel gzip-compressed (cloud-init's `encoding: gz+b64`); smaller ones stay readable. */
export const COMPRESS_FROM_BYTES = 300;

/**
 * The bytes of a gz+b64 file. Why fflate and not node:zlib: the user-data must be byte-identical wherever
 * `pulumi up` runs, or the server is replaced. zlib's output differs between builds (Node 20's and Node 24's
 * bundled zlib are not the same), while fflate is plain JavaScript, pinned to an exact version in package.json.
 * The gzip header's time is zero for the same reason.
 */
export function gzipForBox(text: string): string {
  return Buffer.from(gzipSync(Buffer.from(text, "utf8"), { level: 9, mtime: 0 })).toString("base64");
}

/** Large files travel compressed; the settings (KEY=VALUE env files) always stay readable. */
export const compressed = (f: { path: string; content: string }) =>
  Buffer.byteLength(f.content, "utf8") >= COMPRESS_FROM_BYTES && !f.path.endsWith(".env");

/** write_files as the cloud receives them: the large ones compressed (this document's and the image builder's). */
export const forTheCloud = (files: readonly WriteFile[]): WriteFile[] =>
  files.map((f) => (compressed(f) ? { ...f, encoding: "gz+b64", content: gzipForBox(f.content) } : f));

/** The document with its large files compressed: what the cloud receives. */
export function compressedCloudConfig(spec: BoxSpec): Record<string, unknown> {
  const doc = buildCloudConfig(spec);
  return { ...doc, write_files: forTheCloud(doc.write_files as WriteFile[]) };
}

/** YAML 1.1 (the version cloud-init's PyYAML reads), deterministic for equal documents. */
export const yaml11 = (doc: Record<string, unknown>): string =>
  stringify(doc, { version: "1.1", lineWidth: 0, blockQuote: "literal", aliasDuplicateObjects: false });

/** A #cloud-config text, refused when it is over the limit unless `limited` is false. `what` names it in the error. */
export function cloudConfigText(doc: Record<string, unknown>, what: string, limited = true): string {
  const text = `#cloud-config\n${yaml11(doc)}`;
  const bytes = Buffer.byteLength(text, "utf8");
  if (limited && bytes > USER_DATA_LIMIT_BYTES) {
    throw new Error(`${what} is ${bytes} bytes, over Hetzner's ${USER_DATA_LIMIT_BYTES}-byte limit`);
  }
  return text;
}

/**
 * The #cloud-config text of a box, deterministic for equal specs: its large files compressed, or with `readable`
 * every file as it is, for people to review (npm run render -- --readable). No limit here: each cloud's applies to
 * what it receives (renderUserData).
 */
export function renderCloudConfig(spec: BoxSpec, opts: { readable?: boolean } = {}): string {
  return cloudConfigText(opts.readable ? buildCloudConfig(spec) : compressedCloudConfig(spec), "", false);
}

/**
 * How each cloud takes the user-data, and how much of it.
 * - Hetzner refuses more than 32 KiB, and binary data. cloud-init's Hetzner datasource base64-decodes the user-data
 *   it is given (cloud-init 20.3 and later: `util.maybe_b64decode` in DataSourceHetzner.py) and cloud-init unpacks a
 *   gzip-compressed document: so the whole readable document travels gzip-compressed and base64-encoded, a third of
 *   its size, where compressing file by file would leave the YAML around them and each file's own dictionary.
 * - DigitalOcean takes up to 64 KiB and decodes nothing: the #cloud-config text with its large files compressed.
 */
export const USER_DATA_DELIVERY = {
  hetzner: { limitBytes: 32 * 1024, encoding: "gzip+base64", cloud: "Hetzner" },
  digitalocean: { limitBytes: 64 * 1024, encoding: "text", cloud: "DigitalOcean" },
} as const;
export type UserDataTarget = keyof typeof USER_DATA_DELIVERY;

/** The user-data as the cloud receives it, deterministic for equal specs; refused over the cloud's limit. */
export function renderUserData(spec: BoxSpec, target: UserDataTarget): string {
  const delivery = USER_DATA_DELIVERY[target];
  const sent =
    delivery.encoding === "gzip+base64"
      ? gzipForBox(renderCloudConfig(spec, { readable: true }))
      : renderCloudConfig(spec);
  const bytes = Buffer.byteLength(sent, "utf8");
  if (bytes > delivery.limitBytes) {
    const how = delivery.encoding === "gzip+base64" ? " gzip-compressed and base64-encoded" : "";
    throw new Error(
      `the rendered user-data is ${bytes} bytes${how}, over ${delivery.cloud}'s ${delivery.limitBytes}-byte limit`,
    );
  }
  return sent;
}

/** The #cloud-config text of user-data as a cloud received it (what cloud-init reads, whichever the encoding). */
export function cloudConfigOf(userData: string): string {
  if (userData.startsWith("#cloud-config")) return userData;
  return Buffer.from(gunzipSync(Buffer.from(userData, "base64"))).toString("utf8");
}
