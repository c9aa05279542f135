// biome-ignore-all lint/style/useTemplate: the installer runs as source text in the sandbox, written plainly
// biome-ignore-all lint/suspicious/noRedundantUseStrict: the function is turned into source text and run as a script, where it is not strict otherwise
/**
 * The `console` a script sees: code that runs INSIDE each sandbox context (turned into source text
 * like isolate-runtime.ts, so it uses nothing of its module scope). console.log, info, debug, dir
 * and table write at `info`, warn, error and trace at `warn`, formatted as Node's console does
 * (util.format's %s %d %i %f %j %o %O %c %%, other values inspected) by object-inspect, bundled with
 * the libraries and evaluated in the context on the first call that logs: no host object, no call out
 * of the isolate, and the formatting runs in the script's own time.
 *
 * A call keeps at most `lines` lines and `chars` characters (SSE_CONSOLE_LINES, SSE_CONSOLE_BYTES; the
 * front bounds the UTF-8 bytes again); past either, a line is only counted, without being formatted,
 * so a flood costs the script little more than the loop it runs. A value that cannot be formatted (a
 * throwing getter or proxy) gives a placeholder: the console never throws into the script.
 */

/** What the runtime (isolate-runtime.ts) does with the console around each chunk. */
export interface ConsoleHooks {
  begin(maxLines: number, maxChars: number): void;
  /** What the chunk wrote; null when it wrote nothing. Built of own data properties only (copied out safely). */
  end(): ConsoleCapture | null;
}

export interface ConsoleCapture {
  text: string;
  /** Each line's length in UTF-16 units within `text`. */
  lens: Uint32Array;
  /** 0 info, 1 warn, per line. */
  levels: Uint8Array;
  dropped: number;
}

