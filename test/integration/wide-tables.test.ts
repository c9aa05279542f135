/**
 * Wide table results: the qlik-tabledescription-bin header names every column,
 * and past a gRPC C-core client's metadata limit (Qlik's engine: 8192 bytes by default) the engine
 * failed the call with "received initial metadata size exceeds limit" while the plugin logged OK.
 * Now the plugin refuses such a table itself, with a message naming the columns and the limit.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import * as grpc from '@grpc/grpc-js';
import { MAX_TABLE_HEADER_BYTES, TABLE_HEADER, tableHeader, tableHeaderBytes } from '../../src/calls/table-header';
import { DataType as Type } from '../../src/contract/task';
import { encodeMessage, messages } from '../../src/grpc/proto';
import { ccoreCall, NO_CCORE } from '../helpers/ccore';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { DataType, num } from '../helpers/qlik-client';

const names = (columns: number, chars: number): string[] => Array.from({ length: columns }, (_, i) => `c${i}`.padEnd(chars, '_'));
/** LOAD * EXTENSION JS.ScriptEval('<this>', T{X}): one object of `columns` keys per row. */
const objectScript = (keys: readonly string[]): string => `({ ${keys.map((key) => `${key}: args[0]`).join(', ')} })`;

function headerBytesOf(keys: readonly string[]): number {
  const fields = keys.map((name) => ({ name, dataType: Type.NUMERIC }));
  return tableHeaderBytes(encodeMessage(messages.TableDescription, { fields, numberOfRows: 1 }));
}

/** The most 8-character columns whose header the plugin still sends. */
function widestAllowed(chars: number): number {
  let columns = 1;
  while (headerBytesOf(names(columns + 1, chars)) <= MAX_TABLE_HEADER_BYTES) columns++;
  return columns;
}

describe('the table header is sized as a C-core client counts it', () => {
  it('name + base64 value as grpc-js sends it + 32', () => {
    const fields = names(50, 12).map((name) => ({ name, dataType: Type.DUAL }));
    const description = encodeMessage(messages.TableDescription, { fields, numberOfRows: 7 });
    const sent = String(tableHeader(fields, 7).toHttp2Headers()[TABLE_HEADER]);
    assert.equal(tableHeaderBytes(description), TABLE_HEADER.length + sent.length + 32);
  });
});

describe('wide tables through the real plugin', () => {
  let t: TestPlugin;
  before(async () => (t = await startTestPlugin()));
  after(async () => t.stop());

  const call = (keys: readonly string[]) =>
    t.client.evaluate({
      script: objectScript(keys),
      params: [{ dataType: DataType.NUMERIC, name: 'X' }],
      bundles: [[[num(1)], [num(2)], [num(3)]]],
    });

  it('50 columns: a table with its description', async () => {
    const r = await call(names(50, 8));
    assert.equal(r.code, grpc.status.OK, r.details);
    const description = r.initialMetadata?.get(TABLE_HEADER)[0];
    assert.ok(Buffer.isBuffer(description));
    const decoded = messages.TableDescription.toObject(messages.TableDescription.decode(description)) as { fields: { name: string }[] };
    assert.deepEqual(
      decoded.fields.map((f) => f.name),
      names(50, 8),
    );
    assert.deepEqual(
      r.rows.map((row) => [row.length, row[0]?.numData, row[49]?.numData]),
      [
        [50, 1, 1],
        [50, 2, 2],
        [50, 3, 3],
      ],
    );
  });

  it('1,000 columns: RESOURCE_EXHAUSTED naming the columns and the limit', async () => {
    const r = await call(names(1_000, 8));
    assert.equal(r.code, grpc.status.RESOURCE_EXHAUSTED, r.details);
    assert.match(
      r.details,
      /^the table has 1000 columns: their description \(\d+ bytes\) is larger than a Qlik engine reads \(7680 bytes of its 8192-byte header limit\); return fewer columns or shorter names$/,
    );
    assert.equal(r.initialMetadata?.get(TABLE_HEADER).length ?? 0, 0);
  });

  it('150 columns with 40-character names: refused the same way', async () => {
    const r = await call(names(150, 40));
    assert.equal(r.code, grpc.status.RESOURCE_EXHAUSTED, r.details);
    assert.match(r.details, /^the table has 150 columns/);
  });

  it('the widest table the plugin sends is read by a C-core client; one column more is refused by the plugin', {
    skip: NO_CCORE,
  }, async () => {
    const columns = widestAllowed(8);
    const widest = await ccoreCall(t.plugin.port, 0, 10, objectScript(names(columns, 8)));
    assert.equal(widest.code, 'OK', widest.details);
    assert.ok(widest.table_header_bytes > 0);
    const wider = await ccoreCall(t.plugin.port, 0, 10, objectScript(names(columns + 1, 8)));
    assert.equal(wider.code, 'RESOURCE_EXHAUSTED');
    assert.match(wider.details, new RegExp(`^the table has ${columns + 1} columns`));
  });
});
