/** Fails when openapi.yaml or sdk/schema.d.ts differ from what `bun run spec` and `bun run sdk` would write. */
import { renderSdkTypes, renderSpec, SDK_TYPES_FILE, SPEC_FILE } from "./codegen.ts";

async function current(path: string): Promise<string> {
  const file = Bun.file(path);
  return (await file.exists()) ? file.text() : "";
}

const spec = await renderSpec();
const stale: string[] = [];
if ((await current(SPEC_FILE)) !== spec) stale.push(`${SPEC_FILE} is stale: run \`bun run spec\``);
if ((await current(SDK_TYPES_FILE)) !== (await renderSdkTypes(spec))) {
  stale.push(`${SDK_TYPES_FILE} is stale: run \`bun run spec && bun run sdk\``);
}
if (stale.length > 0) {
  for (const line of stale) console.error(line);
  process.exit(1);
}
console.log("openapi.yaml and sdk/schema.d.ts are up to date");
