import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import * as tailscale from "@pulumi/tailscale";
import {
  BOX_PATHS,
  TMUX_SESSION,
  TMUX_SOCKET,
  agentWorkspace,
  renderCloudConfig,
  renderUserData,
} from "../cloud-init/render";
import type { AgentBoxArgs, SecretArg } from "./args";
import type { Cloud } from "./catalogue";
import { type BoxSecrets, boxSecretsOf, boxSpecOf } from "./boxSpec";
import { placeholderSshKey } from "./cloudSshKey";
import { type AgentBoxConfig, ConfigError, NAMESPACE, SECRET_KEYS, boxIdentity } from "./config";
import { digitalOceanHost } from "./hosts/digitalocean";
import { hetznerHost } from "./hosts/hetzner";
import type { Host } from "./hosts/types";
import { systemProbe } from "./sshAccess";
import { checkAgentBox } from "./stackConfig";
import { TailnetDeviceCleanup, chooseTailnetAuth } from "./tailnetDevice";

export type { AgentArgs, AgentBoxArgs, TailnetApiArgs } from "./args";

/** The box's own secrets, as the program holds them; the tailnet key is minted here. */
export type StackSecrets = Omit<BoxSecrets, "tailnetKey">;

/** The Pulumi type of the component: `<package>:index:<class>`, as the package schema names it. */
export const AGENT_BOX_TYPE = "agentbox:index:AgentBox";

/** A single-use Tailscale key is valid this long: enough for a slow first boot, useless to anyone who reads it later. */
export const TAILNET_KEY_EXPIRY_SECONDS = 3600;
/**
 * What the release before a delete runs on the user's machine (see AgentBox.releaseBeforeDelete): ssh to the box as
 * the agent, whose one sudo rule runs agentbox-release-home. Best effort: when the box cannot be reached (stopped,
 * off the tailnet), it says so and destroy goes on, and the cloud detaches the volume as it would without it.
 * Host keys are not checked: a replaced box has a new one under the same name, and the command sends no secret.
 */
export const RELEASE_SCRIPT = [
  "key=",
  'if [ -n "${AGENTBOX_SSH_KEY_FILE:-}" ]; then key="-i $AGENTBOX_SSH_KEY_FILE -o IdentitiesOnly=yes"; fi',
  "# shellcheck disable=SC2086 # $key is options or nothing",
  "if ssh -o BatchMode=yes -o ConnectTimeout=20 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \\",
  `  -o LogLevel=ERROR $key "$AGENTBOX_SSH_TARGET" 'cd / && sudo -n ${BOX_PATHS.releaseHome}'; then exit 0; fi`,
  'echo "agentbox: could not release the box over SSH ($AGENTBOX_SSH_TARGET): the cloud now takes its volume or server from a running box" >&2',
  "",
].join("\n");

/** Stands in for the tailnet key in the copy of the user-data that names the key (see tailnetKeyDescription). */
const KEY_PLACEHOLDER = "<tailnet key>";

export function hostFor(cloud: Cloud): Host {
  switch (cloud) {
    case "hetzner":
      return hetznerHost;
    case "digitalocean":
      return digitalOceanHost;
    default: {
      const never: never = cloud;
      throw new Error(`no host module for ${String(never)}`);
    }
  }
}

/** The image the server boots: the stack's baked image when it names one (checked in bakedImage.ts), else the cloud's. */
/**
 * Prints the time, UTC, as ISO 8601: the command that records when the stack's Claude Code credential was set. Node
 * runs `pulumi up` anyway, wherever that is (a shell's `date` flags differ between systems).
 */
export const CREDENTIAL_CLOCK = `node -e "console.log(new Date().toISOString())"`;

/** Which argument (stack key) holds the box's Claude Code credential (an enum in the package schema). */
export const CredentialKey = { claudeOauthToken: "claudeOauthToken", anthropicApiKey: "anthropicApiKey" } as const;
export type CredentialKey = (typeof CredentialKey)[keyof typeof CredentialKey];

