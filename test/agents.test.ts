import { describe, expect, test } from "vitest";
import { parse } from "yaml";
import { AGENT_MEMORY_GB, type RawConfig, maxAgentsFor, parseConfig } from "../components/config";
import { boxSecretsOf, boxSpecOf } from "../components/boxSpec";
import {
  BOX_PATHS,
  type BoxSpec,
  agentMemoryShare,
  agentsFile,
  boxFile,
  buildCloudConfig,
  renderUserData,
} from "../cloud-init/render";
import { userDataProblem } from "../components/stackConfig";
import { runProgram, valueOf } from "./mocks";
import { SSH_KEY, TOKEN, configProblems } from "./stacks";

// agentbox:agents: several agents on one box, each supervised on its own (README: "Several agents")

const ctx = { project: "agentbox", stack: "dev" };
const REPO = "https://github.com/you/repo.git";
const base: RawConfig = { sshPublicKeys: JSON.stringify([SSH_KEY]), repoUrl: REPO };
const agents = (list: unknown, more: RawConfig = {}) => ({ ...base, agents: JSON.stringify(list), ...more });
const loadConfig = (raw: RawConfig) => parseConfig(raw, ctx);
const problemsOf = (raw: RawConfig): string[] => configProblems(raw, ctx);

describe("the config", () => {
  test("without the key: no agents (the one agent claude of every stack)", () => {
    expect(parseConfig(base, ctx).agents).toBeUndefined();
  });

  test("each agent's work: a worktree on its branch, a repository of its own, or (without agentbox:repoUrl) an empty folder", () => {
    const c = parseConfig(
      agents([
        { name: "api", worktree: "fix-login" },
        "web",
        { name: "docs", repoUrl: "git@github.com:you/docs.git", repoBranch: "main" },
      ]),
      ctx,
    );
    expect(c.agents).toEqual([
      { name: "api", work: { kind: "worktree", branch: "fix-login" } },
      // a stack with a repository: a worktree on a branch of the agent's own name
      { name: "web", work: { kind: "worktree", branch: "agentbox/web" } },
      { name: "docs", work: { kind: "repo", url: "git@github.com:you/docs.git", branch: "main" } },
    ]);
    const noRepo = { sshPublicKeys: base.sshPublicKeys, agents: JSON.stringify(["a", "b"]) };
    expect(parseConfig(noRepo, ctx).agents).toEqual([
      { name: "a", work: { kind: "empty" } },
      { name: "b", work: { kind: "empty" } },
    ]);
  });

  test.each([
    {
      name: "a name that is not one",
      raw: agents([{ name: "API" }]),
      problem: `agentbox:agents[0].name: "API" is not an agent name; it names a systemd unit, a tmux session and a folder, so: lower-case letters, digits and "-", starting with a letter, at most 24. Fix: pulumi config set --path 'agentbox:agents[0].name' api`,
    },
    {
      name: "a name with a dot (a tmux target's separator)",
      raw: agents([{ name: "api.v2" }]),
      problem: `agentbox:agents[0].name: "api.v2" is not an agent name`,
    },
    {
      name: "a missing name",
      raw: agents([{ worktree: "x" }]),
      problem: `agentbox:agents[0].name: missing; it names a systemd unit`,
    },
    {
      name: "the same name twice",
      raw: agents(["api", "api"]),
      problem: `agentbox:agents[1].name: "api" is the name of an earlier agent; each agent has its own. Fix: pulumi config set --path 'agentbox:agents[1].name' api-2`,
    },
    {
      name: "the tmux socket's name",
      raw: agents(["agentbox"]),
      problem: `agentbox:agents[0].name: "agentbox" is taken on the box (the agents' tmux socket). Fix: pulumi config set --path 'agentbox:agents[0].name' agentbox-1`,
    },
    {
      name: "the workflow's name",
      raw: agents(["workflow"]),
      problem: `agentbox:agents[0].name: "workflow" is taken on the box (the workflow's folder and unit).`,
    },
    {
      name: "the name of a record file",
      raw: agents(["turn"]),
      problem: `agentbox:agents[0].name: "turn" is taken on the box (a record of the box's agent).`,
    },
    {
      name: "a worktree without the stack's repository",
      raw: { sshPublicKeys: base.sshPublicKeys, agents: JSON.stringify([{ name: "api", worktree: "fix" }]) },
      problem: `agentbox:agents[0].worktree: a worktree of the stack's repository, but the stack has none (agentbox:repoUrl). Fix: pulumi config set agentbox:repoUrl https://github.com/you/repo.git, or give the agent a repository of its own: pulumi config set --path 'agentbox:agents[0].repoUrl' <url>`,
    },
    {
      name: "a worktree on the branch ~/workspace has checked out",
      raw: agents([{ name: "api", worktree: "main" }], { repoBranch: "main" }),
      problem: `agentbox:agents[0].worktree: "main" is the branch ~/workspace (the stack's clone, agentbox:repoBranch) has checked out`,
    },
    {
      name: "both a worktree and a repository",
      raw: agents([{ name: "api", worktree: "x", repoUrl: REPO }]),
      problem: `agentbox:agents[0]: both worktree and repoUrl; an agent works either in a worktree of the stack's repository or in a repository of its own.`,
    },
    {
      name: "a repoBranch without repoUrl",
      raw: agents([{ name: "api", repoBranch: "main" }]),
      problem: `agentbox:agents[0].repoBranch: set without agentbox:agents[0].repoUrl`,
    },
    {
      name: "a repository URL with credentials",
      raw: agents([{ name: "api", repoUrl: "https://me:ghp_x@github.com/you/repo.git" }]),
      problem: `agentbox:agents[0].repoUrl: "https://me:ghp_x@github.com/you/repo.git" is not a git URL agentbox can clone`,
    },
    {
      name: "a branch git would refuse",
      raw: agents([{ name: "api", worktree: "fix..login" }]),
      problem: `agentbox:agents[0].worktree: "fix..login" is not a valid branch name.`,
    },
    {
      name: "an unknown setting",
      raw: agents([{ name: "api", branch: "x" }]),
      problem: `agentbox:agents[0]: "branch" is not a setting of an agent (name, worktree, repoUrl, repoBranch). Fix: pulumi config rm --path 'agentbox:agents[0].branch'`,
    },
    {
      name: "not a list",
      raw: { ...base, agents: "api" },
      problem: `agentbox:agents: "api" is not a list of agents.`,
    },
    {
      name: "an empty list",
      raw: agents([]),
      problem: `agentbox:agents: an empty list; a box runs at least one agent. Fix: pulumi config rm agentbox:agents`,
    },
    {
      name: "more agents than a 16 GB box holds",
      raw: agents(["a", "b", "c", "d"]),
      problem: `agentbox:agents: 4 agents, but a 16 GB box holds 3: each agent needs 4 GB (Claude Code's minimum, for claude and what it runs) of the 80% of the RAM the agents share. Fix: list at most 3 (pulumi config rm --path 'agentbox:agents[3]' removes the last), or pulumi config set agentbox:memoryGb 32 (6 agents)`,
    },
    {
      name: "more agents than a 32 GB box holds",
      raw: agents(["a", "b", "c", "d", "e", "f", "g"], { memoryGb: "32" }),
      problem: `agentbox:agents: 7 agents, but a 32 GB box holds 6: each agent needs 4 GB (Claude Code's minimum, for claude and what it runs) of the 80% of the RAM the agents share. Fix: list at most 6 (pulumi config rm --path 'agentbox:agents[6]' removes the last)`,
    },
  ])("refused before anything is created: $name", ({ raw, problem }) => {
    const problems = problemsOf(raw);
    expect(
      problems.some((p) => p.startsWith(problem)),
      problems.join("\n"),
    ).toBe(true);
    // every problem names the key and the fix
    for (const p of problems) expect(p).toMatch(/^agentbox:agents.*Fix: /);
  });

  test("the memory rule: 4 GB each of 80% of the RAM (Claude Code's documented minimum), so 3 on 16 GB and 6 on 32 GB", () => {
    expect(AGENT_MEMORY_GB).toBe(4);
    expect([16, 32].map(maxAgentsFor)).toEqual([3, 6]);
    // the size agentbox picks decides, not the key: a 16 GB request may get a larger type only when named
    expect(parseConfig(agents(["a", "b", "c", "d", "e", "f"], { memoryGb: "32" }), ctx).agents).toHaveLength(6);
  });
});

