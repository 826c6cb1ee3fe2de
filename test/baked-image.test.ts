import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { describe, expect, test } from "vitest";
import { parse, stringify } from "yaml";
import {
  BAKE_PATHS,
  type BakeSpec,
  bakePackages,
  bakeSpecOf,
  buildBakeConfig,
  builderHash,
  renderBakeConfig,
} from "../cloud-init/bake";
import {
  BOX_PATHS,
  type BoxSpec,
  USER_DATA_LIMIT_BYTES,
  boxFile,
  buildCloudConfig,
  packagesFor,
} from "../cloud-init/render";
import { boxSpecOf } from "../components/boxSpec";
import {
  type FoundImage,
  type ImageContents,
  checkBakedImage,
  contentsFromHetznerLabels,
  contentsFromName,
  hetznerImageLabels,
  imageContentsFor,
  imageName,
  imageProblem,
  pollUntilOff,
} from "../components/bakedImage";
import { type AgentBoxConfig, ConfigError, parseConfig } from "../components/config";
import { type BakeDeps, imageStackName, parseBakeArgs, runBake } from "../scripts/bake";
import { Interrupts } from "../scripts/workflow-cycle";
import { SSH_KEY } from "./stacks";

const npm: BakeSpec = { arch: "x86_64", claudeCode: { version: "2.1.332", installMethod: "npm" } };
const PROVISION = `${BOX_PATHS.lib}/provision`;

type WriteFile = { path: string; content: string; permissions: string; encoding?: string };
const bakeDoc = (spec: BakeSpec) => buildBakeConfig(spec) as { write_files: WriteFile[]; [k: string]: unknown };
const gunzip = (f: WriteFile) =>
  f.encoding === "gz+b64" ? gunzipSync(Buffer.from(f.content, "base64")).toString("utf8") : f.content;

const raw = (extra: Record<string, string> = {}) => ({ sshPublicKeys: JSON.stringify([SSH_KEY]), ...extra });
const configOf = (extra: Record<string, string> = {}, stack = "dev"): AgentBoxConfig =>
  parseConfig(raw(extra), { project: "agentbox", stack });