/** What the stack records of its Claude Code credential: which key holds it and when it was set (never the value). */
export interface CredentialRecord {
  key: CredentialKey;
  setAt: string;
}

/** The workflow's settings, as the `workflow` output gives them (the prompt stays on the box). */
export interface WorkflowOutput {
  timeoutMinutes: number;
  /** Where the box keeps the workflow's state (`npm run workflow` reads it). */
  statePath: string;
}

export const bootImage = (config: AgentBoxConfig) => config.bakedImage?.id ?? config.image;

/**
 * The tailnet key's description names the box it was minted for: a hash of everything that goes into the
 * user-data except the key itself. Why: the key is single-use and spent by the first boot. If anything that
 * replaces the server changes (user-data, image, location), the description changes with it, which replaces the
 * key, so the new server gets a fresh key instead of the spent one. Nothing else about the key changes on a later
 * `pulumi up`: `recreateIfInvalid: "never"` keeps the provider from minting a new key merely because the old one
 * was used or has expired, which would change the user-data and replace a running box.
 */
export function tailnetKeyDescription(config: AgentBoxConfig, secrets: StackSecrets | undefined): string {
  const withoutKey = boxSpecOf(config, { ...secrets, tailnetKey: KEY_PLACEHOLDER });
  const digest = createHash("sha256")
    .update(renderCloudConfig(withoutKey, { readable: true }))
    .update(`\0${config.cloud}\0${bootImage(config)}\0${config.location}`)
    .digest("hex")
    .slice(0, 16);
  return `agentbox ${digest}`;
}

/**
 * Each box's check of its secrets given as Outputs, which settles once they passed (none when every secret was
 * given as text). Kept beside the box rather than on it: Pulumi's schema inference makes every property an output.
 */
const CHECKED = new WeakMap<pulumi.Resource, pulumi.Output<pulumi.Resource[]>>();

/** The names each box of this program has taken (keyed by the engine connection: mocks make one per test program). */
const taken = new WeakMap<object, Map<string, string>>();

/**
 * Several boxes in one program (a fleet) must not meet in the cloud or on the tailnet: their Pulumi names differ,
 * which makes their cloud names and default tailnet names differ, but an explicit tailscaleHostname may repeat
 * another box's. Refused here with both boxes named, before the second one creates anything.
 */
function claimNames(name: string, config: AgentBoxConfig): void {
  const monitor = (pulumi.runtime.getMonitor() as object | undefined) ?? taken;
  let names = taken.get(monitor);
  if (!names) taken.set(monitor, (names = new Map()));
  const claims: { key: string; problem: (holder: string) => string }[] = [
    {
      key: `cloud\0${config.cloudName}`,
      problem: (holder) =>
        `the cloud name ${config.cloudName}: another AgentBox of this program, "${holder}" (under another parent), has it: its server, SSH key, firewall and volume. Fix: give one of the boxes another name (a program's boxes need names of their own, whatever their parents)`,
    },
  ];
  if (config.tailscale.enabled) {
    claims.push({
      key: `tailnet\0${config.tailscale.hostname}`,
      problem: (holder) =>
        `tailscaleHostname: ${config.tailscale.hostname} is the tailnet name of another AgentBox of this program, "${holder}": each box's cleanup would remove the other's device. Fix: another tailscaleHostname for one of them (unset, each box's default is its own)`,
    });
  }
  const problems = claims.flatMap(({ key, problem }) => {
    const holder = names.get(key);
    return holder !== undefined ? [problem(holder)] : [];
  });
  if (problems.length) throw new ConfigError(problems, `AgentBox "${name}"`);
  for (const { key } of claims) names.set(key, name);
}

/** Whether an argument is given: an empty text counts as not set, as an empty stack value does. */
const given = (v: unknown) => v !== undefined && v !== null && !(typeof v === "string" && v.trim() === "");

