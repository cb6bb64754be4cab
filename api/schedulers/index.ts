import { Elysia } from "elysia";
import { SchedulerListSchema } from "../../contract/index.ts";
import { listSchedulers } from "./service.ts";

export const schedulersPlugin = () =>
  new Elysia({ name: "sdx.schedulers" })
    .model({ SchedulerList: SchedulerListSchema })
    .get("/v1/schedulers", () => listSchedulers(), {
      response: { 200: "SchedulerList" },
      parse: "json",
      detail: {
        tags: ["generate"],
        operationId: "listSchedulers",
        summary: "List the samplers, their AUTOMATIC1111 aliases and which accept Karras sigmas",
      },
    });
