import * as pulumi from "@pulumi/pulumi";
import { AgentBox, type StackSecrets } from "./components/agentBox";
import { checkBakedImage } from "./components/bakedImage";
import { NAMESPACE } from "./components/config";
import { loadStackConfig } from "./components/stackConfig";
import { tailnetCredentials } from "./components/tailnetDevice";

const config = loadStackConfig();
for (const warning of config.warnings) pulumi.log.warn(warning);

// Every secret the box needs travels as one Pulumi secret; none is ever plain text in the program's outputs.
// under agentbox:, as every other setting (the project's name would break on a project rename)
const settings = new pulumi.Config(NAMESPACE);
const optional = (key: string) => settings.getSecret(key) ?? pulumi.output(undefined);
const secrets: pulumi.Output<StackSecrets> = pulumi.secret(
  pulumi
    .all([
      config.auth.kind === "none" ? pulumi.output(undefined) : settings.requireSecret(config.auth.key),
      optional("ntfyUrl"),
      optional("ntfyToken"),
      optional("approvalsNtfyUrl"),
      optional("approvalsNtfyToken"),
    ])
    .apply(([agentAuth, ntfyUrl, ntfyToken, approvalsNtfyUrl, approvalsNtfyToken]) => ({
      ...(agentAuth !== undefined ? { agentAuth } : {}),
      ...(ntfyUrl !== undefined ? { ntfyUrl } : {}),
      ...(ntfyToken !== undefined ? { ntfyToken } : {}),
      ...(approvalsNtfyUrl !== undefined ? { approvalsNtfyUrl } : {}),
      ...(approvalsNtfyToken !== undefined ? { approvalsNtfyToken } : {}),
    })),
);

const newBox = () =>
  new AgentBox("agentbox", {
    config,
    secrets,
    tailnetApi: config.tailscale.enabled ? tailnetCredentials(pulumi.runtime.allConfig(), process.env) : undefined,
  });
// A baked image is read from the cloud and compared with the stack first: a wrong one stops the program with a
// ConfigError before anything is created. Without one, the box is made at once.
const box: Promise<AgentBox> = config.bakedImage ? checkBakedImage(config).then(newBox) : Promise.resolve(newBox());
const fromBox = <T>(output: (b: AgentBox) => pulumi.Output<T>) => pulumi.output(box.then(output));

export const cloud = fromBox((b) => b.cloud);
export const serverType = fromBox((b) => b.serverType);
export const memoryGb = fromBox((b) => b.memoryGb);
export const monthlyPrice = fromBox((b) => b.monthlyPrice);
export const ipv4 = fromBox((b) => b.ipv4);
export const ipv6 = fromBox((b) => b.ipv6);
export const tailnetHostname = fromBox((b) => b.tailnetHostname);
export const sshCommand = fromBox((b) => b.sshCommand);
export const sshTarget = fromBox((b) => b.sshTarget);
export const moshCommand = fromBox((b) => b.moshCommand);
export const attachCommand = fromBox((b) => b.attachCommand);
export const agents = fromBox((b) => b.agents);
export const volumeId = fromBox((b) => b.volumeId);
export const workflow = fromBox((b) => b.workflow);
export const ready = fromBox((b) => b.ready);
export const userData = fromBox((b) => b.userData);
export const credential = fromBox((b) => b.credential);
