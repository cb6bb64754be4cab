/** A .safetensors file of float32 tensors, for tests that need exact values under chosen names. */
export async function writeSafetensors(
  path: string,
  tensors:
    | Record<string, { shape: number[]; data: Float32Array }>
    | ReadonlyMap<string, { shape: number[]; data: Float32Array }>,
): Promise<void> {
  const entries = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, t] of entries) {
    header[name] = { dtype: "F32", shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(json.length), true);
  const parts = [
    len,
    json,
    ...entries.map(([, t]) => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)),
  ];
  await Bun.write(path, new Blob(parts));
}
