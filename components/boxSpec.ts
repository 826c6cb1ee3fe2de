import { bakePackages, bakeSpecOf } from "../cloud-init/bake";
import type { BoxSpec } from "../cloud-init/render";
import type { Cloud } from "./catalogue";
import { APPROVE_PORT, type AgentBoxConfig } from "./config";
import { DIGITALOCEAN_VOLUME_GLOB } from "./hosts/digitalocean";
import { HETZNER_VOLUME_GLOB } from "./hosts/hetzner";

/** The secrets the box needs, which exist as plain text only at deploy time (Pulumi secrets until then). */
export interface BoxSecrets {
  agentAuth?: string;
  tailnetKey?: string;
  ntfyUrl?: string;
  ntfyToken?: string;
  /** agentbox:approvals' own topic, which only the receiver (never the agent) gets. */
  approvalsNtfyUrl?: string;
  approvalsNtfyToken?: string;
}

const VOLUME_GLOB: Record<Cloud, string> = { hetzner: HETZNER_VOLUME_GLOB, digitalocean: DIGITALOCEAN_VOLUME_GLOB };

/** The host of an ntfy topic URL (the config has checked its form). */
export const ntfyHost = (url: string) => new URL(url).hostname;

/**
 * The stack's own secrets as the validated config holds them (plain text), for the places that render without
 * Pulumi: the size check before anything is created, and `npm run render`. The program itself passes them as
 * Pulumi secrets instead.
 */
export const boxSecretsOf = (config: AgentBoxConfig): Omit<BoxSecrets, "tailnetKey"> => ({
  agentAuth: config.auth.kind === "none" ? undefined : config.auth.value,
  ntfyUrl: config.notify?.url,
  ntfyToken: config.notify?.token,
  approvalsNtfyUrl: config.approvals?.url,
  approvalsNtfyToken: config.approvals?.token,
});

/** What the box needs to know, from the validated config plus the secrets that only exist at deploy time. */
export function boxSpecOf(config: AgentBoxConfig, secrets: BoxSecrets): BoxSpec {
  const { auth, tailscale: ts } = config;
  const notify =
    config.notify && secrets.ntfyUrl !== undefined
      ? { url: secrets.ntfyUrl, ...(secrets.ntfyToken !== undefined ? { token: secrets.ntfyToken } : {}) }
      : undefined;
  return {
    project: config.project,
    stack: config.stack,
    user: config.user,
    sudo: config.sudo,
    ...(config.adminUser ? { adminUser: config.adminUser } : {}),
    allowSshFrom: config.allowSshFrom,
    unattendedUpgrades: config.unattendedUpgrades,
    ...(config.egress.mode === "allowlist"
      ? {
          egressAllowlist: {
            // the agent sends the notifications itself (Claude Code's hooks run as the agent)
            extraHosts: [
              ...new Set([...config.egress.extraHosts, ...(config.notify ? [ntfyHost(config.notify.url)] : [])]),
            ],
          },
        }
      : {}),
    sshPublicKeys: config.sshPublicKeys,
    arch: config.serverType.arch,
    claudeCode: config.claudeCode,
    ...(auth.kind !== "none" && secrets.agentAuth !== undefined
      ? {
          auth: {
            variable:
              auth.kind === "oauthToken" ? ("CLAUDE_CODE_OAUTH_TOKEN" as const) : ("ANTHROPIC_API_KEY" as const),
            value: secrets.agentAuth,
          },
        }
      : {}),
    ...(ts.enabled && secrets.tailnetKey !== undefined
      ? { tailscale: { authKey: secrets.tailnetKey, hostname: ts.hostname, tags: ts.tags, ssh: ts.ssh } }
      : {}),
    ...(config.repo ? { repo: config.repo } : {}),
    ...(config.volume ? { volume: { deviceGlob: VOLUME_GLOB[config.cloud] } } : {}),
    ...(config.workflow
      ? { workflow: { prompt: config.workflow.prompt, timeoutMinutes: config.workflow.timeoutMinutes } }
      : {}),
    ...(notify ? { notify } : {}),
    ...(config.approvals && secrets.approvalsNtfyUrl !== undefined
      ? {
          approvals: {
            timeoutSeconds: config.approvals.timeoutSeconds,
            approvers: config.approvals.approvers,
            port: APPROVE_PORT,
            url: secrets.approvalsNtfyUrl,
            ...(secrets.approvalsNtfyToken !== undefined ? { token: secrets.approvalsNtfyToken } : {}),
          },
        }
      : {}),
    ...(config.permissionMode ? { permissionMode: config.permissionMode } : {}),
    ...(config.workflow && config.workflowPermissionMode
      ? { workflowPermissionMode: config.workflowPermissionMode }
      : {}),
    remoteControl: config.remoteControl,
    ...(config.agents ? { agents: config.agents } : {}),
    upkeep: config.upkeep,
    ...(config.maintenanceWindow
      ? {
          maintenanceWindow: {
            days: config.maintenanceWindow.days,
            startMinute: config.maintenanceWindow.startMinute,
            endMinute: config.maintenanceWindow.endMinute,
          },
        }
      : {}),
    // the image's contents follow from the stack's settings: bakedImage.ts refuses an image that differs
    ...(config.bakedImage
      ? {
          bakedImage: {
            packages: bakePackages(bakeSpecOf({ arch: config.serverType.arch, claudeCode: config.claudeCode })),
          },
        }
      : {}),
  };
}
