import { ConfigError, type RawConfig, parseConfig } from "../components/config";

/** Stack configs for the program tests, as `pulumi config` hands them to the program (namespaced, lists as JSON). */
export const SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgWVl6ee7dd7V5V5VwvrBbg92RnD1XQCQI87/sHL0nt you@laptop";
export const TOKEN = "sk-ant-oat01-test-token-0123456789abcdefABCDEF";

export const hetznerStack: Record<string, string> = {
  "agentbox:cloud": "hetzner",
  "agentbox:sshPublicKeys": JSON.stringify([SSH_KEY]),
  "agentbox:claudeOauthToken": TOKEN,
  "hcloud:token": "hcloud-test-token",
  "tailscale:apiKey": "tskey-api-test",
};

export const digitalOceanStack: Record<string, string> = {
  "agentbox:cloud": "digitalocean",
  "agentbox:location": "ams3",
  "agentbox:memoryGb": "32",
  "agentbox:sshPublicKeys": JSON.stringify([SSH_KEY]),
  "agentbox:anthropicApiKey": TOKEN,
  "digitalocean:token": "do-test-token",
  "tailscale:apiKey": "tskey-api-test",
};

/** The problems parseConfig names for a raw config (none when it takes it); any other error is thrown. */
export function configProblems(raw: RawConfig, ctx: { project: string; stack: string }): string[] {
  try {
    parseConfig(raw, ctx);
    return [];
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
}
