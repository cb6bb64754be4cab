import { Command, Option } from "clipanion";
import type { Health } from "../../sdk/index.ts";
import { SdxCommand } from "../base.ts";

/** What the server runs on: the GPU or WebGPU adapter in use, and each provider passed over with why. */
export function hardwareLines(health: Health): string[] {
  const lines: string[] = [];
  if (health.gpu) {
    const used = health.gpu.memory_used_mib === null ? "" : `, ${health.gpu.memory_used_mib} MiB in use`;
    lines.push(
      `GPU ${health.gpu.index}: ${health.gpu.name}, ${health.gpu.memory_total_mib} MiB${used}, driver ${health.gpu.driver_version}`,
    );
  }
  if (health.webgpu) {
    const a = health.webgpu.adapter;
    const adapter = a
      ? `${a.name} (${a.type}, driver ${a.driver}, Vulkan ${a.vulkan_version})`
      : "not named (no vulkaninfo)";
    const precision = health.webgpu.float16
      ? "float16"
      : `float32${health.webgpu.note ? ` (${health.webgpu.note})` : ""}`;
    lines.push(`WebGPU adapter: ${adapter}; graphs in ${precision}`);
  }
  for (const f of health.provider_fallbacks) lines.push(`passed over ${f.provider}: ${f.reason}`);
  return lines;
}

export class HealthCommand extends SdxCommand {
  static override paths = [["health"]];
  static override usage = Command.Usage({
    description: "Show the server's state, model, execution provider and version",
    examples: [
      ["Check the server of a project", "sdx health --project example"],
      ["Check a server by URL", "sdx health --server http://127.0.0.1:8001"],
      ["As JSON (exit 3 when the server cannot be reached)", "sdx health --server http://gpu:8001 --json"],
    ],
  });

  projectName = Option.String("--project", { description: "Take server_url from this project" });

  async execute(): Promise<number> {
    const client = await this.serverClient(this.projectName);
    // Unreachable exits 3 and other server errors 1 (SdxCommand.validateAndExecute).
    const health = await client.health(this.context.signal ? { signal: this.context.signal } : {});
    if (this.json) this.printJson(health);
    else {
      this.print(
        `${client.baseUrl}: ${health.status} (sdx ${health.version}, onnxruntime ${health.onnxruntime_version}, ${health.execution_provider})`,
      );
      this.print(health.message);
      for (const line of hardwareLines(health)) this.print(line);
    }
    return health.status === "ok" ? 0 : 1;
  }
}
