import { spawnSync } from "node:child_process";
import { type AgentBoxConfig, NAMESPACE } from "./config";

/**
 * `pulumi up` logs in to the box over SSH (the readiness wait, the release before destroy) with the user's
 * ssh-agent or, for CI, agentbox:sshPrivateKeyFile. The Command provider retries a refused key as it retries a dial
 * that fails, so a key it cannot use would only show after the whole readiness timeout: this finds out first.
 */
export interface SshProbe {
  /** The public keys the ssh-agent holds (`ssh-add -L`), or why there are none to ask for. */
  agentKeys(): string[] | { error: string };
  /** The public half of a private key file (`ssh-keygen -y`), or why it cannot be had without a passphrase. */
  publicKeyOf(file: string): string | { error: string };
}

const firstLine = (text: string) => text.trim().split("\n")[0] ?? "";

/** The machine's own ssh-agent and ssh-keygen. */
export const systemProbe: SshProbe = {
  agentKeys() {
    if (!process.env.SSH_AUTH_SOCK) return { error: "no ssh-agent is running here (SSH_AUTH_SOCK is not set)" };
    const r = spawnSync("ssh-add", ["-L"], { encoding: "utf8", timeout: 10_000 });
    if (r.error) return { error: `ssh-add could not be run (${r.error.message})` };
    // ssh-add -L exits 1 for an agent without keys, 2 when it cannot reach the agent
    if (r.status === 1) return [];
    if (r.status !== 0)
      return { error: `the ssh-agent does not answer (${firstLine(r.stderr) || `ssh-add exit ${r.status}`})` };
    return r.stdout.split("\n").filter((l) => l.trim() !== "");
  },
  publicKeyOf(file) {
    const r = spawnSync("ssh-keygen", ["-y", "-P", "", "-f", file], { encoding: "utf8", timeout: 10_000 });
    if (r.error) return { error: `ssh-keygen could not be run (${r.error.message})` };
    if (r.status !== 0) return { error: firstLine(r.stderr) || `ssh-keygen exit ${r.status}` };
    return r.stdout.trim();
  },
};

/** A public key's type and key material, without its comment. */
const keyOf = (line: string) => line.trim().split(/\s+/).slice(0, 2).join(" ");

/** What keeps `pulumi up` from logging in to the box, with the fix; undefined when a key it can use is there. */
export function sshAccessProblem(config: AgentBoxConfig, probe: SshProbe): string | undefined {
  if (!config.ready.wait) return undefined;
  const listed = new Set(config.sshPublicKeys.map(keyOf));
  const k = (key: string) => `${NAMESPACE}:${key}`;
  const orNoWait = `or pulumi config set ${k("waitForReady")} false (pulumi up then returns without waiting)`;
  if (config.sshKeyFile) {
    const file = config.sshKeyFile;
    const pub = probe.publicKeyOf(file);
    if (typeof pub !== "string") {
      return `${k("sshPrivateKeyFile")}: ${file} cannot be used for SSH without a passphrase: ${pub.error}. Fix: point it at a key file without a passphrase, or pulumi config rm ${k("sshPrivateKeyFile")} and use your ssh-agent`;
    }
    if (!listed.has(keyOf(pub))) {
      return `${k("sshPrivateKeyFile")}: ${file} is not the private half of any of ${k("sshPublicKeys")}, so the box would refuse it. Fix: pulumi config set --path '${k("sshPublicKeys")}[${config.sshPublicKeys.length}]' "$(ssh-keygen -y -f ${file})", or point it at the right file`;
    }
    return undefined;
  }
  const keys = probe.agentKeys();
  const minutes = config.ready.timeoutMinutes;
  if (!Array.isArray(keys)) {
    return `${k("waitForReady")}: pulumi up would wait up to ${minutes} min for the box over SSH with your ssh-agent, but ${keys.error}. Fix: eval "$(ssh-agent)" && ssh-add <your private key>, or pulumi config set ${k("sshPrivateKeyFile")} <your private key> (CI), ${orNoWait}`;
  }
  if (!keys.some((key) => listed.has(keyOf(key)))) {
    return `${k("waitForReady")}: none of ${k("sshPublicKeys")} is in your ssh-agent (it holds ${keys.length} key${keys.length === 1 ? "" : "s"}), so the box would refuse pulumi up's login and the wait would last ${minutes} min. Fix: ssh-add <the private key of one of them>, or pulumi config set ${k("sshPrivateKeyFile")} <that key> (CI), ${orNoWait}`;
  }
  return undefined;
}
