/**
 * The request header decoder (src/calls/request-header.ts) on its own: what a well-formed script
 * header becomes, and for each malformed one the INVALID_ARGUMENT and the exact message a Qlik author
 * or administrator is shown. Pure: headers are built in memory, no server.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Metadata } from '@grpc/grpc-js';

import {
  bindNames,
  COMMON_HEADER,
  FUNCTION_HEADER,
  readCommonHeader,
  readFunctionId,
  readScriptCall,
  SCRIPT_HEADER,
  scriptFunctionName,
} from '../../src/calls/request-header';
import { PluginError } from '../../src/contract/errors';
import { DataType, FunctionType } from '../../src/contract/task';
import { encodeMessage, messages } from '../../src/grpc/proto';

const MAX_SCRIPT_BYTES = 64;

/** A script header as Qlik sends it; encoded without verification, so enum values Qlik does not define get through. */
function scriptHeader(value: Record<string, unknown>): Metadata {
  const metadata = new Metadata();
  metadata.set(SCRIPT_HEADER, Buffer.from(messages.ScriptRequestHeader.encode(value).finish()));
  return metadata;
}

const valid = { script: 'a + b', functionType: FunctionType.SCALAR, returnType: DataType.NUMERIC, params: [] as unknown[] };

/** Asserts `read` refuses with INVALID_ARGUMENT and exactly `message`. */
function refused(read: () => unknown, message: string | RegExp): void {
  assert.throws(read, (error: unknown) => {
    assert.ok(error instanceof PluginError, String(error));
    assert.equal(error.code, 'INVALID_ARGUMENT');
    if (typeof message === 'string') assert.equal(error.message, message);
    else assert.match(error.message, message);
    return true;
  });
}

describe('readScriptCall: what a script header becomes', () => {
  it('decodes the script, types, bound names, mode and function name', () => {
    const metadata = scriptHeader({
      ...valid,
      params: [
        { name: 'a', dataType: DataType.NUMERIC },
        { name: 'b', dataType: DataType.STRING },
      ],
    });
    metadata.set(COMMON_HEADER, encodeMessage(messages.CommonRequestHeader, { appId: 'app', userId: 'user', cardinality: 3 }));
    const call = readScriptCall(metadata, MAX_SCRIPT_BYTES);
    assert.deepEqual(call.spec, {
      script: 'a + b',
      paramTypes: [DataType.NUMERIC, DataType.STRING],
      boundNames: ['a', 'b'],
      returnType: DataType.NUMERIC,
      mode: 'rows',
      tableAllowed: false,
    });
    assert.equal(call.functionName, 'ScriptEvalEx');
    assert.equal(call.scriptBytes, 5);
    assert.deepEqual(call.common, { appId: 'app', userId: 'user', cardinality: 3 });
  });

  it('runs a call without parameters once, an aggregation over all rows, and allows tables only to TENSOR per-row calls', () => {
    const param = [{ name: 'x', dataType: DataType.NUMERIC }];
    const mode = (value: Record<string, unknown>) => readScriptCall(scriptHeader({ ...valid, ...value }), MAX_SCRIPT_BYTES).spec;
    assert.equal(mode({}).mode, 'once');
    assert.equal(mode({ functionType: FunctionType.AGGREGATION, params: param }).mode, 'aggregate');
    assert.equal(mode({ functionType: FunctionType.TENSOR, params: param }).tableAllowed, true);
    assert.equal(mode({ functionType: FunctionType.TENSOR }).tableAllowed, false);
    assert.equal(mode({ functionType: FunctionType.SCALAR, params: param }).tableAllowed, false);
  });

  it('reads an absent common header as empty', () => {
    assert.deepEqual(readCommonHeader(new Metadata()), { appId: '', userId: '', cardinality: 0 });
  });
});

