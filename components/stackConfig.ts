import * as pulumi from "@pulumi/pulumi";
import { type AgentBoxConfig, ConfigError, NAMESPACE, type RawConfig, credentialProblems, parseConfig } from "./config";

/**
 * Reads and validates this stack's configuration; throws ConfigError before anything is created.
 * Secret values are read here in plain text only to validate them; they travel on as Pulumi secrets.
 */
export function loadStackConfig(): AgentBoxConfig {
  const all = pulumi.runtime.allConfig();
  const raw: RawConfig = {};
  for (const [key, value] of Object.entries(all)) {
    if (key.startsWith(`${NAMESPACE}:`)) raw[key.slice(NAMESPACE.length + 1)] = value;
  }
  const config = parseConfig(raw, { project: pulumi.getProject(), stack: pulumi.getStack() });
  const problems = credentialProblems(config, all, process.env);
  if (problems.length) throw new ConfigError(problems);
  return config;
}