/** The Tailscale API credentials the box's device cleanup uses, when they are complete. */
function tailnetApiOf(name: string, args: AgentBoxArgs) {
  const raw = args.tailnetApi;
  if (!raw) return undefined;
  const api = Object.fromEntries(Object.entries(raw).filter(([, v]) => given(v))) as typeof raw;
  const chosen = chooseTailnetAuth(api);
  if (chosen && "missing" in chosen) {
    throw new ConfigError(
      [`tailnetApi: half a Tailscale OAuth client (${chosen.missing} is missing). Fix: give both, or apiKey instead`],
      `AgentBox "${name}"`,
    );
  }
  return chosen && { ...chosen, ...(api.tailnet ? { tailnet: api.tailnet } : {}) };
}

/** One of agentbox:agents, as the stack's `agents` output lists it. */
export interface AgentOutput {
  name: string;
  workspace: string;
  /** What it works on, in words. */
  work: string;
  /** Its systemd user unit on the box. */
  unit: string;
  attachCommand: string;
}

/**
 * One always-on agent box: the cloud's SSH key, firewall and server, plus a tailnet key when Tailscale is on.
 * Provider-agnostic; the cloud's own module (components/hosts) owns its quirks.
 */
export class AgentBox extends pulumi.ComponentResource {
  public readonly cloud: pulumi.Output<string>;
  public readonly serverType: pulumi.Output<string>;
  public readonly memoryGb: pulumi.Output<number>;
  public readonly monthlyPrice: pulumi.Output<string>;
  public readonly ipv4: pulumi.Output<string>;
  public readonly ipv6: pulumi.Output<string>;
  public readonly tailnetHostname: pulumi.Output<string | undefined>;
  public readonly sshCommand: pulumi.Output<string>;
  /** Over the tailnet only: without Tailscale the firewall admits TCP 22 alone, and mosh needs UDP 60000-61000. */
  public readonly moshCommand: pulumi.Output<string | undefined>;
  /** The one agent's session; with agentbox:agents, the first agent's. */
  public readonly attachCommand: pulumi.Output<string>;
  /** With agentbox:agents: each agent, where it works and how to attach to it (same tmux server: prefix s switches). */
  public readonly agents: pulumi.Output<AgentOutput[] | undefined>;
  /** The rendered #cloud-config (a secret: it carries the credentials). */
  public readonly userData: pulumi.Output<string>;
  /** `user@address` for ssh (what `npm run status` and `npm run workflow` use). */
  public readonly sshTarget: pulumi.Output<string>;
  /** The persistent volume's cloud id, when the stack has one. */
  public readonly volumeId: pulumi.Output<string | undefined>;
  /** The workflow's settings, when the stack has one (its prompt stays on the box). */
  public readonly workflow: pulumi.Output<WorkflowOutput | undefined>;
  /** What the readiness wait printed (empty when the stack skips it). */
  public readonly ready: pulumi.Output<string>;
  /** When the stack's Claude Code credential was set (`npm run status` warns before a setup token's year ends). */
  public readonly credential: pulumi.Output<CredentialRecord | undefined>;

