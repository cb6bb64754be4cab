/**
 * A safe reader for PyTorch `.pt` / `.bin` files as `torch.save` writes them since torch 1.6: never executes
 * anything, understands only plain data and tensors.
 *
 * Format (torch `serialization.py`, `_save` with `_use_new_zipfile_serialization=True`):
 * - a ZIP archive written by miniz (`PyTorchFileWriter`), every entry STORED (method 0, uncompressed), data
 *   aligned to 64 bytes by padding the local header's extra field, general-purpose flag bit 3 set (sizes in a
 *   data descriptor, so the local header's sizes may be 0: the central directory's are authoritative), zip64
 *   end records always present. Entries live under one top folder `<archive>/` (the file's stem at save time):
 *   `data.pkl` (the object graph), `data/<key>` (one raw little-endian storage per key), `version`, and in newer
 *   torch `byteorder`, `.data/serialization_id`.
 * - `data.pkl` is a pickle (protocol 2 from torch.save; 2–5 accepted) in which each storage is a persistent id
 *   `("storage", <torch.XStorage class>, key, location, numel)` (BINPERSID), and each tensor is
 *   `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks)`
 *   (optionally wrapped in `torch._utils._rebuild_parameter(tensor, requires_grad, backward_hooks)`), with
 *   `backward_hooks = collections.OrderedDict()`.
 *
 * The pickle VM knows only the opcodes that build dicts, lists, tuples, strings, bytes, numbers, booleans, None
 * and the memo, and resolves GLOBAL / STACK_GLOBAL only for {@link ALLOWED_GLOBALS}; REDUCE calls only those. Any
 * other global (`posix.system`, `builtins.eval`, ...) or opcode is refused by name before anything happens —
 * the same policy as `torch.load(weights_only=True)`, narrower. The legacy pre-1.6 format (a bare pickle stream
 * followed by raw storages) is refused.
 */

/** Thrown for any file the reader does not accept; the message says why. */
export class PickleError extends Error {
  override name = "PickleError";
}

/** A tensor rebuilt from its storage, upcast to float32 (row-major, contiguous). */
export class TorchTensor {
  constructor(
    readonly dtype: "F32" | "F16" | "BF16",
    readonly shape: number[],
    readonly data: Float32Array,
  ) {}
}

/** A dict (`dict` or `collections.OrderedDict`); keys are strings or numbers, insertion-ordered. */
export class PickleDict {
  readonly entries = new Map<string | number, PickleValue>();
}

export type PickleValue =
  | null
  | boolean
  | number
  | string
  | Uint8Array
  | PickleValue[]
  | PickleDict
  | TorchTensor;

/** Hard limits: what an embedding or small adapter file can reasonably need. */
const DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024;
const MAX_ENTRIES = 10_000;
const MAX_PICKLE_BYTES = 16 * 1024 * 1024;
const MAX_MEMO = 1_000_000;
const MAX_LONG_BYTES = 8;

// ---------------------------------------------------------------------------------------------------------------
// ZIP (PKWARE APPNOTE 6.3): end of central directory, zip64 locator/record, central directory, local headers.
// ---------------------------------------------------------------------------------------------------------------

const EOCD_SIG = 0x06054b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const ZIP64_EOCD_SIG = 0x06064b50;
const CENTRAL_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;
/** EOCD is 22 bytes plus a comment of at most 65535. */
const EOCD_SEARCH = 22 + 0xffff;