export function installConsole(global: Record<string, unknown>, inspectorFactory: unknown): ConsoleHooks {
  'use strict';
  const apply = Reflect.apply;
  const defineProperty = Reflect.defineProperty;
  const StringFn = String;
  const NumberFn = Number;
  const stringify = JSON.stringify;
  const slice = String.prototype.slice;
  const charCodeAt = String.prototype.charCodeAt;
  const parseIntFn = parseInt;
  const parseFloatFn = parseFloat;
  const isArray = Array.isArray;
  const arraySlice = Array.prototype.slice;
  const U32 = Uint32Array;
  const U8 = Uint8Array;
  /** Node's console inspects two levels below the value (util.inspect depth 2); object-inspect counts the value too. */
  const INSPECT_OPTIONS = { depth: 3, quoteStyle: 'single', indent: null };
  /** Node shows the first 100 items of an array: a larger one costs no more to print than that. */
  const MAX_ARRAY_ITEMS = 100;

  let inspect: ((value: unknown, options: unknown) => string) | null = null;
  let maxLines = 0;
  let maxChars = 0;
  let text = '';
  let lens = new U32(0);
  let levels = new U8(0);
  let count = 0;
  let dropped = 0;

  function inspector(): (value: unknown, options: unknown) => string {
    if (inspect !== null) return inspect;
    if (typeof inspectorFactory !== 'function') {
      inspect = (value) => {
        const json = stringify(value) as string | undefined;
        return json === undefined ? StringFn(value) : json;
      };
      return inspect;
    }
    const module = { exports: {} as unknown };
    apply(inspectorFactory, module.exports, [module, module.exports, undefined]);
    inspect = module.exports as (value: unknown, options: unknown) => string;
    return inspect;
  }

  function show(value: unknown): string {
    if (isArray(value) && value.length > MAX_ARRAY_ITEMS) {
      const head = apply(arraySlice, value, [0, MAX_ARRAY_ITEMS]) as unknown[];
      const shown = inspector()(head, INSPECT_OPTIONS);
      return apply(slice, shown, [0, shown.length - 2]) + ', ... ' + (value.length - MAX_ARRAY_ITEMS) + ' more items ]';
    }
    return inspector()(value, INSPECT_OPTIONS);
  }

  function plain(value: unknown): string {
    return typeof value === 'string' ? value : show(value);
  }

  /** One directive of util.format applied to one argument. */
  function directive(letter: string, value: unknown): string {
    switch (letter) {
      case 's':
        return typeof value === 'string'
          ? value
          : typeof value === 'bigint'
            ? StringFn(value) + 'n'
            : typeof value === 'object' && value !== null
              ? show(value)
              : StringFn(value);
      case 'd':
        return typeof value === 'bigint' ? StringFn(value) + 'n' : typeof value === 'object' ? 'NaN' : StringFn(NumberFn(value));
      case 'i':
        return typeof value === 'bigint'
          ? StringFn(value) + 'n'
          : typeof value === 'object'
            ? 'NaN'
            : StringFn(parseIntFn(StringFn(value)));
      case 'f':
        return typeof value === 'symbol' ? 'NaN' : StringFn(parseFloatFn(StringFn(value)));
      case 'j': {
        try {
          const json = stringify(value) as string | undefined;
          return json === undefined ? 'undefined' : json;
        } catch {
          return '[Circular]';
        }
      }
      case 'c':
        return '';
      default:
        return show(value);
    }
  }

  function format(args: unknown[]): string {
    const first = args[0];
    let line = '';
    let next = 0;
    if (typeof first === 'string') {
      next = 1;
      let start = 0;
      for (let i = 0; i < first.length - 1; i++) {
        if (apply(charCodeAt, first, [i]) !== 37) continue; // '%'
        const letter = apply(slice, first, [i + 1, i + 2]) as string;
        if (letter === '%') {
          line += apply(slice, first, [start, i]) + '%';
        } else if ('sdifjoOc'.indexOf(letter) !== -1 && next < args.length) {
          line += apply(slice, first, [start, i]) + directive(letter, args[next++]);
        } else continue;
        start = i + 2;
        i++;
      }
      line += apply(slice, first, [start]) as string;
    }
    for (let i = next; i < args.length; i++) line += (i === 0 ? '' : ' ') + plain(args[i]);
    return line;
  }

  function write(level: number, args: unknown[]): void {
    if (count >= maxLines || text.length >= maxChars) {
      dropped++;
      return;
    }
    let line: string;
    try {
      line = format(args);
    } catch (error) {
      let reason = 'a value could not be formatted';
      try {
        reason += ': ' + StringFn((error as { message?: unknown }).message);
      } catch {
        // The error itself cannot be printed either.
      }
      line = '[console: ' + reason + ']';
    }
    const room = maxChars - text.length;
    if (line.length > room) line = apply(slice, line, [0, room - 1]) + '…';
    lens[count] = line.length;
    levels[count] = level;
    count++;
    text += line;
  }

  const methods: [string, number][] = [
    ['log', 0],
    ['info', 0],
    ['debug', 0],
    ['dir', 0],
    ['table', 0],
    ['warn', 1],
    ['error', 1],
    ['trace', 1],
  ];
  const console: Record<string, unknown> = {};
  for (const [name, level] of methods) {
    // Named methods, as Node's: a stack trace or a printed function says console.log.
    const method = {
      [name](...args: unknown[]): void {
        write(level, args);
      },
    }[name];
    defineProperty(console, name, { value: method, writable: true, enumerable: true, configurable: true });
  }
  defineProperty(global, 'console', { value: console, writable: true, enumerable: false, configurable: true });

  return {
    begin(lines: number, chars: number): void {
      maxLines = lines;
      maxChars = chars;
      text = '';
      if (lens.length !== lines) {
        lens = new U32(lines);
        levels = new U8(lines);
      }
      count = 0;
      dropped = 0;
    },
    end(): ConsoleCapture | null {
      if (count === 0 && dropped === 0) return null;
      const outLens = new U32(count);
      const outLevels = new U8(count);
      for (let i = 0; i < count; i++) {
        outLens[i] = lens[i] as number;
        outLevels[i] = levels[i] as number;
      }
      const capture: ConsoleCapture = { text, lens: outLens, levels: outLevels, dropped };
      text = '';
      count = 0;
      dropped = 0;
      return capture;
    },
  };
}
