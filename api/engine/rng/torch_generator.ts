/**
 * PyTorch's CPU random generator, reproduced so that `new TorchGenerator(seed).randn(shape)` returns what
 * `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)` returns.
 *
 * Sources (ATen): CPUGeneratorImpl (mt19937 engine, `random()` / `random64()`, cached normal sample),
 * core/MT19937RNGEngine.h, core/DistributionsHelper.h (uniform_real_distribution, normal_distribution<double>),
 * native/cpu/DistributionTemplates.h (`normal_fill`, `normal_fill_16`, `normal_fill_16_AVX2`) and
 * native/cpu/DistributionKernels.cpp (`normal_kernel`: a Box–Muller fill for float32 tensors with at least 16
 * elements, the serial `normal_distribution<double>` path otherwise).
 *
 * torch's fill for numel ≥ 16 depends on the CPU kernel torch dispatched to:
 * - "scalar" (every kernel but the AVX2 one: non-x86 CPUs, `ATEN_CPU_CAPABILITY=default`, AVX-512 dispatch):
 *   float `logf/cosf/sinf` of the C library, here `Math.*` rounded with `Math.fround`, which agrees to about
 *   one float32 ulp (max |Δ| 2.4e-7 on the oracle fixtures);
 * - "avx2" (x86-64 with AVX2, torch's usual dispatch there): the Cephes polynomials of avx_mathfun.h, ported
 *   operation by operation, bit-exact.
 * The double path (numel < 16) is the same for both and bit-exact.
 */
import { log256, sincos256 } from "./avx_mathfun.ts";

export type RandnKernel = "scalar" | "avx2";

export interface TorchGeneratorOptions {
  /** Which of torch's CPU normal-fill kernels to reproduce for tensors of 16 or more elements (default "scalar"). */
  kernel?: RandnKernel;
}

const N = 624;
const M = 397;
const MATRIX_A = 0x9908b0df;
const UPPER_MASK = 0x80000000;
const LOWER_MASK = 0x7fffffff;
const TWO_PI = 2 * Math.PI;
const TWO_PI_F32 = Math.fround(TWO_PI);
const U24 = 2 ** -24;
const U53 = 2 ** -53;
const TWO_POW_32 = 2 ** 32;

const fround = Math.fround;

/** The 32-bit Mersenne Twister, kept in a Uint32Array; no BigInt anywhere. */
class MT19937 {
  private readonly state = new Uint32Array(N);
  private index = N;

  constructor(seed: number) {
    const s = this.state;
    s[0] = seed;
    for (let i = 1; i < N; i++) {
      const prev = s[i - 1] as number;
      s[i] = Math.imul(1812433253, prev ^ (prev >>> 30)) + i;
    }
  }

  private twist(): void {
    const s = this.state;
    let i = 0;
    for (; i < N - M; i++) {
      const y = ((s[i] as number) & UPPER_MASK) | ((s[i + 1] as number) & LOWER_MASK);
      s[i] = (s[i + M] as number) ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
    }
    for (; i < N - 1; i++) {
      const y = ((s[i] as number) & UPPER_MASK) | ((s[i + 1] as number) & LOWER_MASK);
      s[i] = (s[i + M - N] as number) ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
    }
    const y = ((s[N - 1] as number) & UPPER_MASK) | ((s[0] as number) & LOWER_MASK);
    s[N - 1] = (s[M - 1] as number) ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
    this.index = 0;
  }

