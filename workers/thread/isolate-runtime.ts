// biome-ignore-all lint/suspicious/noSelfCompare: n !== n is the NaN test that needs no global (a script may replace Number.isNaN)
// biome-ignore-all lint/complexity/useMathMinMax: Math is the script's to replace; the runtime uses none of it
// biome-ignore-all lint/style/useTemplate: the runtime runs as source text in the sandbox, written plainly
// biome-ignore-all lint/suspicious/noRedundantUseStrict: the function is turned into source text and run as a script, where it is not strict otherwise
/**
 * Code that runs INSIDE each sandbox context, not in Node. `installRuntime` is turned into source
 * text with Function.prototype.toString and evaluated once per fresh context, so it must not use
 * anything from its module scope: no imports, no closures over outer variables.
 *
 * It hardens the context (no WebAssembly, no SharedArrayBuffer, a symbol registry of its own),
 * records whether the script reads a non-deterministic source (Math.random, Date.now, Date() / new
 * Date()), and returns `run`, which evaluates a compiled script over a whole chunk of rows with the
 * loop inside the isolate and converts every result to what Qlik expects, also inside the isolate
 * and under its time limit.
 *
 * What `take` returns is copied out by isolated-vm after the time limit is disarmed, and that copy
 * calls any accessor it meets on the objects it copies. So the runtime calls no method a script can
 * replace once installed (every intrinsic it uses is captured here), and its output is made only of
 * primitives, typed arrays and objects it created itself with own data properties and no holes.
 * A run is two entries: `run` runs the chunk and keeps its output; its microtasks run as it
 * returns, and isolated-vm then throws the run's own rejection (rejection-watch.ts); `take`, a
 * second entry under what is left of the limit that runs no script code, gives the output, or says
 * the script left a rejection unhandled; then `describe`, a third, turns that one into text.
 */
import type { ConsoleCapture, ConsoleHooks } from './console';
import type { RejectionHooks } from './rejection-watch';

/** Input of `run`, copied into the isolate. Column: t = DataType, n = numbers, s/l = packed strings. */
export interface RuntimeInput {
  readonly mode: 0 | 1 | 2; // rows, aggregate, once
  readonly rows: number;
  readonly ret: 0 | 1 | 2; // STRING, NUMERIC, DUAL
  readonly table: boolean;
  readonly firstRow: number;
  readonly bound: readonly number[];
  readonly cols: readonly { t: number; n: Float64Array | null; s: string | null; l: Uint32Array | null }[];
  readonly maxChars: number;
  /** A table's bounds (MAX_TABLE_COLUMNS, MAX_TABLE_KEY_BYTES in src/contract/task.ts): past them it is refused here. */
  readonly maxColumns: number;
  readonly maxKeyBytes: number;
  /** A new call on a context an earlier call of the same key used: reset the global object first. */
  readonly reset?: boolean;
  /** What the chunk's console keeps (workers/thread/console.ts): lines, and characters of text. */
  readonly consoleLines?: number;
  readonly consoleChars?: number;
}

export interface RuntimeTable {
  shape: 'array' | 'object';
  keys: string[];
  columns: { nums: Float64Array; strs: string[]; kinds: Uint8Array }[];
  /** More columns or bytes of names than the bounds: nothing of the table is kept (workers/thread/output-check.ts refuses it). */
  tooWide?: true;
}

export type RuntimeOutput =
  | {
      ok: true;
      nums: Float64Array | null;
      /** DUAL return: the texts packed as one string and each one's length in UTF-16 units. */
      text: string | null;
      lens: Uint32Array | null;
      /** STRING return: the texts as UTF-8 bytes and each one's byte length (encoded here: cheaper than a join). */
      utf8: Uint8Array | null;
      byteLens: Uint32Array | null;
      nondet: boolean;
      table: RuntimeTable | null;
      /** The script changed a built-in that V8 guards isolate-wide (see protectorsIntact): retire the isolate. */
      tainted: boolean;
      console: ConsoleCapture | null;
    }
  | {
      ok: false;
      /** reject: a promise the script rejected and never handled (rejection-watch.ts). */
      kind: 'throw' | 'size' | 'convert' | 'reject';
      name: string;
      message: string;
      row: number;
      tainted: boolean;
      console: ConsoleCapture | null;
    }
  /** The global object could not be reset (a global the script made non-configurable): use a fresh context. */
  | { ok: false; kind: 'dirty'; name: string; message: string; row: number; tainted: boolean; console: ConsoleCapture | null };

