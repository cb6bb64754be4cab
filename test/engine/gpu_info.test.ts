/**
 * The GPU report for /health: nvidia-smi's csv parsed (captured outputs of real drivers), and null whenever
 * nvidia-smi cannot answer.
 */
import { beforeEach, expect, test } from "bun:test";
import {
  type CommandRunner,
  clearGpuInfoCache,
  gpuInfo,
  NVIDIA_SMI_QUERY,
  parseNvidiaSmi,
  spawnCommand,
} from "../../api/engine/onnx/gpu_info.ts";

beforeEach(() => clearGpuInfoCache());

// `nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version --format=csv,noheader,nounits`
const H100 = "0, NVIDIA H100 80GB HBM3, 81559, 1, 550.54.15\n";
const TWO_GPUS =
  "0, NVIDIA GeForce RTX 4090, 24564, 1876, 560.35.03\n1, NVIDIA GeForce RTX 3090, 24576, 14, 560.35.03\n";
const MIG = "0, NVIDIA A100-SXM4-40GB, 40960, [N/A], 535.183.01\n";

test("parses one line per GPU", () => {
  expect(parseNvidiaSmi(H100)).toEqual([
    {
      index: 0,
      name: "NVIDIA H100 80GB HBM3",
      memoryTotalMiB: 81559,
      memoryUsedMiB: 1,
      driverVersion: "550.54.15",
    },
  ]);
  const two = parseNvidiaSmi(TWO_GPUS);
  expect(two.map((g) => [g.index, g.name, g.memoryUsedMiB])).toEqual([
    [0, "NVIDIA GeForce RTX 4090", 1876],
    [1, "NVIDIA GeForce RTX 3090", 14],
  ]);
});

test("memory the driver does not report (MIG: [N/A]) is null; lines that are not GPUs are skipped", () => {
  expect(parseNvidiaSmi(MIG)[0]?.memoryUsedMiB).toBeNull();
  expect(parseNvidiaSmi(MIG)[0]?.memoryTotalMiB).toBe(40960);
  expect(parseNvidiaSmi("")).toEqual([]);
  expect(
    parseNvidiaSmi(
      "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n",
    ),
  ).toEqual([]);
  expect(parseNvidiaSmi("No devices were found\n")).toEqual([]);
  expect(parseNvidiaSmi("0, Some, GPU, name, [N/A], 3, 550.1\r\n")).toEqual([]);
});

test("gpuInfo asks nvidia-smi for the csv fields and returns the chosen device", async () => {
  const calls: (readonly string[])[] = [];
  const run: CommandRunner = async (argv) => {
    calls.push(argv);
    return TWO_GPUS;
  };
  expect((await gpuInfo({ run }))?.name).toBe("NVIDIA GeForce RTX 4090");
  expect(calls[0]).toEqual(["nvidia-smi", ...NVIDIA_SMI_QUERY]);
  clearGpuInfoCache();
  expect((await gpuInfo({ run, deviceId: 1 }))?.name).toBe("NVIDIA GeForce RTX 3090");
  clearGpuInfoCache();
  expect(await gpuInfo({ run, deviceId: 2 })).toBeNull();
});

test("the answer is cached briefly", async () => {
  let calls = 0;
  const run: CommandRunner = async () => {
    calls++;
    return H100;
  };
  await gpuInfo({ run });
  await gpuInfo({ run });
  expect(calls).toBe(1);
  await gpuInfo({ run, cacheMs: 0 });
  expect(calls).toBe(2);
});

test("not available: no nvidia-smi, a failing one, or one that hangs, gives null", async () => {
  expect(await gpuInfo({ command: "/nonexistent/nvidia-smi" })).toBeNull();
  clearGpuInfoCache();
  expect(await gpuInfo({ command: "false" })).toBeNull();
  clearGpuInfoCache();
  expect(await gpuInfo({ run: async () => null })).toBeNull();
  // A command that outlasts the timeout is killed.
  const started = performance.now();
  expect(await spawnCommand(["sleep", "5"], 200)).toBeNull();
  expect(performance.now() - started).toBeLessThan(3000);
  expect(await spawnCommand(["echo", H100.trim()], 2000)).toBe(H100);
});
