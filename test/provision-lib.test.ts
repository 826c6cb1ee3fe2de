import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, test } from "vitest";

// lib.sh's bash functions, run by bash itself: the library is sourced, `sleep` is a stand-in that records how long
// it was asked to wait (no test waits), and a command that fails a given number of times stands for the network.
// stderr is read together with stdout (2>&1), in the order they were written.
const LIB = join(__dirname, "..", "cloud-init", "files", "lib.sh");

function bash(script: string): { status: number | null; stdout: string } {
  const r = spawnSync("bash", ["-c", `. "$1"\nexec 2>&1\n${script}`, "bash", LIB], { encoding: "utf8" });
  return { status: r.status, stdout: r.stdout };
}

// flaky N: fails (exit 7) the first N times it runs in this shell, then succeeds; every call is counted
const FLAKY = `calls=0
flaky() { calls=$((calls + 1)); [ "$calls" -gt "$1" ] || return 7; }
sleep() { echo "slept $1"; }`;

describe("agentbox_retry ATTEMPTS FIRST_DELAY COMMAND...", () => {
  test.each([
    {
      what: "a command that works at once runs once, without a wait",
      failures: 0,
      status: 0,
      calls: 1,
      lines: [],
    },
    {
      what: "a command that fails twice runs a third time, after 5 and 10 s",
      failures: 2,
      status: 0,
      calls: 3,
      lines: [
        "agentbox: flaky failed (attempt 1 of 5, exit 7); trying again in 5 s",
        "slept 5",
        "agentbox: flaky failed (attempt 2 of 5, exit 7); trying again in 10 s",
        "slept 10",
      ],
    },
    {
      what: "a command that keeps failing runs 5 times, waits 5, 10, 20, 40 s, and returns its own status",
      failures: 99,
      status: 7,
      calls: 5,
      lines: [5, 10, 20, 40].flatMap((s, i) => [
        `agentbox: flaky failed (attempt ${i + 1} of 5, exit 7); trying again in ${s} s`,
        `slept ${s}`,
      ]),
    },
  ])("$what", ({ failures, status, calls, lines }) => {
    const r = bash(`${FLAKY}\nagentbox_retry 5 5 flaky ${failures}; rc=$?\necho "calls $calls"\nexit $rc`);
    expect(r.status).toBe(status);
    expect(r.stdout.trimEnd().split("\n")).toEqual([...lines, `calls ${calls}`]);
  });

  test("the retries are said on stderr: the command's stdout may be silenced without them", () => {
    const r = bash(`${FLAKY}\nagentbox_retry 2 3 flaky 1 >/dev/null`);
    expect(r).toEqual({ status: 0, stdout: "agentbox: flaky failed (attempt 1 of 2, exit 7); trying again in 3 s\n" });
  });

  test("the command's arguments reach it unchanged, spaces and globs included", () => {
    const r = bash(`show() { printf '<%s>' "$@"; }\nagentbox_retry 3 1 show 'a b' '*' ''`);
    expect(r).toEqual({ status: 0, stdout: "<a b><*><>" });
  });

  test("one attempt: no retry, no wait", () => {
    const r = bash(`${FLAKY}\nagentbox_retry 1 5 flaky 1`);
    expect(r).toEqual({ status: 7, stdout: "" });
  });
});

describe("agentbox_printable: text the agent shaped, made safe for a terminal", () => {
  const printable = (input: Buffer) =>
    spawnSync("bash", ["-c", `. "$1"\nagentbox_printable`, "bash", LIB], { input }).stdout as Buffer;

  test("C0 controls but tab and newline, DEL and UTF-8 C1 controls go; text and other UTF-8 stay", () => {
    const input = Buffer.concat([
      Buffer.from("ok\t\x1b[31mred\x07\x7f\n"),
      Buffer.from([0xc2, 0x9b]),
      Buffer.from("31m é ü\n"),
    ]);
    expect(printable(input).toString("utf8")).toBe("ok\t[31mred\n31m é ü\n");
  });

  test("a C1 control split around another does not come back whole (one sed pass would rejoin it)", () => {
    const split = Buffer.from([0xc2, 0xc2, 0x9b, 0x9b, 0x41, 0xc2, 0xc2, 0xc2, 0x9d, 0x9d, 0x9d]);
    const out = printable(split);
    for (let i = 0; i + 1 < out.length; i++) {
      expect(out[i] === 0xc2 && out[i + 1]! >= 0x80 && out[i + 1]! <= 0x9f, `byte ${i} of ${out.toString("hex")}`).toBe(
        false,
      );
    }
    expect(out.toString("latin1")).toContain("A");
  });
});
