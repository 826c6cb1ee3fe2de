/**
 * A fleet: two agent boxes of one program, on two clouds. Each has names of its own in the cloud and on the tailnet
 * (`<project>-<stack>--<name>`), its own tailnet key and, for the second, its own volume.
 *
 *   npm ci                                        (once, at the repository's root)
 *   cd examples/fleet
 *   pulumi stack init dev
 *   pulumi config set --secret claudeOauthToken   (from `claude setup-token`)
 *   pulumi config set sshPublicKey "$(cat ~/.ssh/id_ed25519.pub)"
 *   pulumi config set --secret hcloud:token; pulumi config set --secret digitalocean:token
 *   pulumi config set --secret tailscale:apiKey
 *   pulumi up
 */
import * as pulumi from "@pulumi/pulumi";
// In a program of its own: the package (see the README's "AgentBox in a program of your own").
import { AgentBox } from "../../lib";

const config = new pulumi.Config();
const sshPublicKeys = [config.require("sshPublicKey")];
const claudeOauthToken = config.requireSecret("claudeOauthToken");
// the box's device leaves the tailnet when it is destroyed (the Tailscale provider's own key)
const tailnetApi = { apiKey: new pulumi.Config("tailscale").requireSecret("apiKey") };

const api = new AgentBox("api", {
  cloud: "hetzner",
  memoryGb: 16,
  sshPublicKeys,
  claudeOauthToken,
  repoUrl: "https://github.com/you/api.git",
  tailnetApi,
});

const web = new AgentBox("web", {
  cloud: "digitalocean",
  location: "ams3",
  memoryGb: 32,
  sshPublicKeys,
  claudeOauthToken,
  volumeGb: 20,
  agents: [{ name: "frontend" }, { name: "e2e" }],
  tailnetApi,
});

export const boxes = {
  api: { ssh: api.sshCommand, attach: api.attachCommand, price: api.monthlyPrice },
  web: { ssh: web.sshCommand, agents: web.agents, price: web.monthlyPrice },
};
