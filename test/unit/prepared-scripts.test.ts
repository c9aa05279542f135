/**
 * What the front keeps per identical header bytes (src/calls/prepared-scripts.ts): the same headers get the
 * same frozen result; another app, user, script or parameter list never does; headers that do not
 * decode are refused every time and never kept; the cache stays bounded.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { contextKey } from '../../src/calls/context-key';
import { PreparedScripts, scriptHash } from '../../src/calls/prepared-scripts';
import { scriptMetadata } from '../../src/cli/qlik-client';
import { PluginError } from '../../src/contract/errors';
import { DataType, FunctionType } from '../../src/contract/task';

const base = {
  script: 'args[0] * 2',
  functionType: FunctionType.SCALAR,
  returnType: DataType.NUMERIC,
  params: [{ dataType: DataType.NUMERIC }],
  common: { appId: 'app-1', userId: 'UserDirectory=A; UserId=u1', cardinality: 1 },
};

describe('PreparedScripts', () => {
  it('gives calls with the same header bytes the same frozen result, equal to decoding them afresh', () => {
    const scripts = new PreparedScripts(1024);
    const first = scripts.prepare(scriptMetadata(base));
    const second = scripts.prepare(scriptMetadata(base));
    assert.equal(second, first);
    assert.ok(Object.isFrozen(first.call.spec) && Object.isFrozen(first.call.spec.paramTypes) && Object.isFrozen(first.call.common));
    assert.equal(first.contextKey, contextKey(first.call.common, first.call.spec));
    assert.equal(first.scriptHash, scriptHash('args[0] * 2'));
    assert.equal(first.call.spec.script, 'args[0] * 2');
    assert.equal(first.call.common.appId, 'app-1');
  });

  it('never hands one app, user, script or parameter list what another one got', () => {
    const scripts = new PreparedScripts(1024);
    const variants = [
      base,
      { ...base, common: { ...base.common, appId: 'app-2' } },
      { ...base, common: { ...base.common, userId: 'UserDirectory=A; UserId=u2' } },
      { ...base, script: 'args[0] * 3' },
      { ...base, params: [{ dataType: DataType.NUMERIC, name: 'x' }] },
      { ...base, common: null },
    ];
    const prepared = variants.map((v) => scripts.prepare(scriptMetadata(v)));
    assert.equal(new Set(prepared.map((p) => p.contextKey)).size, variants.length);
    assert.deepEqual(
      prepared.map((p) => [p.call.common.appId, p.call.common.userId, p.call.spec.script, p.call.spec.boundNames]),
      [
        ['app-1', 'UserDirectory=A; UserId=u1', 'args[0] * 2', ['']],
        ['app-2', 'UserDirectory=A; UserId=u1', 'args[0] * 2', ['']],
        ['app-1', 'UserDirectory=A; UserId=u2', 'args[0] * 2', ['']],
        ['app-1', 'UserDirectory=A; UserId=u1', 'args[0] * 3', ['']],
        ['app-1', 'UserDirectory=A; UserId=u1', 'args[0] * 2', ['x']],
        ['', '', 'args[0] * 2', ['']],
      ],
    );
    // And each again: the same results as the first time.
    variants.forEach((v, i) => {
      assert.equal(scripts.prepare(scriptMetadata(v)), prepared[i]);
    });
  });

  it('refuses headers that do not decode every time, and keeps none of them', () => {
    const scripts = new PreparedScripts(1024);
    const garbled = scriptMetadata({ ...base, scriptHeaderBytes: Buffer.from([0x0a, 0xff, 0x01]) });
    for (let i = 0; i < 3; i++) {
      assert.throws(
        () => scripts.prepare(garbled),
        (error: unknown) => error instanceof PluginError && error.code === 'INVALID_ARGUMENT',
      );
    }
    assert.throws(() => scripts.prepare(scriptMetadata({ ...base, script: 'x'.repeat(2000) })), /more than the limit of 1024 bytes/);
    assert.equal(scripts.size, 0);
  });

  it('stays bounded, and does not keep large headers', () => {
    const scripts = new PreparedScripts(64 * 1024);
    for (let i = 0; i < 300; i++) scripts.prepare(scriptMetadata({ ...base, script: `args[0] + ${i}` }));
    assert.equal(scripts.size, 256);
    const big = scripts.prepare(scriptMetadata({ ...base, script: `args[0] + ${'1'.repeat(20_000)}` }));
    assert.equal(big.call.spec.script.length, 20_010);
    assert.notEqual(scripts.prepare(scriptMetadata({ ...base, script: `args[0] + ${'1'.repeat(20_000)}` })), big);
  });
});
