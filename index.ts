import * as pulumi from "@pulumi/pulumi";
import { AgentBox } from "./components/agentBox";
import { checkBakedImage } from "./components/bakedImage";
import { DEFAULT_BOX_NAME } from "./components/config";
import { loadStackConfig } from "./components/stackConfig";

// The stack program: this stack's agentbox: config read as AgentBox's arguments (checked, with the providers'
// credentials, before anything is created), and the one box made from them. Programs of their own use lib.ts.
const { args, config } = loadStackConfig();

const newBox = () => new AgentBox(DEFAULT_BOX_NAME, args);
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
