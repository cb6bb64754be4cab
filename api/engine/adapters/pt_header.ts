/**
 * The header of a `torch.save` file (the zip layout torch has written since 1.6): the entries' places from the
 * zip's central directory, and the `data.pkl` pickle read as plain values. Tensors stay in the file: the pickle
 * only names them (a `_rebuild_tensor_v2` call with its storage key and shape), so this reads a few kilobytes of
 * an embedding's `.pt` and never runs anything it contains. Only the opcodes torch's pickler writes are known;
 * any other is an error, never a call.
 */

export class TorchZipError extends Error {
  override name = "TorchZipError";
}

/** A tensor as the pickle names it: its shape and storage type, not its values. */
export interface PickledTensor {
  kind: "tensor";
  shape: number[];
  storage: string | null;
}

/** A value of the pickle: the types a torch.save of plain data holds (dicts become Maps). */
export type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | PickleValue[]
  | Map<PickleValue, PickleValue>
  | PickledTensor
  | { kind: "global"; name: string }
  | { kind: "object"; of: string };

/** The largest `data.pkl` read: an embedding's is well under a kilobyte. */
const MAX_PICKLE_BYTES = 4 * 1024 * 1024;
/** How far from the end the zip's end-of-central-directory record may be (its comment is at most 64 KiB). */
const EOCD_SEARCH = 22 + 0xffff;

const LOCAL_HEADER = 0x04034b50;
const CENTRAL_HEADER = 0x02014b50;
const END_OF_CENTRAL = 0x06054b50;

/** The first bytes of a zip file (a local file header). */
export function hasZipSignature(bytes: Uint8Array): boolean {
  return (
    bytes.length >= 4 && new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true) === LOCAL_HEADER
  );
}

/** The pickle of a torch.save zip at `path`, parsed. */
export async function readTorchPickle(path: string): Promise<PickleValue> {
  const file = Bun.file(path);
  const size = file.size;
  const tailStart = Math.max(0, size - EOCD_SEARCH);
  const tail = new Uint8Array(await file.slice(tailStart, size).arrayBuffer());
  const tv = new DataView(tail.buffer);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tv.getUint32(i, true) === END_OF_CENTRAL) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new TorchZipError("not a torch.save zip: no end of central directory (truncated?)");
  const count = tv.getUint16(eocd + 10, true);
  const dirSize = tv.getUint32(eocd + 12, true);
  const dirOffset = tv.getUint32(eocd + 16, true);
  if (count === 0xffff || dirOffset === 0xffffffff) throw new TorchZipError("zip64 files are not read");
  if (dirOffset + dirSize > size)
    throw new TorchZipError("the zip's central directory lies outside the file");
  const dir = new Uint8Array(await file.slice(dirOffset, dirOffset + dirSize).arrayBuffer());
  const dv = new DataView(dir.buffer);
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + 46 > dir.length || dv.getUint32(at, true) !== CENTRAL_HEADER)
      throw new TorchZipError("the zip's central directory is corrupt");
    const method = dv.getUint16(at + 10, true);
    const compressed = dv.getUint32(at + 20, true);
    const nameLen = dv.getUint16(at + 28, true);
    const extraLen = dv.getUint16(at + 30, true);
    const commentLen = dv.getUint16(at + 32, true);
    const localOffset = dv.getUint32(at + 42, true);
    const name = new TextDecoder().decode(dir.subarray(at + 46, at + 46 + nameLen));
    at += 46 + nameLen + extraLen + commentLen;
    if (!(name === "data.pkl" || name.endsWith("/data.pkl"))) continue;
    if (method !== 0) throw new TorchZipError(`data.pkl is compressed (method ${method}); torch stores it`);
    if (compressed > MAX_PICKLE_BYTES) throw new TorchZipError(`data.pkl is ${compressed} bytes: too large`);
    const local = new DataView(await file.slice(localOffset, localOffset + 30).arrayBuffer());
    if (local.byteLength < 30 || local.getUint32(0, true) !== LOCAL_HEADER)
      throw new TorchZipError("the zip's entry for data.pkl is corrupt");
    const start = localOffset + 30 + local.getUint16(26, true) + local.getUint16(28, true);
    if (start + compressed > size) throw new TorchZipError("data.pkl lies outside the file (truncated?)");
    return parsePickle(new Uint8Array(await file.slice(start, start + compressed).arrayBuffer()));
  }
  throw new TorchZipError("not a torch.save zip: it has no data.pkl");
}

const MARK = Symbol("mark");
type Slot = PickleValue | typeof MARK;

