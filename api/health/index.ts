import { Elysia } from "elysia";
import type { ModelHost } from "../engine/model_host.ts";
import { errorModel } from "../errors.ts";
import { HealthSchema } from "./model.ts";
import { health } from "./service.ts";

export const healthPlugin = (host: ModelHost) =>
  new Elysia({ name: "sdx.health" })
    .use(errorModel)
    .model({ Health: HealthSchema })
    .get("/health", () => health(host), {
      response: { 200: "Health" },
      parse: "json",
      detail: {
        tags: ["health"],
        operationId: "health",
        summary: "Server state, served model, execution provider and version",
        description:
          "Always 200 while the server runs; `status` says whether a model is ready (`ok`) or what is missing.",
      },
    });
