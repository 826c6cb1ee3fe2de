/**
 * Baked images. `npm run bake` boots a throw-away server with the builder's user-data (cloud-init/bake.ts), waits
 * until it has sealed itself and powered off, and keeps a snapshot of its disk; a stack that names that snapshot in
 * agentbox:bakedImage boots from it and skips what it already holds (packages, Claude Code).
 *
 * The snapshot records what it holds: Hetzner images carry labels, DigitalOcean snapshots only a name, which
 * carries the same fields. Before anything is created, the program reads the image from the cloud and refuses one
 * that does not match the stack: another Claude Code, architecture or base image, or another builder (provision.sh,
 * the package set or the bake steps have changed since it was made).
 */
import * as digitalocean from "@pulumi/digitalocean";
import * as hcloud from "@pulumi/hcloud";
import * as pulumi from "@pulumi/pulumi";
import { bakeSpecOf, builderHash, renderBakeConfig } from "../cloud-init/bake";
import { hostFor } from "./agentBox";
import type { Cloud } from "./catalogue";
import { placeholderSshKey } from "./cloudSshKey";
import { type AgentBoxConfig, ConfigError, NAMESPACE, defaultHostname } from "./config";
import { hetznerLabel } from "./hosts/hetzner";

/** What a baked image holds, as its labels (Hetzner) or its name (DigitalOcean) record it. */
export interface ImageContents {
  claudeVersion: string;
  arch: "x86_64" | "arm64";
  /** The cloud image it was made from, as agentbox:image names it (debian-13, debian-13-x64, ...). */
  os: string;
  /** The builder's hash (see builderHash in cloud-init/bake.ts). */
  builder: string;
}

/** What an image for this stack must hold. */
export function imageContentsFor(config: AgentBoxConfig): ImageContents {
  const arch = config.serverType.arch;
  return {
    claudeVersion: config.claudeCode.version,
    arch,
    os: config.image,
    builder: builderHash(bakeSpecOf({ arch, claudeCode: config.claudeCode })),
  };
}

const LABEL = {
  claudeVersion: "agentbox-claude-version",
  arch: "agentbox-arch",
  os: "agentbox-os",
  builder: "agentbox-builder",
} as const;

/** A Hetzner snapshot's labels: its contents, and who made it. */
export function hetznerImageLabels(
  c: ImageContents,
  owner: { project: string; stack: string },
): Record<string, string> {
  return {
    "managed-by": "agentbox",
    [LABEL.claudeVersion]: c.claudeVersion,
    [LABEL.arch]: c.arch,
    [LABEL.os]: hetznerLabel(c.os),
    [LABEL.builder]: c.builder,
    "agentbox-project": hetznerLabel(owner.project),
    "agentbox-stack": hetznerLabel(owner.stack),
  };
}

export function contentsFromHetznerLabels(labels: Record<string, string> | undefined): ImageContents | undefined {
  const l = labels ?? {};
  const arch = l[LABEL.arch];
  const [claudeVersion, os, builder] = [l[LABEL.claudeVersion], l[LABEL.os], l[LABEL.builder]];
  if (!claudeVersion || !os || !builder || (arch !== "x86_64" && arch !== "arm64")) return undefined;
  return { claudeVersion, arch, os, builder };
}

/** The image's name, on both clouds; on DigitalOcean, whose snapshots have no labels, it is the record. */
export const imageName = (c: ImageContents) => `agentbox-${c.claudeVersion}-${c.arch}-${c.os}-${c.builder}`;

const NAME = /^agentbox-(\d+\.\d+\.\d+)-(x86_64|arm64)-([a-z0-9][a-z0-9.-]*)-([0-9a-f]{12})$/;
export function contentsFromName(name: string): ImageContents | undefined {
  const m = NAME.exec(name);
  if (!m) return undefined;
  return { claudeVersion: m[1]!, arch: m[2] as ImageContents["arch"], os: m[3]!, builder: m[4]! };
}

/** An image as the cloud describes it: its contents when it is one of ours, and where it may be used. */
export interface FoundImage {
  contents?: ImageContents;
  /** How to name it in a message when it is not one of ours. */
  described: string;
  /** DigitalOcean: the regions that hold the snapshot (Hetzner images are usable in every location). */
  regions?: string[];
}