/** The STORED entries of a zip, by name, as views into `bytes`. Names are only map keys, never paths. */
export function readStoredZip(bytes: Uint8Array): Map<string, Uint8Array> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const size = bytes.byteLength;
  const u16 = (o: number) => view.getUint16(o, true);
  const u32 = (o: number) => view.getUint32(o, true);
  const u64 = (o: number) => {
    const v = view.getBigUint64(o, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new PickleError("zip: a 64-bit size is out of range");
    return Number(v);
  };
  const need = (o: number, n: number, what: string) => {
    if (o < 0 || o + n > size) throw new PickleError(`zip: ${what} lies outside the ${size}-byte file`);
  };

  let eocd = -1;
  for (let o = size - 22; o >= Math.max(0, size - EOCD_SEARCH); o--) {
    if (u32(o) === EOCD_SIG) {
      eocd = o;
      break;
    }
  }
  if (eocd < 0) throw new PickleError("not a zip archive (no end-of-central-directory record)");
  let count = u16(eocd + 10);
  let cdSize = u32(eocd + 12);
  let cdOffset = u32(eocd + 16);
  // zip64: the locator sits right before the EOCD and points at the zip64 EOCD record.
  if (eocd >= 20 && u32(eocd - 20) === ZIP64_LOCATOR_SIG) {
    const rec = u64(eocd - 20 + 8);
    need(rec, 56, "zip64 end record");
    if (u32(rec) !== ZIP64_EOCD_SIG) throw new PickleError("zip: bad zip64 end-of-central-directory record");
    count = u64(rec + 32);
    cdSize = u64(rec + 40);
    cdOffset = u64(rec + 48);
  }
  if (count > MAX_ENTRIES) throw new PickleError(`zip: ${count} entries (at most ${MAX_ENTRIES})`);
  need(cdOffset, cdSize, "central directory");

  const decoder = new TextDecoder("utf-8", { fatal: true });
  const entries = new Map<string, Uint8Array>();
  let p = cdOffset;
  for (let i = 0; i < count; i++) {
    need(p, 46, "central directory entry");
    if (u32(p) !== CENTRAL_SIG) throw new PickleError("zip: bad central directory entry");
    const flags = u16(p + 8);
    const method = u16(p + 10);
    let compressed = u32(p + 20);
    let uncompressed = u32(p + 24);
    const nameLen = u16(p + 28);
    const extraLen = u16(p + 30);
    const commentLen = u16(p + 32);
    let localOffset = u32(p + 42);
    need(p + 46, nameLen + extraLen + commentLen, "central directory entry");
    let name: string;
    try {
      name = decoder.decode(bytes.subarray(p + 46, p + 46 + nameLen));
    } catch {
      throw new PickleError("zip: an entry name is not valid UTF-8");
    }
    // Zip64 extended information (header id 1): the 64-bit values, in order, for each 32-bit field set to ~0.
    for (let e = p + 46 + nameLen; e + 4 <= p + 46 + nameLen + extraLen; ) {
      const id = u16(e);
      const len = u16(e + 2);
      need(e + 4, len, "zip extra field");
      if (id === 1) {
        let q = e + 4;
        if (uncompressed === 0xffffffff && q + 8 <= e + 4 + len) {
          uncompressed = u64(q);
          q += 8;
        }
        if (compressed === 0xffffffff && q + 8 <= e + 4 + len) {
          compressed = u64(q);
          q += 8;
        }
        if (localOffset === 0xffffffff && q + 8 <= e + 4 + len) localOffset = u64(q);
      }
      e += 4 + len;
    }
    if (flags & 0x1) throw new PickleError(`zip: entry ${JSON.stringify(name)} is encrypted`);
    if (method !== 0) {
      throw new PickleError(
        `zip: entry ${JSON.stringify(name)} is compressed (method ${method}); torch.save writes STORED entries only`,
      );
    }
    if (compressed !== uncompressed)
      throw new PickleError(`zip: entry ${JSON.stringify(name)} has inconsistent sizes`);
    need(localOffset, 30, "local header");
    if (u32(localOffset) !== LOCAL_SIG)
      throw new PickleError(`zip: bad local header for ${JSON.stringify(name)}`);
    const dataStart = localOffset + 30 + u16(localOffset + 26) + u16(localOffset + 28);
    need(dataStart, uncompressed, `entry ${JSON.stringify(name)}`);
    if (entries.has(name)) throw new PickleError(`zip: entry ${JSON.stringify(name)} appears twice`);
    entries.set(name, bytes.subarray(dataStart, dataStart + uncompressed));
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

// ---------------------------------------------------------------------------------------------------------------
// Pickle VM (CPython `Lib/pickle.py` opcodes, protocols 2–5), data-only.
// ---------------------------------------------------------------------------------------------------------------

/** The callables and classes a torch file may name; anything else is refused. */
const ALLOWED_GLOBALS = new Set([
  "torch._utils._rebuild_tensor_v2",
  "torch._utils._rebuild_parameter",
  "collections.OrderedDict",
  "torch.FloatStorage",
  "torch.HalfStorage",
  "torch.BFloat16Storage",
]);

/** Element type and size of each legacy storage class (its `data/<key>` entry is raw little-endian values). */
const STORAGE_TYPES: Record<string, { dtype: TorchTensor["dtype"]; bytes: number }> = {
  "torch.FloatStorage": { dtype: "F32", bytes: 4 },
  "torch.HalfStorage": { dtype: "F16", bytes: 2 },
  "torch.BFloat16Storage": { dtype: "BF16", bytes: 2 },
};

/** A resolved allow-listed global on the stack. */
class Global {
  constructor(readonly name: string) {}
}

/** A storage resolved from a persistent id: raw bytes of `data/<key>` and its element type. */
class Storage {
  constructor(
    readonly dtype: TorchTensor["dtype"],
    readonly elementBytes: number,
    readonly bytes: Uint8Array,
    readonly numel: number,
  ) {}
}

const MARK = Symbol("mark");
type StackItem = PickleValue | Global | Storage | typeof MARK;

/** Opcode bytes (pickle.py names). */
const OP = {
  PROTO: 0x80,
  FRAME: 0x95,
  STOP: 0x2e, // .
  MARK: 0x28, // (
  EMPTY_DICT: 0x7d, // }
  EMPTY_LIST: 0x5d, // ]
  EMPTY_TUPLE: 0x29, // )
  TUPLE: 0x74, // t
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  LIST: 0x6c, // l
  DICT: 0x64, // d
  SETITEM: 0x73, // s
  SETITEMS: 0x75, // u
  APPEND: 0x61, // a
  APPENDS: 0x65, // e
  BINUNICODE: 0x58, // X
  SHORT_BINUNICODE: 0x8c,
  BINUNICODE8: 0x8d,
  BINBYTES: 0x42, // B
  SHORT_BINBYTES: 0x43, // C
  BINBYTES8: 0x8e,
  BININT: 0x4a, // J
  BININT1: 0x4b, // K
  BININT2: 0x4d, // M
  LONG1: 0x8a,
  LONG4: 0x8b,
  BINFLOAT: 0x47, // G
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  NONE: 0x4e, // N
  BINPUT: 0x71, // q
  LONG_BINPUT: 0x72, // r
  BINGET: 0x68, // h
  LONG_BINGET: 0x6a, // j
  MEMOIZE: 0x94,
  GLOBAL: 0x63, // c
  STACK_GLOBAL: 0x93,
  REDUCE: 0x52, // R
  BUILD: 0x62, // b
  BINPERSID: 0x51, // Q
} as const;

const OP_NAMES = new Map<number, string>(Object.entries(OP).map(([k, v]) => [v, k]));

/** Some known-dangerous opcodes, named in the refusal. */
const REFUSED_OP_NAMES: Record<number, string> = {
  105: "INST",
  111: "OBJ",
  129: "NEWOBJ",
  146: "NEWOBJ_EX",
  80: "PERSID",
  130: "EXT1",
  131: "EXT2",
  132: "EXT4",
};

type ResolveStorage = (key: string, type: string, numel: number) => Storage;

/** Runs a data-only pickle; `resolveStorage` maps a persistent id to the archive's `data/<key>`. */
export function unpickle(data: Uint8Array, resolveStorage?: ResolveStorage): PickleValue {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const stack: StackItem[] = [];
  const memo = new Map<number, StackItem>();
  let pos = 0;
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const latin1 = new TextDecoder("latin1");

  const take = (n: number): Uint8Array => {
    if (n < 0 || pos + n > data.length) throw new PickleError("pickle: truncated data");
    const out = data.subarray(pos, pos + n);
    pos += n;
    return out;
  };
  const u8 = () => take(1)[0] as number;
  const u16 = () => {
    take(2);
    return view.getUint16(pos - 2, true);
  };
  const u32 = () => {
    take(4);
    return view.getUint32(pos - 4, true);
  };
  const u64 = () => {
    take(8);
    const v = view.getBigUint64(pos - 8, true);
    if (v > BigInt(data.length)) throw new PickleError("pickle: length out of range");
    return Number(v);
  };
  const str = (n: number) => {
    try {
      return utf8.decode(take(n));
    } catch {
      throw new PickleError("pickle: a string is not valid UTF-8");
    }
  };
  /** GLOBAL's operands: two newline-terminated ASCII lines. */
  const line = () => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0 || end - pos > 256) throw new PickleError("pickle: malformed GLOBAL");
    const s = latin1.decode(data.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const pop = (): StackItem => {
    if (stack.length === 0) throw new PickleError("pickle: stack underflow");
    return stack.pop() as StackItem;
  };
  const top = (): StackItem => {
    if (stack.length === 0) throw new PickleError("pickle: stack underflow");
    return stack[stack.length - 1] as StackItem;
  };
  const popMark = (): StackItem[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) throw new PickleError("pickle: no MARK on the stack");
    const items = stack.splice(i);
    items.shift();
    return items;
  };
  const value = (item: StackItem, what: string): PickleValue => {
    if (item === MARK || item instanceof Global || item instanceof Storage)
      throw new PickleError(`pickle: ${what} is not plain data`);
    return item;
  };
  const dictOf = (item: StackItem, what: string): PickleDict => {
    if (!(item instanceof PickleDict))
      throw new PickleError(`pickle: ${what} on something that is not a dict`);
    return item;
  };
  const listOf = (item: StackItem, what: string): PickleValue[] => {
    if (!Array.isArray(item)) throw new PickleError(`pickle: ${what} on something that is not a list`);
    return item;
  };
  const setItem = (dict: PickleDict, key: StackItem, val: StackItem) => {
    if (typeof key !== "string" && typeof key !== "number")
      throw new PickleError("pickle: only string and integer dict keys are supported");
    dict.entries.set(key, value(val, "a dict value"));
  };
  const memoPut = (index: number) => {
    if (memo.size >= MAX_MEMO && !memo.has(index)) throw new PickleError("pickle: memo too large");
    memo.set(index, top());
  };
  const memoGet = (index: number) => {
    if (!memo.has(index)) throw new PickleError(`pickle: memo key ${index} was never stored`);
    stack.push(memo.get(index) as StackItem);
  };
  const global = (module: string, name: string): Global => {
    const full = `${module}.${name}`;
    if (!ALLOWED_GLOBALS.has(full)) {
      throw new PickleError(
        `pickle: refusing global ${full}: only torch tensors and plain data are read (never code); this file may be malicious`,
      );
    }
    return new Global(full);
  };
  /** Little-endian two's-complement integer (LONG1 / LONG4), bounded to what a double holds exactly. */
  const long = (n: number): number => {
    if (n > MAX_LONG_BYTES) throw new PickleError(`pickle: a ${n}-byte integer is too large`);
    const b = take(n);
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i] as number);
    if (n > 0 && ((b[n - 1] as number) & 0x80) !== 0) v -= 1n << BigInt(8 * n);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER))
      throw new PickleError("pickle: an integer is out of range");
    return Number(v);
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case OP.PROTO: {
        const v = u8();
        if (v < 2 || v > 5) throw new PickleError(`pickle: protocol ${v} (2–5 supported)`);
        break;
      }
      case OP.FRAME:
        u64();
        break;
      case OP.STOP:
        return plainData(pop());
      case OP.MARK:
        stack.push(MARK);
        break;
      case OP.EMPTY_DICT:
        stack.push(new PickleDict());
        break;
      case OP.EMPTY_LIST:
        stack.push([]);
        break;
      case OP.EMPTY_TUPLE:
        stack.push([]);
        break;
      case OP.TUPLE:
        // A persistent id is a tuple holding a storage class: tuple items are checked where they are used.
        stack.push(popMark() as PickleValue[]);
        break;
      case OP.TUPLE1:
      case OP.TUPLE2:
      case OP.TUPLE3: {
        const n = op - OP.TUPLE1 + 1;
        const items: StackItem[] = [];
        for (let i = 0; i < n; i++) items.unshift(pop());
        stack.push(items as PickleValue[]);
        break;
      }
      case OP.LIST:
        stack.push(popMark().map((x) => value(x, "a list item")));
        break;
      case OP.DICT: {
        const items = popMark();
        if (items.length % 2 !== 0) throw new PickleError("pickle: DICT with an odd number of items");
        const dict = new PickleDict();
        for (let i = 0; i < items.length; i += 2)
          setItem(dict, items[i] as StackItem, items[i + 1] as StackItem);
        stack.push(dict);
        break;
      }
      case OP.SETITEM: {
        const val = pop();
        const key = pop();
        setItem(dictOf(top(), "SETITEM"), key, val);
        break;
      }
      case OP.SETITEMS: {
        const items = popMark();
        if (items.length % 2 !== 0) throw new PickleError("pickle: SETITEMS with an odd number of items");
        const dict = dictOf(top(), "SETITEMS");
        for (let i = 0; i < items.length; i += 2)
          setItem(dict, items[i] as StackItem, items[i + 1] as StackItem);
        break;
      }
      case OP.APPEND: {
        const val = pop();
        listOf(top(), "APPEND").push(value(val, "a list item"));
        break;
      }
      case OP.APPENDS: {
        const items = popMark();
        const list = listOf(top(), "APPENDS");
        for (const item of items) list.push(value(item, "a list item"));
        break;
      }
      case OP.BINUNICODE:
        stack.push(str(u32()));
        break;
      case OP.SHORT_BINUNICODE:
        stack.push(str(u8()));
        break;
      case OP.BINUNICODE8:
        stack.push(str(u64()));
        break;
      case OP.BINBYTES:
        stack.push(take(u32()).slice());
        break;
      case OP.SHORT_BINBYTES:
        stack.push(take(u8()).slice());
        break;
      case OP.BINBYTES8:
        stack.push(take(u64()).slice());
        break;
      case OP.BININT:
        take(4);
        stack.push(view.getInt32(pos - 4, true));
        break;
      case OP.BININT1:
        stack.push(u8());
        break;
      case OP.BININT2:
        stack.push(u16());
        break;
      case OP.LONG1:
        stack.push(long(u8()));
        break;
      case OP.LONG4:
        stack.push(long(u32()));
        break;
      case OP.BINFLOAT:
        take(8);
        stack.push(view.getFloat64(pos - 8, false));
        break;
      case OP.NEWTRUE:
        stack.push(true);
        break;
      case OP.NEWFALSE:
        stack.push(false);
        break;
      case OP.NONE:
        stack.push(null);
        break;
      case OP.BINPUT:
        memoPut(u8());
        break;
      case OP.LONG_BINPUT:
        memoPut(u32());
        break;
      case OP.MEMOIZE:
        memoPut(memo.size);
        break;
      case OP.BINGET:
        memoGet(u8());
        break;
      case OP.LONG_BINGET:
        memoGet(u32());
        break;
      case OP.GLOBAL: {
        const module = line();
        const name = line();
        stack.push(global(module, name));
        break;
      }
      case OP.STACK_GLOBAL: {
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string")
          throw new PickleError("pickle: STACK_GLOBAL needs two strings");
        stack.push(global(module, name));
        break;
      }
      case OP.BINPERSID: {
        const pid = pop();
        if (!resolveStorage)
          throw new PickleError("pickle: persistent ids are only valid inside a torch archive");
        stack.push(persistentStorage(pid, resolveStorage));
        break;
      }
      case OP.REDUCE: {
        const args = pop();
        const callable = pop();
        if (!(callable instanceof Global))
          throw new PickleError("pickle: REDUCE on something that is not an allowed global");
        if (!Array.isArray(args))
          throw new PickleError(`pickle: REDUCE ${callable.name} without an argument tuple`);
        stack.push(call(callable.name, args as StackItem[]));
        break;
      }
      case OP.BUILD: {
        // `OrderedDict.__reduce__` leaves the dict's instance attributes as its state: None or {} when it has
        // none, {"_metadata": {module: {"version": n}}} for `nn.Module.state_dict()` (torch's load_state_dict
        // versioning). The attributes are plain data (dict values are checked as such) and are dropped.
        const state = pop();
        const target = top();
        const attributesOnly =
          state === null ||
          (state instanceof PickleDict && [...state.entries.keys()].every((k) => k === "_metadata"));
        if (!(target instanceof PickleDict) || !attributesOnly)
          throw new PickleError(
            "pickle: BUILD is only accepted as an OrderedDict's state (none, or a state dict's _metadata)",
          );
        break;
      }
      default: {
        const name = REFUSED_OP_NAMES[op] ?? OP_NAMES.get(op);
        throw new PickleError(
          `pickle: refusing opcode ${name ?? `0x${op.toString(16).padStart(2, "0")}`} at byte ${pos - 1}: only plain data and torch tensors are read`,
        );
      }
    }
  }
}