/** A pickle (protocols 2–5, the subset torch.save writes) as values; tensors become their shapes. */
export function parsePickle(bytes: Uint8Array): PickleValue {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const decoder = new TextDecoder();
  const stack: Slot[] = [];
  const memo = new Map<number, PickleValue>();
  let at = 0;
  const need = (n: number) => {
    if (at + n > bytes.length) throw new TorchZipError("the pickle ends early (truncated)");
  };
  const u8 = () => {
    need(1);
    return bytes[at++] as number;
  };
  const u16 = () => {
    need(2);
    at += 2;
    return view.getUint16(at - 2, true);
  };
  const u32 = () => {
    need(4);
    at += 4;
    return view.getUint32(at - 4, true);
  };
  const text = (n: number) => {
    need(n);
    at += n;
    return decoder.decode(bytes.subarray(at - n, at));
  };
  const line = () => {
    const end = bytes.indexOf(0x0a, at);
    if (end < 0) throw new TorchZipError("the pickle ends early (truncated)");
    const s = decoder.decode(bytes.subarray(at, end));
    at = end + 1;
    return s;
  };
  const pop = (): PickleValue => {
    const v = stack.pop();
    if (v === undefined || v === MARK) throw new TorchZipError("malformed pickle (stack underflow)");
    return v;
  };
  const popMark = (): PickleValue[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) throw new TorchZipError("malformed pickle (no mark)");
    const items = stack.splice(i + 1) as PickleValue[];
    stack.pop();
    return items;
  };
  const top = (): PickleValue => {
    const v = stack.at(-1);
    if (v === undefined || v === MARK) throw new TorchZipError("malformed pickle (empty stack)");
    return v;
  };
  const setItems = (target: PickleValue, items: PickleValue[]) => {
    if (!(target instanceof Map)) return;
    for (let i = 0; i + 1 < items.length; i += 2)
      target.set(items[i] as PickleValue, items[i + 1] as PickleValue);
  };
  const call = (fn: PickleValue, args: PickleValue): PickleValue => {
    const name = fn && typeof fn === "object" && "kind" in fn && fn.kind === "global" ? fn.name : "?";
    if (name === "torch._utils._rebuild_tensor_v2" || name === "torch._utils._rebuild_tensor") {
      const a = Array.isArray(args) ? args : [];
      const storage = a[0];
      const shape = a[2];
      return {
        kind: "tensor",
        shape: Array.isArray(shape) ? shape.map(Number) : [],
        storage:
          Array.isArray(storage) && typeof storage[1] === "object" && storage[1] && "name" in storage[1]
            ? String(storage[1].name)
            : null,
      };
    }
    if (name === "collections.OrderedDict" || name === "builtins.dict") return new Map();
    return { kind: "object", of: name };
  };
  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        u8();
        break;
      case 0x95: // FRAME
        need(8);
        at += 8;
        break;
      case 0x2e: // STOP
        return pop();
      case 0x28: // MARK
        stack.push(MARK);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x4a: // BININT
        stack.push(u32() | 0);
        break;
      case 0x8a: {
        // LONG1: little-endian two's complement
        const n = u8();
        need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[at + i] as number);
        if (n > 0 && ((bytes[at + n - 1] as number) & 0x80) !== 0) v -= 1n << BigInt(8 * n);
        at += n;
        stack.push(
          v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v,
        );
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        stack.push(view.getFloat64(at, false));
        at += 8;
        break;
      case 0x58: // BINUNICODE
        stack.push(text(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text(u8()));
        break;
      case 0x54: // BINSTRING
        stack.push(text(u32()));
        break;
      case 0x55: // SHORT_BINSTRING
        stack.push(text(u8()));
        break;
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        const key = op === 0x68 ? u8() : u32();
        if (!memo.has(key)) throw new TorchZipError("malformed pickle (unknown memo key)");
        stack.push(memo.get(key) as PickleValue);
        break;
      }
      case 0x63: {
        // GLOBAL "module\nname\n"
        const module = line();
        stack.push({ kind: "global", name: `${module}.${line()}` });
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        stack.push({ kind: "global", name: `${String(pop())}.${String(name)}` });
        break;
      }
      case 0x74: // TUPLE
        stack.push(popMark());
        break;
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x51: {
        // BINPERSID: torch's storage reference ("storage", StorageType, key, location, numel)
        stack.push(pop());
        break;
      }
      case 0x52: // REDUCE
      case 0x81: {
        // NEWOBJ
        const args = pop();
        stack.push(call(pop(), args));
        break;
      }
      case 0x62: // BUILD: the state is dropped (OrderedDict / tensor hooks)
        pop();
        break;
      case 0x73: {
        // SETITEM
        const value = pop();
        const key = pop();
        setItems(top(), [key, value]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x61: {
        // APPEND
        const value = pop();
        const list = top();
        if (Array.isArray(list)) list.push(value);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        const list = top();
        if (Array.isArray(list)) list.push(...items);
        break;
      }
      default:
        throw new TorchZipError(
          `the pickle uses opcode 0x${op.toString(16)} at byte ${at - 1}, which a torch.save of tensors does not`,
        );
    }
  }
}
