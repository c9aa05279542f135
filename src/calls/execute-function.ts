/**
 * The ExecuteFunction handler: Qlik calls an administrator's plugin function by the id that
 * GetCapabilities gave it. The function is looked up once, when the call starts, and its ScriptSpec
 * runs through the same runCall and CallPipeline as a script: same sandboxes, limits, errors, reply
 * sizes, cancellation, cache header, log line and metrics (labelled with the function's name).
 * Plugin functions run whether or not scripts are allowed: that is the locked-down mode.
 */
import { PluginError } from '../contract/errors';
import type { FunctionRegistry } from '../functions/registry';
import { KINDS } from '../functions/signature';
import { toStatus } from '../grpc/status';
import { contextKey } from './context-key';
import { type Call, type HandlerDeps, type PreparedCall, runCall } from './evaluate-script';
import { readCommonHeader, readFunctionId } from './request-header';

export function executeFunction(deps: HandlerDeps): (call: Call) => void {
  const registry = deps.functions;
  if (registry === undefined) {
    return (call) => {
      call.emit(
        'error',
        toStatus(
          new PluginError(
            'UNIMPLEMENTED',
            'this plugin offers no plugin functions (SSE_FUNCTIONS_DIR is not set); use the script functions (ScriptEval, ScriptAggr, …)',
          ),
        ),
      );
    };
  }
  return runCall(deps, 'ExecuteFunction', (call) => prepareFunctionCall(call, registry));
}

function prepareFunctionCall(call: Call, registry: FunctionRegistry): PreparedCall {
  const id = readFunctionId(call.metadata);
  const fn = registry.lookup(id);
  if (fn === undefined) {
    throw new PluginError(
      'INVALID_ARGUMENT',
      `unknown functionId ${id}: this plugin has no such function (removed or renamed since Qlik read the function list? reload the analytic connection)`,
    );
  }
  const common = readCommonHeader(call.metadata);
  return {
    spec: fn.spec,
    functionName: fn.name,
    functionType: KINDS[fn.kind],
    common,
    // From the file's script as it was read once: a call does not hash or measure a file of up to 1 MiB again.
    scriptBytes: fn.script.bytes,
    scriptHash: fn.script.digest.slice(0, 16),
    contextKey: contextKey(common, { ...fn.spec, script: fn.script.digest }),
    logFields: { functionId: fn.id, functionVersion: fn.version, file: fn.file },
  };
}
