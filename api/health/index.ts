import { Elysia } from "elysia";
import { HealthSchema } from "../../contract/index.ts";
import type { ModelHost } from "../engine/model_host.ts";
import { errorModel } from "../http/errors.ts";
import { health } from "./service.ts";

export const healthPlugin = (host: ModelHost) =>
  new Elysia({ name: "sdx.health" })
    .use(errorModel)
    .model({ Health: HealthSchema })
    .get(
      "/health",
      async ({ status }) => {
        const { body, unhealthy } = await health(host);
        return unhealthy ? status(503, body) : body;
      },
      {
        response: { 200: "Health", 503: "Health" },
        parse: "json",
        detail: {
          tags: ["health"],
          operationId: "health",
          summary: "Server state, served model, execution provider and version",
          description:
            "200 while the server runs; `status` says whether a model is ready (`ok`) or what is missing. " +
            "503 while the server drains for shutdown (`draining`) or when a running generation has made no step for " +
            "`--step-timeout` seconds (`stuck`). Answered at once, never queued behind generations.",
        },
      },
    );
