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

/** A `claude setup-token` token lasts a year; status warns from this many days before its end. */
export const TOKEN_LIFETIME_DAYS = 365;
export const TOKEN_WARN_DAYS = 30;
const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * What the stack recorded of its Claude Code credential (the `credential` output: which key, when it was set), as
 * lines for the user; none when there is nothing to say. An API key does not expire (it can be revoked: the box
 * itself reports a login that fails).
 */
export function credentialNotes(credential, stack, now = new Date()) {
  if (!credential || typeof credential.setAt !== "string") return [];
  const setAt = new Date(credential.setAt);
  if (Number.isNaN(setAt.getTime())) return [];
  const age = Math.floor((now.getTime() - setAt.getTime()) / DAY_MS);
  const set = `set ${setAt.toISOString().slice(0, 10)}, ${age} days ago`;
  if (credential.key !== "claudeOauthToken") return [`credential: agentbox:${credential.key} ${set}`];
  const left = TOKEN_LIFETIME_DAYS - age;
  if (left > TOKEN_WARN_DAYS) return [`credential: agentbox:claudeOauthToken ${set} (a setup token lasts a year)`];
  const fix = `make a new one with claude setup-token, then pulumi config set --secret agentbox:claudeOauthToken and npm run up -- --stack ${stack} (a new token replaces the server; a volume keeps the work)`;
  return [
    left > 0
      ? `WARNING: agentbox:claudeOauthToken was ${set}: a setup token lasts a year, so it ends in about ${left} days. Before then: ${fix}`
      : `WARNING: agentbox:claudeOauthToken was ${set}: a setup token lasts a year, so it has probably expired and the agent cannot log in. Fix: ${fix}`,
  ];
}

/** The header line and the ssh command, from `pulumi stack output --json`; throws with the fix when there is none. */
export function statusPlan(outputs, stack, now = new Date()) {
  if (!outputs || typeof outputs.sshCommand !== "string") {
    throw new Error(`stack ${stack} has no box (no outputs): create it with npm run up -- --stack ${stack}`);
  }
  const [ssh, target, ...rest] = outputs.sshCommand.split(" ");
  if (ssh !== "ssh" || !target || rest.length) throw new Error(`unexpected sshCommand output: ${outputs.sshCommand}`);
  const where = outputs.tailnetHostname ? `tailnet ${outputs.tailnetHostname}` : `public ${outputs.ipv4}`;
  return {
    header: `${stack}: ${outputs.cloud} ${outputs.serverType}, ${outputs.memoryGb} GB, ${outputs.monthlyPrice}; ${where}`,
    command: ["ssh", "-t", "-o", "ConnectTimeout=15", target, "agentbox-status"],
    notes: credentialNotes(outputs.credential, stack, now),
    // agentbox:agents: how to reach each (agentbox-status on the box shows each one's state)
    agents: Array.isArray(outputs.agents)
      ? outputs.agents.map((a) => `agent ${a.name} (${a.work}): ${a.attachCommand}`)
      : [],
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
  for (const line of plan.agents) console.log(line);
  for (const note of plan.notes) console.log(note);
  const ssh = spawnSync(plan.command[0], plan.command.slice(1), { stdio: "inherit" });
  if (ssh.status === 255)
    console.error("agentbox: the box did not answer over SSH (is it up, and are you on the tailnet?)");
  return ssh.status ?? 1;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) process.exit(main(process.argv.slice(2)));
