import { cloudConfigOf } from "../cloud-init/render";
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, test, vi } from "vitest";
import { parse } from "yaml";
import { renderBakeConfig } from "../cloud-init/bake";
import { bakeProgram, hetznerImageLabels, imageContentsFor, imageName } from "../components/bakedImage";
import { placeholderSshKey } from "../components/cloudSshKey";
import { type AgentBoxConfig, ConfigError, agentboxKeys, parseConfig } from "../components/config";
import { type CreatedResource, FAKE_IMAGES, type Program, installMocks, runProgram, valueOf } from "./mocks";
import { SSH_KEY, digitalOceanStack, hetznerStack } from "./stacks";

// A stack that names a baked image: the program reads the image from the cloud (the getImage invoke, answered by
// the mocks from FAKE_IMAGES) before it creates anything, and boots the server from it.

const configOf = (stack: Record<string, string>, name = "dev"): AgentBoxConfig =>
  parseConfig(agentboxKeys(stack), { project: "agentbox", stack: name });

const byType = (resources: CreatedResource[], type: string) => resources.filter((r) => r.type === type);
const one = (resources: CreatedResource[], type: string) => {
  const found = byType(resources, type);
  expect(found, type).toHaveLength(1);
  return found[0]!;
};

/** Waits until registering one resource no longer leads to another (as runProgram does). */
async function settle(resources: CreatedResource[]) {
  for (let quiet = 0; quiet < 5;) {
    const before = resources.length;
    await new Promise((r) => setTimeout(r, 10));
    quiet = resources.length === before ? quiet + 1 : 0;
  }
}

const hetznerBaked = { ...hetznerStack, "agentbox:bakedImage": "4242" };
const hetznerContents = imageContentsFor(configOf(hetznerBaked));
FAKE_IMAGES.set(4242, {
  type: "snapshot",
  description: imageName(hetznerContents),
  architecture: "x86",
  labels: hetznerImageLabels(hetznerContents, { project: "agentbox", stack: "dev" }),
});
// the same stack's image, but made for an older Claude Code
FAKE_IMAGES.set(4243, {
  type: "snapshot",
  description: "old",
  architecture: "x86",
  labels: hetznerImageLabels({ ...hetznerContents, claudeVersion: "2.1.300" }, { project: "agentbox", stack: "dev" }),
});
const doBaked = { ...digitalOceanStack, "agentbox:bakedImage": "77" };
FAKE_IMAGES.set(77, { type: "snapshot", name: imageName(imageContentsFor(configOf(doBaked))), regions: ["ams3"] });

type UserData = { package_update: boolean; package_upgrade: boolean; packages?: string[] };

describe("a Hetzner stack on a matching baked image", () => {
  let program: Program;
  beforeAll(async () => {
    program = await runProgram(hetznerBaked, { stack: "dev" });
  });

  test("boots the server from the snapshot", () => {
    expect(one(program.resources, "hcloud:index/server:Server").inputs.image).toBe("4242");
  });

  test("creates the same resources as on the stock image, nothing more", () => {
    expect(program.resources.map((r) => `${r.type} ${r.name}`).sort()).toEqual([
      "agentbox:index:AgentBox agentbox",
      "command:local:Command agentbox-credential",
      "command:local:Command agentbox-release",
      "command:remote:Command agentbox-ready",
      "hcloud:index/firewall:Firewall agentbox-firewall",
      "hcloud:index/server:Server agentbox-server",
      "hcloud:index/sshKey:SshKey agentbox-ssh-key",
      "pulumi-nodejs:dynamic/agentbox:TailnetDeviceCleanup agentbox-tailnet-device",
      "tailscale:index/tailnetKey:TailnetKey agentbox-tailnet-key",
    ]);
  });

  test("its user-data installs no packages and refreshes no lists, and stays a secret", async () => {
    const doc = parse(
      cloudConfigOf(one(program.resources, "hcloud:index/server:Server").inputs.userData as string),
    ) as UserData;
    expect(doc.package_update).toBe(false);
    expect(doc.package_upgrade).toBe(false);
    expect(doc).not.toHaveProperty("packages");
    expect(await pulumi.isSecret(program.module.userData!)).toBe(true);
    expect(await valueOf(program.module.serverType!)).toBe("cx43");
  });
});

