/**
 * Structured logs: one JSON line per EvaluateScript call with who, what and how it went, and never
 * the script text or row values at info (a script error message may quote a row: debug only).
 * At a terminal, or with SSE_LOG_FORMAT=pretty, the same lines are readable text instead of JSON.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, constants, mkdtempSync, openSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { startPlugin } from '../../src/app';
import { type LogLevel, loadConfig } from '../../src/ops/config';
import { createLogger } from '../../src/ops/log';
import { DataType, encodeBundle, QlikClient, str, strings } from '../helpers/qlik-client';
import { openScriptStream } from '../helpers/raw-call';
import { waitFor } from '../helpers/sandbox-calls';
import { type LogLine, metricsText, sampleValue, spawnMain, startMain } from './process';

/** Markers that must never reach an info log: one in the script text, one in the row values. */
const SCRIPT_MARKER = 'zqxscriptmarker';
const ROW_MARKER = 'zqxrowvalue';

interface Captured {
  readonly client: QlikClient;
  readonly text: string[];
  lines(): Record<string, unknown>[];
}

/** Runs `body` against a real plugin whose logger writes into `text`. */
async function capturing(level: LogLevel, body: (captured: Captured) => Promise<void>): Promise<void> {
  const text: string[] = [];
  const config = loadConfig({ SSE_PORT: '0', SSE_HOST: '127.0.0.1', SSE_WORKERS: '2', SSE_LOG_LEVEL: level, SSE_SCRIPT_TIMEOUT_MS: '500' });
  const plugin = await startPlugin(config, createLogger(config.logLevel, { write: (line: string) => void text.push(line) }));
  const client = new QlikClient(`127.0.0.1:${plugin.port}`);
  try {
    await body({ client, text, lines: () => text.map((line) => JSON.parse(line) as Record<string, unknown>) });
  } finally {
    client.close();
    await plugin.stop(1_000);
  }
}

const common = { appId: 'app-42', userId: 'UserDirectory=CORP; UserId=ada', cardinality: 0 };
const strParam = [{ dataType: DataType.STRING, name: 'Name' }];
const OK_SCRIPT = `args[0] + "-${SCRIPT_MARKER}"`;
const THROWING_SCRIPT = `throw new Error("bad " + args[0] + " ${SCRIPT_MARKER}")`;
const SYNTAX_ERROR_SCRIPT = `args[0] +* ${SCRIPT_MARKER}(`;
const LOOPING_SCRIPT = `for (;;) { "${SCRIPT_MARKER}"; }`;

function call(client: QlikClient, script: string, rows: readonly string[]): ReturnType<QlikClient['evaluate']> {
  return client.evaluate({ script, returnType: DataType.STRING, params: strParam, bundles: [rows.map((row) => [str(row)])], common });
}

const sha16 = (text: string): string => createHash('sha256').update(text).digest('hex').slice(0, 16);

