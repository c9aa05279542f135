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
 *
 * The steps: read the command line and the values (before anything starts, so a mistake costs
 * nothing), open the plugin (openPlugin), learn the call's shape (a script's from its Qlik function,
 * a plugin function's from the plugin's capabilities), make one call, or one per group with
 * --group-by, and print the result, the script's console lines and the notes an author needs.
 */

import path from 'node:path';

import { startPlugin } from '../app';
import { lacksReturn } from '../calls/missing-return';
import { FunctionType } from '../contract/task';
import { statusName } from '../grpc/status';
import { type Config, ConfigError, loadConfig } from '../ops/config';
import { createLogger } from '../ops/log';
import { type CallShape, functionShape, scriptShape } from './call-shape';
import { type CallInput, callInput, readValues, type ValueColumns } from './input';
import { FLAG_OF_VARIABLE, parseTryArgs, type TryOptions, USAGE, UsageError } from './options';
import { groupedTable, isNoStore, type ResultTable, render, resultTable, safeText, tryLogDestination } from './output';
import { type CallResult, QlikClient } from './qlik-client';
import { connectTarget, describeCapabilities, type Target } from './target';

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
/** --function without --functions and without SSE_FUNCTIONS_DIR: the repository's starter library. */
const STARTER_FUNCTIONS_DIR = path.join(__dirname, '..', '..', '..', 'examples', 'functions');
const COMMON = { appId: 'npm run try', userId: 'UserDirectory=LOCAL; UserId=try' };

interface Prepared {
  readonly options: TryOptions;
  readonly values: ValueColumns;
  readonly config: Config;
}

/** A plugin to call, and how to let it go. */
interface PluginSession {
  readonly client: QlikClient;
  stop(): Promise<void>;
}

/** What the calls gave: the table to print, or the first failure. */
type Outcome =
  | { readonly ok: true; readonly table: ResultTable; readonly noStore: boolean }
  | { readonly ok: false; readonly result: CallResult; readonly group: string | undefined };

async function run(argv: readonly string[]): Promise<number> {
  let prepared: Prepared | undefined;
  try {
    prepared = prepare(argv);
  } catch (error) {
    return usageFailure(error);
  }
  if (prepared === undefined) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const { options, config } = prepared;
  const session = options.target === undefined ? await openPlugin(config) : await openTarget(options.target);
  let outcome: Outcome;
  try {
    outcome = await callAll(session.client, prepared);
  } catch (error) {
    return usageFailure(error);
  } finally {
    await session.stop();
  }
  return report(outcome, options);
}

function prepare(argv: readonly string[]): Prepared | undefined {
  const options = parseTryArgs(argv, process.env['SSE_FUNCTIONS_DIR'] ?? STARTER_FUNCTIONS_DIR);
  if (options === undefined) return undefined;
  return { options, values: readValues(options), config: tryConfig(options) };
}

function usageFailure(error: unknown): number {
  if (!(error instanceof UsageError || error instanceof ConfigError)) throw error;
  process.stderr.write(`try: ${error.message}\n(npm run try -- --help shows the options)\n`);
  return EXIT_USAGE;
}

function report(outcome: Outcome, options: TryOptions): number {
  if (!outcome.ok) {
    const group = outcome.group === undefined ? '' : ` (group ${options.groupBy}=${outcome.group})`;
    process.stderr.write(`${statusName(outcome.result.code)}: ${safeText(outcome.result.details)}${safeText(group)}\n`);
    return EXIT_CALL_FAILED;
  }
  process.stdout.write(render(outcome.table, options.format));
  if (options.callee.kind === 'script' && lacksReturn(options.callee.script))
    process.stderr.write('note: the script is a function body without a return statement: every row gives a Qlik null\n');
  if (options.format === 'csv' && outcome.table.fieldTypes !== undefined)
    process.stderr.write(
      `note: field types ${outcome.table.columns.map((name, i) => `${name} ${outcome.table.fieldTypes?.[i]}`).join(', ')}\n`,
    );
  if (outcome.noStore)
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
      ...(options.callee.kind === 'function' ? { SSE_FUNCTIONS_DIR: options.callee.functionsDir } : {}),
      SSE_PORT: '0',
      SSE_HOST: '127.0.0.1',
      SSE_WORKERS: '1',
      // info: a script's console lines are logged at info (tryLogDestination prints only those and errors).
      SSE_LOG_LEVEL: 'info',
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

/**
 * The plugin started inside this command. The script's console lines and the plugin's errors go to
 * stderr: stdout holds nothing but the result.
 */
async function openPlugin(config: Config): Promise<PluginSession> {
  const plugin = await startPlugin(config, createLogger('info', tryLogDestination(process.stderr), 'json'));
  const client = new QlikClient(`127.0.0.1:${plugin.port}`);
  return {
    client,
    async stop() {
      client.close();
      await plugin.stop(1_000);
    },
  };
}

/** A plugin running elsewhere (--target): a connection that fails throws a TargetError saying why. */
async function openTarget(target: Target): Promise<PluginSession> {
  const { client, capabilities } = await connectTarget(target);
  process.stderr.write(`${describeCapabilities(target, capabilities)}\n`);
  return { client, stop: async () => client.close() };
}

async function callAll(client: QlikClient, { options, values, config }: Prepared): Promise<Outcome> {
  const { callee } = options;
  const shape =
    callee.kind === 'script' ? scriptShape(callee, values.columns.length) : await functionShape(client, callee, values.columns.length);
  const deadlineMs = config.scriptTimeoutMs + CALL_DEADLINE_EXTRA_MS;
  const input = callInput(values.columns, shape.paramTypes);
  if (values.groupColumn === undefined) {
    const result = await callOnce(client, shape, input, deadlineMs);
    if (result.code !== 0) return { ok: false, result, group: undefined };
    return { ok: true, table: resultTable(result, shape.label, shape.returnType), noStore: isNoStore(result) };
  }
  if (shape.functionType !== FunctionType.AGGREGATION)
    throw new UsageError(`--group-by is for aggregations (ScriptAggr…, or an aggregation plugin function); ${shape.label} runs per row`);
  const results: { group: string; table: ResultTable }[] = [];
  let noStore = false;
  for (const [group, rows] of groupRows(input.rows, values.groupColumn.values)) {
    const result = await callOnce(client, shape, { params: input.params, rows }, deadlineMs);
    if (result.code !== 0) return { ok: false, result, group };
    noStore ||= isNoStore(result);
    results.push({ group, table: resultTable(result, shape.label, shape.returnType) });
  }
  return { ok: true, table: groupedTable(values.groupColumn.name, results), noStore };
}

/** The rows of each value of the group column, in the order the values first appear. */
function groupRows<Row>(rows: readonly Row[], groupValues: readonly string[]): Map<string, Row[]> {
  const groups = new Map<string, Row[]>();
  rows.forEach((row, i) => {
    const group = groupValues[i] ?? '';
    const members = groups.get(group);
    if (members) members.push(row);
    else groups.set(group, [row]);
  });
  return groups;
}

function callOnce(client: QlikClient, shape: CallShape, input: CallInput, deadlineMs: number): Promise<CallResult> {
  const common = { ...COMMON, cardinality: input.rows.length };
  if (shape.request.kind === 'function')
    return client.executeFunction({ functionId: shape.request.functionId, bundles: bundles(input), common, deadlineMs });
  return client.evaluate({
    script: shape.request.script,
    functionType: shape.functionType,
    returnType: shape.returnType,
    params: input.params,
    bundles: bundles(input),
    common,
    deadlineMs,
  });
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