/**
 * Runs the program (freshly imported) on a stack whose image check must fail: every output's failure and every
 * unhandled rejection, as Pulumi's runtime would see them (it reports one error once, however many promises carry
 * it), caught here instead of by vitest; and the resources created meanwhile.
 */
async function runRefused(stack: Record<string, string>, secretKeys: string[]) {
  vi.resetModules();
  const created = installMocks("agentbox", "dev", stack, secretKeys);
  const unhandled: unknown[] = [];
  const listeners = process.listeners("unhandledRejection");
  process.removeAllListeners("unhandledRejection");
  process.on("unhandledRejection", (e) => unhandled.push(e));
  let errors: unknown[];
  try {
    const module = (await import("../index.js")) as unknown as Record<string, pulumi.Output<unknown>>;
    errors = await Promise.all(
      Object.values(module).map((o) =>
        (o as unknown as { promise(): Promise<unknown> }).promise().then(
          () => undefined,
          (e: unknown) => e,
        ),
      ),
    );
    await settle(created);
    await new Promise((r) => setTimeout(r, 50));
  } finally {
    process.removeAllListeners("unhandledRejection");
    for (const l of listeners) process.on("unhandledRejection", l);
  }
  return { created, errors, unhandled };
}

describe("a stack whose baked image does not match", () => {
  test("stops with the exact error before any resource exists", async () => {
    const { created, errors, unhandled } = await runRefused({ ...hetznerStack, "agentbox:bakedImage": "4243" }, [
      "agentbox:claudeOauthToken",
      "hcloud:token",
      "tailscale:apiKey",
    ]);
    expect(created).toEqual([]);
    // the program's own ConfigError: index.ts was imported afresh, with its own copy of config.ts
    const fresh = await import("../components/config.js");
    const error = errors[0] as ConfigError;
    expect(error).toBeInstanceOf(fresh.ConfigError);
    expect(error.message).toBe(
      "agentbox: the stack configuration has 1 problem:\n" +
        "  - agentbox:bakedImage: image 4243 does not match this stack: Claude Code 2.1.300, the stack pins 2.1.332 " +
        "(agentbox:claudeCodeVersion). Fix: npm run bake -- --stack dev (makes an image for the stack's settings and " +
        "sets agentbox:bakedImage), or pulumi config rm agentbox:bakedImage (the box then installs everything itself)",
    );
    expect(errors.length).toBeGreaterThan(10);
    for (const e of [...errors, ...unhandled]) expect(e).toBe(error);
  });

  // (Pulumi's mocks drop an invoke's error message; the unit tests check that the cloud's own reason is quoted)
  test("an id the cloud does not know is refused the same way", async () => {
    const { created, errors } = await runRefused({ ...hetznerStack, "agentbox:bakedImage": "999" }, []);
    const error = errors[0];
    expect(created).toEqual([]);
    expect((error as ConfigError).problems).toEqual([
      expect.stringMatching(
        /^agentbox:bakedImage: image 999 cannot be read from hetzner \(.+\)\. Check the id in the cloud console \(Images → Snapshots\)\. Fix: npm run bake -- --stack dev /,
      ),
    ]);
  });
});

describe("a DigitalOcean stack on a matching baked image", () => {
  let program: Program;
  beforeAll(async () => {
    vi.resetModules();
    program = await runProgram(doBaked, { stack: "dev" });
  });

  test("boots the droplet from the snapshot, installing no packages", () => {
    const droplet = one(program.resources, "digitalocean:index/droplet:Droplet");
    expect(droplet.inputs.image).toBe("77");
    expect(parse(droplet.inputs.userData as string)).not.toHaveProperty("packages");
  });
});

/** Records each registration's retainOnDelete (test/mocks.ts records the other options). */
function recordRetainOnDelete(): Map<string, boolean> {
  const retain = new Map<string, boolean>();
  const monitor = pulumi.runtime.getMonitor() as unknown as {
    registerResource(req: { getName(): string; getRetainondelete(): boolean | undefined }, callback: unknown): unknown;
  };
  const register = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req, callback) => {
    retain.set(req.getName(), req.getRetainondelete() ?? false);
    return register(req, callback);
  };
  return retain;
}

