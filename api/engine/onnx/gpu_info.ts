/**
 * The GPU sdx runs on, for `/health`. CUDA: the NVIDIA GPU's name, memory total and used, driver version, read from `nvidia-smi` (which ships with the driver; onnxruntime-node exposes no device query). The
 * answer is cached for a few seconds so that a busy health check does not spawn a process per request, and is
 * null whenever nvidia-smi is missing, fails, times out or prints nothing parseable.
 */

export interface GpuInfo {
  /** Index of the GPU as nvidia-smi numbers it. */
  index: number;
  /** e.g. "NVIDIA H100 80GB HBM3". */
  name: string;
  /** Total memory, MiB. */
  memoryTotalMiB: number;
  /** Memory in use on the device (all processes), MiB; null where the driver does not report it (MIG). */
  memoryUsedMiB: number | null;
  /** e.g. "550.54.15". */
  driverVersion: string;
}

export const NVIDIA_SMI_QUERY = [
  "--query-gpu=index,name,memory.total,memory.used,driver_version",
  "--format=csv,noheader,nounits",
] as const;

/** A number from a csv field, or null for nvidia-smi's "[N/A]", "[Not Supported]", "N/A" and the like. */
function numberField(field: string): number | null {
  const value = Number(field.trim());
  return field.trim() !== "" && Number.isFinite(value) ? value : null;
}

/**
 * The GPUs in `nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version
 * --format=csv,noheader,nounits` output, one line each; lines that do not parse are skipped.
 */
export function parseNvidiaSmi(output: string): GpuInfo[] {
  const gpus: GpuInfo[] = [];
  for (const line of output.split(/\r?\n/)) {
    const fields = line.split(",").map((f) => f.trim());
    if (fields.length < 5) continue;
    // The name is the only field that could hold a comma: it is everything between index and the last three.
    const index = numberField(fields[0] as string);
    const driverVersion = fields[fields.length - 1] as string;
    const used = numberField(fields[fields.length - 2] as string);
    const total = numberField(fields[fields.length - 3] as string);
    const name = fields.slice(1, -3).join(", ");
    if (index === null || total === null || name === "" || !/^\d+(\.\d+)*$/.test(driverVersion)) continue;
    gpus.push({ index, name, memoryTotalMiB: total, memoryUsedMiB: used, driverVersion });
  }
  return gpus;
}

/** Runs a command and returns its stdout, or null when it cannot be started, fails or outlasts `timeoutMs`. */
export type CommandRunner = (argv: readonly string[], timeoutMs: number) => Promise<string | null>;