/** Reads the image with the cloud provider's own data source (the stack's provider credentials). */
export async function readImage(cloud: Cloud, id: string): Promise<FoundImage> {
  switch (cloud) {
    case "hetzner": {
      const image = await hcloud.getImage({ id: Number(id) });
      return {
        contents: contentsFromHetznerLabels(image.labels),
        described: `a ${image.type} image "${image.description}" without agentbox's labels`,
      };
    }
    case "digitalocean": {
      const image = await digitalocean.getImage({ id: Number(id) });
      return {
        contents: contentsFromName(image.name),
        described: `a ${image.type} named "${image.name}", not agentbox-<version>-<arch>-<image>-<builder>`,
        regions: image.regions,
      };
    }
    default: {
      const never: never = cloud;
      throw new Error(`no image reader for ${String(never)}`);
    }
  }
}

const KEY = `${NAMESPACE}:bakedImage`;
const fixFor = (stack: string) =>
  `Fix: npm run bake -- --stack ${stack} (makes an image for the stack's settings and sets ${KEY}), or pulumi config rm ${KEY} (the box then installs everything itself)`;

/** The problem with using this image for this stack, in one line, or undefined when it matches. */
export function imageProblem(config: AgentBoxConfig, id: string, found: FoundImage): string | undefined {
  const fix = fixFor(config.stack);
  const have = found.contents;
  if (!have) return `${KEY}: image ${id} is not one that npm run bake made (${found.described}). ${fix}`;
  const want = imageContentsFor(config);
  const differences: string[] = [];
  if (have.claudeVersion !== want.claudeVersion) {
    differences.push(
      `Claude Code ${have.claudeVersion}, the stack pins ${want.claudeVersion} (${NAMESPACE}:claudeCodeVersion)`,
    );
  }
  if (have.arch !== want.arch) {
    differences.push(`${have.arch}, the stack's ${config.serverType.name} is ${want.arch}`);
  }
  if (have.os !== want.os) differences.push(`base image ${have.os}, the stack's is ${want.os} (${NAMESPACE}:image)`);
  if (have.builder !== want.builder) {
    differences.push(
      `builder ${have.builder}, this checkout's is ${want.builder} (provision.sh, the package set or the bake steps have changed since)`,
    );
  }
  if (found.regions && !found.regions.includes(config.location)) {
    differences.push(`it is in ${found.regions.join(", ") || "no region"}, the stack's region is ${config.location}`);
  }
  if (!differences.length) return undefined;
  return `${KEY}: image ${id} does not match this stack: ${differences.join("; ")}. ${fix}`;
}

/**
 * Reads the stack's baked image from the cloud and throws a ConfigError when it does not match the stack, so that
 * index.ts creates nothing with a wrong image. Nothing to do without agentbox:bakedImage.
 */
export async function checkBakedImage(config: AgentBoxConfig, read = readImage): Promise<void> {
  if (!config.bakedImage) return;
  const { id } = config.bakedImage;
  let found: FoundImage;
  try {
    found = await read(config.cloud, id);
  } catch (e) {
    const why =
      (e instanceof Error ? e.message : String(e))
        .split("\n")
        .map((l) => l.trim())
        .find(Boolean) ?? "the lookup failed without saying why";
    throw new ConfigError([
      `${KEY}: image ${id} cannot be read from ${config.cloud} (${why}). Check the id in the cloud console (Images → Snapshots). ${fixFor(config.stack)}`,
    ]);
  }
  const problem = imageProblem(config, id, found);
  if (problem) throw new ConfigError([problem]);
}

/** How long a bake may take before the wait gives up: a bake takes minutes, a failed one never powers off. */
export const BAKE_TIMEOUT_MINUTES = 30;
const POLL_SECONDS = 10;

/**
 * Resolves once readStatus says "off"; rejects after the timeout. The builder powers itself off once the image is
 * sealed, which is the only signal it gives: it has no login, so nothing could ask it over SSH.
 */
export async function pollUntilOff(
  readStatus: () => Promise<string>,
  opts: {
    timeoutMs: number;
    intervalMs: number;
    what: string;
    sleep?: (ms: number) => Promise<void>;
    now?: () => number;
  },
): Promise<void> {
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const now = opts.now ?? Date.now;
  const deadline = now() + opts.timeoutMs;
  let status = "";
  for (;;) {
    status = await readStatus();
    if (status === "off") return;
    if (now() >= deadline) break;
    await sleep(opts.intervalMs);
  }
  throw new Error(
    `${opts.what} is still ${status || "not off"} after ${Math.round(opts.timeoutMs / 60000)} minutes: its bake failed or hangs (a failed bake never powers off). Its log is /var/log/agentbox/bake.log on that server (the cloud console shows its screen); npm run bake removes it`,
  );
}