  nextU32(): number {
    if (this.index >= N) this.twist();
    let y = this.state[this.index++] as number;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** `count` draws of `uniform_real_distribution<float>(0, 1)`: the low 24 bits of one u32 each, scaled by 2⁻²⁴. */
  fillUniform24(out: Float32Array, offset: number, count: number): void {
    const s = this.state;
    const end = offset + count;
    let k = offset;
    while (k < end) {
      if (this.index >= N) this.twist();
      const stop = Math.min(end, k + (N - this.index));
      let idx = this.index;
      for (; k < stop; k++) {
        let y = s[idx++] as number;
        y ^= y >>> 11;
        y ^= (y << 7) & 0x9d2c5680;
        y ^= (y << 15) & 0xefc60000;
        y ^= y >>> 18;
        out[k] = (y & 0xffffff) * U24;
      }
      this.index = idx;
    }
  }
}

/** Box–Muller on one block of 16 uniforms, in place (`normal_fill_16`): pairs (j, j+8) for j < 8. */
function normalFill16(d: Float32Array, o: number): void {
  for (let j = o; j < o + 8; j++) {
    const u1 = fround(1 - (d[j] as number)); // [0, 1) → (0, 1] for the log
    const u2 = d[j + 8] as number;
    const radius = fround(Math.sqrt(fround(-2 * fround(Math.log(u1)))));
    const theta = fround(TWO_PI * u2); // 2.0f * pi<double> * u2, evaluated in double, stored as float
    d[j] = radius * fround(Math.cos(theta));
    d[j + 8] = radius * fround(Math.sin(theta));
  }
}

const sinCos = new Float64Array(2);

/** The same block as `normal_fill_16_AVX2`: θ = float(2π)·u2 in float, Cephes log and sincos (avx_mathfun.h). */
function normalFill16Avx2(d: Float32Array, o: number): void {
  for (let j = o; j < o + 8; j++) {
    const u1 = fround(1 - (d[j] as number));
    const u2 = d[j + 8] as number;
    const radius = fround(Math.sqrt(fround(-2 * log256(u1))));
    sincos256(fround(TWO_PI_F32 * u2), sinCos);
    d[j] = radius * (sinCos[1] as number);
    d[j + 8] = radius * (sinCos[0] as number);
  }
}

/** Low 32 bits of a torch seed. torch accepts [-2⁶³, 2⁶⁴) (negatives as two's complement); mt19937 sees only these bits. */
function low32(seed: number | bigint): number {
  if (typeof seed === "bigint") {
    if (seed < -(2n ** 63n) || seed >= 2n ** 64n)
      throw new RangeError(`seed ${seed} is outside [-2^63, 2^64)`);
    return Number(BigInt.asUintN(32, seed));
  }
  if (!Number.isSafeInteger(seed)) {
    throw new RangeError(`seed ${seed} is not a safe integer; pass seeds beyond 2^53 as a bigint`);
  }
  return ((seed % TWO_POW_32) + TWO_POW_32) % TWO_POW_32;
}

export class TorchGenerator {
  /** The seed as given to the constructor (torch's `initial_seed()` modulo the 64-bit wrap of negatives). */
  readonly seed: number | bigint;
  readonly kernel: RandnKernel;
  private readonly engine: MT19937;
  private readonly fill16: (d: Float32Array, offset: number) => void;
  /** Second Box–Muller value of the double path, kept across calls like CPUGeneratorImpl::next_double_normal_sample. */
  private nextDoubleNormal: number | null = null;

  constructor(seed: number | bigint, options: TorchGeneratorOptions = {}) {
    this.seed = seed;
    this.kernel = options.kernel ?? "scalar";
    this.fill16 = this.kernel === "avx2" ? normalFill16Avx2 : normalFill16;
    this.engine = new MT19937(low32(seed));
  }

  /** `uniform_real_distribution<double>(0, 1)`: 53 bits of `random64() = (u32_a << 32) | u32_b`, scaled by 2⁻⁵³. */
  private uniform53(): number {
    const hi = this.engine.nextU32();
    const lo = this.engine.nextU32();
    return ((hi & 0x1fffff) * TWO_POW_32 + lo) * U53;
  }

  /** `at::normal_distribution<double>(0, 1)`: Box–Muller in double, returning r·cos θ and caching r·sin θ. */
  private normalDouble(): number {
    if (this.nextDoubleNormal !== null) {
      const cached = this.nextDoubleNormal;
      this.nextDoubleNormal = null;
      return cached;
    }
    const u1 = this.uniform53();
    const u2 = this.uniform53();
    const r = Math.sqrt(-2 * Math.log1p(-u2));
    const theta = TWO_PI * u1;
    this.nextDoubleNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** `torch.randn(shape, generator=g, dtype=torch.float32)` on CPU; consecutive calls continue the stream. */
  randn(shape: readonly number[]): Float32Array {
    let n = 1;
    for (const dim of shape) {
      if (!Number.isInteger(dim) || dim < 0) throw new RangeError(`invalid shape [${shape.join(", ")}]`);
      n *= dim;
    }
    const out = new Float32Array(n);
    if (n >= 16) {
      this.engine.fillUniform24(out, 0, n);
      for (let i = 0; i + 16 <= n; i += 16) this.fill16(out, i);
      if (n % 16 !== 0) {
        // The ragged tail: 16 fresh uniforms overwrite the last 16 slots and are transformed as one block.
        this.engine.fillUniform24(out, n - 16, 16);
        this.fill16(out, n - 16);
      }
    } else {
      for (let i = 0; i < n; i++) out[i] = this.normalDouble();
    }
    return out;
  }
}
