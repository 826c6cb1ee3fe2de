import { describe, expect, test } from "vitest";
import { type Backend, formatBoxes, listBoxes, serverPrice, volumePricePerGb } from "../scripts/boxes";

// npm run boxes: every stack of the project at a glance, against a stand-in for the backend (what `pulumi stack ls
// --json`, `stack output --json` and `stack export` give) and for the boxes' SSH

type Stack = {
  name: string;
  resourceCount?: number;
  updateInProgress?: boolean;
  outputs?: Record<string, unknown>;
  resources?: { type: string; inputs?: Record<string, unknown> }[];
};
const backendOf = (stacks: Stack[]): Backend & { asked: string[] } => {
  const asked: string[] = [];
  return {
    asked,
    listStacks: async () =>
      stacks.map(({ name, resourceCount, updateInProgress }) => ({ name, resourceCount, updateInProgress })),
    outputs: async (name) => {
      asked.push(`outputs ${name}`);
      return stacks.find((s) => s.name === name)?.outputs ?? {};
    },
    resources: async (name) => {
      asked.push(`export ${name}`);
      return stacks.find((s) => s.name === name)?.resources ?? [];
    },
  };
};

const up = (name: string, cloud: "hetzner" | "digitalocean", extra: Stack["resources"] = []): Stack => ({
  name,
  resourceCount: 9,
  outputs: {
    cloud,
    serverType: cloud === "hetzner" ? "cx43" : "s-4vcpu-16gb",
    monthlyPrice:
      cloud === "hetzner"
        ? "16.49 EUR/month (catalogue of 2026-11, excl. VAT)"
        : "84.00 USD/month (catalogue of 2026-11, excl. VAT)",
    sshTarget: `agent@${name}.tailnet.ts.net`,
    userData: "[secret]",
  },
  resources: [
    { type: cloud === "hetzner" ? "hcloud:index/server:Server" : "digitalocean:index/droplet:Droplet" },
    ...extra,
  ],
});

describe("the rows", () => {
  const stacks: Stack[] = [
    up("api", "hetzner", [{ type: "hcloud:index/volume:Volume", inputs: { size: 20 } }]),
    up("web", "digitalocean"),
    // `destroy --exclude-protected`: the outputs went with the box, the protected volume stays
    {
      name: "nightly",
      resourceCount: 1,
      outputs: {},
      resources: [{ type: "digitalocean:index/volume:Volume", inputs: { size: 50 } }],
    },
    { name: "old", resourceCount: 0 },
    { ...up("busy", "hetzner"), updateInProgress: true },
  ];

  test("state, cloud, type and price of each; the volume's price from the catalogue; status over SSH for the boxes that are up", async () => {
    const probed: string[] = [];
    const rows = await listBoxes(backendOf(stacks), async (target) => {
      probed.push(target);
      return target.startsWith("agent@web") ? undefined : "ready";
    });
    expect(rows).toEqual([
      {
        stack: "api",
        cloud: "hetzner",
        type: "cx43",
        state: "up",
        price: { amount: 16.49 + 20 * 0.05, currency: "EUR" },
        status: "ready",
      },
      {
        stack: "web",
        cloud: "digitalocean",
        type: "s-4vcpu-16gb",
        state: "up",
        price: { amount: 84, currency: "USD" },
        status: "not reachable",
      },
      {
        stack: "nightly",
        cloud: "digitalocean",
        type: "-",
        state: "kept volume only",
        price: { amount: 5, currency: "USD" },
        status: "-",
      },
      { stack: "old", cloud: "-", type: "-", state: "destroyed", status: "-" },
      { stack: "busy", cloud: "hetzner", type: "-", state: "updating", status: "-" },
    ]);
    // only the boxes that are up are asked, each once
    expect(probed.sort()).toEqual(["agent@api.tailnet.ts.net", "agent@web.tailnet.ts.net"]);
  });

  test("a stack without resources is not exported; without SSH nothing is probed", async () => {
    const backend = backendOf(stacks);
    const rows = await listBoxes(backend);
    expect(backend.asked).not.toContain("export old");
    expect(rows.every((r) => r.status === "-")).toBe(true);
  });

  test("a stack whose outputs or state cannot be read is still listed (as far as it can be)", async () => {
    const backend: Backend = {
      listStacks: async () => [{ name: "locked", resourceCount: 3 }],
      outputs: async () => {
        throw new Error("the stack is locked");
      },
      resources: async () => {
        throw new Error("passphrase");
      },
    };
    expect(await listBoxes(backend)).toEqual([
      { stack: "locked", cloud: "-", type: "-", state: "destroyed", status: "-" },
    ]);
  });

  test("the table and the total a month, per currency", async () => {
    const text = formatBoxes(await listBoxes(backendOf(stacks), async () => "ready"));
    const lines = text.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^stack +cloud +type +state +per month +box$/);
    expect(lines[1]).toMatch(/^api +hetzner +cx43 +up +17\.49 EUR +ready$/);
    expect(lines[3]).toMatch(/^nightly +digitalocean +- +kept volume only +5\.00 USD +-$/);
    expect(lines.at(-1)).toBe("total: 17.49 EUR + 89.00 USD a month (catalogue prices, excl. VAT)");
    expect(formatBoxes([])).toContain("no stacks in this backend");
  });
});

test("prices: the catalogue's volume price per GB, and the server's from its output", () => {
  expect(volumePricePerGb("hetzner")).toEqual({ amount: 0.05, currency: "EUR" });
  expect(volumePricePerGb("digitalocean")).toEqual({ amount: 0.1, currency: "USD" });
  expect(serverPrice("16.49 EUR/month (catalogue of 2026-11, excl. VAT)")).toEqual({ amount: 16.49, currency: "EUR" });
  expect(serverPrice("[secret]")).toBeUndefined();
  expect(serverPrice(undefined)).toBeUndefined();
});
