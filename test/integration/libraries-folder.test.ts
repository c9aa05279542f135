/**
 * SSE_LIBRARIES_DIR end to end: the administrator's single-file libraries are offered beside the
 * bundled ones, a broken file is logged with its line and left out while the others stay, a changed
 * or added file is picked up by the next call, and the start-up log lists every library with its
 * version or file hash.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { createLogger } from '../../src/ops/log';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { evalText, textOf } from '../helpers/sandbox-calls';
import { startMain } from '../ops/process';

const GREET_V1 = `exports.greet = function (name) { return 'hello ' + name; };\n`;
const GREET_V2 = `module.exports = { greet: (name) => 'bonjour ' + name };\n`;
const UMD = `(function (root, factory) {
  if (typeof module === 'object' && module.exports) module.exports = factory();
  else root.Shout = factory();
})(this, function () {
  return { shout: (text) => String(text).toUpperCase() + '!' };
});
`;
const BROKEN = `exports.ok = 1;\n\nexports.bad = 1 +;\n`;
const ESM = `export const x = 1;\n`;
const SPIN = `for (;;) {}\n`;

describe('SSE_LIBRARIES_DIR', () => {
  let t: TestPlugin;
  let dir: string;
  const lines: Record<string, unknown>[] = [];

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'sse-libraries-'));
    await writeFile(path.join(dir, 'greet.js'), GREET_V1);
    await writeFile(path.join(dir, 'shout.js'), UMD);
    await writeFile(path.join(dir, 'broken.js'), BROKEN);
    await writeFile(path.join(dir, 'esm.js'), ESM);
    await writeFile(path.join(dir, 'spin.js'), SPIN);
    const logger = createLogger('info', { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    t = await startTestPlugin({ SSE_WORKERS: '1', SSE_LIBRARIES_DIR: dir, SSE_SCRIPT_TIMEOUT_MS: '1000', SSE_LOG_LEVEL: 'info' }, logger);
  });
  after(async () => {
    await t.stop();
    await rm(dir, { recursive: true, force: true });
  });

  // spin.js never ends: every call here that does not require it shows that a library is evaluated only when asked.
  it('offers a CommonJS file and a UMD bundle by their file names; a library runs only when required', async () => {
    assert.equal(await textOf(t.client, 'require("greet").greet("Ada")'), 'hello Ada');
    assert.equal(await textOf(t.client, 'require("shout").shout("hej")'), 'HEJ!');
    assert.equal(await textOf(t.client, 'require("simple-statistics").median([1, 5, 2])'), '2', 'the bundled ones stay');
  });

  it('logs a broken file with its line and an ES module with how to fix it, and leaves them out', async () => {
    const refused = lines.filter((line) => line['msg'] === 'library refused (SSE_LIBRARIES_DIR): left out');
    const byFile = new Map(refused.map((line) => [line['file'], line]));
    assert.equal(byFile.get('broken.js')?.['line'], 3);
    assert.match(String(byFile.get('broken.js')?.['problem']), /^syntax error: /);
    assert.equal(byFile.get('esm.js')?.['line'], 1);
    assert.match(String(byFile.get('esm.js')?.['problem']), /bundle it as CommonJS or UMD/);
    const result = await evalText(t.client, 'require("broken")');
    assert.equal(result.code, status.INVALID_ARGUMENT);
    assert.match(result.details, /available: simple-statistics, date-fns, d3-array, qlik, greet, shout, spin \(at row 0\)$/);
  });

  it('the start-up log lists every library with its version or file hash, after where the plugin listens', async () => {
    const started = await startMain({ SSE_LIBRARIES_DIR: dir, SSE_WORKERS: '1' });
    try {
      await started.waitForLine((line) => line.msg === 'libraries scripts may require');
      const listening = started.lines.findIndex((line) => String(line.msg).startsWith('listening on'));
      const offered = started.lines.filter((line) => String(line.msg).startsWith('library offered to scripts'));
      assert.ok(listening >= 0 && started.lines.indexOf(offered[0] as (typeof offered)[number]) > listening);
      assert.deepEqual(
        offered.map((line) => [line['library'], line['version'] ?? 'file']),
        [
          ['simple-statistics', '7.12.1'],
          ['date-fns', '4.4.0'],
          ['d3-array', '3.2.5'],
          ['qlik', '0.1.0'],
          ['greet', 'file'],
          ['shout', 'file'],
          ['spin', 'file'],
        ],
      );
      for (const line of offered.slice(4)) assert.match(String(line['sha256']), /^[0-9a-f]{16}$/);
    } finally {
      await started.kill();
    }
  });

  it("a library's own code runs under the call's time limit", async () => {
    const result = await evalText(t.client, 'require("spin")');
    assert.equal(result.code, status.DEADLINE_EXCEEDED);
    assert.equal(await textOf(t.client, 'require("greet").greet("again")'), 'hello again');
  });

  it('a changed, a new and a repaired file are picked up by the next call', async () => {
    const reloaded = t.plugin.libraries.nextReload();
    await writeFile(path.join(dir, 'greet.js'), GREET_V2);
    await writeFile(path.join(dir, 'extra.js'), `exports.answer = 42;\n`);
    await writeFile(path.join(dir, 'broken.js'), `exports.ok = 1;\n`);
    await reloaded;
    // Editors save in bursts: a second reload may follow; wait until all three are in.
    while (!t.plugin.libraries.names.includes('broken') || !t.plugin.libraries.names.includes('extra'))
      await t.plugin.libraries.nextReload();
    assert.equal(await textOf(t.client, 'require("greet").greet("Ada")'), 'bonjour Ada');
    assert.equal(await textOf(t.client, 'require("extra").answer + require("broken").ok'), '43');
    assert.ok(lines.some((line) => line['msg'] === 'library changed (SSE_LIBRARIES_DIR)' && line['library'] === 'greet'));
  });
});