describe("the box", () => {
  const withAgents: BoxSpec = {
    ...boxSpecOf(parseConfig(base, ctx), {}),
    agents: [
      { name: "api", work: { kind: "worktree", branch: "fix-login" } },
      { name: "docs", work: { kind: "repo", url: "git@github.com:you/docs.git", branch: "main" } },
      { name: "scratch", work: { kind: "empty" } },
    ],
  };
  const files = (s: BoxSpec) =>
    Object.fromEntries(
      (buildCloudConfig(s).write_files as { path: string; content: string }[]).map((f) => [f.path, f]),
    );

  test("the list travels as a root-owned file of tab-separated fields that lib.sh and agents.sh read", () => {
    expect(agentsFile(withAgents.agents!)).toBe(
      "api\tworktree\tfix-login\t\ndocs\trepo\tgit@github.com:you/docs.git\tmain\nscratch\tempty\t\t\n",
    );
    expect(files(withAgents)[BOX_PATHS.agents]).toMatchObject({ permissions: "0644" });
    expect(files(withAgents)[BOX_PATHS.agents]!).not.toHaveProperty("owner");
  });

  test("with agents: the unit template, the shared tmux server and agents.sh; the names and each one's memory share in box.env", () => {
    const f = files(withAgents);
    expect(f[BOX_PATHS.agentUnit]!.content).toBe(boxFile("claude-agent@.service"));
    expect(f[BOX_PATHS.agentsTmuxUnit]!.content).toBe(boxFile("agentbox-tmux.service"));
    expect(f[`${BOX_PATHS.lib}/agents.sh`]!.content).toBe(boxFile("agents.sh"));
    const env = f[BOX_PATHS.boxEnv]!.content;
    expect(env).toContain("AGENTS=api,docs,scratch\n");
    // 75% and 80% of the RAM for all agents (app.slice), a third each
    expect(env).toContain("AGENT_MEMORY_HIGH_PCT=25\nAGENT_MEMORY_MAX_PCT=26\n");
    expect(agentMemoryShare(2)).toEqual({ highPercent: 37, maxPercent: 40 });
  });

  test("Claude Code trusts every agent's workspace (nobody is there to answer its folder-trust prompt)", () => {
    const json = JSON.parse(files(withAgents)["/home/agent/.claude.json"]!.content) as {
      projects: Record<string, { hasTrustDialogAccepted: boolean }>;
    };
    expect(Object.keys(json.projects)).toEqual([
      "/home/agent/workspace",
      "/home/agent/agents/api",
      "/home/agent/agents/docs",
      "/home/agent/agents/scratch",
    ]);
  });

  test("without agents: none of it, and the one agent's unit as before", () => {
    const s = boxSpecOf(parseConfig(base, ctx), {});
    const f = files(s);
    for (const p of [BOX_PATHS.agents, BOX_PATHS.agentUnit, BOX_PATHS.agentsTmuxUnit, `${BOX_PATHS.lib}/agents.sh`]) {
      expect(f[p], p).toBeUndefined();
    }
    expect(f[BOX_PATHS.unit]!.content).toBe(boxFile("claude-agent.service"));
    expect(f[BOX_PATHS.boxEnv]!.content).not.toMatch(/^AGENTS?_?(MEMORY|S=)/m);
  });

  test("the agents' units: each an instance on the shared tmux server, which is a unit of its own", () => {
    const unit = boxFile("claude-agent@.service");
    expect(unit).toContain("ExecStart=/usr/local/lib/agentbox/agent-service %i\n");
    expect(unit).toContain("Requires=agentbox-tmux.service\nAfter=agentbox-tmux.service\n");
    // an exact target: tmux would otherwise kill a session whose name merely begins with this agent's
    expect(unit).toContain("ExecStopPost=-/usr/bin/tmux -N -L agentbox kill-session -t =%i\n");
    expect(unit).toContain("OOMPolicy=continue\n");
    expect(boxFile("agentbox-tmux.service")).toContain(
      "ExecStart=/usr/bin/tmux -L agentbox -f /usr/local/lib/agentbox/tmux.conf -D\n",
    );
  });

  test("three agents fit DigitalOcean's user-data with every option", () => {
    const all = parseConfig(
      agents(["a", "b", "c"], {
        cloud: "digitalocean",
        volumeGb: "20",
        workflowPrompt: "Run the tests.",
        ntfyUrl: "https://ntfy.example.net/agentbox-Zq3xV9mT2pL8wR4n",
        egress: "allowlist",
      }),
      ctx,
    );
    const userData = renderUserData(
      boxSpecOf(all, { ...boxSecretsOf(all), tailnetKey: "tskey-auth-x" }),
      "digitalocean",
    );
    expect(parse(userData.replace(/^#cloud-config\n/, ""))).toHaveProperty("write_files");
  });
});

describe("the stack's outputs", () => {
  test("an attach command for each agent; attachCommand is the first agent's", async () => {
    const program = await runProgram(
      {
        "agentbox:sshPublicKeys": JSON.stringify([SSH_KEY]),
        "agentbox:claudeOauthToken": TOKEN,
        "agentbox:repoUrl": REPO,
        "agentbox:agents": JSON.stringify([{ name: "api", worktree: "fix-login" }, "docs"]),
        "agentbox:tailscale": "false",
        "agentbox:allowSshFrom": JSON.stringify(["203.0.113.7/32"]),
        "agentbox:waitForReady": "false",
        "hcloud:token": "hcloud-test-token",
      },
      { stack: "dev", secretKeys: ["agentbox:claudeOauthToken", "hcloud:token"] },
    );
    const ip = await valueOf(program.module.ipv4 as never);
    expect(await valueOf(program.module.agents as never)).toEqual([
      {
        name: "api",
        workspace: "/home/agent/agents/api",
        work: "worktree of the stack's repository, branch fix-login",
        unit: "claude-agent@api.service",
        attachCommand: `ssh -t agent@${ip} tmux -L agentbox attach -t api`,
      },
      {
        name: "docs",
        workspace: "/home/agent/agents/docs",
        work: "worktree of the stack's repository, branch agentbox/docs",
        unit: "claude-agent@docs.service",
        attachCommand: `ssh -t agent@${ip} tmux -L agentbox attach -t docs`,
      },
    ]);
    expect(await valueOf(program.module.attachCommand as never)).toBe(
      `ssh -t agent@${ip} tmux -L agentbox attach -t api`,
    );
  });
});

describe("Hetzner's 32 KiB user-data", () => {
  const everything: RawConfig = {
    ...base,
    claudeOauthToken: TOKEN,
    volumeGb: "20",
    workflowPrompt: "Run the test suite and fix what fails.",
    ntfyUrl: "https://ntfy.example.net/agentbox-Zq3xV9mT2pL8wR4n",
    ntfyToken: "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2",
  };
  test("three agents fit with a volume, a workflow, notifications, a repository and Tailscale", () => {
    const c = loadConfig({ ...everything, agents: JSON.stringify(["api", "web", "docs"]) });
    expect(userDataProblem(c)).toBeUndefined();
  });
  test("with the egress allow-list too they do not: refused before anything is created, with what to drop", () => {
    const c = loadConfig({ ...everything, egress: "allowlist", agents: JSON.stringify(["api"]) });
    expect(userDataProblem(c)).toMatch(
      /^agentbox:agents: the rendered user-data is \d+ bytes gzip-compressed and base64-encoded, over Hetzner's 32768-byte limit \(32768 bytes at most\): the box's scripts for several agents and every other option this stack turns on do not fit together\. Fix: agentbox:egress open or a shorter agentbox:workflowPrompt, or pulumi config set agentbox:cloud digitalocean \(64 KiB\), or pulumi config rm agentbox:agents$/,
    );
    expect(userDataProblem(loadConfig({ ...everything, egress: "allowlist" }))).toBeUndefined();
  });
});
