/** `bun run sdk`: writes sdk/schema.d.ts from openapi.yaml with openapi-typescript. */

import { writeFileAtomic } from "../lib/fs/atomic.ts";
import { renderSdkTypes, SDK_TYPES_FILE, SPEC_FILE } from "./codegen.ts";

await writeFileAtomic(SDK_TYPES_FILE, await renderSdkTypes(await Bun.file(SPEC_FILE).text()));
console.log(`wrote ${SDK_TYPES_FILE}`);