describe("the image builder's user-data (cloud-init/bake.ts)", () => {
  test("has no users, no box settings and no secrets: only the box's provision script, its library and the bake's settings", () => {
    const doc = bakeDoc(npm);
    expect(doc.users).toEqual([]);
    expect(doc).toMatchObject({ disable_root: true, ssh_pwauth: false });
    expect(doc.write_files.map((f) => [f.path, f.permissions])).toEqual([
      [`${BOX_PATHS.lib}/lib.sh`, "0644"],
      [PROVISION, "0755"],
      [`${BOX_PATHS.lib}/bake.sh`, "0644"],
      [BAKE_PATHS.env, "0644"],
    ]);
    expect(doc.runcmd).toEqual([[PROVISION, "--bake"]]);
    const text = renderBakeConfig(npm);
    for (const boxOnly of [BOX_PATHS.boxEnv, BOX_PATHS.tailscaleKey, "/home/", "ssh_authorized_keys", "agent.env"]) {
      expect(text).not.toContain(boxOnly);
    }
  });

  test("places the box's own provision script and library, verbatim", () => {
    const files = Object.fromEntries(bakeDoc(npm).write_files.map((f) => [f.path, gunzip(f)]));
    expect(files[PROVISION]).toBe(boxFile("provision.sh"));
    expect(files[`${BOX_PATHS.lib}/lib.sh`]).toBe(boxFile("lib.sh"));
    expect(files[`${BOX_PATHS.lib}/bake.sh`]).toBe(boxFile("bake.sh"));
  });

  test("tells the builder the Claude Code, platform, packages and builder it records", () => {
    const env = bakeDoc(npm).write_files.find((f) => f.path === BAKE_PATHS.env)!;
    expect(env.encoding).toBeUndefined();
    expect(env.content).toBe(
      "CLAUDE_VERSION=2.1.332\nCLAUDE_INSTALL=npm\nCLAUDE_PLATFORM=linux-x64\n" +
        `PACKAGES=ca-certificates,curl,e2fsprogs,git,jq,logrotate,mosh,nftables,nodejs,systemd-zram-generator,tmux\nBUILDER=${builderHash(npm)}\n`,
    );
    const arm = bakeDoc({ arch: "arm64", claudeCode: { version: "2.1.300", installMethod: "download" } });
    expect(arm.write_files.find((f) => f.path === BAKE_PATHS.env)!.content).toMatch(
      /^CLAUDE_VERSION=2\.1\.300\nCLAUDE_INSTALL=download\nCLAUDE_PLATFORM=linux-arm64\nPACKAGES=[a-z0-9,.-]*python3[a-z0-9,.-]*\nBUILDER=[0-9a-f]{12}\n$/,
    );
  });

  test("installs, and upgrades, every package any box of the stack may ask for (sorted, as the image records them)", () => {
    const doc = bakeDoc(npm);
    expect(doc).toMatchObject({ package_update: true, package_upgrade: true });
    expect(doc.packages).toEqual(bakePackages(npm));
    expect(bakePackages(npm)).toEqual([...bakePackages(npm)].sort());
    const box: BoxSpec = {
      project: "p",
      stack: "s",
      user: "agent",
      sudo: false,
      allowSshFrom: [],
      unattendedUpgrades: true,
      sshPublicKeys: [SSH_KEY],
      remoteControl: false,
      upkeep: { diskWarnPercent: 80, workflowKeepRuns: 20, conversationRetentionDays: 365 },
      ...npm,
    };
    const variants: BoxSpec[] = [
      box,
      { ...box, notify: { url: "https://ntfy.sh/x" } },
      { ...box, volume: { deviceGlob: "/dev/x*" } },
      {
        ...box,
        notify: { url: "https://ntfy.sh/x" },
        volume: { deviceGlob: "/dev/x*" },
        egressAllowlist: { extraHosts: [] },
      },
    ];
    for (const v of variants) expect(bakePackages(npm)).toEqual(expect.arrayContaining(packagesFor(v)));
    expect(bakePackages({ ...npm, claudeCode: { ...npm.claudeCode, installMethod: "download" } })).toContain("python3");
  });

  test("the builder hash leaves out what is recorded on its own (version, architecture), and follows the rest", () => {
    const hash = builderHash(npm);
    expect(hash).toMatch(/^[0-9a-f]{12}$/);
    expect(builderHash({ arch: "arm64", claudeCode: { version: "2.1.1", installMethod: "npm" } })).toBe(hash);
    expect(builderHash({ ...npm, claudeCode: { ...npm.claudeCode, installMethod: "download" } })).not.toBe(hash);
    expect(builderHash(structuredClone(npm))).toBe(hash);
  });

  test("is one deterministic #cloud-config under the user-data limit", () => {
    const text = renderBakeConfig(npm);
    expect(text).toBe(renderBakeConfig(structuredClone(npm)));
    expect(text.startsWith("#cloud-config\n")).toBe(true);
    expect(Buffer.byteLength(text)).toBeLessThan(USER_DATA_LIMIT_BYTES);
    expect(parse(text, { version: "1.1" })).toEqual(bakeDoc(npm));
  });

  test("cloud-init's schema accepts it", () => {
    // `users: []` (no users, not even the image's default one) is valid for the box's cloud-init (25), whose
    // schema lint.sh applies before every harness bake; this machine's may predate it and want one entry at least.
    const { users, ...rest } = bakeDoc(npm);
    expect(users).toEqual([]);
    const file = join(mkdtempSync(join(tmpdir(), "agentbox-bake-")), "user-data.yaml");
    writeFileSync(file, `#cloud-config\n${stringify(rest)}`);
    const r = spawnSync("cloud-init", ["schema", "--config-file", file], { encoding: "utf8" });
    if (r.error) throw new Error(`cloud-init is not installed here (apt-get install cloud-init): ${r.error.message}`);
    expect(`${r.stdout}${r.stderr}`).toContain("Valid");
    expect(r.status).toBe(0);
  });
});