/** The runtime's entries (see the header): run, then take, then describe for a rejection take found. */
export interface RuntimeEntries {
  run(fn: unknown, input: RuntimeInput): void;
  take(): RuntimeOutput;
  describe(): void;
}

export function installRuntime(
  global: Record<string, unknown>,
  rejections: RejectionHooks,
  runEnd: string,
  consoleHooks?: ConsoleHooks,
): RuntimeEntries {
  // Strict inside the sandbox too (the text runs as a script): a call site's getFunction() then hides the runtime.
  'use strict';
  const apply = Reflect.apply;
  const NumberFn = Number;
  const StringFn = String;
  const isArray = Array.isArray;
  const keysOf = Object.keys;
  const getPrototypeOf = Object.getPrototypeOf;
  const hasOwn = Object.prototype.hasOwnProperty;
  const ObjectProto = Object.prototype;
  const stringify = JSON.stringify;
  const RealDate = Date;
  const getTime = Date.prototype.getTime;
  const toISOString = Date.prototype.toISOString;
  const slice = String.prototype.slice;
  const trim = String.prototype.trim;
  const join = Array.prototype.join;
  const F64 = Float64Array;
  const U32 = Uint32Array;
  const U8 = Uint8Array;
  /** What a cell costs beyond its text once encoded (tag, length, numData): about 12 bytes, as chars. */
  const CELL_CHARS = 6;
  const u8Set = Uint8Array.prototype.set;
  // charCodeAt(text, i): bound now, to the built-ins as they are before any script runs. A bound call
  // is twice as fast as Reflect.apply with an argument list in the UTF-8 loop (29 vs 57 ms a 500,000 texts).
  const charCodeAt = Function.prototype.call.bind(String.prototype.charCodeAt) as (text: string, i: number) => number;
  const ArrayCtor = Array;
  const MS_PER_DAY = 86_400_000;
  const UNIX_EPOCH_SERIAL = 25_569; // days from 1899-12-30 to 1970-01-01

  const ownKeys = Reflect.ownKeys;
  const getDescriptor = Reflect.getOwnPropertyDescriptor;
  const defineProperty = Reflect.defineProperty;
  const deleteProperty = Reflect.deleteProperty;
  const arrayFrom = Array.from;
  const TypedArrayProto = getPrototypeOf(U8.prototype) as object;
  const bufferOf = (getDescriptor(TypedArrayProto, 'buffer') as PropertyDescriptor).get as () => ArrayBuffer;
  const typedArrayTag = (getDescriptor(TypedArrayProto, Symbol.toStringTag) as PropertyDescriptor).get as () => string | undefined;

  // WebAssembly memory is allocated outside the isolate heap and would bypass its memory limit;
  // SharedArrayBuffer has no use in a single-threaded sandbox and only enables Atomics.wait tricks.
  delete global['WebAssembly'];
  delete global['SharedArrayBuffer'];

  // A resizable ArrayBuffer (`new ArrayBuffer(n, { maxByteLength })`) reserves its whole maximum as
  // address space outside the isolate's heap and ArrayBuffer allocator: a few of 4 GiB end the sandbox
  // process (V8 "Fatal error"), and resize() commits memory no limit counts. Here the constructor takes
  // the length only (the sandbox thread also turns the feature off where V8 still has the flag).
  const construct = Reflect.construct;
  const RealArrayBuffer = ArrayBuffer;
  const ArrayBufferProxy: ArrayBufferConstructor = new Proxy(RealArrayBuffer, {
    construct(target, args, newTarget): object {
      return construct(target, [args[0]], newTarget === ArrayBufferProxy ? target : newTarget) as object;
    },
  });

  let nondet = false;
  const realRandom = Math.random;
  const realNow = Date.now;
  const random = function random(): number {
    nondet = true;
    return apply(realRandom, Math, []) as number;
  };
  const now = function now(): number {
    nondet = true;
    return apply(realNow, RealDate, []) as number;
  };
  const DateProxy: DateConstructor = new Proxy(RealDate, {
    apply() {
      nondet = true;
      return RealDate();
    },
    construct(target, args, newTarget): object {
      if (args.length === 0) nondet = true;
      return Reflect.construct(target, args, newTarget === DateProxy ? target : newTarget) as object;
    },
  });
  const registry = symbolRegistry();
  /** What the runtime puts on built-in objects; a reset puts each back (a script may replace it for its own call only). */
  const installed: [object, PropertyKey, unknown][] = [
    [Math, 'random', random],
    [RealDate, 'now', now],
    [RealDate.prototype, 'constructor', DateProxy],
    [RealArrayBuffer.prototype, 'constructor', ArrayBufferProxy],
    [Symbol, 'for', registry.for],
    [Symbol, 'keyFor', registry.keyFor],
  ];
  for (const [target, key, value] of installed) install(target, key, value);
  global['Date'] = DateProxy;
  global['ArrayBuffer'] = ArrayBufferProxy;

  function install(target: object, key: PropertyKey, value: unknown): boolean {
    return defineProperty(target, key, {
      __proto__: null,
      value,
      writable: true,
      enumerable: false,
      configurable: true,
    } as PropertyDescriptor);
  }

  /**
   * V8's symbol registry (Symbol.for) belongs to the isolate: shared by every context of the thread and
   * never collected, one tenant's keys would fill the heap another tenant's call runs in. This one
   * belongs to the context and is garbage with it.
   */
  function symbolRegistry(): { for: (key: unknown) => symbol; keyFor: (sym: unknown) => string | undefined } {
    const SymbolFn = Symbol;
    const TypeErrorFn = TypeError;
    const mapGet = Map.prototype.get;
    const mapSet = Map.prototype.set;
    const byKey = new Map<string, symbol>();
    const bySymbol = new Map<symbol, string>();
    return {
      for(key: unknown): symbol {
        const text = `${key as string}`;
        let sym = apply(mapGet, byKey, [text]) as symbol | undefined;
        if (sym === undefined) {
          sym = SymbolFn(text);
          apply(mapSet, byKey, [text, sym]);
          apply(mapSet, bySymbol, [sym, text]);
        }
        return sym;
      },
      keyFor(sym: unknown): string | undefined {
        if (typeof sym !== 'symbol') throw new TypeErrorFn(`${typeof sym} is not a symbol`);
        return apply(mapGet, bySymbol, [sym]) as string | undefined;
      },
    };
  }

  // The global object as the runtime leaves it, wrapped Date included: what a reset brings back (see resetGlobals).
  const initialGlobals = new Map<PropertyKey, PropertyDescriptor>();
  for (const key of ownKeys(global)) initialGlobals.set(key, getDescriptor(global, key) as PropertyDescriptor);

  /**
   * Deletes every global an earlier call added and restores every one it replaced or deleted, and what
   * the runtime installed on built-ins, so the next call of the same script, user and app starts from
   * the same global object as a fresh context. False when that is not possible (a non-configurable
   * global was added or changed).
   */
  function resetGlobals(): boolean {
    for (const key of ownKeys(global)) {
      if (!initialGlobals.has(key) && !deleteProperty(global, key)) return false;
    }
    for (const [key, initial] of initialGlobals) {
      const now = getDescriptor(global, key);
      if (now && now.value === initial.value && now.get === initial.get && now.set === initial.set && now.writable === initial.writable)
        continue;
      if (!defineProperty(global, key, initial)) return false;
    }
    for (const [target, key, value] of installed) {
      const now = getDescriptor(target, key);
      if ((now === undefined || now.value !== value || now.get !== undefined) && !install(target, key, value)) return false;
    }
    return true;
  }

  const protectorsIntact = protectorCheck();

  /**
   * V8 keeps fast paths for built-ins (array iteration, species, promise then, no indexed properties on
   * Array.prototype / Object.prototype, …) behind protectors that belong to the isolate, not the context
   * (V8 src/execution/protectors.h, LookupIterator::UpdateProtector): once one script invalidates one,
   * every tenant on the thread runs slower until the isolate is rebuilt. Making the properties read-only
   * here would invalidate them too (any redefinition does: measured with %ArrayIteratorProtector), so the
   * runtime checks them after each call instead (~1 µs) and a change retires the isolate.
   */
  function protectorCheck(): () => boolean {
    const ArrayProto = ArrayCtor.prototype;
    const StringProto = StringFn.prototype;
    const iterator: typeof Symbol.iterator = Symbol.iterator;
    const iteratorProtoOf = (iterable: Iterable<unknown>): object => getPrototypeOf(iterable[iterator]()) as object;
    const ArrayIteratorProto = iteratorProtoOf([]);
    const species = Symbol.species;
    const TypedArray = getPrototypeOf(U8) as object;
    const guardedKeys: [object, PropertyKey][] = [
      [ArrayProto, 'constructor'],
      [ArrayProto, iterator],
      [ArrayIteratorProto, 'next'],
      [getPrototypeOf(ArrayIteratorProto) as object, iterator],
      [Map.prototype, iterator],
      [iteratorProtoOf(new Map()), 'next'],
      [Set.prototype, iterator],
      [iteratorProtoOf(new Set()), 'next'],
      [StringProto, iterator],
      [iteratorProtoOf(''), 'next'],
      [Promise.prototype, 'constructor'],
      [Promise.prototype, 'then'],
      [Promise, 'resolve'],
      [RegExp.prototype, 'constructor'],
      [TypedArrayProto, 'constructor'],
      [ObjectProto, 'toString'],
      [ObjectProto, 'valueOf'],
      [StringProto, 'toString'],
      [StringProto, 'valueOf'],
      [ArrayCtor, species],
      [Promise, species],
      [RegExp, species],
      [TypedArray, species],
    ];
    const guarded = guardedKeys.map(([target, key]) => {
      const { value, get } = getDescriptor(target, key) as PropertyDescriptor;
      // A descriptor's missing field is looked up on Object.prototype, which a script may fill: test the own one.
      const field: 'value' | 'get' = get === undefined ? 'value' : 'get';
      return { target, key, field, original: get === undefined ? (value as unknown) : get };
    });
    const absentKeys = [Symbol.isConcatSpreadable, Symbol.toPrimitive, Symbol.replace, Symbol.split, Symbol.matchAll, Symbol.match];
    const absentFrom = [ObjectProto, ArrayProto, StringProto, NumberFn.prototype];
    const firstObjectKey = ownKeys(ObjectProto)[0];
    return function protectorsIntact(): boolean {
      if (ArrayProto.length !== 0 || getPrototypeOf(ArrayProto) !== ObjectProto || ownKeys(ObjectProto)[0] !== firstObjectKey) return false;
      for (let i = 0; i < guarded.length; i++) {
        const { target, key, field, original } = guarded[i] as (typeof guarded)[number];
        const now = getDescriptor(target, key);
        if (now === undefined || apply(hasOwn, now, [field]) !== true || now[field] !== original) return false;
      }
      for (let t = 0; t < absentFrom.length; t++)
        for (let k = 0; k < absentKeys.length; k++) if (apply(hasOwn, absentFrom[t], [absentKeys[k]]) === true) return false;
      return true;
    };
  }

  function dateTime(v: object): number | undefined {
    try {
      return apply(getTime, v, []) as number;
    } catch {
      return undefined;
    }
  }

  function isDual(v: object): v is { num: unknown; str: unknown } {
    if (isArray(v)) return false;
    const keys = keysOf(v);
    return keys.length === 2 && apply(hasOwn, v, ['num']) === true && apply(hasOwn, v, ['str']) === true;
  }

  function isPlainObject(v: object): boolean {
    if (isArray(v)) return false;
    const proto: unknown = getPrototypeOf(v);
    return (proto === ObjectProto || proto === null) && !isDual(v);
  }

  function finite(n: number): number {
    return n === n && n !== Infinity && n !== -Infinity ? n : NaN;
  }

  function parseText(s: string): number {
    return (apply(trim, s, []) as string) === '' ? NaN : finite(NumberFn(s));
  }

  function primitiveNumber(v: unknown): number {
    switch (typeof v) {
      case 'number':
        return finite(v);
      case 'boolean':
        return v ? 1 : 0;
      case 'string':
        return parseText(v);
      case 'bigint':
        return NumberFn(v);
      default:
        return NaN;
    }
  }

  function toNumber(v: unknown): number {
    if (typeof v !== 'object' || v === null) return primitiveNumber(v);
    const t = dateTime(v);
    if (t !== undefined) return t === t ? t / MS_PER_DAY + UNIX_EPOCH_SERIAL : NaN;
    if (isDual(v)) return primitiveNumber(v.num);
    return NaN;
  }

  /** Returns undefined when JSON.stringify throws; the caller fails the row. */
  function toText(v: unknown): string {
    switch (typeof v) {
      case 'string':
        return v;
      case 'number':
      case 'bigint':
        return StringFn(v);
      case 'boolean':
        return v ? 'true' : 'false';
      case 'object': {
        if (v === null) return '';
        const t = dateTime(v);
        if (t !== undefined) return t === t ? (apply(toISOString, v, []) as string) : '';
        if (isDual(v)) return v.str === null || v.str === undefined ? '' : StringFn(v.str);
        const json = stringify(v) as string | undefined;
        return json === undefined ? '' : json;
      }
      default:
        return '';
    }
  }

  function errorText(e: unknown): { name: string; message: string } {
    try {
      if (typeof e === 'object' && e !== null) {
        const err = e as { name?: unknown; message?: unknown };
        const name = err.name === undefined ? 'Error' : StringFn(err.name);
        const message = err.message === undefined ? StringFn(e) : StringFn(err.message);
        return { name, message };
      }
      return { name: 'Error', message: StringFn(e) };
    } catch {
      return { name: 'Error', message: '(the thrown value cannot be printed)' };
    }
  }

  function materialize(col: RuntimeInput['cols'][number], rows: number): ArrayLike<unknown> {
    if (col.t === 1 && col.n) return col.n;
    const strs = new ArrayCtor<string>(rows);
    if (col.s !== null && col.l) {
      let at = 0;
      for (let r = 0; r < rows; r++) {
        const len = col.l[r] as number;
        strs[r] = apply(slice, col.s, [at, at + len]) as string;
        at += len;
      }
    }
    if (col.t === 0 || !col.n) return strs;
    const duals = new ArrayCtor<{ num: number; str: string }>(rows);
    for (let r = 0; r < rows; r++) duals[r] = { num: col.n[r] as number, str: strs[r] as string };
    return duals;
  }

  function toArray(values: ArrayLike<unknown>): unknown[] {
    const out = new ArrayCtor<unknown>(values.length);
    for (let i = 0; i < values.length; i++) out[i] = values[i];
    return out;
  }

  /**
   * Null when the table's text and cells would pass maxChars: a string repeated in every cell is
   * one string here but one copy per cell once it leaves the isolate, so each cell counts in full.
   * Its names are bounded too (maxColumns, maxKeyBytes of UTF-8): one cached 40 MB key is one string
   * here but a copy in every chunk that leaves the isolate, so a table past them leaves nothing but
   * the refusal (tooWide).
   */
  function buildTable(
    vals: unknown[],
    shape: 'array' | 'object',
    maxChars: number,
    maxColumns: number,
    maxKeyBytes: number,
  ): RuntimeTable | null {
    const rows = vals.length;
    let chars = 0;
    let keyBytes = 0;
    const keys: string[] = [];
    const index = new Map<string, number>();
    const columns: RuntimeTable['columns'] = [];
    const columnFor = (key: string): RuntimeTable['columns'][number] | null => {
      let at = index.get(key);
      if (at === undefined) {
        // UTF-8 takes at least a byte per UTF-16 unit: a long key is refused before it is measured.
        keyBytes += key.length > maxKeyBytes ? key.length : utf8Length(key);
        if (keys.length >= maxColumns || keyBytes > maxKeyBytes) return null;
        at = keys.length;
        index.set(key, at);
        keys[at] = key;
        columns[at] = { nums: new F64(rows).fill(NaN), strs: new ArrayCtor<string>(rows).fill(''), kinds: new U8(rows) };
      }
      return columns[at] as RuntimeTable['columns'][number];
    };
    for (let r = 0; r < rows; r++) {
      const row = vals[r] as Record<string, unknown>;
      const rowKeys = shape === 'array' ? null : keysOf(row);
      const width = rowKeys === null ? (row as unknown as unknown[]).length : rowKeys.length;
      for (let c = 0; c < width; c++) {
        const key = rowKeys === null ? 'Field' + (c + 1) : (rowKeys[c] as string);
        const v = rowKeys === null ? (row as unknown as unknown[])[c] : row[key];
        const col = columnFor(key);
        if (col === null) return { shape, keys: [], columns: [], tooWide: true };
        chars += CELL_CHARS + setCell(col, r, v);
      }
      if (chars > maxChars) return null;
    }
    return { shape, keys, columns };
  }

  /** Sets one cell; returns the length of its text. */
  function setCell(col: RuntimeTable['columns'][number], r: number, v: unknown): number {
    if (v === null || v === undefined || typeof v === 'function' || typeof v === 'symbol') return 0;
    if (typeof v === 'string') {
      col.nums[r] = parseText(v);
      col.strs[r] = v;
      col.kinds[r] = 2;
      return v.length;
    }
    if (typeof v === 'object' && (isDual(v) || dateTime(v) === undefined)) {
      col.nums[r] = toNumber(v);
      const text = toText(v);
      col.strs[r] = text;
      col.kinds[r] = 2;
      return text.length;
    }
    const n = toNumber(v);
    if (n !== n) return 0;
    col.nums[r] = n;
    const text = toText(v);
    col.strs[r] = text;
    col.kinds[r] = 1;
    return text.length;
  }

  /**
   * UTF-8 output, written inside the isolate: joining thousands of strings and copying the result out
   * of the isolate cost ~250 ns a row, encoding here a few ns a character (bench/RESULTS.md).
   * Lone surrogates become U+FFFD, as Buffer.from does.
   */
  let out = new U8(0);
  let outPos = 0;
  function utf8Length(text: string): number {
    let bytes = 0;
    const n = text.length;
    for (let i = 0; i < n; i++) {
      const c = charCodeAt(text, i);
      if (c < 0x80) bytes += 1;
      else if (c < 0x800) bytes += 2;
      else if (c >= 0xd800 && c < 0xdc00 && i + 1 < n) {
        const d = charCodeAt(text, i + 1);
        if (d >= 0xdc00 && d < 0xe000) {
          bytes += 4;
          i++;
        } else bytes += 3;
      } else bytes += 3;
    }
    return bytes;
  }
  function writeUtf8(text: string): number {
    const start = outPos;
    // Short texts reserve the worst case (3 bytes a UTF-16 unit); long ones are measured first, so
    // one large value does not ask the sandbox for three times its size.
    const need = outPos + (text.length > 4096 ? utf8Length(text) : text.length * 3);
    if (need > out.length) {
      const grown = new U8(need > out.length * 2 ? need : out.length * 2);
      apply(u8Set, grown, [new U8(apply(bufferOf, out, []), 0, outPos)]);
      out = grown;
    }
    const buf = out;
    let pos = outPos;
    const n = text.length;
    for (let i = 0; i < n; i++) {
      let c = charCodeAt(text, i);
      if (c < 0x80) {
        buf[pos++] = c;
        continue;
      }
      if (c < 0x800) {
        buf[pos++] = 0xc0 | (c >> 6);
        buf[pos++] = 0x80 | (c & 0x3f);
        continue;
      }
      if (c >= 0xd800 && c < 0xe000) {
        const d = i + 1 < n ? charCodeAt(text, i + 1) : 0;
        if (c < 0xdc00 && d >= 0xdc00 && d < 0xe000) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
          buf[pos++] = 0xf0 | (c >> 18);
          buf[pos++] = 0x80 | ((c >> 12) & 0x3f);
          buf[pos++] = 0x80 | ((c >> 6) & 0x3f);
          buf[pos++] = 0x80 | (c & 0x3f);
          continue;
        }
        c = 0xfffd;
      }
      buf[pos++] = 0xe0 | (c >> 12);
      buf[pos++] = 0x80 | ((c >> 6) & 0x3f);
      buf[pos++] = 0x80 | (c & 0x3f);
    }
    outPos = pos;
    return pos - start;
  }

  /** Reads a table the runtime built, inside the time limit, into objects whose copy runs no script. */
  function sealTable(table: RuntimeTable): RuntimeTable {
    const { shape, keys, columns } = table;
    const width = isArray(columns) ? columns.length : 0;
    const sealed: RuntimeTable = {
      shape: shape === 'array' || shape === 'object' ? shape : (StringFn(shape) as 'array'),
      keys: denseStrings(keys, width),
      columns: dense(width, (c) => sealColumn((columns as unknown[])[c] as RuntimeTable['columns'][number])),
    };
    if (table.tooWide === true) sealed.tooWide = true;
    return sealed;
  }

  function sealColumn(column: RuntimeTable['columns'][number]): RuntimeTable['columns'][number] {
    const { nums, strs, kinds } = column;
    return {
      nums: apply(typedArrayTag, nums, []) === 'Float64Array' ? nums : new F64(0),
      strs: denseStrings(strs, isArray(strs) ? strs.length : 0),
      kinds: apply(typedArrayTag, kinds, []) === 'Uint8Array' ? kinds : new U8(0),
    };
  }

  /** A new array of `length` own data elements (Array.from on an array-like sets no element through a setter). */
  function dense<T>(length: number, at: (i: number) => T): T[] {
    return apply(arrayFrom, ArrayCtor, [{ __proto__: null, length }, (_: unknown, i: number) => at(i)]) as T[];
  }

  function denseStrings(values: unknown, length: number): string[] {
    return dense(length, (i) => {
      const v = (values as unknown[])[i];
      return typeof v === 'string' ? v : '';
    });
  }

  /** The last run's output, until take() gives it. */
  let pending: RuntimeOutput | null = null;

  /**
   * Runs one chunk and keeps its output, rebuilt from own values so that isolated-vm's copy, which
   * runs after the time limit, finds nothing to call. Its own rejection goes first of all.
   */
  function run(fn: unknown, input: RuntimeInput): void {
    rejections.begin();
    pending = null;
    consoleHooks?.begin(input.consoleLines ?? 0, input.consoleChars ?? 0);
    const output = runChunk(fn, input);
    const console = consoleHooks ? consoleHooks.end() : null;
    if (!output.ok) {
      pending = { ok: false, kind: output.kind, name: output.name, message: output.message, row: output.row, tainted: false, console };
      return;
    }
    const { nums, text, lens, utf8, byteLens, nondet: readClock, table } = output;
    pending = {
      ok: true,
      nums,
      text,
      lens,
      utf8,
      byteLens,
      nondet: readClock,
      table: table === null ? null : sealTable(table),
      tainted: false,
      console,
    };
  }

  /** The rejection take() found, until describe() reads it. */
  let unhandled: { reason: unknown } | null = null;

  /**
   * After the run's microtasks: checks the built-ins V8 guards isolate-wide (a microtask may have
   * changed one) and fails a run that succeeded if the script left a rejection unhandled. Runs no
   * script code: its entry has no rejection of its own to hide the script's behind.
   */
  function take(): RuntimeOutput {
    const output = pending ?? { ok: false, kind: 'dirty', name: 'Error', message: 'no run to take', row: 0, tainted: false, console: null };
    pending = null;
    output.tainted = !protectorsIntact();
    const found = rejections.end();
    if (found === null || !output.ok) return output;
    unhandled = found;
    return { ok: false, kind: 'reject', name: '', message: '', row: 0, tainted: output.tainted, console: output.console };
  }

  /**
   * Reads the name and message of the rejection take() found, which runs the script's getters: so
   * the entry first holds a rejection of its own, whose reason (name runEnd, message name NUL
   * message) is what isolated-vm copies out, and which hides any the getters leave.
   */
  function describe(): void {
    const text = { __proto__: null, name: runEnd, message: '' };
    rejections.hold(text);
    const found = unhandled;
    unhandled = null;
    if (found === null) return;
    const { name, message } = errorText(found.reason);
    text.message = name + '\u0000' + message;
  }

  return { __proto__: null, run, take, describe } as RuntimeEntries;

  function runChunk(fn: unknown, input: RuntimeInput): ChunkOutput {
    if (input.reset === true && !resetGlobals())
      return { ok: false, kind: 'dirty', name: 'Error', message: 'global object not resettable', row: 0 };
    nondet = false;
    const { mode, ret, bound, maxChars } = input;
    const call = fn as (...a: unknown[]) => unknown;
    const rows = mode === 0 ? input.rows : 1;
    const values = mode === 2 ? [] : input.cols.map((c) => materialize(c, input.rows));
    const nums = ret === 0 ? null : new F64(rows);
    const parts = ret === 2 ? new ArrayCtor<string>(rows) : null;
    const lens = ret === 2 ? new U32(rows) : null;
    const byteLens = ret === 0 ? new U32(rows) : null;
    outPos = 0;
    const width = values.length;
    const nBound = bound.length;
    const b0 = bound[0] ?? 0;
    const b1 = bound[1] ?? 0;
    let chars = 0;
    let tableShape: 'array' | 'object' | null = null;
    let tableVals: unknown[] | null = input.table && mode === 0 && rows > 0 ? new ArrayCtor<unknown>(rows) : null;
    let failRow = 0;
    try {
      for (let r = 0; r < rows; r++) {
        failRow = r;
        const args = new ArrayCtor<unknown>(width);
        if (mode === 0) for (let i = 0; i < width; i++) args[i] = (values[i] as ArrayLike<unknown>)[r];
        else for (let i = 0; i < width; i++) args[i] = toArray(values[i] as ArrayLike<unknown>);
        let v: unknown;
        if (nBound === 0) v = call(args);
        else if (nBound === 1) v = call(args, args[b0]);
        else if (nBound === 2) v = call(args, args[b0], args[b1]);
        else {
          const list = new ArrayCtor<unknown>(nBound + 1);
          list[0] = args;
          for (let i = 0; i < nBound; i++) list[i + 1] = args[bound[i] as number];
          v = apply(call, undefined, list);
        }
        if (typeof v === 'object' && v !== null) rejections.observe(v);
        if (tableVals !== null) {
          const shape = typeof v === 'object' && v !== null ? (isArray(v) ? 'array' : isPlainObject(v) ? 'object' : null) : null;
          if (shape !== null && (tableShape === null || tableShape === shape)) {
            tableShape = shape;
            tableVals[r] = v;
          } else tableVals = null;
        }
        if (nums) nums[r] = toNumber(v);
        if (ret !== 1) {
          let text: string;
          try {
            text = toText(v);
          } catch (e) {
            const { name, message } = errorText(e);
            return { ok: false, kind: 'convert', name, message, row: r };
          }
          chars += text.length;
          if (chars > maxChars) return { ok: false, kind: 'size', name: 'RangeError', message: 'result too large', row: r };
          if (byteLens) byteLens[r] = writeUtf8(text);
          else if (parts && lens) {
            parts[r] = text;
            lens[r] = text.length;
          }
        }
      }
    } catch (e) {
      const { name, message } = errorText(e);
      return { ok: false, kind: 'throw', name, message, row: failRow };
    }
    let table: RuntimeTable | null = null;
    if (tableVals !== null && tableShape !== null) {
      try {
        table = buildTable(tableVals, tableShape, maxChars, input.maxColumns, input.maxKeyBytes);
      } catch (e) {
        const { name, message } = errorText(e);
        return { ok: false, kind: 'convert', name, message, row: 0 };
      }
    }
    if (tableVals !== null && tableShape !== null && table === null)
      return { ok: false, kind: 'size', name: 'RangeError', message: 'table too large', row: 0 };
    const text = parts ? (apply(join, parts, ['']) as string) : null;
    const utf8 = byteLens ? ownBytes(out, outPos) : null;
    return { ok: true, nums, text, lens, utf8, byteLens, nondet, table };
  }

  /** A copy of the first `length` bytes (TypedArray.prototype.slice would ask the script's species for the new array). */
  function ownBytes(from: Uint8Array, length: number): Uint8Array {
    const bytes = new U8(length);
    apply(u8Set, bytes, [new U8(apply(bufferOf, from, []), 0, length)]);
    return bytes;
  }
}

/** What one chunk gives before the runtime adds its own checks. */
type ChunkOutput = RuntimeOutput extends infer O ? (O extends unknown ? Omit<O, 'tainted' | 'console'> : never) : never;
