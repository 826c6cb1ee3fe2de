import * as pulumi from "@pulumi/pulumi";
import { AgentBox, type StackSecrets } from "./components/agentBox";
import { loadStackConfig } from "./components/stackConfig";
import { tailnetCredentials } from "./components/tailnetDevice";

const config = loadStackConfig();
for (const warning of config.warnings) pulumi.log.warn(warning);

// Every secret the box needs travels as one Pulumi secret; none is ever plain text in the program's outputs.
const settings = new pulumi.Config();
const optional = (key: string) => settings.getSecret(key) ?? pulumi.output(undefined);
const secrets: pulumi.Output<StackSecrets> = pulumi.secret(
  pulumi
    .all([
      config.auth.kind === "none" ? pulumi.output(undefined) : settings.requireSecret(config.auth.key),
      optional("ntfyUrl"),
      optional("ntfyToken"),
    ])
    .apply(([agentAuth, ntfyUrl, ntfyToken]) => ({
      ...(agentAuth !== undefined ? { agentAuth } : {}),
      ...(ntfyUrl !== undefined ? { ntfyUrl } : {}),
      ...(ntfyToken !== undefined ? { ntfyToken } : {}),
    })),
);

const box = new AgentBox("agentbox", {
  config,
  secrets,
  tailnetApi: config.tailscale.enabled ? tailnetCredentials(pulumi.runtime.allConfig(), process.env) : undefined,
});

export const cloud = box.cloud;
export const serverType = box.serverType;
export const memoryGb = box.memoryGb;
export const monthlyPrice = box.monthlyPrice;
export const ipv4 = box.ipv4;
export const ipv6 = box.ipv6;
export const tailnetHostname = box.tailnetHostname;
export const sshCommand = box.sshCommand;
export const sshTarget = box.sshTarget;
export const moshCommand = box.moshCommand;
export const attachCommand = box.attachCommand;
export const volumeId = box.volumeId;
export const workflow = box.workflow;
export const ready = box.ready;
export const userData = box.userData;