  /**
   * @param name the box's name: part of its names in the cloud and on the tailnet, unless it is "agentbox" (the one
   *   box of a stack program, whose names are `<project>-<stack>`)
   * @param args what the box is (see AgentBoxArgs); checked before any resource is created
   */
  constructor(name: string, args: AgentBoxArgs, opts?: pulumi.ComponentResourceOptions) {
    // Throws ConfigError, naming each problem and its fix, before anything is registered (this component too).
    // Secrets given as Outputs are checked in their stand-ins' place here, and for real below once they are known.
    const config = checkAgentBox(name, args, { ssh: systemProbe });
    claimNames(name, config);
    const tailnetApi = tailnetApiOf(name, args);
    super(AGENT_BOX_TYPE, name, {}, opts);
    for (const warning of config.warnings) void pulumi.log.warn(warning, this);

    const set: SecretArg[] = SECRET_KEYS.filter((k) => given(args[k]));
    const pending = set.some((k) => typeof args[k] !== "string");
    // Every secret argument is a Pulumi secret from here on, whatever it was given as.
    const values = pulumi.secret(
      pulumi.all(Object.fromEntries(set.map((k) => [k, args[k]])) as Partial<Record<SecretArg, pulumi.Input<string>>>),
    );
    const recheck = values.apply((v) => {
      if (!pending) return { config };
      // what the box is made of was decided on which secrets are set: one that turns out empty cannot be unset now
      const empty = set.filter((k) => !given(v[k]));
      if (empty.length) {
        const problems = empty.map(
          (k) =>
            `${NAMESPACE}:${k}: given as an Output whose value is empty, after the box was planned with it. Fix: leave the argument out, or give it its value`,
        );
        return { config, problem: new ConfigError(problems, `AgentBox "${name}"`) };
      }
      try {
        return { config: checkAgentBox(name, args, { secret: (k) => v[k] ?? "" }) };
      } catch (e) {
        return { config, problem: e };
      }
    });
    // The configuration with the secrets' real values: what the user-data and the tailnet key's name are made of.
    const resolved = recheck.apply((r) => r.config);
    const secrets: pulumi.Output<StackSecrets> = resolved.apply(boxSecretsOf);
    // Every child waits for that check, which fails with one error (so the engine reports it once, with the check's
    // own words and no stack trace): a bad secret creates nothing.
    const checked = pending
      ? recheck.apply((r) => {
          if (r.problem === undefined) return [] as pulumi.Resource[];
          const why = r.problem instanceof Error ? r.problem.message : String(r.problem);
          throw new pulumi.ResourceError(why, this, r.problem instanceof ConfigError);
        })
      : undefined;
    if (checked) CHECKED.set(this, checked);
    const description = resolved.apply((c) => tailnetKeyDescription(c, boxSecretsOf(c)));

    // Removes the box's tailnet device on destroy, and any offline leftover with its hostname on create, so that
    // the box keeps its name instead of becoming <name>-1. Replaced (delete first) whenever the server is: the
    // user-data below depends on it, which makes the engine delete the old server before the old device.
    const cleanup =
      config.tailscale.enabled && tailnetApi
        ? new TailnetDeviceCleanup(
            `${name}-tailnet-device`,
            { hostname: config.tailscale.hostname, generation: description, ...tailnetApi },
            this.childOptions(),
          )
        : undefined;
    const cleaned = cleanup ? cleanup.generation : pulumi.output("");

    const tailnetKey = config.tailscale.enabled
      ? new tailscale.TailnetKey(
          `${name}-tailnet-key`,
          {
            reusable: false,
            ephemeral: false,
            preauthorized: true,
            tags: config.tailscale.tags,
            expiry: TAILNET_KEY_EXPIRY_SECONDS,
            recreateIfInvalid: "never",
            description,
          },
          this.childOptions(),
        ).key
      : pulumi.output<string | undefined>(undefined);
    const userData = pulumi
      .all([resolved, tailnetKey, cleaned])
      .apply(([c, k]) => renderUserData(boxSpecOf(c, { ...boxSecretsOf(c), tailnetKey: k }), c.cloud));
    // Carries the agent's credential and the tailnet key: secret in state and outputs, whatever fed it.
    this.userData = pulumi.secret(userData);

    const host = hostFor(config.cloud)(
      {
        name,
        cloudName: config.cloudName,
        location: config.location,
        serverType: config.serverType.name,
        image: bootImage(config),
        cloudSshPublicKey: placeholderSshKey(
          config.project,
          config.stack,
          config.sshPublicKeys[0] ?? "",
          ...boxIdentity(name),
        ),
        allowSshFrom: config.allowSshFrom,
        userData: this.userData,
        labels: { project: config.project, stack: config.stack, ...(boxIdentity(name).length ? { box: name } : {}) },
        ...(config.volume ? { volume: config.volume } : {}),
        ...(cleanup ? { serverDependsOn: [cleanup] } : {}),
        ...(checked ? { checked } : {}),
      },
      this,
    );

    const t = config.serverType;
    this.cloud = pulumi.output(config.cloud);
    this.serverType = pulumi.output(t.name);
    this.memoryGb = pulumi.output(t.memoryGb);
    this.monthlyPrice = pulumi.output(
      `${t.monthlyPrice.toFixed(2)} ${config.catalogue.currency}/month (catalogue of ${config.catalogue.asOf}, excl. VAT)`,
    );
    this.ipv4 = host.ipv4;
    this.ipv6 = host.ipv6;
    this.tailnetHostname = pulumi.output(config.tailscale.enabled ? config.tailscale.hostname : undefined);
    this.volumeId = host.volumeId ?? pulumi.output(undefined);
    this.workflow = pulumi.output(
      config.workflow
        ? { timeoutMinutes: config.workflow.timeoutMinutes, statePath: BOX_PATHS.workflowState }
        : undefined,
    );

    // Over the tailnet by MagicDNS name when Tailscale is on, else the public address (allowSshFrom must cover you).
    const address = config.tailscale.enabled ? pulumi.output(config.tailscale.hostname) : host.ipv4;
    const attachTo = (session: string) => `tmux -L ${TMUX_SOCKET} attach -t ${session}`;
    const attach = attachTo(config.agents?.[0]?.name ?? TMUX_SESSION);
    this.sshTarget = pulumi.interpolate`${config.user}@${address}`;
    this.sshCommand = pulumi.interpolate`ssh ${config.user}@${address}`;
    this.moshCommand = config.tailscale.enabled
      ? pulumi.interpolate`mosh ${config.user}@${address} -- ${attach}`
      : pulumi.output(undefined);
    this.attachCommand = pulumi.interpolate`ssh -t ${config.user}@${address} ${attach}`;
    const agents = config.agents;
    this.agents = agents
      ? address.apply((a) =>
          agents.map((agent) => ({
            name: agent.name,
            workspace: agentWorkspace(config.user, agent.name),
            work:
              agent.work.kind === "worktree"
                ? `worktree of the stack's repository, branch ${agent.work.branch}`
                : agent.work.kind === "repo"
                  ? `clone of ${agent.work.url}${agent.work.branch ? ` (${agent.work.branch})` : ""}`
                  : "an empty folder",
            unit: `claude-agent@${agent.name}.service`,
            attachCommand: `ssh -t ${config.user}@${a} ${attachTo(agent.name)}`,
          })),
        )
      : pulumi.output(undefined);

    this.ready = config.ready.wait
      ? this.waitForReady(name, config, address, host.server, host.serverId)
      : pulumi.output("");
    this.releaseBeforeDelete(name, config, address, host);
    this.credential = this.recordCredential(name, config, secrets);

    this.registerOutputs({
      cloud: this.cloud,
      serverType: this.serverType,
      memoryGb: this.memoryGb,
      monthlyPrice: this.monthlyPrice,
      ipv4: this.ipv4,
      ipv6: this.ipv6,
      tailnetHostname: this.tailnetHostname,
      sshCommand: this.sshCommand,
      sshTarget: this.sshTarget,
      moshCommand: this.moshCommand,
      attachCommand: this.attachCommand,
      agents: this.agents,
      userData: this.userData,
      volumeId: this.volumeId,
      workflow: this.workflow,
      ready: this.ready,
      credential: this.credential,
    });
  }

