import * as pulumi from "@pulumi/pulumi";
import { beforeEach, expect, test, vi } from "vitest";
import { defaultHostname } from "../components/config";
import { volumeName } from "../components/hosts/types";
import { AgentBox, ConfigError } from "../lib";
import { type CreatedResource, runProgram, valueOf } from "./mocks";
import { SSH_KEY, TOKEN } from "./stacks";

const FLEET_CONFIG = {
  "agentbox-fleet:sshPublicKey": SSH_KEY,
  "agentbox-fleet:claudeOauthToken": TOKEN,
  "tailscale:apiKey": "tskey-api-test",
  "hcloud:token": "hcloud-test-token",
  "digitalocean:token": "do-test-token",
};

// each program runs in a fresh module graph, as `pulumi up` runs it
beforeEach(() => vi.resetModules());

const fleet = () =>
  runProgram(FLEET_CONFIG, {
    project: "agentbox-fleet",
    stack: "dev",
    secretKeys: ["agentbox-fleet:claudeOauthToken", "tailscale:apiKey"],
    sshAgentKeys: [SSH_KEY],
    program: "../examples/fleet/index.js",
  });

const ofBox = (resources: CreatedResource[], box: string) => resources.filter((r) => r.name.startsWith(`${box}-`));
const byType = (resources: CreatedResource[], type: string) => resources.filter((r) => r.type === type);

test("the fleet example: two boxes on two clouds in one program, whose names never meet", async () => {
  const { resources, urns, module } = await fleet();
  // every resource of the program has a URN of its own (Pulumi refuses a program that repeats one)
  expect(new Set(resources.map((r) => r.urn)).size).toBe(resources.length);
  expect(new Set(urns.values()).size).toBe(urns.size);
  expect(byType(resources, "agentbox:index:AgentBox").map((r) => r.name)).toEqual(["api", "web"]);

  const api = ofBox(resources, "api");
  const web = ofBox(resources, "web");
  expect(api.map((r) => r.type)).toEqual(
    expect.arrayContaining([
      "hcloud:index/server:Server",
      "hcloud:index/sshKey:SshKey",
      "hcloud:index/firewall:Firewall",
    ]),
  );
  expect(web.map((r) => r.type)).toEqual(
    expect.arrayContaining(["digitalocean:index/droplet:Droplet", "digitalocean:index/volume:Volume"]),
  );
  // what the clouds need unique: names per type, Hetzner's SSH key (name and fingerprint); DigitalOcean's firewall
  // applies to droplets by tag, so the box's tag must be its own
  const names = (r: CreatedResource[]) => r.map((x) => x.inputs.name).filter((n) => n !== undefined);
  expect(names(api.filter((r) => r.type.startsWith("hcloud:")))).toEqual(
    expect.arrayContaining(["agentbox-fleet-dev--api"]),
  );
  expect(names(web.filter((r) => r.type.startsWith("digitalocean:")))).toEqual(
    expect.arrayContaining(["agentbox-fleet-dev--web", "agentbox-fleet-dev--web-home"]),
  );
  const sshKeys = resources.filter((r) => r.type.endsWith("sshKey:SshKey")).map((r) => r.inputs.publicKey);
  expect(new Set(sshKeys).size).toBe(2);
  const droplet = byType(web, "digitalocean:index/droplet:Droplet")[0]!;
  const firewall = byType(web, "digitalocean:index/firewall:Firewall")[0]!;
  expect(firewall.inputs.tags).toEqual(["agentbox-box:agentbox-fleet-dev--web"]);
  expect(droplet.inputs.tags).toContain("agentbox-box:agentbox-fleet-dev--web");
  expect(byType(web, "digitalocean:index/volume:Volume")[0]!.inputs.description).toBe(
    "agentbox home of agentbox-fleet/dev/web",
  );
  expect(byType(api, "hcloud:index/server:Server")[0]!.inputs.labels).toMatchObject({ "agentbox-box": "api" });
  // each box its own tailnet name, key and device cleanup
  const cleanups = byType(resources, "pulumi-nodejs:dynamic/agentbox:TailnetDeviceCleanup");
  expect(cleanups.map((r) => r.inputs.hostname)).toEqual(["agentbox-fleet-dev--api", "agentbox-fleet-dev--web"]);
  const keys = byType(resources, "tailscale:index/tailnetKey:TailnetKey");
  expect(new Set(keys.map((k) => k.inputs.description)).size).toBe(2);
  // the token given as a secret Output stays one: in the user-data of both servers, and in no plain input
  for (const server of [byType(api, "hcloud:index/server:Server")[0]!, droplet]) {
    expect(server.secretInputs).toContain("userData");
  }
  expect(
    JSON.stringify(resources.map((r) => Object.entries(r.inputs).filter(([k]) => !r.secretInputs.includes(k)))),
  ).not.toContain(TOKEN);
  const boxes = (await valueOf(pulumi.output(module.boxes))) as Record<string, { ssh: string; agents?: unknown[] }>;
  expect(boxes.api?.ssh).toBe("ssh agent@agentbox-fleet-dev--api");
  expect(boxes.web?.ssh).toBe("ssh agent@agentbox-fleet-dev--web");
  expect(boxes.web?.agents).toHaveLength(2);
}, 60_000);

