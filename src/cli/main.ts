/**
 * `npm run try -- 'args[0] * 2' 1 2 3`: runs a script over values from the command line or a CSV
 * file and prints the result rows, so an app author can try a script without a Qlik engine.
 *
 * Why it starts the real plugin instead of calling the sandbox directly: the point of trying is that
 * the answer is the one Qlik would get. So the command starts the plugin in this process
 * (`startPlugin`, on 127.0.0.1 port 0, with the plugin's own configuration and limits), calls it over
 * gRPC with the headers and rows Qlik sends (src/cli/qlik-client.ts), and stops it. Sandbox,
 * limits, result mapping, table results and error messages are then the plugin's by construction,
 * and stay so whatever happens to the plugin's internals; starting a sandbox costs well under a
 * second.
 */

import { startPlugin } from '../app';
import { statusName } from '../grpc/status';
import { type Config, ConfigError, loadConfig } from '../ops/config';
import { createLogger } from '../ops/log';
import { type CallInput, callInput } from './input';
import { FLAG_OF_VARIABLE, parseTryArgs, type TryOptions, USAGE, UsageError } from './options';
import { isNoStore, render, resultTable, safeText, tryLogDestination } from './output';
import { type CallResult, QlikClient } from './qlik-client';

const EXIT_CALL_FAILED = 1;
const EXIT_USAGE = 2;
/** Rows per BundledRows message, well under any message limit for ordinary values. */
const ROWS_PER_BUNDLE = 1_000;
/** The plugin enforces the script's limit; this only keeps a lost call from hanging the command. */
const CALL_DEADLINE_EXTRA_MS = 30_000;
/** After stop() the process should end by itself; if a handle still holds it, exit anyway. */
const EXIT_WATCHDOG_MS = 3_000;
/** The plugin's variables that shape a call, taken from the environment as the plugin would. */
const LIMIT_VARIABLES = ['SSE_SCRIPT_TIMEOUT_MS', 'SSE_MEMORY_LIMIT_MB', 'SSE_MAX_SCRIPT_BYTES', 'SSE_MAX_MESSAGE_BYTES'];

async function run(argv: readonly string[]): Promise<number> {
  let options: TryOptions | undefined;
  let input: CallInput;
  let config: Config;
  try {
    options = parseTryArgs(argv);
    if (options === undefined) {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    input = callInput(options);
    config = tryConfig(options);
  } catch (error) {
    if (!(error instanceof UsageError || error instanceof ConfigError)) throw error;
    process.stderr.write(`try: ${error.message}\n(npm run try -- --help shows the options)\n`);
    return EXIT_USAGE;
  }
  const result = await callPlugin(config, options, input);
  if (result.code !== 0) {
    process.stderr.write(`${statusName(result.code)}: ${safeText(result.details)}\n`);
    return EXIT_CALL_FAILED;
  }
  process.stdout.write(render(resultTable(result, options.functionName, options.returnType), options.format));
  if (isNoStore(result))
    process.stderr.write(
      'note: the script read the clock or Math.random, so the reply tells Qlik not to cache it (qlik-cache: no-store)\n',
    );
  return 0;
}

/** The plugin's configuration, on a free loopback port, with the limits of the environment and the flags. */
function tryConfig(options: TryOptions): Config {
  const fromEnvironment = Object.fromEntries(
    LIMIT_VARIABLES.flatMap((name) => (process.env[name] === undefined ? [] : [[name, process.env[name]]])),
  );
  try {
    return loadConfig({
      ...fromEnvironment,
      ...options.limits,
      SSE_PORT: '0',
      SSE_HOST: '127.0.0.1',
      SSE_WORKERS: '1',
      SSE_LOG_LEVEL: 'error',
    });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    const message = Object.entries(FLAG_OF_VARIABLE).reduce(
      (text, [variable, flag]) => (options.limits[variable] === undefined ? text : text.replace(variable, `${flag} (${variable})`)),
      error.message,
    );
    throw new ConfigError(message);
  }
}

async function callPlugin(config: Config, options: TryOptions, input: CallInput): Promise<CallResult> {
  // The script's console lines and the plugin's errors go to stderr: stdout holds nothing but the result.
  const plugin = await startPlugin(config, createLogger('info', tryLogDestination(process.stderr), 'json'));
  const client = new QlikClient(`127.0.0.1:${plugin.port}`);
  try {
    return await client.evaluate({
      script: options.script,
      functionType: options.functionType,
      returnType: options.returnType,
      params: input.params,
      bundles: bundles(input),
      common: { appId: 'npm run try', userId: 'UserDirectory=LOCAL; UserId=try', cardinality: input.rows.length },
      deadlineMs: config.scriptTimeoutMs + CALL_DEADLINE_EXTRA_MS,
    });
  } finally {
    client.close();
    await plugin.stop(1_000);
  }
}

function bundles(input: CallInput): CallInput['rows'][] {
  const result: CallInput['rows'][] = [];
  for (let start = 0; start < input.rows.length; start += ROWS_PER_BUNDLE) result.push(input.rows.slice(start, start + ROWS_PER_BUNDLE));
  return result;
}

run(process.argv.slice(2)).then(
  (code) => exit(code),
  (error: unknown) => {
    process.stderr.write(`try: failed: ${error instanceof Error ? error.message : String(error)}\n`);
    exit(EXIT_CALL_FAILED);
  },
);

function exit(code: number): void {
  process.exitCode = code;
  setTimeout(() => process.exit(code), EXIT_WATCHDOG_MS).unref();
}
