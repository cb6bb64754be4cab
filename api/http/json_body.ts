/**
 * Request bodies as JSON, parsed so that no key can reach an object's prototype: `__proto__` and
 * `constructor.prototype` are refused (secure-json-parse, as Fastify does), and so are `toString` and
 * `valueOf`, which would make a value fail to print (and a validation message crash). Each refusal is a 422
 * naming the key's path; text that is not JSON is a 400.
 */
import secureJson from "secure-json-parse";
import { ApiError, type FieldError, UNPARSABLE_BODY, validationFailed } from "../../contract/index.ts";

/** Keys that would hide Object.prototype's conversions of a value to text. */
const CONVERSION_KEYS = new Set(["toString", "valueOf"]);
/** Text that may hold such a key, plainly or through a \u escape: only then is the parsed body walked. */
const SUSPECT_CONVERSION = /"(?:toString|valueOf)"\s*:|\\u/;

/** A refused key: the last part of its path (the key, or `constructor.prototype`) and why. */
interface Refusal {
  name: string;
  message: string;
}

type KeyRule = (node: Record<string, unknown>, key: string) => Refusal | null;

const isObject = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === "object";

/** The first key `rule` refuses, breadth first, as the field it names (`a.b.__proto__`), or null. */
function findKey(value: unknown, rule: KeyRule): FieldError | null {
  let level: [string, unknown][] = [["", value]];
  while (level.length > 0) {
    const next: [string, unknown][] = [];
    for (const [path, node] of level) {
      if (!isObject(node)) continue;
      for (const key of Object.keys(node)) {
        const refusal = rule(node, key);
        const at = (name: string) => (path ? `${path}.${name}` : name);
        if (refusal !== null) return { field: at(refusal.name), message: refusal.message };
        next.push([at(key), node[key]]);
      }
    }
    level = next;
  }
  return null;
}

const prototypeKey: KeyRule = (node, key) => {
  if (key === "__proto__")
    return { name: key, message: "is not allowed: the key would set an object's prototype" };
  const value = node[key];
  if (key === "constructor" && isObject(value) && Object.hasOwn(value, "prototype")) {
    return {
      name: "constructor.prototype",
      message: "is not allowed: the key would reach an object's prototype",
    };
  }
  return null;
};

const conversionKey: KeyRule = (_node, key) =>
  CONVERSION_KEYS.has(key)
    ? {
        name: key,
        message: `is not allowed: the key would hide Object.prototype.${key}, which every value needs`,
      }
    : null;

/** Parses a request body's text; throws the API's 400 (not JSON) or 422 (a refused key). */
export function parseJsonBody(text: string): unknown {
  let body: unknown;
  try {
    // secure-json-parse scans only text that mentions __proto__ or constructor: an ordinary body is one parse.
    body = secureJson.parse(text, undefined, { protoAction: "error", constructorAction: "error" });
  } catch {
    // Not JSON (400), or JSON with a prototype key (422): parsed plainly on this error path only, to say where.
    let plain: unknown;
    try {
      plain = JSON.parse(text);
    } catch {
      throw new ApiError(400, "bad_request", UNPARSABLE_BODY);
    }
    throw validationFailed([
      findKey(plain, prototypeKey) ?? { field: "body", message: "reaches a prototype" },
    ]);
  }
  const conversion = SUSPECT_CONVERSION.test(text) ? findKey(body, conversionKey) : null;
  if (conversion) throw validationFailed([conversion]);
  return body;
}
