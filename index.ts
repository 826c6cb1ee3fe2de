import * as pulumi from "@pulumi/pulumi";
import { AgentBox } from "./components/agentBox";
import { loadStackConfig } from "./components/stackConfig";

const config = loadStackConfig();
for (const warning of config.warnings) pulumi.log.warn(warning);

const settings = new pulumi.Config();
const box = new AgentBox("agentbox", {
  config,
  agentAuth: config.auth.kind === "none" ? undefined : settings.requireSecret(config.auth.key),
});

export const cloud = box.cloud;
export const serverType = box.serverType;
export const memoryGb = box.memoryGb;
export const monthlyPrice = box.monthlyPrice;
export const ipv4 = box.ipv4;
export const ipv6 = box.ipv6;
export const tailnetHostname = box.tailnetHostname;
export const sshCommand = box.sshCommand;
export const moshCommand = box.moshCommand;
export const attachCommand = box.attachCommand;
export const userData = box.userData;