/**
 * Waits for the builder to power off, asking the cloud through the provider's own data sources (its credentials
 * and API client: no extra tool, no HTTP of our own).
 */
export function waitUntilOff(cloud: Cloud, serverId: string): Promise<void> {
  const id = Number(serverId);
  const read = async () => {
    switch (cloud) {
      case "hetzner":
        return (await hcloud.getServer({ id })).status;
      case "digitalocean":
        return (await digitalocean.getDroplet({ id })).status;
      default: {
        const never: never = cloud;
        throw new Error(`no server reader for ${String(never)}`);
      }
    }
  };
  return pollUntilOff(read, {
    timeoutMs: BAKE_TIMEOUT_MINUTES * 60_000,
    intervalMs: POLL_SECONDS * 1000,
    what: `the image builder (server ${serverId})`,
  });
}

export interface ImageBakeArgs {
  /** The stack whose settings the image is made for (claudeCodeVersion, serverType, image, location, cloud). */
  config: AgentBoxConfig;
  /** Resolves once the builder is powered off (default: waitUntilOff). */
  waitUntilOff?: (cloud: Cloud, serverId: string) => Promise<void>;
}

/**
 * The image stack's program: a builder server (the same SSH key, firewall and server as a box, from the cloud's
 * host module, with the builder's user-data), the wait for it to power off, and a snapshot of its disk. The snapshot
 * is retained when the image stack is destroyed: destroying removes the builder and keeps the image.
 */
export class ImageBake extends pulumi.ComponentResource {
  public readonly imageId: pulumi.Output<string>;
  public readonly imageName: pulumi.Output<string>;

  constructor(name: string, args: ImageBakeArgs, opts?: pulumi.ComponentResourceOptions) {
    super("agentbox:index:ImageBake", name, {}, opts);
    const { config } = args;
    const wait = args.waitUntilOff ?? waitUntilOff;
    const contents = imageContentsFor(config);
    const named = imageName(contents);
    // its own cloud SSH key: the box's (same project and stack) may exist already, and clouds refuse a second copy
    const builderStack = `${config.stack}-image`;
    const host = hostFor(config.cloud)(
      {
        name,
        cloudName: `${defaultHostname(config.project, config.stack).slice(0, 57).replace(/-$/, "")}-image`,
        location: config.location,
        // the box's own type: a snapshot fits servers with at least the disk it was made on
        serverType: config.serverType.name,
        image: config.image,
        cloudSshPublicKey: placeholderSshKey(config.project, builderStack, config.sshPublicKeys[0] ?? ""),
        allowSshFrom: [],
        userData: pulumi.output(renderBakeConfig(bakeSpecOf({ arch: contents.arch, claudeCode: config.claudeCode }))),
        labels: { project: config.project, stack: builderStack },
      },
      this,
    );
    // The snapshot takes the id only once the builder is off. In a preview the id is unknown and nothing waits.
    const offId = host.serverId.apply(async (id) => {
      await wait(config.cloud, id);
      return id;
    });
    const keep = { parent: this, retainOnDelete: true };
    let snapshot: pulumi.CustomResource & { id: pulumi.Output<string> };
    switch (config.cloud) {
      case "hetzner":
        snapshot = new hcloud.Snapshot(
          `${name}-snapshot`,
          {
            serverId: offId.apply(Number),
            description: named,
            labels: hetznerImageLabels(contents, config),
          },
          keep,
        );
        break;
      case "digitalocean":
        snapshot = new digitalocean.DropletSnapshot(`${name}-snapshot`, { dropletId: offId, name: named }, keep);
        break;
      default: {
        const never: never = config.cloud;
        throw new Error(`no snapshot for ${String(never)}`);
      }
    }
    this.imageId = snapshot.id;
    this.imageName = pulumi.output(named);
    this.registerOutputs({ imageId: this.imageId, imageName: this.imageName });
  }
}

/** The image stack's inline program (scripts/bake.ts): its outputs are the image's id and name. */
export function bakeProgram(config: AgentBoxConfig, deps: Pick<ImageBakeArgs, "waitUntilOff"> = {}) {
  const bake = new ImageBake("agentbox-image", { config, ...deps });
  return { imageId: bake.imageId, imageName: bake.imageName };
}
