import pkg from "../package.json" with { type: "json" };

/** The sdx version, from package.json: the spec's, /health's and the infotext's. */
export const VERSION: string = pkg.version;
