/**
 * What one try call sends, whether it runs a script or a plugin function: the function type, the
 * return type and the parameter types, and the request itself. A script's shape follows from its
 * Qlik function name (src/cli/options.ts); a plugin function's is read from the plugin's
 * GetCapabilities, exactly as Qlik reads it when it connects, so `try` sees the same name, kind and
 * types an app does.
 */
import { DataType, type FunctionType } from '../contract/task';
import { scriptParameterTypes } from './input';
import type { FunctionCallee, ScriptCallee } from './options';
import { UsageError } from './options';
import type { QlikClient } from './qlik-client';

export type CallRequest = { readonly kind: 'script'; readonly script: string } | { readonly kind: 'function'; readonly functionId: number };

export interface CallShape {
  /** The result column's name: the Qlik function's. */
  readonly label: string;
  readonly functionType: FunctionType;
  readonly returnType: DataType;
  readonly paramTypes: readonly DataType[];
  readonly request: CallRequest;
}

export function scriptShape(callee: ScriptCallee, paramCount: number): CallShape {
  return {
    label: callee.functionName,
    functionType: callee.functionType,
    returnType: callee.returnType,
    paramTypes: scriptParameterTypes(callee, paramCount),
    request: { kind: 'script', script: callee.script },
  };
}

interface Definition {
  readonly name: string;
  readonly functionType: FunctionType;
  readonly returnType: DataType;
  readonly params: readonly { readonly name: string; readonly dataType: DataType }[];
  readonly functionId: number;
}

const TYPE_NAMES: Readonly<Record<number, string>> = { [DataType.STRING]: 'text', [DataType.NUMERIC]: 'number', [DataType.DUAL]: 'dual' };

/** The plugin function of that name (Qlik's names are case-insensitive); a UsageError names the ones there are. */
export async function functionShape(client: QlikClient, callee: FunctionCallee, paramCount: number): Promise<CallShape> {
  const capabilities = await client.getCapabilities();
  const definitions = (capabilities['functions'] ?? []) as Definition[];
  const found = definitions.find((definition) => definition.name.toLowerCase() === callee.name.toLowerCase());
  if (found === undefined) {
    const names = definitions.map((definition) => definition.name).sort();
    throw new UsageError(
      `--function ${callee.name}: ${callee.functionsDir} has no such function` +
        (names.length > 0 ? `; it has ${names.join(', ')}` : ' (no function file loaded: see the lines above)'),
    );
  }
  if (found.params.length !== paramCount) {
    const params = found.params.map((param) => `${param.name} ${TYPE_NAMES[param.dataType] ?? '?'}`).join(', ');
    throw new UsageError(
      `${found.name}(${params}) takes ${found.params.length} parameter(s), but ${paramCount} were given (values, --arg, --const or --columns)`,
    );
  }
  return {
    label: found.name,
    functionType: found.functionType,
    returnType: found.returnType,
    paramTypes: found.params.map((param) => param.dataType),
    request: { kind: 'function', functionId: found.functionId },
  };
}
