/**
 * The baked image's builder: a #cloud-config for a throw-away server that becomes an image (a Hetzner or
 * DigitalOcean snapshot, or the boot harness's baked root). No Pulumi here.
 *
 * It is made from the box's own files: the same package set as a box (packagesFor) and provision.sh in its
 * `--bake` mode (with bake.sh, its image steps), which installs the pinned Claude Code exactly as a box does, records what the image holds in
 * /etc/agentbox/image, then seals the image (cloud-init clean, no package lists, no host keys) and powers off.
 * Nothing per box goes in: no users, no keys, no secrets, no firewall, no services.
 */
import { createHash } from "node:crypto";
import {
  BOX_PATHS,
  type BoxSpec,
  type WriteFile,
  boxFile,
  claudePlatform,
  cloudConfigText,
  envFile,
  forTheCloud,
  packagesFor,
  yaml11,
} from "./render";

export const BAKE_PATHS = {
  /** The builder's settings (removed when the image is sealed). */
  env: "/etc/agentbox/bake.env",
  /** What the image holds, KEY=VALUE: claude_version, claude_platform, packages, builder, os, created. */
  image: "/etc/agentbox/image",
  log: "/var/log/agentbox/bake.log",
} as const;

/** What an image is baked for: the stack's Claude Code and the server's architecture. */
export interface BakeSpec {
  arch: BoxSpec["arch"];
  claudeCode: BoxSpec["claudeCode"];
}

export const bakeSpecOf = (spec: Pick<BoxSpec, "arch" | "claudeCode">): BakeSpec => ({
  arch: spec.arch,
  claudeCode: { version: spec.claudeCode.version, installMethod: spec.claudeCode.installMethod },
});

/** A box with every option on, so that the image has every package any box of the stack may ask for. */
const EVERY_OPTION: Omit<BoxSpec, "arch" | "claudeCode"> = {
  project: "-",
  stack: "-",
  user: "agent",
  sudo: false,
  allowSshFrom: [],
  unattendedUpgrades: true,
  egressAllowlist: { extraHosts: [] },
  sshPublicKeys: [],
  tailscale: { authKey: "-", hostname: "-", tags: [], ssh: true },
  repo: { url: "-" },
  volume: { deviceGlob: "-" },
  workflow: { prompt: "-", timeoutMinutes: 1 },
  notify: { url: "-" },
  remoteControl: true,
  upkeep: { diskWarnPercent: 80, workflowKeepRuns: 1, conversationRetentionDays: 1 },
};

/** The image's packages, sorted: those of a box with every option on (what the image records and the box checks). */
export function bakePackages(spec: BakeSpec): string[] {
  return [...new Set(packagesFor({ ...EVERY_OPTION, ...spec }))].sort();
}

/** The document as an object; `builder` goes into the image's record (see builderHash). */
export function buildBakeConfig(spec: BakeSpec, builder = builderHash(spec)): Record<string, unknown> {
  const lib = BOX_PATHS.lib;
  const bakeEnv = envFile({
    CLAUDE_VERSION: spec.claudeCode.version,
    CLAUDE_INSTALL: spec.claudeCode.installMethod,
    CLAUDE_PLATFORM: claudePlatform(spec.arch),
    PACKAGES: bakePackages(spec).join(","),
    BUILDER: builder,
  });
  const files: WriteFile[] = [
    { path: `${lib}/lib.sh`, content: boxFile("lib.sh"), permissions: "0644" },
    { path: `${lib}/provision`, content: boxFile("provision.sh"), permissions: "0755" },
    { path: `${lib}/bake.sh`, content: boxFile("bake.sh"), permissions: "0644" },
    { path: BAKE_PATHS.env, content: bakeEnv, permissions: "0644" },
  ];
  return {
    // no users at all, not even the image's default one: every box makes its own
    users: [],
    disable_root: true,
    ssh_pwauth: false,
    package_update: true,
    // An image is where upgrades cost nothing: boxes made from it start with current packages.
    package_upgrade: true,
    packages: bakePackages(spec),
    write_files: forTheCloud(files),
    runcmd: [[`${lib}/provision`, "--bake"]],
  };
}

/**
 * The builder's identity: a hash of the bake document (the box's provision.sh and lib.sh, the package set, the
 * install method and the bake's own settings) with the Claude Code version and architecture left out, since those
 * are recorded on their own. A box refuses an image whose builder differs from the one in its own checkout.
 */
export function builderHash(spec: BakeSpec): string {
  const neutral: BakeSpec = {
    arch: "x86_64",
    claudeCode: { version: "0.0.0", installMethod: spec.claudeCode.installMethod },
  };
  return createHash("sha256")
    .update(yaml11(buildBakeConfig(neutral, "")))
    .digest("hex")
    .slice(0, 12);
}

/** The builder's #cloud-config text. */
export function renderBakeConfig(spec: BakeSpec): string {
  return cloudConfigText(buildBakeConfig(spec), "the bake user-data");
}