/** Runs the image stack's program against the mocks, with a builder that "powers off" at once. */
async function runBake(stack: Record<string, string>) {
  const config = configOf(stack);
  const created = installMocks("agentbox", "dev-image", {}, []);
  const retain = recordRetainOnDelete();
  const events: string[] = [];
  const waitUntilOff = async (cloud: string, id: string) => {
    events.push(`wait ${cloud} ${id}`);
  };
  const outputs = bakeProgram(config, { waitUntilOff });
  const imageId = await valueOf(outputs.imageId);
  const name = await valueOf(outputs.imageName);
  await settle(created);
  return { config, created, retain, events, imageId, name };
}

describe("the image stack's program (npm run bake), Hetzner", () => {
  let bake: Awaited<ReturnType<typeof runBake>>;
  beforeAll(async () => {
    bake = await runBake(hetznerStack);
  });
  const contents = () => imageContentsFor(bake.config);

  test("creates the builder (SSH key, firewall, server) and a snapshot, under one component", () => {
    expect(bake.created.map((r) => `${r.type} ${r.name}`).sort()).toEqual([
      "agentbox:index:ImageBake agentbox-image",
      "hcloud:index/firewall:Firewall agentbox-image-firewall",
      "hcloud:index/server:Server agentbox-image-server",
      "hcloud:index/snapshot:Snapshot agentbox-image-snapshot",
      "hcloud:index/sshKey:SshKey agentbox-image-ssh-key",
    ]);
  });

  test("the builder is the stack's server type and image, with the builder's user-data and a key of its own", () => {
    const server = one(bake.created, "hcloud:index/server:Server");
    expect(server.inputs).toMatchObject({
      name: "agentbox-dev-image",
      serverType: "cx43",
      image: "debian-13",
      location: "fsn1",
      userData: renderBakeConfig({ arch: "x86_64", claudeCode: { version: "2.1.332", installMethod: "npm" } }),
    });
    expect(server.secretInputs).toEqual([]);
    expect(one(bake.created, "hcloud:index/sshKey:SshKey").inputs.publicKey).toBe(
      placeholderSshKey("agentbox", "dev-image", SSH_KEY),
    );
    expect(one(bake.created, "hcloud:index/firewall:Firewall").inputs.rules).toEqual([]);
  });

  test("the snapshot waits for the builder to power off, records its contents in labels, and is retained", () => {
    const server = bake.created.findIndex((r) => r.type === "hcloud:index/server:Server");
    const snapshot = one(bake.created, "hcloud:index/snapshot:Snapshot");
    expect(bake.events).toEqual([`wait hetzner ${String(1000 + server)}`]);
    expect(snapshot.inputs).toEqual({
      serverId: 1000 + server,
      description: imageName(contents()),
      labels: hetznerImageLabels(contents(), { project: "agentbox", stack: "dev" }),
    });
    expect(bake.retain.get("agentbox-image-snapshot")).toBe(true);
    expect(bake.retain.get("agentbox-image-server")).toBe(false);
  });

  test("outputs the snapshot's id and name", () => {
    const snapshot = bake.created.findIndex((r) => r.type === "hcloud:index/snapshot:Snapshot");
    expect(bake.imageId).toBe(String(1000 + snapshot));
    expect(bake.name).toBe(`agentbox-2.1.332-x86_64-debian-13-${contents().builder}`);
  });
});

describe("the image stack's program (npm run bake), DigitalOcean", () => {
  let bake: Awaited<ReturnType<typeof runBake>>;
  beforeAll(async () => {
    bake = await runBake(digitalOceanStack);
  });

  test("a droplet snapshot named after its contents, retained, taken once the builder is off", () => {
    expect(bake.created.map((r) => r.type).sort()).toEqual([
      "agentbox:index:ImageBake",
      "digitalocean:index/droplet:Droplet",
      "digitalocean:index/dropletSnapshot:DropletSnapshot",
      "digitalocean:index/firewall:Firewall",
      "digitalocean:index/sshKey:SshKey",
    ]);
    const droplet = bake.created.findIndex((r) => r.type === "digitalocean:index/droplet:Droplet");
    expect(bake.created[droplet]!.inputs).toMatchObject({
      size: "s-8vcpu-32gb-amd",
      image: "debian-13-x64",
      region: "ams3",
    });
    expect(bake.events).toEqual([`wait digitalocean ${String(1000 + droplet)}`]);
    expect(one(bake.created, "digitalocean:index/dropletSnapshot:DropletSnapshot").inputs).toEqual({
      dropletId: String(1000 + droplet),
      name: imageName(imageContentsFor(bake.config)),
    });
    expect(bake.retain.get("agentbox-image-snapshot")).toBe(true);
  });
});