describe('one JSON log line per call', () => {
  test('request id, app, user, script hash, function, rows, duration, status; no script text or row values', () =>
    capturing('info', async (captured) => {
      const ok = await call(captured.client, OK_SCRIPT, [`${ROW_MARKER}1`, `${ROW_MARKER}2`]);
      assert.deepEqual(strings(ok), [`${ROW_MARKER}1-${SCRIPT_MARKER}`, `${ROW_MARKER}2-${SCRIPT_MARKER}`]);
      assert.equal((await call(captured.client, THROWING_SCRIPT, [`${ROW_MARKER}3`])).code, grpc.status.INVALID_ARGUMENT);
      assert.equal((await call(captured.client, SYNTAX_ERROR_SCRIPT, [`${ROW_MARKER}4`])).code, grpc.status.INVALID_ARGUMENT);
      assert.equal((await call(captured.client, LOOPING_SCRIPT, [`${ROW_MARKER}5`])).code, grpc.status.DEADLINE_EXCEEDED);

      const calls = captured.lines().filter((line) => line['msg'] === 'EvaluateScript');
      assert.equal(calls.length, 4);
      const [first] = calls;
      assert.deepEqual(
        { ...first, requestId: undefined, time: undefined, peer: undefined, durationMs: undefined, scriptMs: undefined },
        {
          level: 30,
          service: 'qlik-sse-js',
          msg: 'EvaluateScript',
          requestId: undefined,
          time: undefined,
          peer: undefined,
          durationMs: undefined,
          scriptMs: undefined,
          appId: 'app-42',
          userId: 'UserDirectory=CORP; UserId=ada',
          function: 'ScriptEvalStr',
          scriptHash: sha16(OK_SCRIPT),
          scriptBytes: Buffer.byteLength(OK_SCRIPT),
          rowsIn: 2,
          rowsOut: 2,
          table: false,
          noStore: false,
          status: 'OK',
        },
      );
      assert.match(String(first?.['peer']), /^127\.0\.0\.1:\d+$/);
      assert.equal(typeof first?.['durationMs'], 'number');
      assert.deepEqual(
        calls.map((line) => [line['status'], line['scriptHash']]),
        [
          ['OK', sha16(OK_SCRIPT)],
          ['INVALID_ARGUMENT', sha16(THROWING_SCRIPT)],
          ['INVALID_ARGUMENT', sha16(SYNTAX_ERROR_SCRIPT)],
          ['DEADLINE_EXCEEDED', sha16(LOOPING_SCRIPT)],
        ],
      );
      const ids = calls.map((line) => String(line['requestId']));
      assert.equal(new Set(ids).size, 4);
      for (const id of ids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);

      const everything = captured.text.join('');
      assert.equal(everything.includes(SCRIPT_MARKER), false, 'script text at info');
      assert.equal(everything.includes(ROW_MARKER), false, 'row values at info');
    }));
});

describe('at debug level', () => {
  test('a script error message (which may quote a row) goes to a debug line with the same request id', () =>
    capturing('debug', async (captured) => {
      assert.equal((await call(captured.client, THROWING_SCRIPT, [`${ROW_MARKER}6`])).code, grpc.status.INVALID_ARGUMENT);
      const lines = captured.lines();
      const info = lines.find((line) => line['msg'] === 'EvaluateScript');
      const debug = lines.find((line) => line['level'] === 20 && line['requestId'] === info?.['requestId']);
      assert.match(String(debug?.['details']), new RegExp(`bad ${ROW_MARKER}6`));
      assert.equal(JSON.stringify(info).includes(ROW_MARKER), false);
    }));
});

test('a script or rows passed to the logger by mistake are redacted', () => {
  const text: string[] = [];
  const logger = createLogger('debug', { write: (line: string) => void text.push(line) });
  logger.info({ spec: { script: SCRIPT_MARKER }, rows: [ROW_MARKER], bundles: [ROW_MARKER] }, 'oops');
  assert.deepEqual(JSON.parse(text[0] ?? '{}'), {
    ...(JSON.parse(text[0] ?? '{}') as object),
    spec: { script: '[redacted]' },
    rows: '[redacted]',
    bundles: '[redacted]',
  });
  assert.equal(text.join('').includes(SCRIPT_MARKER) || text.join('').includes(ROW_MARKER), false);
});

