import type { BoxSpec } from "../cloud-init/render";
import type { AgentBoxConfig } from "./config";

/** What the box needs to know, from the validated config plus the two secrets that only exist at deploy time. */
export function boxSpecOf(config: AgentBoxConfig, secrets: { agentAuth?: string; tailnetKey?: string }): BoxSpec {
  const { auth, tailscale: ts } = config;
  return {
    user: config.user,
    sudo: config.sudo,
    ...(config.adminUser ? { adminUser: config.adminUser } : {}),
    allowSshFrom: config.allowSshFrom,
    unattendedUpgrades: config.unattendedUpgrades,
    ...(config.egress.mode === "allowlist" ? { egressAllowlist: { extraHosts: config.egress.extraHosts } } : {}),
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
  };
}
