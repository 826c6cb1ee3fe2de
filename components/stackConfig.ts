import * as pulumi from "@pulumi/pulumi";
import { USER_DATA_DELIVERY, renderUserData } from "../cloud-init/render";
import { boxSecretsOf, boxSpecOf } from "./boxSpec";
import { type AgentBoxConfig, ConfigError, NAMESPACE, agentboxKeys, credentialProblems, parseConfig } from "./config";
import { type SshProbe, sshAccessProblem, systemProbe } from "./sshAccess";

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

/**
 * Reads and validates this stack's configuration; throws ConfigError before anything is created.
 * Secret values are read here in plain text only to validate them; they travel on as Pulumi secrets.
 */
export function loadStackConfig(ssh: SshProbe = systemProbe): AgentBoxConfig {
  const all = pulumi.runtime.allConfig();
  // a workflow prompt file is read relative to the project directory, where Pulumi runs the program
  const config = parseConfig(agentboxKeys(all), { project: pulumi.getProject(), stack: pulumi.getStack() });
  const problems = credentialProblems(config, all, process.env);
  const size = userDataProblem(config);
  if (size) problems.push(size);
  const access = sshAccessProblem(config, ssh);
  if (access) problems.push(access);
  if (problems.length) throw new ConfigError(problems);
  return config;
}
