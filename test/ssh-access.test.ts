import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { type AgentBoxConfig, parseConfig } from "../components/config";
import { type SshProbe, sshAccessProblem, systemProbe } from "../components/sshAccess";
import { SSH_KEY } from "./stacks";

// pulumi up's check, before anything is created, that it can log in to the box (components/sshAccess.ts).
const OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOgZ5Q7v0z7QeYt1m0e0r2cJ9fG3x1y5d6aQwRkH3mXo other@laptop";
const configWith = (raw: Record<string, string> = {}): AgentBoxConfig =>
  parseConfig({ sshPublicKeys: JSON.stringify([SSH_KEY]), ...raw }, { project: "agentbox", stack: "dev" });
const probe = (agent: SshProbe["agentKeys"], file: SshProbe["publicKeyOf"] = () => ({ error: "no" })): SshProbe => ({
  agentKeys: agent,
  publicKeyOf: file,
});

describe("the check", () => {
  test.each([
    ["the agent holds a listed key (comments may differ)", () => [OTHER, SSH_KEY.replace(/\S+$/, "laptop")], undefined],
    [
      "no ssh-agent",
      () => ({ error: "no ssh-agent is running here (SSH_AUTH_SOCK is not set)" }),
      'agentbox:waitForReady: pulumi up would wait up to 15 min for the box over SSH with your ssh-agent, but no ssh-agent is running here (SSH_AUTH_SOCK is not set). Fix: eval "$(ssh-agent)" && ssh-add <your private key>, or pulumi config set agentbox:sshPrivateKeyFile <your private key> (CI), or pulumi config set agentbox:waitForReady false (pulumi up then returns without waiting)',
    ],
    [
      "an agent without the key",
      () => [OTHER],
      "agentbox:waitForReady: none of agentbox:sshPublicKeys is in your ssh-agent (it holds 1 key), so the box would refuse pulumi up's login and the wait would last 15 min. Fix: ssh-add <the private key of one of them>, or pulumi config set agentbox:sshPrivateKeyFile <that key> (CI), or pulumi config set agentbox:waitForReady false (pulumi up then returns without waiting)",
    ],
  ] as const)("%s", (_, agent, problem) => {
    expect(sshAccessProblem(configWith(), probe(agent))).toBe(problem);
  });

  test("without the readiness wait nothing is checked", () => {
    expect(
      sshAccessProblem(
        configWith({ waitForReady: "false" }),
        probe(() => ({ error: "x" })),
      ),
    ).toBeUndefined();
  });

  test("a key file is used instead of the agent, and must be the private half of a listed key", () => {
    const agentNeverAsked = () => {
      throw new Error("the agent was asked");
    };
    const withFile = configWith({ sshPrivateKeyFile: "/ci/key" });
    expect(withFile.sshKeyFile).toBe("/ci/key");
    expect(
      sshAccessProblem(
        withFile,
        probe(agentNeverAsked, () => SSH_KEY),
      ),
    ).toBeUndefined();
    expect(
      sshAccessProblem(
        withFile,
        probe(agentNeverAsked, () => OTHER),
      ),
    ).toBe(
      `agentbox:sshPrivateKeyFile: /ci/key is not the private half of any of agentbox:sshPublicKeys, so the box would refuse it. Fix: pulumi config set --path 'agentbox:sshPublicKeys[1]' "$(ssh-keygen -y -f /ci/key)", or point it at the right file`,
    );
    expect(
      sshAccessProblem(
        withFile,
        probe(agentNeverAsked, () => ({ error: "incorrect passphrase supplied" })),
      ),
    ).toBe(
      "agentbox:sshPrivateKeyFile: /ci/key cannot be used for SSH without a passphrase: incorrect passphrase supplied. Fix: point it at a key file without a passphrase, or pulumi config rm agentbox:sshPrivateKeyFile and use your ssh-agent",
    );
  });

  test("a key file path: ~ is the home directory; one that spans lines is refused with its fix", () => {
    expect(configWith({ sshPrivateKeyFile: "~/.ssh/ci" }).sshKeyFile).toBe(join(homedir(), ".ssh/ci"));
    expect(() => configWith({ sshPrivateKeyFile: "key\nfile" })).toThrow(
      "agentbox:sshPrivateKeyFile: not a file path. Fix: pulumi config set agentbox:sshPrivateKeyFile ~/.ssh/agentbox_ci (a key whose public half is in agentbox:sshPublicKeys), or pulumi config rm agentbox:sshPrivateKeyFile to use your ssh-agent",
    );
  });
});

describe("the machine's own ssh-agent and ssh-keygen", () => {
  const dir = mkdtempSync(join(tmpdir(), "agentbox-ssh-"));
  const key = join(dir, "id_ed25519");
  spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "test@agentbox", "-f", key]);
  const pub = readFileSync(`${key}.pub`, "utf8").trim();

  test("ssh-keygen gives a key file's public half; a passphrase-protected one is refused", () => {
    expect(systemProbe.publicKeyOf(key)).toBe(pub);
    const locked = join(dir, "locked");
    spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "secret", "-f", locked]);
    expect(systemProbe.publicKeyOf(locked)).toEqual({ error: expect.stringMatching(/passphrase/) });
    expect(systemProbe.publicKeyOf(join(dir, "missing"))).toEqual({ error: expect.stringMatching(/No such file/) });
  });

  test("a real ssh-agent: none, empty, then holding the key", () => {
    const saved = process.env.SSH_AUTH_SOCK;
    const socket = join(dir, "agent.sock");
    const agent = spawnSync("ssh-agent", ["-a", socket], { encoding: "utf8" });
    const pid = /SSH_AGENT_PID=(\d+)/.exec(agent.stdout)?.[1];
    try {
      delete process.env.SSH_AUTH_SOCK;
      expect(systemProbe.agentKeys()).toEqual({ error: "no ssh-agent is running here (SSH_AUTH_SOCK is not set)" });
      process.env.SSH_AUTH_SOCK = socket;
      expect(systemProbe.agentKeys()).toEqual([]);
      spawnSync("ssh-add", ["-q", key], { env: { ...process.env, SSH_AUTH_SOCK: socket } });
      expect(systemProbe.agentKeys()).toEqual([expect.stringContaining(pub.split(" ")[1]!)]);
      expect(sshAccessProblem(configWith({ sshPublicKeys: JSON.stringify([pub]) }), systemProbe)).toBeUndefined();
      process.env.SSH_AUTH_SOCK = join(dir, "no-such.sock");
      expect(systemProbe.agentKeys()).toEqual({ error: expect.stringMatching(/^the ssh-agent does not answer/) });
    } finally {
      if (pid) process.kill(Number(pid));
      if (saved === undefined) delete process.env.SSH_AUTH_SOCK;
      else process.env.SSH_AUTH_SOCK = saved;
    }
  });
});
