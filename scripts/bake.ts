/**
 * Makes a baked image for a stack and points the stack at it:
 *
 *   npm run bake -- --stack dev
 *
 * A stack of its own, `<stack>-image`, with an inline program (components/bakedImage.ts): a builder server with the
 * stack's cloud, location, server type, image and Claude Code, which bakes and seals itself and powers off, then a
 * snapshot of it. The image stack is then destroyed (the builder goes, the snapshot is retained) and removed, and
 * the stack's agentbox:bakedImage is set to the snapshot: the next `npm run up` boots from it.
 *
 * Ctrl-C (or SIGTERM) cancels the image stack's update, then removes the builder all the same (exit 130); one during
 * that removal cancels it, and the fix is printed. The logic is runBake, with the Automation API wired in by main.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { Stack } from "@pulumi/pulumi/automation";
import { parse } from "yaml";
import { bakeProgram, imageContentsFor, imageName } from "../components/bakedImage";
import {
  type AgentBoxConfig,
  ConfigError,
  NAMESPACE,
  agentboxKeys,
  credentialProblems,
  parseConfig,
} from "../components/config";
import { EXIT_CODES, Interrupts, errorLine, pulumiSignal } from "./workflow-cycle";

const ROOT = join(__dirname, "..");

export const USAGE = `usage: npm run bake -- --stack <name>

Makes a baked image for the stack (a Hetzner or DigitalOcean snapshot with its packages and Claude Code) in a few
minutes, with a throw-away builder server in a stack of its own, <name>-image, which is removed afterwards. Then
sets agentbox:bakedImage on the stack: the next npm run up boots its box from the image.
Run it again after changing claudeCodeVersion, serverType (architecture), image or agentbox's own builder.

Ctrl-C (or SIGTERM) cancels the bake and removes the builder (exit 130); Ctrl-C during that removal cancels it and
prints how to finish it; a third one quits at once.

A local-backend stack needs PULUMI_CONFIG_PASSPHRASE (or _FILE) in the environment, empty if that is the
passphrase: nothing here prompts.`;

/** Throws a one-line message (without the usage text) for bad arguments. */
export function parseBakeArgs(argv: string[]): { help: true } | { help: false; stack: string } {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { stack: { type: "string", short: "s" }, help: { type: "boolean", short: "h", default: false } },
  });
  if (values.help) return { help: true };
  if (positionals.length) throw new Error(`unexpected argument ${positionals[0]}`);
  if (!values.stack) throw new Error("--stack <name> is required");
  if (!/^[A-Za-z0-9_.][A-Za-z0-9_./-]*$/.test(values.stack))
    throw new Error(`--stack ${values.stack}: not a stack name`);
  return { help: false, stack: values.stack };
}

/** The image stack of a stack (organisation and project prefixes kept). */
export const imageStackName = (stack: string) => `${stack}-image`;

export interface BakeDeps {
  /** The stack's whole config, decrypted (what `pulumi config --show-secrets` shows). */
  stackConfig(): Promise<Record<string, string>>;
  /**
   * Creates or updates the image stack with this program and provider config; resolves to its outputs. `signal`
   * is aborted at the first interrupt: Pulumi cancels the update (see pulumiSignal).
   */
  up(
    program: () => Promise<Record<string, unknown>>,
    providerConfig: Record<string, string>,
    signal: AbortSignal,
  ): Promise<{ imageId: string; imageName: string }>;
  /** Destroys the image stack (the snapshot is retained) and removes it; `signal` as for up. */
  destroy(signal: AbortSignal): Promise<void>;
  /** Sets agentbox:bakedImage on the stack. */
  setBakedImage(id: string): Promise<void>;
  env: NodeJS.ProcessEnv;
  log(line: string): void;
}

const PROVIDER_TOKENS = { hetzner: "hcloud:token", digitalocean: "digitalocean:token" } as const;
const TOKEN_VARIABLES = { hetzner: "HCLOUD_TOKEN", digitalocean: "DIGITALOCEAN_TOKEN" } as const;