/** The finished object must be plain data all the way down (no global, storage or mark left inside). */
function plainData(root: StackItem): PickleValue {
  const pending: StackItem[] = [root];
  const seen = new Set<object>();
  while (pending.length > 0) {
    const item = pending.pop() as StackItem;
    if (item === MARK || item instanceof Global || item instanceof Storage)
      throw new PickleError("pickle: the object holds something that is not plain data or a tensor");
    if (typeof item !== "object" || item === null || seen.has(item)) continue;
    seen.add(item);
    const children = Array.isArray(item) ? item : item instanceof PickleDict ? item.entries.values() : [];
    for (const child of children) pending.push(child);
  }
  return root as PickleValue;
}

/** `("storage", <storage class>, key, location, numel)` → the archive's `data/<key>`. */
function persistentStorage(pid: StackItem, resolve: ResolveStorage): Storage {
  if (!Array.isArray(pid) || pid.length !== 5 || pid[0] !== "storage")
    throw new PickleError('pickle: a persistent id is not ("storage", type, key, location, numel)');
  const [, type, key, , numel] = pid as StackItem[];
  if (!(type instanceof Global) || !(type.name in STORAGE_TYPES))
    throw new PickleError("pickle: a persistent id names no supported storage type");
  if (typeof key !== "string" || typeof numel !== "number" || !Number.isInteger(numel) || numel < 0)
    throw new PickleError("pickle: a persistent id has a malformed key or size");
  return resolve(key, type.name, numel);
}

