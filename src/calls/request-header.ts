/**
 * Decodes the qlik-*-bin request headers of a call. A missing or garbled script header, an unknown
 * enum value or an over-long script is an InvalidArgument with a message naming what was wrong.
 */
import type { Metadata } from '@grpc/grpc-js';

import { PluginError } from '../contract/errors';
import { DataType, type EvaluationMode, FunctionType, type ScriptSpec } from '../contract/task';
import { decodeMessage, messages } from '../grpc/proto';

export const SCRIPT_HEADER = 'qlik-scriptrequestheader-bin';
export const COMMON_HEADER = 'qlik-commonrequestheader-bin';
export const FUNCTION_HEADER = 'qlik-functionrequestheader-bin';

export interface CommonHeader {
  readonly appId: string;
  readonly userId: string;
  readonly cardinality: number;
}

export interface ScriptCall {
  readonly spec: ScriptSpec;
  /** The Qlik script function this call came from, e.g. ScriptEvalExStr (for logs and metrics). */
  readonly functionName: string;
  readonly functionType: FunctionType;
  readonly common: CommonHeader;
  readonly scriptBytes: number;
}

function invalid(message: string): PluginError {
  return new PluginError('INVALID_ARGUMENT', message);
}

function headerBytes(metadata: Metadata, key: string): Buffer | undefined {
  const values = metadata.get(key);
  if (values.length === 0) return undefined;
  const value = values[0];
  return Buffer.isBuffer(value) ? value : Buffer.from(String(value), 'base64');
}

function decodeHeader(
  metadata: Metadata,
  key: string,
  type: (typeof messages)[keyof typeof messages],
): Record<string, unknown> | undefined {
  const bytes = headerBytes(metadata, key);
  if (bytes === undefined) return undefined;
  try {
    return decodeMessage(type, bytes);
  } catch (error) {
    throw invalid(`the ${key} header cannot be read: ${error instanceof Error ? error.message : String(error)}`);
  }
}

export function readCommonHeader(metadata: Metadata): CommonHeader {
  const common = decodeHeader(metadata, COMMON_HEADER, messages.CommonRequestHeader);
  return {
    appId: String(common?.['appId'] ?? ''),
    userId: String(common?.['userId'] ?? ''),
    cardinality: Number(common?.['cardinality'] ?? 0),
  };
}

/** The functionId of an ExecuteFunction call (Qlik echoes the id GetCapabilities gave it). */
export function readFunctionId(metadata: Metadata): number {
  const header = decodeHeader(metadata, FUNCTION_HEADER, messages.FunctionRequestHeader);
  if (header === undefined) throw invalid(`the call has no ${FUNCTION_HEADER} header; it must name the function to run`);
  return Number(header['functionId'] ?? 0);
}

function enumValue<T extends number>(value: unknown, allowed: Record<string, T>, field: string): T {
  const known = Object.values(allowed) as number[];
  if (typeof value === 'number' && known.includes(value)) return value as T;
  throw invalid(`the ${SCRIPT_HEADER} header has an unknown ${field} ${String(value)}`);
}

export function readScriptCall(metadata: Metadata, maxScriptBytes: number): ScriptCall {
  const header = decodeHeader(metadata, SCRIPT_HEADER, messages.ScriptRequestHeader);
  if (header === undefined) throw invalid(`the call has no ${SCRIPT_HEADER} header; it must carry the script and its parameters`);
  const script = String(header['script'] ?? '');
  const scriptBytes = Buffer.byteLength(script, 'utf8');
  if (scriptBytes > maxScriptBytes) {
    throw invalid(`the script is ${scriptBytes} bytes, more than the limit of ${maxScriptBytes} bytes (SSE_MAX_SCRIPT_BYTES)`);
  }
  if (script.trim() === '') throw invalid('the script is empty');
  const functionType = enumValue(header['functionType'], FunctionType, 'functionType');
  const returnType = enumValue(header['returnType'], DataType, 'returnType');
  const params = (header['params'] as Record<string, unknown>[] | undefined) ?? [];
  const paramTypes = params.map((p) => enumValue(p['dataType'], DataType, 'parameter dataType'));
  const boundNames = bindNames(params.map((p) => String(p['name'] ?? '')));
  const mode: EvaluationMode = params.length === 0 ? 'once' : functionType === FunctionType.AGGREGATION ? 'aggregate' : 'rows';
  return {
    spec: { script, paramTypes, boundNames, returnType, mode, tableAllowed: functionType === FunctionType.TENSOR && mode === 'rows' },
    functionType,
    functionName: scriptFunctionName(functionType, returnType, paramTypes),
    common: readCommonHeader(metadata),
    scriptBytes,
  };
}

const IDENTIFIER = /^[\p{ID_Start}$_][\p{ID_Continue}$\u200c\u200d]*$/u;

/** Reserved words, and names of standard globals a parameter must not shadow. */
const NOT_BINDABLE = new Set(
  (
    'args arguments await break case catch class const continue debugger default delete do else enum eval export ' +
    'extends false finally for function if implements import in instanceof interface let new null package private ' +
    'protected public return static super switch this throw true try typeof var void while with yield async of get set ' +
    'undefined NaN Infinity globalThis Math JSON Date Intl RegExp Array Object String Number Boolean Symbol BigInt ' +
    'Function Error TypeError RangeError SyntaxError ReferenceError EvalError URIError AggregateError Map Set WeakMap ' +
    'WeakSet WeakRef FinalizationRegistry Promise Proxy Reflect ArrayBuffer DataView Atomics Int8Array Uint8Array ' +
    'Uint8ClampedArray Int16Array Uint16Array Int32Array Uint32Array Float32Array Float64Array BigInt64Array ' +
    'BigUint64Array parseInt parseFloat isNaN isFinite encodeURI encodeURIComponent decodeURI decodeURIComponent ' +
    'escape unescape console'
  ).split(' '),
);

/** For each parameter the name it is bound to in the script, or '' (invalid, reserved or a duplicate). */
export function bindNames(names: readonly string[]): string[] {
  const seen = new Set<string>();
  return names.map((name) => {
    if (!IDENTIFIER.test(name) || NOT_BINDABLE.has(name) || seen.has(name)) return '';
    seen.add(name);
    return name;
  });
}

/** Ex iff the parameter types are not all the type matching the return type (sse-protocol.md 3.2). */
export function scriptFunctionName(functionType: FunctionType, returnType: DataType, paramTypes: readonly DataType[]): string {
  const text = returnType === DataType.STRING;
  const matching = text ? DataType.STRING : DataType.NUMERIC;
  const ex = paramTypes.some((t) => t !== matching);
  return `Script${functionType === FunctionType.AGGREGATION ? 'Aggr' : 'Eval'}${ex ? 'Ex' : ''}${text ? 'Str' : ''}`;
}
