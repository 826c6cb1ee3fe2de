// Prints a stack file with one more key in agentbox:sshPublicKeys: the boot test's own key, made for the run, so
// that its checks can log in over SSH as the user does. usage: node with-ssh-key.mjs STACK_FILE PUBLIC_KEY
import { readFileSync } from "node:fs";
import { parseDocument } from "yaml";

const [file, key] = process.argv.slice(2);
if (!file || !key) {
  console.error("usage: node with-ssh-key.mjs STACK_FILE PUBLIC_KEY");
  process.exit(2);
}
const doc = parseDocument(readFileSync(file, "utf8"));
const path = ["config", "agentbox:sshPublicKeys"];
const keys = doc.getIn(path);
doc.setIn(path, [...(keys && typeof keys.toJSON === "function" ? keys.toJSON() : []), key]);
process.stdout.write(doc.toString({ lineWidth: 0 }));
