/**
 * How a script's failure inside its sandbox is named: an allocation V8 refused is the memory limit,
 * whether it happened in the script or while its result was converted, never a fault of the script.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { ScriptSpec } from '../../src/contract/task';
import { scriptFailure } from '../../workers/thread/task-evaluator';

const SPEC = { mode: 'rows' } as unknown as ScriptSpec;
const failed = (kind: 'throw' | 'convert', name: string, message: string) =>
  ({ ok: false, kind, name, message, row: 3, tainted: false, console: null }) as const;

describe('naming a script failure', () => {
  for (const kind of ['throw', 'convert'] as const) {
    it(`a refused allocation (${kind}) is the memory limit, RESOURCE_EXHAUSTED`, () => {
      const error = scriptFailure(SPEC, failed(kind, 'RangeError', 'Array buffer allocation failed'), 100, 32);
      assert.equal(error.code, 'RESOURCE_EXHAUSTED');
      assert.match(error.message, /memory limit of 32 MB \(SSE_MEMORY_LIMIT_MB\).*Array buffer allocation failed \(at row 103\)/);
    });
  }

  it('a value that cannot be converted is the script’s, INVALID_ARGUMENT naming the row', () => {
    const error = scriptFailure(SPEC, failed('convert', 'TypeError', 'Cannot convert a Symbol value to a string'), 100, 32);
    assert.equal(error.code, 'INVALID_ARGUMENT');
    assert.match(error.message, /^the result of row 103 cannot be converted to text: TypeError/);
  });
});