describe("a box on a baked image (render.ts)", () => {
  const config = configOf({ bakedImage: "4242" });
  const spec = boxSpecOf(config, {});

  test("the box spec carries the image's packages, as the stack's settings determine them", () => {
    expect(spec.bakedImage).toEqual({ packages: bakePackages(bakeSpecOf(spec)) });
    expect(boxSpecOf(configOf(), {}).bakedImage).toBeUndefined();
  });

  test("installs nothing and refreshes no package lists when the image has every package", () => {
    const doc = buildCloudConfig(spec);
    expect(doc).toMatchObject({ package_update: false, package_upgrade: false });
    expect(doc).not.toHaveProperty("packages");
    // everything else is the stock box's document
    const stock = buildCloudConfig(boxSpecOf(configOf(), {}));
    const apartFromPackages = (d: Record<string, unknown>) =>
      Object.fromEntries(Object.entries(d).filter(([k]) => !k.startsWith("package")));
    expect(apartFromPackages(doc)).toEqual(apartFromPackages(stock));
  });

  test("installs only what an image lacks, refreshing the lists for it", () => {
    const doc = buildCloudConfig({ ...spec, bakedImage: { packages: ["tmux", "git", "curl"] } });
    expect(doc).toMatchObject({
      package_update: true,
      package_upgrade: false,
      packages: packagesFor(spec).filter((p) => !["tmux", "git", "curl"].includes(p)),
    });
  });

  test("a stock box still refreshes and installs its packages", () => {
    expect(buildCloudConfig(boxSpecOf(configOf(), {}))).toMatchObject({
      package_update: true,
      package_upgrade: false,
      packages: packagesFor(boxSpecOf(configOf(), {})),
    });
  });
});

describe("agentbox:bakedImage", () => {
  test.each(["4242", "123456789012", " 77 "])("accepts the snapshot id %j", (id) => {
    expect(configOf({ bakedImage: id }).bakedImage).toEqual({ id: id.trim() });
  });

  test("unset or empty means the stock image", () => {
    expect(configOf()).not.toHaveProperty("bakedImage");
    expect(configOf({ bakedImage: "" })).not.toHaveProperty("bakedImage");
  });

  test.each(["abc", "0", "0123", "12.5", "ami-0abc", "-1", "1234567890123456789"])("refuses %j", (id) => {
    const error = (() => {
      try {
        configOf({ bakedImage: id });
      } catch (e) {
        return e;
      }
    })() as ConfigError;
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.problems).toEqual([
      `agentbox:bakedImage: ${JSON.stringify(id)} is not an image id (Hetzner and DigitalOcean number their snapshots, e.g. 123456789). Fix: npm run bake -- --stack dev (it makes the image and sets the key), or pulumi config rm agentbox:bakedImage`,
    ]);
  });
});