/** The allow-listed callables. */
function call(name: string, args: StackItem[]): StackItem {
  switch (name) {
    case "collections.OrderedDict":
      if (args.length !== 0)
        throw new PickleError("pickle: OrderedDict(...) with arguments is not supported");
      return new PickleDict();
    case "torch._utils._rebuild_tensor_v2":
      return rebuildTensor(args);
    case "torch._utils._rebuild_parameter": {
      const tensor = args[0];
      if (!(tensor instanceof TorchTensor))
        throw new PickleError("pickle: _rebuild_parameter of a non-tensor");
      return tensor;
    }
    default:
      throw new PickleError(`pickle: ${name} cannot be called`);
  }
}

const isIntList = (v: unknown): v is number[] =>
  Array.isArray(v) && v.every((x) => typeof x === "number" && Number.isInteger(x) && x >= 0);

/**
 * `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`: the
 * view `storage[offset + Σ index_i·stride_i]` (strides in elements), gathered into a contiguous float32 array.
 */
function rebuildTensor(args: StackItem[]): TorchTensor {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof Storage)) throw new PickleError("pickle: _rebuild_tensor_v2 without a storage");
  if (
    typeof offset !== "number" ||
    !Number.isInteger(offset) ||
    offset < 0 ||
    !isIntList(size) ||
    !isIntList(stride)
  )
    throw new PickleError("pickle: _rebuild_tensor_v2 with a malformed offset, size or stride");
  if (size.length !== stride.length) throw new PickleError("pickle: tensor size and stride differ in rank");
  const numel = size.reduce((n, d) => n * d, 1);
  if (!Number.isSafeInteger(numel)) throw new PickleError("pickle: tensor too large");
  let last = offset;
  for (const [i, d] of size.entries()) if (d > 0) last += (d - 1) * (stride[i] as number);
  if (numel > 0 && last >= storage.numel)
    throw new PickleError(
      `pickle: tensor of size [${size.join(", ")}] reaches past its ${storage.numel}-element storage`,
    );

  const values = storageFloats(storage);
  const out = new Float32Array(numel);
  const index = new Array<number>(size.length).fill(0);
  for (let n = 0; n < numel; n++) {
    let at = offset;
    for (const [i, k] of index.entries()) at += k * (stride[i] as number);
    out[n] = values[at] as number;
    for (let axis = size.length - 1; axis >= 0; axis--) {
      index[axis] = (index[axis] as number) + 1;
      if ((index[axis] as number) < (size[axis] as number)) break;
      index[axis] = 0;
    }
  }
  return new TorchTensor(storage.dtype, size, out);
}

