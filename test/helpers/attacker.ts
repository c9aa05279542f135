/**
 * An attacking client in a process of its own, for attacks whose client side is heavy (50,000
 * messages to encode and write): run in the test process, the attacker's own work would share the
 * event loop with the front and the bystander, and the test would measure the attacker, not the front.
 * Run as `node attacker.js <address> <messages>`; prints the call's result as one JSON line.
 */
import { spawn } from 'node:child_process';

import { DataType, encodeBundle, FunctionType, num, QlikClient } from './qlik-client';

export interface AttackResult {
  readonly code: number;
  readonly details: string;
  readonly value: number | undefined;
  readonly ms: number;
}

/** An aggregation of `messages` one-row messages (args[0] is 0, 1, 2, …), answering args[0].length + the last value. */
export function aggregateOneRowMessages(address: string, messages: number): Promise<AttackResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [__filename, address, String(messages)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve(JSON.parse(out) as AttackResult) : reject(new Error(`the attacker exited with ${String(code)}`)),
    );
  });
}

async function main(address: string, count: number): Promise<void> {
  const client = new QlikClient(address);
  const rawMessages = Array.from({ length: count }, (_, i) => encodeBundle([[num(i)]]));
  const started = performance.now();
  const result = await client.evaluate({
    script: `args[0].length + args[0][${count - 1}]`,
    functionType: FunctionType.AGGREGATION,
    returnType: DataType.NUMERIC,
    params: [{ dataType: DataType.NUMERIC }],
    rawMessages,
    deadlineMs: 60_000,
  });
  const ms = performance.now() - started;
  client.close();
  process.stdout.write(`${JSON.stringify({ code: result.code, details: result.details, value: result.rows[0]?.[0]?.numData, ms })}\n`);
}

if (require.main === module) void main(process.argv[2] as string, Number(process.argv[3]));