test("two boxes of one program that would share a tailnet name are refused, naming both, before the second exists", async () => {
  const error = await runProgram(FLEET_CONFIG, {
    project: "agentbox-fleet",
    stack: "dev",
    sshAgentKeys: [SSH_KEY],
    program: () => {
      const base = { sshPublicKeys: [SSH_KEY], tailscaleHostname: "shared-box", waitForReady: false };
      new AgentBox("one", base);
      new AgentBox("two", { ...base, cloud: "digitalocean" });
      return {};
    },
  }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConfigError);
  expect((error as ConfigError).message).toMatch(/^agentbox: AgentBox "two"'s arguments have 1 problem/);
  expect((error as ConfigError).problems).toEqual([
    expect.stringMatching(
      /^tailscaleHostname: shared-box is the tailnet name of another AgentBox of this program, "one": .* Fix: /,
    ),
  ]);
});

test("a box's name must make a DNS label: refused with the fix before anything is registered", async () => {
  const created: string[] = [];
  const error = await runProgram(FLEET_CONFIG, {
    project: "agentbox-fleet",
    stack: "dev",
    program: () => {
      new AgentBox("API box", { sshPublicKeys: [SSH_KEY], waitForReady: false });
      return {};
    },
  }).then(
    (p) => created.push(...p.resources.map((r) => r.name)),
    (e: unknown) => e,
  );
  expect((error as ConfigError).problems).toEqual([
    expect.stringMatching(/^"API box" is not a box name: .* Fix: new AgentBox\("api", \.\.\.\)$/),
  ]);
  expect(created).toEqual([]);
});

test("a fleet's names stay apart from every other stack's, and whole: the box's name is never cut, its volume's neither", () => {
  // stack prod's box api is not stack prod-api's one box
  expect(defaultHostname("team", "prod", "api")).toBe("team-prod--api");
  expect(defaultHostname("team", "prod", "api")).not.toBe(defaultHostname("team", "prod-api"));
  // nor the image builder of stack prod (npm run bake names it <project>-<stack>-image)
  expect(defaultHostname("team", "prod", "image")).not.toBe(`${defaultHostname("team", "prod")}-image`);
  // a long project and stack give way: every box keeps its name, in the cloud name and the volume's
  const long = ["my-company-infrastructure-agents", "production-eu-central"] as const;
  const boxes = ["web-1", "web-2", "a", "x".repeat(24)];
  const names = boxes.map((b) => defaultHostname(...long, b));
  for (const [i, n] of names.entries()) {
    expect(n.endsWith(`--${boxes[i]}`)).toBe(true);
    expect(n.length).toBeLessThanOrEqual(58);
    expect(volumeName(n)).toBe(`${n}-home`);
    expect(n).toMatch(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/);
  }
  expect(new Set(names.map(volumeName)).size).toBe(boxes.length);
  // the one box of a stack keeps the names of every earlier stack
  expect(defaultHostname("team", "prod", "agentbox")).toBe("team-prod");
  expect(defaultHostname("team", "prod")).toBe("team-prod");
});

test("two boxes of one name under different parents are refused: Pulumi's URNs differ, the cloud's names would not", async () => {
  const error = await runProgram(FLEET_CONFIG, {
    project: "agentbox-fleet",
    stack: "dev",
    sshAgentKeys: [SSH_KEY],
    program: () => {
      const args = { sshPublicKeys: [SSH_KEY], waitForReady: false };
      new AgentBox("api", args);
      const team = new pulumi.ComponentResource("example:index:Team", "team");
      new AgentBox("api", args, { parent: team });
      return {};
    },
  }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect((error as ConfigError).problems).toEqual([
    expect.stringMatching(/^the cloud name agentbox-fleet-dev--api: another AgentBox of this program, "api" .* Fix: /),
    expect.stringMatching(/^tailscaleHostname: agentbox-fleet-dev--api is the tailnet name of another AgentBox/),
  ]);
});
