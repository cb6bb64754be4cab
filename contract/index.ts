/**
 * The sdx contract: the API's vocabulary, imported by every side (the server's routes and engine, the spec and
 * through it the SDK's types, the CLI's checks). It depends on TypeBox alone.
 */
export * from "./a1111.ts";
export * from "./adapters.ts";
export * from "./auth.ts";
export * from "./defaults.ts";
export * from "./errors.ts";
export * from "./events.ts";
export * from "./generate.ts";
export * from "./health.ts";
export * from "./hub.ts";
export * from "./images.ts";
export * from "./limits.ts";
export * from "./lists.ts";
export * from "./models.ts";
export * from "./names.ts";
export * from "./previews.ts";
export * from "./samplers.ts";
export * from "./schedulers.ts";
export * from "./schema.ts";
export * from "./seeds.ts";
export * from "./tokenize.ts";
