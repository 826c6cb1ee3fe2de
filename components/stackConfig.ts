import * as pulumi from "@pulumi/pulumi";
import { USER_DATA_DELIVERY, renderUserData } from "../cloud-init/render";
import { type AgentBoxArgs, type SecretArg, notPlainProblems, rawConfigOf, stackArgs } from "./args";
import { boxSecretsOf, boxSpecOf } from "./boxSpec";
import {
  type AgentBoxConfig,
  ConfigError,
  DEFAULT_BOX_NAME,
  NAMESPACE,
  STACK_SUBJECT,
  agentboxKeys,
  credentialProblems,
  parseConfig,
  show,
} from "./config";
import { type SshProbe, sshAccessProblem, systemProbe } from "./sshAccess";
import { tailnetCredentials } from "./tailnetDevice";

/** As long as a real tailnet auth key (they are about 60 characters), so that the size check below is honest. */
const KEY_OF_REAL_LENGTH = `tskey-auth-${"x".repeat(60)}`;

/**
 * The user-data this config makes, measured before anything is created: each cloud has its limit (see
 * USER_DATA_DELIVERY), and only what the user wrote (a workflow prompt, many keys or hosts) can push it over.
 */
export function userDataProblem(config: AgentBoxConfig): string | undefined {
  try {
    renderUserData(
      boxSpecOf(config, {
        ...boxSecretsOf(config),
        tailnetKey: config.tailscale.enabled ? KEY_OF_REAL_LENGTH : undefined,
      }),
      config.cloud,
    );
    return undefined;
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    const limit = `(${USER_DATA_DELIVERY[config.cloud].limitBytes} bytes at most)`;
    // The phone approvals' receiver is a program of its own: on Hetzner it does not fit beside the box's scripts.
    if (config.approvals) {
      return `${NAMESPACE}:approvals: ${why} ${limit}: the receiver for answers from your phone does not fit beside the box's scripts. Fix: pulumi config set ${NAMESPACE}:cloud digitalocean (64 KiB of user-data), or pulumi config set ${NAMESPACE}:approvals false`;
    }
    // Several agents bring scripts of their own: on Hetzner, with every other option on, they may not fit.
    if (config.agents) {
      const others = [
        config.egress.mode === "allowlist" ? `${NAMESPACE}:egress open` : undefined,
        config.workflow ? `a shorter ${NAMESPACE}:${config.workflow.from}` : undefined,
      ].filter((x) => x !== undefined);
      return `${NAMESPACE}:agents: ${why} ${limit}: the box's scripts for several agents and every other option this stack turns on do not fit together. Fix: ${others.length ? `${others.join(" or ")}, or ` : ""}pulumi config set ${NAMESPACE}:cloud digitalocean (64 KiB), or pulumi config rm ${NAMESPACE}:agents`;
    }
    const key = config.workflow ? config.workflow.from : "sshPublicKeys";
    return `${NAMESPACE}:${key}: ${why} ${limit}. Fix: shorten ${NAMESPACE}:${key}${config.workflow ? " (commit the details to the repository and point the prompt at them)" : ""}`;
  }
}

/** A box's name in a program: it becomes part of the cloud's names and the tailnet name (see boxIdentity). */
const BOX_NAME = /^[a-z]([a-z0-9-]{0,22}[a-z0-9])?$/;

/**
 * Stands in for a secret argument whose value is not known yet (an Output): the form the check wants, about the
 * length of the real thing (the size check counts it), and a topic or token of its own per key (two keys may not
 * hold the same). The real value is checked again once it is known (see AgentBox).
 */
export const SECRET_STAND_IN: Record<SecretArg, string> = {
  claudeOauthToken: `sk-ant-oat01-${"x".repeat(95)}`,
  anthropicApiKey: `sk-ant-api03-${"x".repeat(95)}`,
  ntfyUrl: `https://ntfy.invalid/${"n".repeat(40)}`,
  ntfyToken: `tk_${"n".repeat(29)}`,
  approvalsNtfyUrl: `https://ntfy.invalid/${"a".repeat(40)}`,
  approvalsNtfyToken: `tk_${"a".repeat(29)}`,
};

export interface CheckOptions {
  /** How secret arguments read: their text when it is known, else a stand-in (the default: text or SECRET_STAND_IN). */
  secret?: (key: SecretArg, value: pulumi.Input<string>) => string;
  /** Problems the caller finds in what only it knows (index.ts: the providers' credentials), listed with the rest. */
  more?: (config: AgentBoxConfig) => string[];
  /** Whether and how to check that `pulumi up` can log in to the box (undefined: skip, as for a second look). */
  ssh?: SshProbe;
  /** Who the problems belong to, in the error's first line. */
  subject?: string;
}

/** A secret argument as the check reads it: its text when it is a string, else the stand-in. */
export const knownOrStandIn = (key: SecretArg, value: pulumi.Input<string>) =>
  typeof value === "string" ? value : SECRET_STAND_IN[key];

/**
 * AgentBox's arguments checked and resolved into the box's configuration; throws ConfigError, naming every problem
 * and its fix, before anything is created. The one check of both ways in: a program's arguments and (index.ts,
 * through stackArgs) a stack's config.
 */
export function checkAgentBox(name: string, args: AgentBoxArgs, opts: CheckOptions = {}): AgentBoxConfig {
  const subject = opts.subject ?? `AgentBox "${name}"`;
  if (!BOX_NAME.test(name)) {
    throw new ConfigError(
      [
        `${show(name)} is not a box name: it becomes part of the box's names in the cloud and on the tailnet, so: lower-case letters, digits and "-", starting with a letter, at most 24. Fix: new AgentBox("api", ...)`,
      ],
      subject,
    );
  }
  const notPlain = notPlainProblems(args);
  if (notPlain.length) throw new ConfigError(notPlain, subject);
  let config: AgentBoxConfig;
  try {
    // a workflow prompt file is read relative to the program's directory, where Pulumi runs the program
    config = parseConfig(rawConfigOf(args ?? {}, opts.secret ?? knownOrStandIn), {
      project: pulumi.getProject(),
      stack: pulumi.getStack(),
      box: name,
    });
  } catch (e) {
    throw e instanceof ConfigError ? new ConfigError(e.problems, subject) : e;
  }
  const problems = opts.more?.(config) ?? [];
  const size = userDataProblem(config);
  if (size) problems.push(size);
  const access = opts.ssh ? sshAccessProblem(config, opts.ssh) : undefined;
  if (access) problems.push(access);
  if (problems.length) throw new ConfigError(problems, subject);
  return config;
}

/**
 * The stack program's reading of its config (index.ts): the agentbox: keys as AgentBox's arguments, checked here
 * with the providers' credentials before anything is created. The Tailscale API credentials come from the Tailscale
 * provider's own keys. Secret values are read in plain text only to check them; the component makes them secrets.
 */
export function loadStackConfig(ssh: SshProbe = systemProbe): { args: AgentBoxArgs; config: AgentBoxConfig } {
  const all = pulumi.runtime.allConfig();
  const args = stackArgs(agentboxKeys(all));
  const config = checkAgentBox(DEFAULT_BOX_NAME, args, {
    more: (c) => credentialProblems(c, all, process.env),
    ssh,
    subject: STACK_SUBJECT,
  });
  const tailnetApi = config.tailscale.enabled ? tailnetCredentials(all, process.env) : undefined;
  return { args: tailnetApi ? { ...args, tailnetApi } : args, config };
}
