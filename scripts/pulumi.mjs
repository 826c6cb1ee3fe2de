#!/usr/bin/env node
// Runs the Pulumi CLI that the `pulumi` npm package provides (it downloads the CLI on first use into
// ~/.pulumi/versions), so nothing needs installing beside `npm ci`. State goes to a local backend (~/.pulumi)
// unless you chose one: PULUMI_BACKEND_URL, or an earlier `pulumi login` (Pulumi Cloud, S3, ...).
//
//   npm run up -- --stack <name>     create the stack if it is new, then `pulumi up` on it
//   npm run pulumi -- <any pulumi command>
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** The backend to use when the user has not chosen one, or undefined when they have. */
export function defaultBackend(env, home = homedir()) {
  if (env.PULUMI_BACKEND_URL) return undefined;
  const credentials = join(env.PULUMI_HOME ?? join(home, ".pulumi"), "credentials.json");
  if (existsSync(credentials)) {
    try {
      if (JSON.parse(readFileSync(credentials, "utf8")).current) return undefined;
    } catch {
      // an unreadable credentials file is the CLI's to report
    }
  }
  return "file://~";
}

/** The stack named by --stack/-s in argv, if any. */
export function stackArg(argv) {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--stack" || a === "-s") return argv[i + 1];
    if (a.startsWith("--stack=")) return a.slice("--stack=".length);
  }
  return undefined;
}

function main(argv) {
  const env = { ...process.env };
  const backend = defaultBackend(env);
  if (backend) {
    env.PULUMI_BACKEND_URL = backend;
    console.error(
      `agentbox: using a local state backend (${backend}); set PULUMI_BACKEND_URL or run \`pulumi login\` to use another`,
    );
  }
  const bin = join(ROOT, "node_modules", ".bin", process.platform === "win32" ? "pulumi.cmd" : "pulumi");
  const pulumi = (args) => spawnSync(bin, args, { stdio: "inherit", env, cwd: ROOT }).status ?? 1;

  if (argv[0] === "up") {
    const stack = stackArg(argv);
    if (stack) {
      const status = pulumi(["stack", "select", "--create", stack]);
      if (status !== 0) return status;
    }
  }
  return pulumi(argv);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) process.exit(main(process.argv.slice(2)));
