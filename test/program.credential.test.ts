import { createHash } from "node:crypto";
import { expect, test } from "vitest";
import { CREDENTIAL_CLOCK } from "../components/agentBox";
import { runProgram, valueOf } from "./mocks";
import { TOKEN, hetznerStack } from "./stacks";

// The stack records when its Claude Code credential was set: `npm run status` warns before a setup token's year ends.
test("a stack with a token records the day it was set, and which key holds it; never the token", async () => {
  const before = Date.now();
  const program = await runProgram(hetznerStack);
  const record = program.resources.find((r) => r.name === "agentbox-credential")!;
  expect(record.type).toBe("command:local:Command");
  expect(record.inputs.create).toBe(CREDENTIAL_CLOCK);
  // a new credential replaces the record: its trigger is a digest of the key and the value, kept secret
  expect(record.inputs.triggers).toEqual([createHash("sha256").update(`claudeOauthToken\0${TOKEN}`).digest("hex")]);
  expect(record.secretInputs).toEqual(["triggers"]);
  expect(JSON.stringify(record.inputs)).not.toContain(TOKEN);
  // the mock runs the create command as the provider would, where `pulumi up` runs
  const credential = (await valueOf(program.module.credential!)) as { key: string; setAt: string };
  expect(credential.key).toBe("claudeOauthToken");
  expect(Date.parse(credential.setAt)).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
  expect(Date.parse(credential.setAt)).toBeLessThanOrEqual(Date.now());
  expect(credential.setAt).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
});
// Without a credential there is no record: the change table's remoteControl row (the token dropped) deletes it.
