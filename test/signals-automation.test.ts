import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalWorkspace, PulumiCommand } from "@pulumi/pulumi/automation";
import { expect, test } from "vitest";
import { Interrupts, pulumiSignal } from "../scripts/workflow-cycle";

/**
 * What the Automation API of @pulumi/pulumi does with the `signal` option of up() and destroy() (what
 * scripts/workflow.ts and scripts/bake.ts hand it), against a stand-in Pulumi CLI that records its argv and the
 * signals it gets. The stand-in answers `version` and `stack select` at once; `up` and `destroy` run for RUN_MS, or
 * until a signal, then take CANCEL_MS to cancel and exit 255 with Pulumi's message.
 */
const STAND_IN = `#!/usr/bin/env node
const fs = require("node:fs");
const log = (event) => fs.appendFileSync(process.env.STAND_IN_LOG, JSON.stringify(event) + "\\n");
const argv = process.argv.slice(2);
if (argv[0] === "version") { process.stdout.write("v3.265.0\\n"); process.exit(0); }
// the handlers come before the "start" the tests wait for, so that an interrupt sent at once finds them
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    log({ event: "signal", signal });
    setTimeout(() => {
      log({ event: "exit" });
      process.stderr.write("error: update canceled\\n");
      process.exit(255);
    }, Number(process.env.CANCEL_MS));
  });
}
log({ event: "start", command: argv[0] });
if (argv[0] !== "up" && argv[0] !== "destroy") process.exit(0);
setTimeout(() => { log({ event: "exit" }); process.exit(0); }, Number(process.env.RUN_MS));
`;

async function standInStack(runMs = 5_000) {
  const dir = mkdtempSync(join(tmpdir(), "agentbox-automation-stand-in-"));
  mkdirSync(join(dir, "bin"));
  writeFileSync(join(dir, "bin", "pulumi"), STAND_IN);
  chmodSync(join(dir, "bin", "pulumi"), 0o755);
  const work = join(dir, "project");
  mkdirSync(work);
  writeFileSync(join(work, "Pulumi.yaml"), "name: standin\nruntime: nodejs\n");
  const logFile = join(dir, "log.jsonl");
  const pulumiCommand = await PulumiCommand.get({ root: dir, skipVersionCheck: true });
  const stack = await LocalWorkspace.selectStack(
    { stackName: "dev", workDir: work },
    { pulumiCommand, envVars: { STAND_IN_LOG: logFile, CANCEL_MS: "300", RUN_MS: String(runMs) } },
  );
  const logged = () =>
    existsSync(logFile)
      ? readFileSync(logFile, "utf8")
          .trim()
          .split("\n")
          .map((l) => JSON.parse(l) as { event: string; command?: string; signal?: string })
      : [];
  const started = (command: string) =>
    new Promise<void>((done) => {
      const poll = setInterval(() => {
        if (logged().some((e) => e.event === "start" && e.command === command)) {
          clearInterval(poll);
          done();
        }
      }, 10);
    });
  return { stack, logged, started };
}

test.each(["up", "destroy"] as const)(
  "%s: an interrupt sends the Pulumi CLI one SIGINT, and the operation settles only once the CLI has exited",
  async (operation) => {
    const s = await standInStack();
    const interrupts = new Interrupts();
    const running =
      operation === "up"
        ? s.stack.up({ signal: pulumiSignal(interrupts.first) })
        : s.stack.destroy({ signal: pulumiSignal(interrupts.first) });
    const settled = running.then(
      () => "resolved",
      (e: Error) => e.message,
    );
    await s.started(operation);
    interrupts.interrupt({ signal: "SIGINT", reachedPulumi: false });
    // a second interrupt does not reach it through this signal (an AbortSignal aborts once)
    interrupts.interrupt({ signal: "SIGINT", reachedPulumi: false });
    expect(await settled).toContain("error: update canceled");
    expect(s.logged().filter((e) => e.command !== "stack")).toEqual([
      { event: "start", command: operation },
      { event: "signal", signal: "SIGINT" },
      { event: "exit" },
    ]);
  },
  15_000,
);

test("a Ctrl-C that reached the CLI from the terminal is not sent again", async () => {
  const s = await standInStack(500);
  const interrupts = new Interrupts();
  // the stand-in's up prints no summary for the API to read: only how it ended matters here
  const running = s.stack.up({ signal: pulumiSignal(interrupts.first) }).catch(() => undefined);
  await s.started("up");
  interrupts.interrupt({ signal: "SIGINT", reachedPulumi: true });
  await running;
  expect(s.logged().filter((e) => e.command !== "stack")).toEqual([
    { event: "start", command: "up" },
    { event: "exit" },
  ]);
}, 15_000);