export const spawnCommand: CommandRunner = async (argv, timeoutMs) => {
  let child: ReturnType<typeof Bun.spawn>;
  // Looked up on the PATH the process has now (Bun.spawn alone would use the one it started with).
  const [name, ...args] = argv;
  const executable = name === undefined ? null : Bun.which(name, { PATH: process.env.PATH ?? "" });
  if (executable === null) return null;
  try {
    child = Bun.spawn([executable, ...args], { stdout: "pipe", stderr: "ignore", stdin: "ignore" });
  } catch {
    return null; // not installed (ENOENT) or not executable
  }
  const timer = setTimeout(() => child.kill(), timeoutMs);
  try {
    const [text, code] = await Promise.all([
      new Response(child.stdout as ReadableStream<Uint8Array>).text(),
      child.exited,
    ]);
    return code === 0 ? text : null;
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
};

export interface GpuInfoOptions {
  /** Which GPU (nvidia-smi's index; default 0, the one onnxruntime's CUDA provider uses by default). */
  deviceId?: number;
  /** How long an answer is reused, ms (default 5000). */
  cacheMs?: number;
  /** How long nvidia-smi may take, ms (default 2000). */
  timeoutMs?: number;
  /** The command runner (tests pass a fake). */
  run?: CommandRunner;
  /** The nvidia-smi executable (default "nvidia-smi" from PATH). */
  command?: string;
}

let cached: { at: number; key: string; value: Promise<GpuInfo | null> } | null = null;

/** Forgets the cached answer (tests). */
export function clearGpuInfoCache(): void {
  cached = null;
}

/** The GPU's name, memory and driver, or null when nvidia-smi cannot tell (no NVIDIA driver, no GPU, timeout). */
export function gpuInfo(options: GpuInfoOptions = {}): Promise<GpuInfo | null> {
  const deviceId = options.deviceId ?? 0;
  const command = options.command ?? "nvidia-smi";
  const run = options.run ?? spawnCommand;
  const key = `${command}:${deviceId}:${run === spawnCommand ? "spawn" : "custom"}`;
  const now = performance.now();
  if (cached && cached.key === key && now - cached.at < (options.cacheMs ?? 5000)) return cached.value;
  const value = run([command, ...NVIDIA_SMI_QUERY], options.timeoutMs ?? 2000).then((output) => {
    if (output === null) return null;
    const gpus = parseNvidiaSmi(output);
    return gpus.find((g) => g.index === deviceId) ?? null;
  });
  cached = { at: now, key, value };
  return value;
}

/**
 * The Vulkan device Dawn most likely takes for WebGPU, for `/health` when the WebGPU provider runs: onnxruntime-node
 * exposes no adapter query, so the adapter is named from `vulkaninfo --summary` (Debian's vulkan-tools): Dawn's
 * default power preference takes a discrete GPU before an integrated one before anything else (a CPU rasterizer).
 */
export interface VulkanDevice {
  /** e.g. "NVIDIA H100 80GB HBM3", "llvmpipe (LLVM 15.0.6, 256 bits)". */
  name: string;
  /** vulkaninfo's deviceType without its prefix: "DISCRETE_GPU", "INTEGRATED_GPU", "CPU", … */
  type: string;
  /** The driver's own words, e.g. "Mesa 22.3.6 (LLVM 15.0.6)" or "550.54.15". */
  driver: string;
  /** The Vulkan version the driver offers, e.g. "1.3.230". */
  apiVersion: string;
}

const DEVICE_TYPE_ORDER = ["DISCRETE_GPU", "INTEGRATED_GPU", "VIRTUAL_GPU"];

/** The devices in `vulkaninfo --summary` output (its "GPUn:" blocks of `key = value` lines). */
export function parseVulkanSummary(output: string): VulkanDevice[] {
  const devices: VulkanDevice[] = [];
  let fields: Map<string, string> | null = null;
  const flush = () => {
    const name = fields?.get("deviceName");
    if (fields && name) {
      devices.push({
        name,
        type: (fields.get("deviceType") ?? "").replace(/^PHYSICAL_DEVICE_TYPE_/, ""),
        driver: fields.get("driverInfo") || fields.get("driverVersion") || "",
        apiVersion: fields.get("apiVersion") ?? "",
      });
    }
  };
  for (const line of output.split(/\r?\n/)) {
    if (/^GPU\d+:\s*$/.test(line.trim())) {
      flush();
      fields = new Map();
      continue;
    }
    const match = /^\s*(\w+)\s*=\s*(.*?)\s*$/.exec(line);
    if (fields && match) fields.set(match[1] as string, match[2] as string);
  }
  flush();
  return devices;
}

/** The device Dawn's default (high-performance) request picks among `devices`, or null when there is none. */
export function preferredVulkanDevice(devices: readonly VulkanDevice[]): VulkanDevice | null {
  const rank = (d: VulkanDevice) => {
    const i = DEVICE_TYPE_ORDER.indexOf(d.type);
    return i < 0 ? DEVICE_TYPE_ORDER.length : i;
  };
  return [...devices].sort((a, b) => rank(a) - rank(b))[0] ?? null;
}

let vulkanAnswer: Promise<VulkanDevice | null> | null = null;

/** Forgets vulkaninfo's answer (tests). */
export function clearVulkanDeviceCache(): void {
  vulkanAnswer = null;
}

/**
 * The Vulkan device behind the WebGPU adapter, or null when vulkaninfo is missing, fails or lists none. The devices
 * do not change while the server runs, so vulkaninfo runs once (a test's own runner every time).
 */
export function vulkanDevice(
  options: Pick<GpuInfoOptions, "run" | "timeoutMs" | "command"> = {},
): Promise<VulkanDevice | null> {
  const ask = async () => {
    const run = options.run ?? spawnCommand;
    const output = await run([options.command ?? "vulkaninfo", "--summary"], options.timeoutMs ?? 5000);
    return output === null ? null : preferredVulkanDevice(parseVulkanSummary(output));
  };
  if (options.run || options.command) return ask();
  vulkanAnswer ??= ask();
  return vulkanAnswer;
}
