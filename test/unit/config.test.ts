/** Configuration is validated once; each bad value names the variable, the value and what is accepted. */
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { describe, it } from 'node:test';

import { ConfigError, DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS, loadConfig } from '../../src/ops/config';

describe('loadConfig', () => {
  it('has the SPEC defaults', () => {
    const config = loadConfig({});
    assert.equal(config.port, 50051);
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.tlsDir, undefined);
    assert.equal(config.allowScript, true);
    assert.equal(config.workers, availableParallelism());
    assert.equal(config.scriptTimeoutMs, 5000);
    assert.equal(config.memoryLimitMb, 128);
    assert.equal(config.maxScriptBytes, 32768);
    assert.equal(config.logLevel, 'info');
    assert.equal(config.logFormat, 'auto');
    assert.equal(config.maxQueue, 512);
    assert.equal(config.metricsPort, undefined);
    assert.equal(config.shutdownGraceMs, 10000);
  });

  it('listens on all interfaces by default when TLS is on', () => {
    assert.equal(loadConfig({ SSE_TLS_DIR: '/certs' }).host, '0.0.0.0');
    assert.equal(loadConfig({ SSE_TLS_DIR: '/certs', SSE_HOST: '10.0.0.5' }).host, '10.0.0.5');
  });

  it('reads every variable', () => {
    const config = loadConfig({
      SSE_PORT: '6000',
      SSE_ALLOW_SCRIPT: 'false',
      SSE_WORKERS: '3',
      SSE_SCRIPT_TIMEOUT_MS: '250',
      SSE_MEMORY_LIMIT_MB: '64',
      SSE_MAX_SCRIPT_BYTES: '49152',
      SSE_LOG_LEVEL: 'debug',
      SSE_MAX_QUEUE: '9',
      SSE_METRICS_PORT: '9100',
      SSE_SHUTDOWN_GRACE_MS: '0',
    });
    assert.deepEqual(
      [
        config.port,
        config.allowScript,
        config.workers,
        config.scriptTimeoutMs,
        config.memoryLimitMb,
        config.maxScriptBytes,
        config.logLevel,
        config.maxQueue,
        config.metricsPort,
        config.shutdownGraceMs,
      ],
      [6000, false, 3, 250, 64, 49152, 'debug', 9, 9100, 0],
    );
  });

  it('splits SSE_WORKERS over sandbox processes, up to four threads a process', () => {
    assert.equal(loadConfig({ SSE_WORKERS: '1' }).sandboxProcesses, 1);
    assert.equal(loadConfig({ SSE_WORKERS: '2' }).sandboxProcesses, 1);
    assert.equal(loadConfig({ SSE_WORKERS: '5' }).sandboxProcesses, 2);
    assert.equal(loadConfig({ SSE_WORKERS: '16' }).sandboxProcesses, 4);
    assert.equal(loadConfig({ SSE_WORKERS: '4', SSE_SANDBOX_PROCESSES: '4' }).sandboxProcesses, 4);
    assert.throws(
      () => loadConfig({ SSE_WORKERS: '2', SSE_SANDBOX_PROCESSES: '3' }),
      /SSE_SANDBOX_PROCESSES="3" is invalid: expected an integer from 1 to 2/,
    );
    assert.equal(loadConfig({}).sandboxMemoryMb, undefined);
    assert.equal(loadConfig({ SSE_SANDBOX_MEMORY_MB: '300' }).sandboxMemoryMb, 300);
  });

  it('keeps one spare sandbox process unless SSE_SPARE_SANDBOXES says otherwise (0-4), apart from SSE_SANDBOX_PROCESSES', () => {
    assert.deepEqual([loadConfig({ SSE_WORKERS: '2' }).spareSandboxes, loadConfig({ SSE_WORKERS: '2' }).sandboxProcesses], [1, 1]);
    assert.equal(loadConfig({ SSE_SPARE_SANDBOXES: '0' }).spareSandboxes, 0);
    assert.equal(loadConfig({ SSE_SPARE_SANDBOXES: '4' }).spareSandboxes, 4);
  });

  it('runs sandbox threads at niceness 10 unless SSE_SANDBOX_NICE says otherwise (0-19)', () => {
    assert.equal(loadConfig({}).sandboxNice, 10);
    assert.equal(loadConfig({ SSE_SANDBOX_NICE: '0' }).sandboxNice, 0);
    assert.equal(loadConfig({ SSE_SANDBOX_NICE: '19' }).sandboxNice, 19);
    assert.throws(() => loadConfig({ SSE_SANDBOX_NICE: '-5' }), /SSE_SANDBOX_NICE="-5" is invalid: expected an integer from 0 to 19/);
  });

  it('gives small tasks 10 ms on the sandbox main thread unless SSE_FAST_PATH_MS says otherwise (0 turns it off)', () => {
    assert.equal(loadConfig({}).fastPathMs, 10);
    assert.equal(loadConfig({ SSE_FAST_PATH_MS: '0' }).fastPathMs, 0);
    assert.throws(() => loadConfig({ SSE_FAST_PATH_MS: '1001' }), /SSE_FAST_PATH_MS="1001" is invalid: expected an integer from 0 to 1000/);
  });

  it('serves metrics on loopback unless SSE_METRICS_HOST says otherwise, even when gRPC listens everywhere', () => {
    assert.equal(loadConfig({ SSE_HOST: '0.0.0.0' }).metricsHost, '127.0.0.1');
    assert.equal(loadConfig({ SSE_METRICS_HOST: '0.0.0.0' }).metricsHost, '0.0.0.0');
  });

  it('holds 512 MB for all calls together unless SSE_MAX_HELD_MB says otherwise', () => {
    assert.equal(loadConfig({}).maxHeldMb, 512);
    assert.equal(loadConfig({ SSE_MAX_HELD_MB: '64' }).maxHeldMb, 64);
  });

  const bad: [string, string, RegExp][] = [
    ['SSE_PORT', '70000', /SSE_PORT="70000" is invalid: expected an integer from 0 to 65535/],
    ['SSE_PORT', 'abc', /SSE_PORT="abc"/],
    ['SSE_ALLOW_SCRIPT', 'yes', /SSE_ALLOW_SCRIPT="yes" is invalid: expected true or false/],
    ['SSE_WORKERS', '0', /SSE_WORKERS="0" is invalid: expected an integer from 1 to 256/],
    ['SSE_SCRIPT_TIMEOUT_MS', '-5', /SSE_SCRIPT_TIMEOUT_MS="-5"/],
    ['SSE_SCRIPT_TIMEOUT_MS', '1.5', /SSE_SCRIPT_TIMEOUT_MS="1.5"/],
    ['SSE_MEMORY_LIMIT_MB', '4', /SSE_MEMORY_LIMIT_MB="4" is invalid: expected an integer from 8/],
    ['SSE_MAX_SCRIPT_BYTES', '49153', /SSE_MAX_SCRIPT_BYTES="49153" is invalid: expected an integer from 1 to 49152/],
    ['SSE_LOG_LEVEL', 'verbose', /SSE_LOG_LEVEL="verbose" is invalid: expected debug, info, warn or error/],
    ['SSE_LOG_FORMAT', 'text', /SSE_LOG_FORMAT="text" is invalid: expected auto, json or pretty/],
    ['SSE_MAX_QUEUE', '0', /SSE_MAX_QUEUE="0"/],
    ['SSE_MAX_HELD_MB', '8', /SSE_MAX_HELD_MB="8" is invalid: expected an integer from 16 to 1048576/],
    ['SSE_METRICS_PORT', 'x', /SSE_METRICS_PORT="x"/],
    ['SSE_CHUNK_KB', '8', /SSE_CHUNK_KB="8" is invalid: expected an integer from 16 to 4096/],
    ['SSE_CHUNK_KB', '4097', /SSE_CHUNK_KB="4097"/],
    ['SSE_SANDBOX_PROCESSES', '0', /SSE_SANDBOX_PROCESSES="0" is invalid: expected an integer from 1 to/],
    ['SSE_SPARE_SANDBOXES', '5', /SSE_SPARE_SANDBOXES="5" is invalid: expected an integer from 0 to 4/],
    ['SSE_SANDBOX_MEMORY_MB', '10', /SSE_SANDBOX_MEMORY_MB="10" is invalid: expected an integer from 64/],
    ['SSE_METRICS_HOST', ' ', /SSE_METRICS_HOST=" " is invalid/],
    ['SSE_MAX_CONNECTIONS', '0', /SSE_MAX_CONNECTIONS="0" is invalid: expected an integer from 1 to 1000000/],
    ['SSE_MAX_CONNECTIONS_PER_HOST', 'x', /SSE_MAX_CONNECTIONS_PER_HOST="x" is invalid: expected an integer from 1 to 1000000/],
    ['SSE_CLIENT_PREFIX_V4', '33', /SSE_CLIENT_PREFIX_V4="33" is invalid: expected an integer from 0 to 32/],
    ['SSE_CLIENT_PREFIX_V6', '-1', /SSE_CLIENT_PREFIX_V6="-1" is invalid: expected an integer from 0 to 128/],
    ['SSE_HANDSHAKE_TIMEOUT_MS', '50', /SSE_HANDSHAKE_TIMEOUT_MS="50" is invalid: expected an integer from 100 to 600000/],
    ['SSE_IDLE_TIMEOUT_MS', '0', /SSE_IDLE_TIMEOUT_MS="0" is invalid: expected an integer from 100 to 86400000/],
    [
      'SSE_PRIORITY_HOSTS',
      '10.0.0.1,qlik.example',
      /SSE_PRIORITY_HOSTS="10.0.0.1,qlik.example" is invalid: expected none, or IP addresses/,
    ],
    ['SSE_PRIORITY_HOSTS', '10.0.0.0/33', /SSE_PRIORITY_HOSTS="10.0.0.0\/33" is invalid/],
  ];
  for (const [name, value, message] of bad) {
    it(`refuses ${name}=${value}`, () => {
      assert.throws(
        () => loadConfig({ [name]: value }),
        (error: unknown) => error instanceof ConfigError && message.test(error.message),
      );
    });
  }

  it('lists the local engine as the priority host on loopback, none elsewhere, unless SSE_PRIORITY_HOSTS names them', () => {
    assert.deepEqual(loadConfig({}).priorityHosts, ['127.0.0.1', '::1']);
    assert.deepEqual(loadConfig({ SSE_HOST: '0.0.0.0' }).priorityHosts, []);
    assert.deepEqual(loadConfig({ SSE_TLS_DIR: '/certs' }).priorityHosts, []);
    assert.deepEqual(loadConfig({ SSE_PRIORITY_HOSTS: 'none' }).priorityHosts, []);
    assert.deepEqual(loadConfig({ SSE_PRIORITY_HOSTS: '10.0.0.7, 10.0.1.0/28,2001:db8::/64' }).priorityHosts, [
      '10.0.0.7',
      '10.0.1.0/28',
      '2001:db8::/64',
    ]);
  });

  it('bounds connections: limit from the descriptor limit, 10 s to handshake, 5 min idle, unless told otherwise', () => {
    const defaults = loadConfig({});
    assert.deepEqual(
      [defaults.maxConnections, defaults.handshakeTimeoutMs, defaults.idleTimeoutMs],
      [undefined, DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS],
    );
    assert.deepEqual([DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS], [10_000, 300_000]);
    const set = loadConfig({ SSE_MAX_CONNECTIONS: '40', SSE_HANDSHAKE_TIMEOUT_MS: '300', SSE_IDLE_TIMEOUT_MS: '2000' });
    assert.deepEqual([set.maxConnections, set.handshakeTimeoutMs, set.idleTimeoutMs], [40, 300, 2000]);
  });

  it('reads SSE_CHUNK_KB, 256 KiB by default', () => {
    assert.equal(loadConfig({}).chunkKb, 256);
    assert.equal(loadConfig({ SSE_CHUNK_KB: '16' }).chunkKb, 16);
    assert.equal(loadConfig({ SSE_CHUNK_KB: '4096' }).chunkKb, 4096);
  });

  it('offers every bundled library unless SSE_LIBRARIES names some or none; keeps 100 console lines and 64 KiB a call', () => {
    const defaults = loadConfig({});
    assert.equal(defaults.libraries, undefined);
    assert.equal(defaults.librariesDir, undefined);
    assert.equal(defaults.consoleLines, 100);
    assert.equal(defaults.consoleBytes, 65_536);
    assert.deepEqual(loadConfig({ SSE_LIBRARIES: 'none' }).libraries, []);
    assert.deepEqual(loadConfig({ SSE_LIBRARIES: ' NONE ' }).libraries, []);
    assert.deepEqual(loadConfig({ SSE_LIBRARIES: 'qlik, date-fns' }).libraries, ['qlik', 'date-fns']);
    const set = loadConfig({ SSE_LIBRARIES_DIR: '/etc/libs', SSE_CONSOLE_LINES: '0', SSE_CONSOLE_BYTES: '1024' });
    assert.deepEqual([set.librariesDir, set.consoleLines, set.consoleBytes], ['/etc/libs', 0, 1024]);
  });

  for (const [name, value, accepts] of [
    ['SSE_LIBRARIES', '../fs', /SSE_LIBRARIES="\.\.\/fs" is invalid: expected none, or library names separated by commas/],
    ['SSE_LIBRARIES', 'qlik,,d3-array', /SSE_LIBRARIES="qlik,,d3-array" is invalid/],
    ['SSE_CONSOLE_LINES', '100001', /SSE_CONSOLE_LINES="100001" is invalid: expected an integer from 0 to 100000/],
    ['SSE_CONSOLE_BYTES', '-1', /SSE_CONSOLE_BYTES="-1" is invalid: expected an integer from 0 to 16777216/],
  ] as const) {
    it(`refuses ${name}=${value}`, () => {
      assert.throws(() => loadConfig({ [name]: value }), accepts);
    });
  }

  it('reads SSE_LOG_FORMAT', () => {
    for (const format of ['auto', 'json', 'pretty'] as const) assert.equal(loadConfig({ SSE_LOG_FORMAT: format }).logFormat, format);
  });

  it('reports every bad variable at once', () => {
    assert.throws(
      () => loadConfig({ SSE_PORT: 'x', SSE_WORKERS: 'y' }),
      (error: unknown) => error instanceof ConfigError && /SSE_PORT="x"/.test(error.message) && /SSE_WORKERS="y"/.test(error.message),
    );
  });
});