/** The whole bake; resolves to the exit code (130 after an interrupt). */
export async function runBake(
  deps: BakeDeps,
  project: string,
  stack: string,
  interrupts: Interrupts = new Interrupts(),
): Promise<number> {
  const all = await deps.stackConfig();
  let config: AgentBoxConfig;
  try {
    config = parseConfig(agentboxKeys(all), { project, stack, readFile: (f) => readFileSync(join(ROOT, f), "utf8") });
    // only the cloud's credential matters here: the builder joins no tailnet
    const problems = credentialProblems(
      { cloud: config.cloud, tailscale: { ...config.tailscale, enabled: false } },
      all,
      deps.env,
    );
    if (problems.length) throw new ConfigError(problems);
  } catch (e) {
    deps.log(e instanceof ConfigError ? e.message : `agentbox: ${errorLine(e)}`);
    return 1;
  }
  if (interrupts.count) {
    deps.log(`agentbox: interrupted before anything was created; stack ${stack} is unchanged`);
    return EXIT_CODES.interrupted;
  }

  const contents = imageContentsFor(config);
  deps.log(
    `agentbox: baking ${imageName(contents)} for stack ${stack}: a ${config.serverType.name} builder in ${config.location} (stack ${imageStackName(stack)}), a few minutes`,
  );
  const token = PROVIDER_TOKENS[config.cloud];
  let image: { imageId: string; imageName: string } | undefined;
  let failure: unknown;
  try {
    image = await deps.up(async () => bakeProgram(config), all[token] ? { [token]: all[token] } : {}, interrupts.first);
  } catch (e) {
    failure = e;
  }
  const interrupted = interrupts.count > 0;
  if (interrupted) deps.log("agentbox: interrupted: removing the builder; Ctrl-C again cancels that");
  // the builder goes whatever happened; the snapshot, if any, is retained
  let leftOver = false;
  const removal = interrupts.next();
  try {
    await deps.destroy(removal);
  } catch (e) {
    leftOver = true;
    deps.log(
      `agentbox: the builder could not be removed (${removal.aborted ? "interrupted" : errorLine(e)}); the cloud bills it until it is. Fix: ${TOKEN_VARIABLES[config.cloud]}=<token> npm run pulumi -- destroy --stack ${imageStackName(stack)}, then npm run pulumi -- stack rm ${imageStackName(stack)}`,
    );
  }
  if (interrupted || removal.aborted) {
    deps.log(
      image
        ? `agentbox: interrupted; image ${image.imageId} (${image.imageName}) was made, but stack ${stack} is not pointed at it. Use it: npm run pulumi -- config set ${NAMESPACE}:bakedImage ${image.imageId} --stack ${stack} (or delete it in the cloud console)`
        : `agentbox: interrupted; ${leftOver ? "the builder is left (see above)" : "the builder is removed"} and stack ${stack} is unchanged`,
    );
    return EXIT_CODES.interrupted;
  }
  if (!image) {
    deps.log(`agentbox: the bake failed: ${errorLine(failure)}`);
    return 1;
  }

  await deps.setBakedImage(image.imageId);
  const previous = config.bakedImage?.id;
  deps.log(
    [
      `agentbox: image ${image.imageId} (${image.imageName}) is ready, and stack ${stack} now boots from it`,
      `  (it ran: pulumi config set ${NAMESPACE}:bakedImage ${image.imageId} --stack ${stack})`,
      `  The next \`npm run up -- --stack ${stack}\` replaces the box with one made from the image.`,
      `  Back to the stock image: npm run pulumi -- config rm ${NAMESPACE}:bakedImage --stack ${stack}`,
      ...(previous && previous !== image.imageId
        ? [`  The image it replaces (${previous}) is kept: delete it in the cloud console once no box uses it.`]
        : []),
      "  The cloud bills a snapshot by its size every month until it is deleted.",
    ].join("\n"),
  );
  // the image is good, but a builder left running is worth a failing exit
  return leftOver ? 1 : 0;
}

async function realDeps(stack: Stack, stackName: string): Promise<BakeDeps> {
  const { LocalWorkspace } = await import("@pulumi/pulumi/automation/index.js");
  // the image stack runs with the same Pulumi CLI and state backend as the stack it bakes for (see openStack)
  const workspace = { pulumiCommand: stack.workspace.pulumiCommand, envVars: { ...stack.workspace.envVars } };
  const onOutput = (text: string) => process.stderr.write(text);
  let imageStack: Stack | undefined;
  return {
    async stackConfig() {
      const config = await stack.getAllConfig();
      return Object.fromEntries(Object.entries(config).map(([k, v]) => [k, v.value]));
    },
    async up(program, providerConfig, signal) {
      imageStack = await LocalWorkspace.createOrSelectStack(
        { stackName: imageStackName(stackName), projectName: "agentbox", program },
        workspace,
      );
      for (const [key, value] of Object.entries(providerConfig)) {
        await imageStack.setConfig(key, { value, secret: true });
      }
      if (signal.aborted) throw new Error("interrupted before the update began");
      const result = await imageStack.up({ onOutput, onError: onOutput, signal: pulumiSignal(signal) });
      return {
        imageId: String(result.outputs.imageId?.value),
        imageName: String(result.outputs.imageName?.value),
      };
    },
    async destroy(signal) {
      if (!imageStack) return;
      await imageStack.destroy({ onOutput, onError: onOutput, signal: pulumiSignal(signal) });
      await imageStack.workspace.removeStack(imageStack.name);
    },
    async setBakedImage(id) {
      await stack.setConfig(`${NAMESPACE}:bakedImage`, { value: id });
    },
    env: process.env,
    log: (line) => console.log(line),
  };
}

async function main(argv: string[]): Promise<number> {
  let args: ReturnType<typeof parseBakeArgs>;
  try {
    args = parseBakeArgs(argv);
  } catch (e) {
    console.error(`agentbox: ${errorLine(e)}\n\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  const project = (parse(readFileSync(join(ROOT, "Pulumi.yaml"), "utf8")) as { name: string }).name;
  try {
    const { feedInterrupts, openStack } = await import("./workflow.js");
    const interrupts = new Interrupts();
    await feedInterrupts(interrupts, (count) => {
      if (count === 1) return "cancelling the bake; the builder is removed next. Ctrl-C again cancels that removal";
      if (count === 2)
        return `cancelling the removal of the builder (stack ${imageStackName(args.stack)}); Ctrl-C again quits at once`;
      return `quitting at once; the builder may be left in stack ${imageStackName(args.stack)}`;
    });
    const stack = await openStack(args.stack);
    return await runBake(await realDeps(stack, args.stack), project, args.stack, interrupts);
  } catch (e) {
    console.error(`agentbox: bake ${args.stack}: ${errorLine(e)}`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
}