describe('readScriptCall: malformed headers, each with its message', () => {
  it('refuses a call without the script header', () => {
    refused(
      () => readScriptCall(new Metadata(), MAX_SCRIPT_BYTES),
      'the call has no qlik-scriptrequestheader-bin header; it must carry the script and its parameters',
    );
  });

  it('refuses a script header that does not decode, naming the header', () => {
    const metadata = new Metadata();
    // Field 1 (script) as a length-delimited string claiming 100 bytes, with 1 byte present.
    metadata.set(SCRIPT_HEADER, Buffer.from([0x0a, 100, 0x41]));
    refused(() => readScriptCall(metadata, MAX_SCRIPT_BYTES), /^the qlik-scriptrequestheader-bin header cannot be read: .+/);
  });

  it('refuses a common header that does not decode, naming the header', () => {
    const metadata = scriptHeader(valid);
    metadata.set(COMMON_HEADER, Buffer.from([0x0a, 100, 0x41]));
    refused(() => readScriptCall(metadata, MAX_SCRIPT_BYTES), /^the qlik-commonrequestheader-bin header cannot be read: .+/);
  });

  it('refuses a script over SSE_MAX_SCRIPT_BYTES, naming its size and the limit', () => {
    refused(
      () => readScriptCall(scriptHeader({ ...valid, script: 'x'.repeat(65) }), MAX_SCRIPT_BYTES),
      'the script is 65 bytes, more than the limit of 64 bytes (SSE_MAX_SCRIPT_BYTES)',
    );
  });

  it('counts the script in UTF-8 bytes, not characters', () => {
    refused(
      () => readScriptCall(scriptHeader({ ...valid, script: 'é'.repeat(33) }), MAX_SCRIPT_BYTES),
      'the script is 66 bytes, more than the limit of 64 bytes (SSE_MAX_SCRIPT_BYTES)',
    );
  });

  it('refuses an empty or blank script', () => {
    for (const script of ['', '  \n\t '])
      refused(() => readScriptCall(scriptHeader({ ...valid, script }), MAX_SCRIPT_BYTES), 'the script is empty');
  });

  it('refuses an unknown functionType, returnType or parameter dataType, naming the field and value', () => {
    refused(
      () => readScriptCall(scriptHeader({ ...valid, functionType: 7 }), MAX_SCRIPT_BYTES),
      'the qlik-scriptrequestheader-bin header has an unknown functionType 7',
    );
    refused(
      () => readScriptCall(scriptHeader({ ...valid, returnType: 9 }), MAX_SCRIPT_BYTES),
      'the qlik-scriptrequestheader-bin header has an unknown returnType 9',
    );
    refused(
      () => readScriptCall(scriptHeader({ ...valid, params: [{ name: 'a', dataType: 5 }] }), MAX_SCRIPT_BYTES),
      'the qlik-scriptrequestheader-bin header has an unknown parameter dataType 5',
    );
  });
});

describe('readFunctionId', () => {
  it('reads the functionId Qlik echoes', () => {
    const metadata = new Metadata();
    metadata.set(FUNCTION_HEADER, encodeMessage(messages.FunctionRequestHeader, { functionId: 42 }));
    assert.equal(readFunctionId(metadata), 42);
  });

  it('refuses a call without the function header, and one whose header does not decode', () => {
    refused(
      () => readFunctionId(new Metadata()),
      'the call has no qlik-functionrequestheader-bin header; it must name the function to run',
    );
    const metadata = new Metadata();
    metadata.set(FUNCTION_HEADER, Buffer.from([0x0a, 100, 0x41]));
    refused(() => readFunctionId(metadata), /^the qlik-functionrequestheader-bin header cannot be read: .+/);
  });
});

describe('bindNames and scriptFunctionName', () => {
  it('binds identifiers once, never reserved words, standard globals, invalid names or duplicates', () => {
    assert.deepEqual(bindNames(['price', 'args', 'Math', '2x', 'price', 'qty', '']), ['price', '', '', '', '', 'qty', '']);
  });

  it('names the Qlik script function from the function type, return type and parameter types', () => {
    const { NUMERIC, STRING, DUAL } = DataType;
    assert.equal(scriptFunctionName(FunctionType.SCALAR, NUMERIC, [NUMERIC]), 'ScriptEval');
    assert.equal(scriptFunctionName(FunctionType.SCALAR, STRING, [STRING]), 'ScriptEvalStr');
    assert.equal(scriptFunctionName(FunctionType.AGGREGATION, NUMERIC, [DUAL]), 'ScriptAggrEx');
    assert.equal(scriptFunctionName(FunctionType.AGGREGATION, STRING, [NUMERIC]), 'ScriptAggrExStr');
  });
});
