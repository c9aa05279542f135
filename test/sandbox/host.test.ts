/**
 * Escape attempts towards the host: Node's objects, module loading, constructor chains, the global
 * object, stack-trace hooks, code generation, WebAssembly, isolated-vm's own handles. Each attempt
 * gets nothing of the host, and the plugin keeps serving.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { assertServing, evalText, textOf } from '../helpers/sandbox-calls';

/** The ECMAScript globals V8 gives a fresh context, and V8's no-op console: nothing else may be there. */
const STANDARD_GLOBALS = (
  'AggregateError Array ArrayBuffer Atomics BigInt BigInt64Array BigUint64Array Boolean DataView Date Error EvalError ' +
  'FinalizationRegistry Float32Array Float64Array Function Infinity Int16Array Int32Array Int8Array Intl JSON Map Math NaN ' +
  'Number Object Promise Proxy RangeError ReferenceError Reflect RegExp Set String Symbol SyntaxError TypeError URIError ' +
  'Uint16Array Uint32Array Uint8Array Uint8ClampedArray WeakMap WeakRef WeakSet console decodeURI decodeURIComponent ' +
  'encodeURI encodeURIComponent escape eval globalThis isFinite isNaN parseFloat parseInt undefined unescape ' +
  // Standard globals newer V8s add: iterator helpers (V8 12, Node 22); explicit resource management
  // and Float16Array (V8 13, Node 24).
  'Iterator SuppressedError DisposableStack AsyncDisposableStack Float16Array ' +
  // The plugin's own: require() of its libraries (test/sandbox/libraries.test.ts).
  'require'
).split(' ');

describe('sandbox: nothing of the host', () => {
  let t: TestPlugin;
  before(async () => {
    t = await startTestPlugin({ SSE_SCRIPT_TIMEOUT_MS: '2000' });
  });
  after(async () => t.stop());

  it('Node globals are not defined: process, module, exports, Buffer, global, __dirname, timers, fetch', async () => {
    const names = [
      'process',
      'module',
      'exports',
      'Buffer',
      'global',
      '__dirname',
      '__filename',
      'setTimeout',
      'setInterval',
      'setImmediate',
      'queueMicrotask',
      'fetch',
      'structuredClone',
      'performance',
      'TextEncoder',
      'URL',
    ];
    const types = await textOf(t.client, `[${names.map((n) => `typeof ${n}`).join(', ')}].join()`);
    assert.equal(types, names.map(() => 'undefined').join());
  });

  it('isolated-vm handles are not reachable: $0, ivm, _ivm, and no symbol-keyed globals', async () => {
    assert.equal(
      await textOf(t.client, '[typeof $0, typeof ivm, typeof _ivm, typeof $1].join()'),
      'undefined,undefined,undefined,undefined',
    );
    assert.equal(await textOf(t.client, 'Reflect.ownKeys(globalThis).filter((k) => typeof k === "symbol").length'), '0');
  });

  it('the global object holds only the standard built-ins', async () => {
    const names = (await textOf(t.client, 'Reflect.ownKeys(globalThis).map(String).join(" ")')).split(' ');
    assert.deepEqual(
      names.filter((n) => !STANDARD_GLOBALS.includes(n)),
      [],
    );
    assert.equal(await textOf(t.client, 'Object.getPrototypeOf(Object.getPrototypeOf(globalThis)) === Object.prototype'), 'true');
  });

  it("constructor chains reach the sandbox's own Function: this.constructor.constructor('return process')()", async () => {
    assert.equal(
      await textOf(
        t.client,
        "{ try { return String(this.constructor.constructor('return process')()); } catch (e) { return e.name + ': ' + e.message; } }",
      ),
      'ReferenceError: process is not defined',
    );
    assert.equal(await textOf(t.client, "args.constructor.constructor('return typeof process')()"), 'undefined');
    assert.equal(
      await textOf(t.client, "Object.getPrototypeOf(function* () {}).constructor('yield typeof Buffer')().next().value"),
      'undefined',
    );
  });

  it("Function('return this')() gives the sandbox global, which has nothing of the host", async () => {
    assert.equal(
      await textOf(
        t.client,
        "{ const g = Function('return this')(); return [g === globalThis, typeof g.process, typeof g.module, 'Buffer' in g].join(); }",
      ),
      'true,undefined,undefined,false',
    );
    assert.equal(await textOf(t.client, "(0, eval)('this') === globalThis"), 'true');
  });

  it("import() is refused: the promise rejects and the call fails as the script's own error", async () => {
    const result = await evalText(t.client, "import('node:fs')");
    assert.equal(result.code, status.INVALID_ARGUMENT, result.details);
    assert.match(result.details, /never handled/);
    assert.equal(
      await textOf(
        t.client,
        "{ let outcome = 'pending'; import('node:child_process').then(() => (outcome = 'loaded'), (e) => (outcome = 'refused')); return outcome; }",
      ),
      'pending',
    );
    assert.equal(await textOf(t.client, "{ try { return String(eval('import.meta')); } catch (e) { return e.name; } }"), 'SyntaxError');
  });

  it('Error.prepareStackTrace and call sites see only sandbox frames, with no host paths or functions', async () => {
    const frames = await textOf(
      t.client,
      `{ Error.prepareStackTrace = (e, sites) => sites.map((s) => [s.getFileName(), typeof s.getFunction(), s.isNative()].join('/')).join(';');
         return new Error().stack; }`,
    );
    // The script's own frame (its function, sloppy mode), then the runtime's strict frames (run, runChunk), which hide their functions.
    assert.equal(frames, 'script.js/function/false;runtime.js/undefined/false;runtime.js/undefined/false');
    const stack = await textOf(t.client, "new Error('x').stack");
    assert.doesNotMatch(stack, /\/work|node_modules|node:internal|dist\/|isolated-vm/);
    assert.match(stack, /^Error: x\n\s+at script\.js/);
  });

  it('errors thrown by the script carry no host stack to the client', async () => {
    const result = await evalText(t.client, '{ null.f(); }');
    assert.equal(result.code, status.INVALID_ARGUMENT);
    assert.equal(result.details, "TypeError: Cannot read properties of null (reading 'f') (at row 0)");
  });

  it('eval and new Function work, inside the sandbox only', async () => {
    assert.equal(await textOf(t.client, "eval('typeof process') + ',' + new Function('return typeof module')()"), 'undefined,undefined');
    assert.equal(await textOf(t.client, "eval('args[0] + 1')"), '2');
  });

  it('WebAssembly and SharedArrayBuffer are gone', async () => {
    assert.equal(await textOf(t.client, '[typeof WebAssembly, typeof SharedArrayBuffer].join()'), 'undefined,undefined');
    const result = await evalText(t.client, 'new WebAssembly.Module(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]))');
    assert.equal(result.code, status.INVALID_ARGUMENT);
    assert.match(result.details, /ReferenceError: WebAssembly is not defined/);
  });

  it("console is the sandbox's own: its methods return nothing and reach no host", async () => {
    assert.equal(await textOf(t.client, "String(console.log('to the host?'))"), 'undefined');
    assert.equal(await textOf(t.client, "console.log.constructor('return typeof process')()"), 'undefined');
  });

  it('the wrapped Math.random and Date keep no handle on the host', async () => {
    assert.equal(await textOf(t.client, "Math.random.constructor('return typeof process')()"), 'undefined');
    assert.equal(await textOf(t.client, "Date.now.constructor('return this')() === globalThis"), 'true');
  });

  it('keeps serving after every attempt', async () => {
    await assertServing(t.client);
  });
});