/** A storage's raw little-endian elements as float32. */
function storageFloats(storage: Storage): Float32Array {
  const { bytes, numel } = storage;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(numel);
  if (storage.dtype === "F32") for (let i = 0; i < numel; i++) out[i] = view.getFloat32(4 * i, true);
  else if (storage.dtype === "F16") for (let i = 0; i < numel; i++) out[i] = view.getFloat16(2 * i, true);
  else {
    // bfloat16 is the top half of a float32.
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < numel; i++) bits[i] = view.getUint16(2 * i, true) << 16;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// torch.save archives
// ---------------------------------------------------------------------------------------------------------------

/** The legacy format starts with a pickled magic number (`0x1950a86a20f9469cfc6c`, LONG1 of 10 bytes). */
const LEGACY_MAGIC = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8];

/** Reads a `torch.save` zip archive's object (tensors rebuilt), refusing anything but data. */
export function readTorchArchive(bytes: Uint8Array): PickleValue {
  if (LEGACY_MAGIC.every((b, i) => bytes[i] === b)) {
    throw new PickleError(
      "legacy (torch < 1.6) .pt format is not supported; re-save it with a current torch.save or convert it to .safetensors",
    );
  }
  if (bytes[0] !== 0x50 || bytes[1] !== 0x4b)
    throw new PickleError("not a torch.save zip archive (a .pt file starts with PK)");
  const entries = readStoredZip(bytes);
  const pickles = [...entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pickles.length !== 1) throw new PickleError("torch archive: expected exactly one <archive>/data.pkl");
  const pklName = pickles[0] as string;
  const pkl = entries.get(pklName) as Uint8Array;
  if (pkl.length > MAX_PICKLE_BYTES) throw new PickleError("torch archive: data.pkl is too large");
  const archive = pklName.slice(0, -"/data.pkl".length);
  return unpickle(pkl, (key, type, numel) => {
    const spec = STORAGE_TYPES[type] as { dtype: TorchTensor["dtype"]; bytes: number };
    const raw = entries.get(`${archive}/data/${key}`);
    if (!raw) throw new PickleError(`torch archive: storage ${JSON.stringify(key)} is missing`);
    if (raw.length < numel * spec.bytes)
      throw new PickleError(
        `torch archive: storage ${JSON.stringify(key)} holds fewer than ${numel} elements`,
      );
    return new Storage(spec.dtype, spec.bytes, raw, numel);
  });
}

/** Reads a `.pt` file from disk (bounded size) and returns its object. */
export async function readTorchFile(path: string, maxBytes = DEFAULT_MAX_FILE_BYTES): Promise<PickleValue> {
  const file = Bun.file(path);
  if (file.size > maxBytes) throw new PickleError(`${path}: ${file.size} bytes (at most ${maxBytes} read)`);
  return readTorchArchive(new Uint8Array(await file.arrayBuffer()));
}