/** pino-pretty colours its output when it believes it may (FORCE_COLOR, CI); the words are what count. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: stripping the terminal's colour escapes is the point
const plain = (line: LogLine): string => String(line.msg).replace(/\x1b\[[0-9;]*m/g, '');

describe('readable log lines (SSE_LOG_FORMAT)', () => {
  test('pretty: the real process greets with readable lines, no JSON, and a one-line call summary', async () => {
    const started = spawnMain({ SSE_LOG_FORMAT: 'pretty' });
    try {
      const listening = plain(await started.waitForLine((line) => plain(line).includes('listening on 127.0.0.1:')));
      assert.match(
        listening,
        /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(\d+\): listening on 127\.0\.0\.1:\d+ \(plaintext, no TLS\) version=\S+ node=v\d+\./,
      );
      await started.waitForLine((line) => plain(line).includes('listening on loopback only'));
      const port = Number(/127\.0\.0\.1:(\d+)/.exec(listening)?.[1]);
      const client = new QlikClient(`127.0.0.1:${port}`);
      try {
        assert.deepEqual(strings(await call(client, OK_SCRIPT, [`${ROW_MARKER}1`])), [`${ROW_MARKER}1-${SCRIPT_MARKER}`]);
      } finally {
        client.close();
      }
      const callLine = plain(await started.waitForLine((line) => plain(line).includes('EvaluateScript')));
      assert.match(
        callLine,
        /INFO: EvaluateScript ScriptEvalStr OK: 1 row in, 1 out, [\d.]+ ms \(script [\d.]+ ms\) requestId=\S+ appId=app-42 userId="UserDirectory=CORP; UserId=ada"/,
      );
      assert.equal(
        started.lines.some((line) => line['notJson'] !== true),
        false,
        'a JSON line on stdout',
      );
      assert.equal(
        started.lines.some((line) => plain(line).includes(ROW_MARKER) || plain(line).includes(SCRIPT_MARKER)),
        false,
      );
    } finally {
      await started.kill();
    }
  });

  test('the default with stdout not a terminal is JSON lines', async () => {
    const started = await startMain({});
    try {
      assert.equal(
        started.lines.every((line) => line['notJson'] === undefined && typeof line.level === 'number'),
        true,
      );
      assert.match(String(started.lines[0]?.msg), /^listening on 127\.0\.0\.1:\d+/);
    } finally {
      await started.kill();
    }
  });
});

describe('the call line of a client that went away', () => {
  test('still names its peer: read when the call began, not once the connection was gone', async () => {
    const text: string[] = [];
    const config = loadConfig({ SSE_PORT: '0', SSE_HOST: '127.0.0.1', SSE_WORKERS: '1', SSE_SCRIPT_TIMEOUT_MS: '5000' });
    const plugin = await startPlugin(config, createLogger(config.logLevel, { write: (line: string) => void text.push(line) }));
    const callLines = (): Record<string, unknown>[] =>
      text.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line['msg'] === 'EvaluateScript');
    try {
      const session = http2.connect(`http://127.0.0.1:${plugin.port}`);
      session.on('error', () => undefined);
      const stream = openScriptStream(session, { script: 'for (;;) {}', returnType: DataType.STRING, params: strParam, common });
      const message = encodeBundle([[str('a')]]);
      const frame = Buffer.alloc(5 + message.length);
      frame.writeUInt32BE(message.length, 1);
      message.copy(frame, 5);
      stream.end(frame);
      await waitFor('the script running', () => plugin.pool.busyWorkers === 1, 10_000);
      session.destroy();
      await waitFor('the call line', () => callLines().length === 1, 10_000);
      const [line] = callLines();
      assert.equal(line?.['status'], 'CANCELLED');
      assert.match(String(line?.['peer']), /^127\.0\.0\.1:\d+$/);
    } finally {
      await plugin.stop(1_000);
    }
  });
});

describe('failed calls', () => {
  test('get their lines up to a rate; the next line logged counts those left out, so every call is in the log', async () => {
    const text: string[] = [];
    const config = loadConfig({ SSE_PORT: '0', SSE_HOST: '127.0.0.1', SSE_WORKERS: '1', SSE_ALLOW_SCRIPT: 'false', SSE_METRICS_PORT: '0' });
    const plugin = await startPlugin(config, createLogger(config.logLevel, { write: (line: string) => void text.push(line) }));
    const client = new QlikClient(`127.0.0.1:${plugin.port}`);
    const callLines = (): Record<string, unknown>[] =>
      text.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line['msg'] === 'EvaluateScript');
    const refuse = async (): Promise<void> => {
      const result = await call(client, OK_SCRIPT, ['a']);
      assert.equal(result.code, grpc.status.PERMISSION_DENIED, result.details);
    };
    const REFUSED = 600;
    try {
      // Far faster than the rate of 20 lines a second (after a burst of 200): 50 calls at a time.
      for (let sent = 0; sent < REFUSED; sent += 50) await Promise.all(Array.from({ length: 50 }, refuse));
      const logged = callLines().length;
      assert.ok(logged < REFUSED, `${logged} lines for ${REFUSED} refused calls`);
      // A line's worth of rate comes back within 50 ms; this call's line then says what was left out.
      await new Promise((resolve) => setTimeout(resolve, 100));
      await refuse();
      const lines = callLines();
      assert.equal(lines.length, logged + 1);
      const leftOut = lines.reduce((sum, line) => sum + Number(line['failedNotLogged'] ?? 0), 0);
      assert.equal(lines.length + leftOut, REFUSED + 1);
      assert.ok(Number(lines.at(-1)?.['failedNotLogged']) > 0, 'the last line counts those left out before it');
      assert.equal(
        sampleValue(await metricsText(plugin.metricsPort ?? 0), 'sse_calls_total', { function: 'unknown', status: 'PERMISSION_DENIED' }),
        REFUSED + 1,
      );
    } finally {
      client.close();
      await plugin.stop(1_000);
    }
  });
});

describe('a stdout nobody reads', () => {
  test('costs the front at most its log buffer: lines past it are dropped, counted, and reported once stdout takes lines again', {
    timeout: 120_000,
  }, async () => {
    // No console rate: the log's own buffer is what is tested.
    const plugin = await startMain({
      SSE_WORKERS: '1',
      SSE_CONSOLE_BYTES: String(1024 * 1024),
      SSE_CONSOLE_RATE_KB: '0',
      SSE_METRICS_PORT: '0',
    });
    const client = new QlikClient(`127.0.0.1:${plugin.port}`);
    const metricsPort = plugin.metricsPort as number;
    try {
      const heapBefore = sampleValue(await metricsText(metricsPort), 'nodejs_heap_size_used_bytes');
      plugin.child.stdout?.pause();
      // ~128 MB of console lines (1 MiB a call) into a pipe nobody drains, eight times the buffer.
      const LOUD = 'for (let i = 0; i < 16; i++) console.log("x".repeat(60000)); return args[0];';
      for (let i = 0; i < 128; i++) {
        const result = await call(client, LOUD, ['a']);
        assert.equal(result.code, grpc.status.OK, result.details);
      }
      const metrics = await metricsText(metricsPort);
      const grownMb = (sampleValue(metrics, 'nodejs_heap_size_used_bytes') - heapBefore) / 1048576;
      assert.ok(sampleValue(metrics, 'sse_log_lines_dropped_total') > 0, 'no line dropped');
      // The buffer (16 MiB), what one call holds on its way and garbage not yet collected (38-53 MB
      // seen); unbounded the heap took every line (128 MB).
      assert.ok(grownMb < 90, `the front's heap grew ${Math.round(grownMb)} MB`);
      plugin.child.stdout?.resume();
      const report = await plugin.waitForLine((line) => String(line.msg).startsWith('stdout did not take log lines'), 30_000);
      assert.ok(Number(report['droppedLines']) > 0);
      assert.deepEqual(strings(await call(client, 'args[0]', ['still here'])), ['still here']);
    } finally {
      client.close();
      plugin.child.kill('SIGKILL');
    }
  });
});

describe('a stdout FIFO nobody reads, at exit', () => {
  test('the process still exits: the lines still waiting are given up, no thread stays blocked in a write', {
    timeout: 60_000,
  }, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'sse-fifo-'));
    const fifo = path.join(dir, 'stdout');
    execFileSync('mkfifo', [fifo]);
    // Opened for reading and writing: the FIFO has a reader (this process), which never reads.
    const held = openSync(fifo, constants.O_RDWR);
    const LOG_JS = path.join(__dirname, '..', '..', 'src', 'ops', 'log.js');
    const child = spawn(
      process.execPath,
      [
        '-e',
        `const log = require(${JSON.stringify(LOG_JS)});
         const logger = log.createLogger('info');
         for (let i = 0; i < 2000; i++) logger.info('x'.repeat(10000));
         setTimeout(() => { log.abandonPendingLogLines(); process.exit(7); }, 500);`,
      ],
      { stdio: ['ignore', held, 'pipe'] },
    );
    try {
      // Generous: the child exits 0.5 s after it starts; blocked in a write it never did.
      const exit = await Promise.race([
        new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code))),
        new Promise<string>((resolve) => setTimeout(() => resolve('still running after 30 s'), 30_000)),
      ]);
      assert.equal(exit, 7);
    } finally {
      child.kill('SIGKILL');
      closeSync(held);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