describe("what an image holds, and whether it fits the stack (components/bakedImage.ts)", () => {
  const config = configOf({ bakedImage: "4242" });
  const want = imageContentsFor(config);
  const FIX =
    "Fix: npm run bake -- --stack dev (makes an image for the stack's settings and sets agentbox:bakedImage), or pulumi config rm agentbox:bakedImage (the box then installs everything itself)";

  test("the stack wants its own Claude Code, architecture, base image and this checkout's builder", () => {
    expect(want).toEqual({
      claudeVersion: "2.1.332",
      arch: "x86_64",
      os: "debian-13",
      builder: builderHash({ arch: "x86_64", claudeCode: { version: "2.1.332", installMethod: "npm" } }),
    });
  });

  test("Hetzner labels and the image name record it, and read back to the same", () => {
    const labels = hetznerImageLabels(want, { project: "agentbox", stack: "dev" });
    expect(labels).toEqual({
      "managed-by": "agentbox",
      "agentbox-claude-version": "2.1.332",
      "agentbox-arch": "x86_64",
      "agentbox-os": "debian-13",
      "agentbox-builder": want.builder,
      "agentbox-project": "agentbox",
      "agentbox-stack": "dev",
    });
    // Hetzner's label values: at most 63 of [a-zA-Z0-9._-], alphanumeric at both ends
    for (const v of Object.values(labels)) expect(v).toMatch(/^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?$/);
    expect(contentsFromHetznerLabels(labels)).toEqual(want);
    expect(imageName(want)).toBe(`agentbox-2.1.332-x86_64-debian-13-${want.builder}`);
    expect(contentsFromName(imageName(want))).toEqual(want);
    const ubuntu: ImageContents = { ...want, arch: "arm64", os: "ubuntu-24-04-x64" };
    expect(contentsFromName(imageName(ubuntu))).toEqual(ubuntu);
  });

  test.each([
    ["no labels", undefined],
    ["other labels", { os: "debian" }],
    ["a bad arch", { ...hetznerImageLabels(want, { project: "p", stack: "s" }), "agentbox-arch": "riscv" }],
  ])("labels that are not ours: %s", (_, labels) => {
    expect(contentsFromHetznerLabels(labels)).toBeUndefined();
  });

  test.each([
    "debian-13-x64",
    "agentbox-latest",
    "agentbox-2.1.332-x86_64-debian-13-XYZ",
    "agentbox-2.1-x86_64-d-0123456789ab",
  ])("names that are not ours: %s", (name) => {
    expect(contentsFromName(name)).toBeUndefined();
  });

  test("an image made for the stack fits", () => {
    expect(imageProblem(config, "4242", { contents: want, described: "" })).toBeUndefined();
  });

  test.each<[string, Partial<ImageContents>, string]>([
    [
      "another Claude Code",
      { claudeVersion: "2.1.300" },
      "Claude Code 2.1.300, the stack pins 2.1.332 (agentbox:claudeCodeVersion)",
    ],
    ["another architecture", { arch: "arm64" }, "arm64, the stack's cx43 is x86_64"],
    [
      "another base image",
      { os: "ubuntu-24.04" },
      "base image ubuntu-24.04, the stack's is debian-13 (agentbox:image)",
    ],
    [
      "another builder",
      { builder: "0123456789ab" },
      `builder 0123456789ab, this checkout's is ${want.builder} (provision.sh, the package set or the bake steps have changed since)`,
    ],
  ])("%s is refused with what differs and the fix", (_, change, difference) => {
    expect(imageProblem(config, "4242", { contents: { ...want, ...change }, described: "" })).toBe(
      `agentbox:bakedImage: image 4242 does not match this stack: ${difference}. ${FIX}`,
    );
  });

  test("every difference is named at once", () => {
    const found: FoundImage = { contents: { ...want, claudeVersion: "2.1.1", arch: "arm64" }, described: "" };
    expect(imageProblem(config, "4242", found)).toBe(
      `agentbox:bakedImage: image 4242 does not match this stack: Claude Code 2.1.1, the stack pins 2.1.332 (agentbox:claudeCodeVersion); arm64, the stack's cx43 is x86_64. ${FIX}`,
    );
  });

  test("a DigitalOcean snapshot in another region is refused", () => {
    const doConfig = configOf({ cloud: "digitalocean", location: "ams3", bakedImage: "77" });
    const contents = imageContentsFor(doConfig);
    expect(imageProblem(doConfig, "77", { contents, described: "", regions: ["ams3", "fra1"] })).toBeUndefined();
    expect(imageProblem(doConfig, "77", { contents, described: "", regions: ["fra1"] })).toBe(
      `agentbox:bakedImage: image 77 does not match this stack: it is in fra1, the stack's region is ams3. ${FIX}`,
    );
  });

  test("an image npm run bake did not make is refused", () => {
    expect(imageProblem(config, "4242", { described: 'a system image "Debian 13" without agentbox\'s labels' })).toBe(
      `agentbox:bakedImage: image 4242 is not one that npm run bake made (a system image "Debian 13" without agentbox's labels). ${FIX}`,
    );
  });

  test("checkBakedImage: nothing to read without the key; a ConfigError for an unreadable or wrong image", async () => {
    let reads = 0;
    const never = async (): Promise<FoundImage> => {
      reads++;
      return { described: "" };
    };
    await checkBakedImage(configOf(), never);
    expect(reads).toBe(0);
    await expect(checkBakedImage(config, async () => ({ contents: want, described: "" }))).resolves.toBeUndefined();
    const missing = checkBakedImage(config, async () => {
      throw new Error("Invoke of 'hcloud:index/getImage:getImage' failed: image not found (not_found)\nmore");
    });
    await expect(missing).rejects.toBeInstanceOf(ConfigError);
    await expect(missing).rejects.toHaveProperty("problems", [
      `agentbox:bakedImage: image 4242 cannot be read from hetzner (Invoke of 'hcloud:index/getImage:getImage' failed: image not found (not_found)). Check the id in the cloud console (Images → Snapshots). ${FIX}`,
    ]);
    await expect(
      checkBakedImage(config, async () => ({ contents: { ...want, builder: "0".repeat(12) }, described: "" })),
    ).rejects.toHaveProperty("problems", [
      expect.stringMatching(/^agentbox:bakedImage: image 4242 does not match this stack: builder 000000000000, /),
    ]);
  });
});

describe("waiting for the builder to power off", () => {
  const clock = () => {
    let t = 0;
    return { now: () => t, sleep: async (ms: number) => void (t += ms) };
  };

  test("returns as soon as the cloud says off, polling at the interval", async () => {
    const statuses = ["initializing", "running", "running", "off"];
    const c = clock();
    let reads = 0;
    await pollUntilOff(async () => statuses[reads++]!, {
      timeoutMs: 60_000,
      intervalMs: 10_000,
      what: "the builder",
      ...c,
    });
    expect(reads).toBe(4);
    expect(c.now()).toBe(30_000);
  });

  test("gives up after the timeout with what to look at", async () => {
    const c = clock();
    await expect(
      pollUntilOff(async () => "running", {
        timeoutMs: 30 * 60_000,
        intervalMs: 10_000,
        what: "the image builder (server 7)",
        ...c,
      }),
    ).rejects.toThrow(
      "the image builder (server 7) is still running after 30 minutes: its bake failed or hangs (a failed bake never powers off). Its log is /var/log/agentbox/bake.log on that server (the cloud console shows its screen); npm run bake removes it",
    );
    expect(c.now()).toBe(30 * 60_000);
  });
});

