/** lacksReturn: a function body with no return of its own is told apart from expressions and bodies that return or throw. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { lacksReturn } from '../../src/calls/missing-return';

describe('a function body without a return statement', () => {
  it('is flagged, also when the only return is inside a nested function', () => {
    assert.equal(lacksReturn('const x = args[0] * 2;'), true);
    assert.equal(lacksReturn('const x = args[0] * 2;\nx'), true);
    assert.equal(lacksReturn('const f = () => { return 1; }; f();'), true);
    assert.equal(lacksReturn('function g() { return 1 } g();'), true);
    assert.equal(lacksReturn('class A { m() { return 1 } }; new A();'), true);
  });

  it('is not flagged for an expression, a body that returns somewhere, or one that throws', () => {
    assert.equal(lacksReturn('args[0] * 2'), false);
    assert.equal(lacksReturn('args[0] * 2;'), false);
    assert.equal(lacksReturn('{ id: args[0] }'), false);
    assert.equal(lacksReturn('const x = args[0]; return x * x;'), false);
    assert.equal(lacksReturn('for (const v of args[0]) { if (v > 1) return v; }'), false);
    assert.equal(lacksReturn('throw new Error("not yet");'), false);
  });

  it('says nothing about a text that does not compile (the syntax error says it)', () => {
    assert.equal(lacksReturn('args[0] *'), false);
    assert.equal(lacksReturn('const = ;'), false);
  });
});