  /** A child's options: this box as its parent, after `deps` and after the check of secrets given as Outputs. */
  private childOptions(deps: pulumi.Resource[] = []): pulumi.CustomResourceOptions {
    const checked = CHECKED.get(this);
    if (checked) return { parent: this, dependsOn: checked.apply(() => deps) };
    return { parent: this, ...(deps.length ? { dependsOn: deps } : {}) };
  }

  /**
   * The day the credential was set, kept in the state: a resource whose one command prints the time when it is
   * created, and which a new credential replaces (its digest is the trigger; a secret, though a digest of a random
   * token tells nothing). A `claude setup-token` token lasts a year and the box cannot see its age: the stack can.
   */
  private recordCredential(
    name: string,
    config: AgentBoxConfig,
    secrets: pulumi.Output<StackSecrets>,
  ): pulumi.Output<CredentialRecord | undefined> {
    const auth = config.auth;
    if (auth.kind === "none") return pulumi.output(undefined);
    const digest = secrets.apply((x) =>
      createHash("sha256")
        .update(`${auth.key}\0${x.agentAuth ?? ""}`)
        .digest("hex"),
    );
    const record = new command.local.Command(
      `${name}-credential`,
      { create: CREDENTIAL_CLOCK, triggers: [pulumi.secret(digest)], logging: "none" },
      this.childOptions(),
    );
    return record.stdout.apply((out) => ({ key: auth.key, setAt: out.trim() }));
  }

