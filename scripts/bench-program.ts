/**
 * How long the program itself takes on top of loading the Pulumi SDKs: the figure that decides how snappy
 * `pulumi preview` feels. Each sample is a fresh process (module caches cold) running index.ts against Pulumi's
 * mocks until every resource is registered. Prints medians; never asserts.
 *
 *   npx tsx scripts/bench-program.ts [samples=7]
 */
import { execFileSync } from "node:child_process";

async function once() {
  const t0 = performance.now();
  await Promise.all([
    import("@pulumi/pulumi"),
    import("@pulumi/hcloud"),
    import("@pulumi/digitalocean"),
    import("@pulumi/tailscale"),
  ]);
  const t1 = performance.now();
  const { runProgram } = await import("../test/mocks.js");
  const { hetznerStack } = await import("../test/stacks.js");
  const program = await runProgram(hetznerStack, { stack: "bench" });
  const t2 = performance.now();
  console.log(JSON.stringify({ sdk: t1 - t0, program: t2 - t1, resources: program.resources.length }));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function main() {
  const samples = Number(process.argv[2] ?? 7);
  const runs = Array.from({ length: samples }, () => {
    const out = execFileSync("npx", ["tsx", __filename, "--once"], { encoding: "utf8" });
    return JSON.parse(out.trim().split("\n").pop()!) as { sdk: number; program: number; resources: number };
  });
  const sdk = median(runs.map((r) => r.sdk));
  const program = median(runs.map((r) => r.program));
  console.log(
    `# bench: program_eval samples=${samples} sdk_load_ms_median=${sdk.toFixed(0)} ` +
      `program_ms_median=${program.toFixed(0)} resources=${runs[0]!.resources} ratio_program_to_sdk=${(program / sdk).toFixed(2)}`,
  );
}

if (process.argv.includes("--once")) void once();
else main();
