/** `bun run spec`: writes openapi.yaml from the app. */

import { writeFileAtomic } from "../lib/fs/atomic.ts";
import { renderSpec, SPEC_FILE } from "./codegen.ts";

await writeFileAtomic(SPEC_FILE, await renderSpec());
console.log(`wrote ${SPEC_FILE}`);