  /**
   * Destroy, and a replacement of the server, first stop the agent and unmount its home on the box (claude saves its
   * conversation, the volume's filesystem is clean), then the engine detaches the volume and deletes the server:
   * this resource depends on both, so it is deleted before them, and its delete is the release. Hetzner deletes a
   * server hard when it has not shut down within ~31 s, and the volume attachment would otherwise go first, from a
   * box still running on it. A new server gets a new one (triggers), whose release targets that server.
   */
  private releaseBeforeDelete(
    name: string,
    config: AgentBoxConfig,
    address: pulumi.Output<string>,
    host: { server: pulumi.Resource; serverId: pulumi.Output<string>; volumeAttachment?: pulumi.Resource },
  ): command.local.Command {
    return new command.local.Command(
      `${name}-release`,
      {
        delete: RELEASE_SCRIPT,
        environment: {
          AGENTBOX_SSH_TARGET: pulumi.interpolate`${config.user}@${address}`,
          ...(config.sshKeyFile ? { AGENTBOX_SSH_KEY_FILE: config.sshKeyFile } : {}),
        },
        triggers: [host.serverId],
        logging: "stdoutAndStderr",
      },
      {
        ...this.childOptions([host.server, ...(host.volumeAttachment ? [host.volumeAttachment] : [])]),
        // the agent's units stop within their own limits (30 s the agent, 60 s the workflow), the SSH dial 20 s
        customTimeouts: { delete: "5m" },
      },
    );
  }

  /**
   * `pulumi up` returns once the box is ready: the agent user runs agentbox-wait-ready over SSH (the user's own
   * SSH agent holds the key), which prints progress and ends with the box's own error when it fails. A new server
   * runs it again; an unchanged one does not.
   */
  private waitForReady(
    name: string,
    config: AgentBoxConfig,
    address: pulumi.Output<string>,
    server: pulumi.Resource,
    serverId: pulumi.Output<string>,
  ): pulumi.Output<string> {
    const seconds = config.ready.timeoutMinutes * 60;
    const wait = new command.remote.Command(
      `${name}-ready`,
      {
        connection: {
          host: address,
          user: config.user,
          // Until sshd (or the tailnet) is up, every dial fails; the provider retries with a growing pause of up
          // to ~5 s, so this many failures spans about the timeout. The wait itself is bounded on the box too.
          dialErrorLimit: seconds / 5,
          perDialTimeout: 10,
          // CI: the key file the stack names (checked before anything is created); else the user's ssh-agent
          ...(config.sshKeyFile ? { privateKey: pulumi.secret(readFileSync(config.sshKeyFile, "utf8")) } : {}),
        },
        create: `${BOX_PATHS.waitReady} --timeout ${seconds}`,
        triggers: [serverId],
        logging: "stdoutAndStderr",
        addPreviousOutputInEnv: false,
      },
      { ...this.childOptions([server]), customTimeouts: { create: `${config.ready.timeoutMinutes + 5}m` } },
    );
    return wait.stdout;
  }
}