describe("npm run bake (scripts/bake.ts)", () => {
  test("arguments", () => {
    expect(parseBakeArgs(["--stack", "dev"])).toEqual({ help: false, stack: "dev" });
    expect(parseBakeArgs(["-s", "org/agentbox/dev"])).toEqual({ help: false, stack: "org/agentbox/dev" });
    expect(parseBakeArgs(["--help"])).toEqual({ help: true });
    expect(() => parseBakeArgs([])).toThrow("--stack <name> is required");
    expect(() => parseBakeArgs(["--stack=-x"])).toThrow("--stack -x: not a stack name");
    expect(() => parseBakeArgs(["--stack", "dev", "extra"])).toThrow("unexpected argument extra");
    expect(imageStackName("dev")).toBe("dev-image");
  });

  const STACK_CONFIG = {
    "agentbox:sshPublicKeys": JSON.stringify([SSH_KEY]),
    "agentbox:bakedImage": "1111",
    "hcloud:token": "hcloud-test-token",
  };

  function fakeDeps(
    opts: {
      up?: () => Promise<{ imageId: string; imageName: string }>;
      config?: Record<string, string>;
      /** Called while the image stack is destroyed (a test interrupts there). */
      onDestroy?: () => void;
    } = {},
  ) {
    const calls: string[] = [];
    const lines: string[] = [];
    let program: (() => Promise<Record<string, unknown>>) | undefined;
    const deps: BakeDeps = {
      stackConfig: async () => opts.config ?? STACK_CONFIG,
      up: async (p, providerConfig, signal) => {
        program = p;
        calls.push(`up ${JSON.stringify(providerConfig)}`);
        try {
          return await (
            opts.up ?? (async () => ({ imageId: "4242", imageName: "agentbox-2.1.332-x86_64-debian-13-x" }))
          )();
        } finally {
          // Pulumi would have been told to cancel the update
          if (signal.aborted) calls.push("up cancelled");
        }
      },
      destroy: async (signal) => {
        calls.push("destroy");
        opts.onDestroy?.();
        if (signal.aborted) {
          calls.push("destroy cancelled");
          throw new Error("error: destroy canceled");
        }
      },
      setBakedImage: async (id) => void calls.push(`set ${id}`),
      env: {},
      log: (line) => lines.push(line),
    };
    return { deps, calls, lines, program: () => program };
  }

  test("bakes with the stack's provider token, removes the builder, then points the stack at the image", async () => {
    const f = fakeDeps();
    expect(await runBake(f.deps, "agentbox", "dev")).toBe(0);
    expect(f.calls).toEqual(['up {"hcloud:token":"hcloud-test-token"}', "destroy", "set 4242"]);
    expect(f.program()).toBeTypeOf("function");
    const out = f.lines.join("\n");
    expect(out).toContain("agentbox: baking agentbox-2.1.332-x86_64-debian-13-");
    expect(out).toContain("(it ran: pulumi config set agentbox:bakedImage 4242 --stack dev)");
    expect(out).toContain("Back to the stock image: npm run pulumi -- config rm agentbox:bakedImage --stack dev");
    expect(out).toContain("The image it replaces (1111) is kept: delete it in the cloud console once no box uses it.");
  });

  test("a failed bake still removes the builder and leaves the stack as it was", async () => {
    const f = fakeDeps({
      up: async () => {
        throw new Error("error: the image builder (server 7) is still running after 30 minutes");
      },
    });
    expect(await runBake(f.deps, "agentbox", "dev")).toBe(1);
    expect(f.calls).toEqual(['up {"hcloud:token":"hcloud-test-token"}', "destroy"]);
    expect(f.lines.at(-1)).toBe(
      "agentbox: the bake failed: error: the image builder (server 7) is still running after 30 minutes",
    );
  });

  test("a builder that cannot be removed is reported with the fix; the image is used all the same", async () => {
    const f = fakeDeps();
    f.deps.destroy = async () => {
      f.calls.push("destroy");
      throw new Error("error: 503 Service Unavailable");
    };
    expect(await runBake(f.deps, "agentbox", "dev")).toBe(1);
    expect(f.calls).toEqual(['up {"hcloud:token":"hcloud-test-token"}', "destroy", "set 4242"]);
    expect(f.lines).toContain(
      "agentbox: the builder could not be removed (error: 503 Service Unavailable); the cloud bills it until it is. Fix: HCLOUD_TOKEN=<token> npm run pulumi -- destroy --stack dev-image, then npm run pulumi -- stack rm dev-image",
    );
  });

  describe("interrupted (Ctrl-C, SIGTERM)", () => {
    const FIX =
      "Fix: HCLOUD_TOKEN=<token> npm run pulumi -- destroy --stack dev-image, then npm run pulumi -- stack rm dev-image";

    test("during the bake: the update is cancelled, the builder removed, the stack left as it was; exit 130", async () => {
      const interrupts = new Interrupts();
      const f = fakeDeps({
        up: async () => {
          interrupts.interrupt();
          throw new Error("code: 255\n stderr: error: update canceled");
        },
      });
      expect(await runBake(f.deps, "agentbox", "dev", interrupts)).toBe(130);
      expect(f.calls).toEqual(['up {"hcloud:token":"hcloud-test-token"}', "up cancelled", "destroy"]);
      expect(f.lines.slice(-2)).toEqual([
        "agentbox: interrupted: removing the builder; Ctrl-C again cancels that",
        "agentbox: interrupted; the builder is removed and stack dev is unchanged",
      ]);
    });

    test("again during the removal: it is cancelled, and the fix is printed", async () => {
      const interrupts = new Interrupts();
      const f = fakeDeps({
        up: async () => {
          interrupts.interrupt();
          throw new Error("error: update canceled");
        },
        onDestroy: () => interrupts.interrupt(),
      });
      expect(await runBake(f.deps, "agentbox", "dev", interrupts)).toBe(130);
      expect(f.calls).toEqual([
        'up {"hcloud:token":"hcloud-test-token"}',
        "up cancelled",
        "destroy",
        "destroy cancelled",
      ]);
      expect(f.lines).toContain(
        `agentbox: the builder could not be removed (interrupted); the cloud bills it until it is. ${FIX}`,
      );
      expect(f.lines.at(-1)).toBe("agentbox: interrupted; the builder is left (see above) and stack dev is unchanged");
    });

    test("as the image was made: the builder removed, the stack not pointed at the image, which is named", async () => {
      const interrupts = new Interrupts();
      const f = fakeDeps({
        up: async () => {
          interrupts.interrupt();
          return { imageId: "4242", imageName: "agentbox-x" };
        },
      });
      expect(await runBake(f.deps, "agentbox", "dev", interrupts)).toBe(130);
      expect(f.calls).toEqual(['up {"hcloud:token":"hcloud-test-token"}', "up cancelled", "destroy"]);
      expect(f.lines.at(-1)).toBe(
        "agentbox: interrupted; image 4242 (agentbox-x) was made, but stack dev is not pointed at it. Use it: npm run pulumi -- config set agentbox:bakedImage 4242 --stack dev (or delete it in the cloud console)",
      );
    });

    test("before the bake began: nothing is created", async () => {
      const interrupts = new Interrupts();
      interrupts.interrupt();
      const f = fakeDeps();
      expect(await runBake(f.deps, "agentbox", "dev", interrupts)).toBe(130);
      expect(f.calls).toEqual([]);
      expect(f.lines).toEqual(["agentbox: interrupted before anything was created; stack dev is unchanged"]);
    });
  });

  test.each([
    ["bad stack config", { ...STACK_CONFIG, "agentbox:memoryGb": "8" }, "agentbox:memoryGb: 8 GB is below 16 GB"],
    [
      "a missing cloud token",
      { "agentbox:sshPublicKeys": JSON.stringify([SSH_KEY]) },
      "hcloud:token: not set, and HCLOUD_TOKEN is empty",
    ],
  ])("%s stops it before anything is created", async (_, config, problem) => {
    const f = fakeDeps({ config });
    expect(await runBake(f.deps, "agentbox", "dev")).toBe(1);
    expect(f.calls).toEqual([]);
    expect(f.lines.join("\n")).toMatch(/^agentbox: the stack configuration has 1 problem:\n {2}- /);
    expect(f.lines.join("\n")).toContain(problem);
  });
});
