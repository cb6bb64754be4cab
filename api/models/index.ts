import { Elysia } from "elysia";
import type { ModelHost } from "../engine/model_host.ts";
import { errorModel } from "../errors.ts";
import { ModelListSchema } from "./model.ts";
import { listModels } from "./service.ts";

export const modelsPlugin = (host: ModelHost) =>
  new Elysia({ name: "sdx.models" })
    .use(errorModel)
    .model({ ModelList: ModelListSchema })
    .get("/v1/models", () => listModels(host), {
      response: { 200: "ModelList" },
      parse: "json",
      detail: {
        tags: ["models"],
        operationId: "listModels",
        summary: "List the models in the models directory",
        description:
          "ONNX folders in the optimum layout, with kind read from model_index.json and the component configs.",
      },
    });
