import { Elysia } from "elysia";
import { ModelListSchema } from "../../contract/index.ts";
import type { ModelHost } from "../engine/model_host.ts";
import { listModels } from "../engine/models.ts";
import { errorModel } from "../http/errors.ts";

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
