#!/usr/bin/env node
// The box at a glance, from your machine: what the stack bought, then `agentbox-status` run on the box over SSH
// (over the tailnet when Tailscale is on).
//
//   npm run status -- --stack my-project
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { stackArg } from "./pulumi.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** The header line and the ssh command, from `pulumi stack output --json`; throws with the fix when there is none. */
export function statusPlan(outputs, stack) {
  if (!outputs || typeof outputs.sshCommand !== "string") {
    throw new Error(`stack ${stack} has no box (no outputs): create it with npm run up -- --stack ${stack}`);
  }
  const [ssh, target, ...rest] = outputs.sshCommand.split(" ");
  if (ssh !== "ssh" || !target || rest.length) throw new Error(`unexpected sshCommand output: ${outputs.sshCommand}`);
  const where = outputs.tailnetHostname ? `tailnet ${outputs.tailnetHostname}` : `public ${outputs.ipv4}`;
  return {
    header: `${stack}: ${outputs.cloud} ${outputs.serverType}, ${outputs.memoryGb} GB, ${outputs.monthlyPrice}; ${where}`,
    command: ["ssh", "-t", "-o", "ConnectTimeout=15", target, "agentbox-status"],
  };
}

function main(argv) {
  const stack = stackArg(argv);
  if (!stack) {
    console.error("usage: npm run status -- --stack <name>");
    return 2;
  }
  const out = spawnSync("node", [join(ROOT, "scripts", "pulumi.mjs"), "stack", "output", "--json", "--stack", stack], {
    encoding: "utf8",
    stdio: ["inherit", "pipe", "inherit"],
  });
  if (out.status !== 0) return out.status ?? 1;
  let plan;
  try {
    plan = statusPlan(JSON.parse(out.stdout || "{}"), stack);
  } catch (e) {
    console.error(`agentbox: ${e.message}`);
    return 1;
  }
  console.log(plan.header);
  const ssh = spawnSync(plan.command[0], plan.command.slice(1), { stdio: "inherit" });
  if (ssh.status === 255)
    console.error("agentbox: the box did not answer over SSH (is it up, and are you on the tailnet?)");
  return ssh.status ?? 1;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) process.exit(main(process.argv.slice(2)));
