// Every box of the project at a glance: each stack of this project in the backend with its cloud, type, monthly
// price and state (up, destroyed, kept volume only), the box's own status where it answers over SSH, and the total.
//
//   npm run boxes                 # every stack, each box asked for its status over SSH (5 s each at most)
//   npm run boxes -- --no-ssh     # the backend alone
import { spawn, spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { type Cloud, catalogueFor } from "../components/catalogue";

const ROOT = join(dirname(__filename), "..");

/** What the listing needs of the backend: `pulumi stack ls`, `stack output` and `stack export` (no secrets). */
export interface Backend {
  listStacks(): Promise<{ name: string; resourceCount?: number; updateInProgress?: boolean }[]>;
  outputs(stack: string): Promise<Record<string, unknown>>;
  resources(stack: string): Promise<{ type: string; inputs?: Record<string, unknown> }[]>;
}
/** The box's provisioning result (`result=` of /var/lib/agentbox/status) over SSH, or undefined when it did not answer. */
export type Probe = (sshTarget: string) => Promise<string | undefined>;

export type BoxState = "up" | "updating" | "kept volume only" | "destroyed";
export interface BoxRow {
  stack: string;
  cloud: string;
  type: string;
  state: BoxState;
  /** The server's and the volume's price a month, in the cloud's currency (none when nothing is billed). */
  price?: { amount: number; currency: string };
  status: string;
}

const VOLUME_TYPES: Record<string, Cloud> = {
  "hcloud:index/volume:Volume": "hetzner",
  "digitalocean:index/volume:Volume": "digitalocean",
};
const SERVER_TYPES = ["hcloud:index/server:Server", "digitalocean:index/droplet:Droplet"];

/** A cloud's volume price per GB and month, from the catalogue's words ("about 0.05 EUR", "0.10 USD"). */
export function volumePricePerGb(cloud: Cloud): { amount: number; currency: string } {
  const m = /([0-9]+(?:\.[0-9]+)?)\s+([A-Z]{3})/.exec(catalogueFor(cloud).volumes.pricePerGbMonth);
  if (!m) throw new Error(`catalogue: no volume price for ${cloud}`);
  return { amount: Number(m[1]), currency: m[2]! };
}

/** The server's price from the stack's `monthlyPrice` output ("16.49 EUR/month (catalogue of …)"). */
export function serverPrice(monthlyPrice: unknown): { amount: number; currency: string } | undefined {
  const m = typeof monthlyPrice === "string" ? /^([0-9]+(?:\.[0-9]+)?) ([A-Z]{3})\/month/.exec(monthlyPrice) : null;
  return m ? { amount: Number(m[1]), currency: m[2]! } : undefined;
}

const add = (a: BoxRow["price"], b: BoxRow["price"]): BoxRow["price"] =>
  !a ? b : !b ? a : a.currency === b.currency ? { amount: a.amount + b.amount, currency: a.currency } : a;

/** One row per stack; the boxes that are up are asked for their status, all at once. */
export async function listBoxes(backend: Backend, probe?: Probe): Promise<BoxRow[]> {
  const stacks = await backend.listStacks();
  return Promise.all(
    stacks.map(async (s): Promise<BoxRow> => {
      const [outputs, resources] = await Promise.all([
        backend.outputs(s.name).catch(() => ({}) as Record<string, unknown>),
        (s.resourceCount ?? 0) > 0 ? backend.resources(s.name).catch(() => []) : Promise.resolve([]),
      ]);
      const volume = resources.find((r) => r.type in VOLUME_TYPES);
      const volumeCloud = volume ? VOLUME_TYPES[volume.type] : undefined;
      const size = Number(volume?.inputs?.size);
      const volumePrice =
        volumeCloud && Number.isFinite(size) && size > 0
          ? { amount: size * volumePricePerGb(volumeCloud).amount, currency: volumePricePerGb(volumeCloud).currency }
          : undefined;
      const server = resources.some((r) => SERVER_TYPES.includes(r.type));
      const state: BoxState = s.updateInProgress
        ? "updating"
        : server && typeof outputs.sshTarget === "string"
          ? "up"
          : volume
            ? "kept volume only"
            : "destroyed";
      const cloud = typeof outputs.cloud === "string" ? outputs.cloud : (volumeCloud ?? "-");
      const type = state === "up" && typeof outputs.serverType === "string" ? outputs.serverType : "-";
      const price = add(state === "up" ? serverPrice(outputs.monthlyPrice) : undefined, volumePrice);
      let status = "-";
      if (state === "up" && probe && typeof outputs.sshTarget === "string") {
        status = (await probe(outputs.sshTarget)) ?? "not reachable";
      }
      return { stack: s.name, cloud, type, state, ...(price ? { price } : {}), status };
    }),
  );
}

/** The table, then the total a month per currency (Hetzner bills in EUR, DigitalOcean in USD). */
export function formatBoxes(rows: BoxRow[]): string {
  const money = (p: BoxRow["price"]) => (p ? `${p.amount.toFixed(2)} ${p.currency}` : "-");
  const table = [
    ["stack", "cloud", "type", "state", "per month", "box"],
    ...rows.map((r) => [r.stack, r.cloud, r.type, r.state, money(r.price), r.status]),
  ];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  const lines = table.map((row) =>
    row
      .map((cell, i) => cell.padEnd(widths[i]!))
      .join("  ")
      .trimEnd(),
  );
  const totals = new Map<string, number>();
  for (const r of rows) if (r.price) totals.set(r.price.currency, (totals.get(r.price.currency) ?? 0) + r.price.amount);
  const total = [...totals].map(([currency, amount]) => `${amount.toFixed(2)} ${currency}`).join(" + ") || "0.00";
  if (!rows.length) lines.push("(no stacks in this backend for this project: npm run up -- --stack <name> makes one)");
  lines.push(`total: ${total} a month (catalogue prices, excl. VAT)`);
  return `${lines.join("\n")}\n`;
}

/** The Pulumi CLI through scripts/pulumi.mjs (its default backend, the project's folder). */
function cliBackend(): Backend {
  const pulumi = (args: string[]) => {
    const r = spawnSync("node", [join(ROOT, "scripts", "pulumi.mjs"), ...args], {
      cwd: ROOT,
      encoding: "utf8",
      maxBuffer: 256 * 1024 * 1024,
      stdio: ["ignore", "pipe", "pipe"],
    });
    if (r.status !== 0) throw new Error(`pulumi ${args.join(" ")}: ${(r.stderr || "").trim().split("\n").pop()}`);
    return r.stdout;
  };
  return {
    listStacks: async () => JSON.parse(pulumi(["stack", "ls", "--json"]) || "[]"),
    outputs: async (stack) => JSON.parse(pulumi(["stack", "output", "--json", "--stack", stack]) || "{}"),
    resources: async (stack) =>
      (JSON.parse(pulumi(["stack", "export", "--stack", stack])) as { deployment?: { resources?: [] } }).deployment
        ?.resources ?? [],
  };
}

/** ssh to the box as the user does, without prompting, for at most 5 s of connecting. */
const sshProbe: Probe = (target) =>
  new Promise((done) => {
    const child = spawn(
      "ssh",
      ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", target, "sed -n 's/^result=//p' /var/lib/agentbox/status"],
      { stdio: ["ignore", "pipe", "ignore"], timeout: 20_000 },
    );
    let out = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    child.on("close", (code) => {
      const result = out.trim().split("\n")[0] ?? "";
      done(code === 0 && /^[a-z-]{1,32}$/.test(result) ? result : undefined);
    });
    child.on("error", () => done(undefined));
  });

async function main(argv: string[]): Promise<number> {
  const unknown = argv.filter((a) => a !== "--no-ssh");
  if (unknown.length) {
    console.error(`usage: npm run boxes [-- --no-ssh]  (unknown: ${unknown.join(" ")})`);
    return 2;
  }
  try {
    const rows = await listBoxes(cliBackend(), argv.includes("--no-ssh") ? undefined : sshProbe);
    process.stdout.write(formatBoxes(rows));
    return 0;
  } catch (e) {
    console.error(`agentbox: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
