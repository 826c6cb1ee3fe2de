/**
 * agentbox as a package: the AgentBox component and its argument types, for programs of their own (a fleet of
 * boxes, a box beside other infrastructure) and, through PulumiPlugin.yaml, for Pulumi programs in any language.
 * Importing it creates nothing; index.ts is the stack program that reads one box from stack config.
 */
export {
  AGENT_BOX_TYPE,
  AgentBox,
  type AgentArgs,
  type AgentBoxArgs,
  type AgentOutput,
  CredentialKey,
  type CredentialRecord,
  type TailnetApiArgs,
  type WorkflowOutput,
} from "./components/agentBox";
export { ClaudeInstallMethod, Cloud, EgressMode, PermissionMode } from "./components/args";
export { checkBakedImage } from "./components/bakedImage";
export { ConfigError, DEFAULT_BOX_NAME } from "./components/config";
