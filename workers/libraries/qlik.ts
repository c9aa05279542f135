/**
 * The `qlik` library scripts get with `require('qlik')`: what Qlik authors need that no general
 * library gives. It is bundled by esbuild (workers/libraries/build.ts) into one script evaluated
 * inside the sandbox, so it may use nothing of Node: plain JavaScript and the bundled hash.
 *
 * Dates: Qlik keeps a date as a serial number, days since 1899-12-30 (UTC, fractions for time), the
 * same figure the plugin sends for a returned Date. Hashing: sha256 of the text's UTF-8 bytes, the
 * usual way to anonymise a key in a load script; the isolate has no crypto module, so the hash is
 * @noble/hashes (audited, pure JavaScript).
 *
 * The helpers are the ones app authors wrote by hand most in the authoring trials (docs/libraries.md):
 * reading a parameter that may be a number, a text or a dual; telling a Qlik null; title case;
 * splitting a delimited list; and a similarity score for fuzzy matching.
 */
import { sha256 as sha256Bytes } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';

const MS_PER_DAY = 86_400_000;
/** Days from 1899-12-30 (Qlik's day 0) to 1970-01-01 (the Unix epoch). */
const UNIX_EPOCH_SERIAL = 25_569;

type Dual = { num: unknown; str: unknown };

function isDual(value: unknown): value is Dual {
  return typeof value === 'object' && value !== null && 'num' in value && 'str' in value;
}

/** A number from what a script function gives: a number, a numeric text, or a dual's number; NaN otherwise. */
export function num(value: unknown): number {
  if (isDual(value)) return num(value.num);
  if (typeof value === 'number') return value;
  if (typeof value === 'string' && value.trim() !== '') return Number(value);
  if (value instanceof Date) return fromDate(value);
  return Number.NaN;
}

/** True for what Qlik sends as null: NaN for numbers, '' for text, a dual with neither. */
export function isNull(value: unknown): boolean {
  if (value === null || value === undefined) return true;
  if (isDual(value)) return Number.isNaN(num(value.num)) && (value.str === '' || value.str === null || value.str === undefined);
  if (typeof value === 'number') return Number.isNaN(value);
  if (typeof value === 'string') return value === '';
  return false;
}

/** A Qlik serial date (or a dual holding one) as a Date; an invalid Date when there is no number. */
export function toDate(serial: unknown): Date {
  const days = num(serial);
  return new Date(Number.isFinite(days) ? Math.round((days - UNIX_EPOCH_SERIAL) * MS_PER_DAY) : Number.NaN);
}

/** A Date (or milliseconds, or a text Date understands) as a Qlik serial date; NaN when it is not a date. */
export function fromDate(date: unknown): number {
  const ms =
    date instanceof Date ? date.getTime() : typeof date === 'number' ? date : typeof date === 'string' ? Date.parse(date) : Number.NaN;
  return Number.isFinite(ms) ? ms / MS_PER_DAY + UNIX_EPOCH_SERIAL : Number.NaN;
}

/** Lowercase hex SHA-256 of the text's UTF-8 bytes (a dual's text; anything else as String() gives it). */
export function sha256(text: unknown): string {
  const value = isDual(text) ? text.str : text;
  return bytesToHex(sha256Bytes(utf8(String(value ?? ''))));
}

/**
 * UTF-8 bytes of a text, a lone surrogate as U+FFFD (as TextEncoder, which the sandbox does not have:
 * it is a host API, and @noble/hashes' own utf8ToBytes needs it).
 */
function utf8(text: string): Uint8Array {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c >= 0xd800 && c < 0xe000) {
      const d = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
      if (c < 0xdc00 && d >= 0xdc00 && d < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      } else c = 0xfffd;
    }
    if (c < 0x80) bytes.push(c);
    else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
    else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    else bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 0x3f), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
  }
  return Uint8Array.from(bytes);
}

/** Each word's first letter in upper case, the rest in lower case (Unicode-aware, as Qlik's Capitalize). */
export function titleCase(text: unknown): string {
  return String(text ?? '')
    .toLowerCase()
    .replace(/(^|[^\p{L}\p{N}'’])(\p{L})/gu, (_match, before: string, letter: string) => before + letter.toUpperCase());
}

/** The trimmed, non-empty items of a delimited text: `splitList('a; b;;c', ';')` is ['a', 'b', 'c']. */
export function splitList(text: unknown, separator: string | RegExp = ','): string[] {
  return String(text ?? '')
    .split(separator)
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

/**
 * How alike two texts are, from 0 (nothing in common) to 1 (equal): one minus the Levenshtein
 * distance over the longer length, compared case-insensitively. For fuzzy matching of names.
 */
export function similarity(a: unknown, b: unknown): number {
  const left = [...String(a ?? '').toLowerCase()];
  const right = [...String(b ?? '').toLowerCase()];
  const longest = Math.max(left.length, right.length);
  if (longest === 0) return 1;
  let previous = Array.from({ length: right.length + 1 }, (_, j) => j);
  for (let i = 1; i <= left.length; i++) {
    const current = [i];
    for (let j = 1; j <= right.length; j++) {
      const cost = left[i - 1] === right[j - 1] ? 0 : 1;
      current[j] = Math.min((previous[j] as number) + 1, (current[j - 1] as number) + 1, (previous[j - 1] as number) + cost);
    }
    previous = current;
  }
  return 1 - (previous[right.length] as number) / longest;
}
