/**
 * The server-sent events of the streamed routes. A stream is `event: <name>` + one JSON `data:` line per event,
 * with a heartbeat comment between; each map below gives every event's name and the schema of its `data`.
 * The maps are published in the spec (the SDK's event types are generated from them), the server's senders are
 * typed by them, and the routes' descriptions list the events from them.
 */
import { type Static, type TObject, type TProperties, Type } from "@sinclair/typebox";
import { ErrorSchema } from "./errors.ts";
import { GenerateMetadataSchema } from "./generate.ts";
import { PullResultSchema } from "./hub.ts";
import { PreviewEventSchema } from "./previews.ts";

/** A comment line this often keeps proxies and idle timeouts from cutting a long, quiet stream. */
export const HEARTBEAT_MS = 10_000;

/** A named schema as an event's data: the routes' event lists name it rather than list its fields. */
const named = <T extends TObject>(schema: T, title: string, description: string): T => ({
  ...schema,
  title,
  description,
});

export const GenerateEventsSchema = Type.Object(
  {
    queued: Type.Object(
      { position: Type.Integer({ description: "1 = next, 0 = runs now." }) },
      { description: "place in the queue (1 = next, 0 = runs now); sent first and whenever it changes." },
    ),
    started: Type.Object({}, { description: "the generation holds a slot and the engine starts." }),
    loading: Type.Object(
      { model: Type.String() },
      { description: "the requested model is not loaded and loads now (its time is `timings.load_ms`)." },
    ),
    step: Type.Object(
      {
        image: Type.Integer(),
        step: Type.Integer(),
        total: Type.Integer(),
        elapsed_ms: Type.Integer(),
        eta_ms: Type.Integer(),
      },
      {
        description:
          "a denoising step finished (a batch is denoised together; `image` is the first image's index).",
      },
    ),
    preview: PreviewEventSchema,
    image: Type.Object(
      {
        index: Type.Integer(),
        seed: Type.Integer(),
        png: Type.String({ description: "The PNG file, base64-encoded." }),
      },
      { description: "a finished image, PNG base64." },
    ),
    done: Type.Object(
      { metadata: GenerateMetadataSchema, warnings: Type.Array(Type.String()) },
      { description: "the JSON answer's body without `images`. Last event." },
    ),
    error: named(ErrorSchema, "Error", "the error body (e.g. `generation_failed`, `cancelled`). Last event."),
  },
  {
    description:
      "The events of POST /v1/generate's `text/event-stream` answer, in order: queued…, started, loading (when the model loads), step… (with preview… when asked for), image…, then done or error. Each property is an event's name and the schema of its `data`.",
  },
);

export const PullEventsSchema = Type.Object(
  {
    progress: Type.Object(
      {
        file: Type.String({ description: "The file being downloaded." }),
        file_bytes: Type.Integer(),
        file_total: Type.Integer(),
        bytes: Type.Integer({ description: "Bytes of the whole pull so far." }),
        total: Type.Integer(),
        files_done: Type.Integer(),
        files_total: Type.Integer(),
      },
      { description: "at most ten a second." },
    ),
    done: named(PullResultSchema, "PullResult", "the JSON answer. Last event."),
    error: named(ErrorSchema, "Error", "e.g. `download_failed`, `hub_unreachable`. Last event."),
  },
  {
    description:
      "The events of POST /v1/models/pull's `text/event-stream` answer: progress…, then done or error. Each property is an event's name and the schema of its `data`.",
  },
);

export type GenerateEvents = Static<typeof GenerateEventsSchema>;
export type PullEvents = Static<typeof PullEventsSchema>;

/** Sends one event of a stream whose events `E` maps. */
export type SendEvent<E> = <K extends keyof E & string>(event: K, data: E[K]) => void;

/**
 * The events of a map as a route's description lists them: "- `name` `{ field, … }`: what it means.", or the
 * schema's name for a named one (`Error`).
 */
export function describeEvents(events: TObject<TProperties>): string {
  return Object.entries(events.properties)
    .map(([name, schema]) => {
      const fields = Object.keys((schema as TObject).properties ?? {});
      const shape = schema.title ?? (fields.length > 0 ? `{ ${fields.join(", ")} }` : "{}");
      return `- \`${name}\` \`${shape}\`: ${schema.description}\n`;
    })
    .join("");
}
