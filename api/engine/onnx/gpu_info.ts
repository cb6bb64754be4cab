/**
 * The NVIDIA GPU sdx runs on, for `/health` when the CUDA provider is in use: name, memory total and used, driver
 * version, read from `nvidia-smi` (which ships with the driver; onnxruntime-node exposes no device query). The
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
