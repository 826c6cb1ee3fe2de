import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, test } from "vitest";
// @ts-expect-error: a plain ES module without types
import { defaultBackend, stackArg } from "../scripts/pulumi.mjs";

const home = () => mkdtempSync(join(tmpdir(), "agentbox-home-"));

test("a new user without any Pulumi login gets the local backend", () => {
  expect(defaultBackend({}, home())).toBe("file://~");
});

test("a chosen backend is respected: PULUMI_BACKEND_URL, or a current login in ~/.pulumi or PULUMI_HOME", () => {
  expect(defaultBackend({ PULUMI_BACKEND_URL: "s3://bucket" }, home())).toBeUndefined();
  const h = home();
  mkdirSync(join(h, ".pulumi"));
  writeFileSync(join(h, ".pulumi", "credentials.json"), JSON.stringify({ current: "https://api.pulumi.com" }));
  expect(defaultBackend({}, h)).toBeUndefined();
  const custom = home();
  writeFileSync(join(custom, "credentials.json"), JSON.stringify({ current: "" }));
  expect(defaultBackend({ PULUMI_HOME: custom }, h)).toBe("file://~");
});

test.each([
  [["up", "--stack", "web"], "web"],
  [["up", "-s", "web", "--yes"], "web"],
  [["up", "--stack=web"], "web"],
  [["up", "--yes"], undefined],
])("stackArg(%j) = %s", (argv, stack) => {
  expect(stackArg(argv)).toBe(stack);
});
