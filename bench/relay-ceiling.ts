/**
 * The transport ceiling with a process boundary: the ceiling server's work (bench/ceiling-server.ts),
 * but each request message crosses to a child process and its reply comes back from there, over a
 * socket pair (the child's fd 3), framed as the plugin's channel is (src/contract/channel.ts). No row
 * is decoded and no script runs: it is the least any design that keeps scripts out of the gRPC process
 * can cost, so its figures bound what such a design can reach on this machine.
 *
 * With BENCH_RELAY_ISOLATE=1 the child also passes each message through an isolated-vm isolate, as
 * the rules ask of every script: the bytes copied in, a function run under a time limit that
 * hands them back, the result copied out (one isolate and one context, made at start). That is the
 * least a design that runs every task in an isolate can add to the relay.
 *
 *   BENCH_PORT=<port> [BENCH_RELAY_ISOLATE=1] node --no-node-snapshot dist/bench/relay-ceiling.js
 */
import { spawn } from 'node:child_process';
import net from 'node:net';

import type * as grpc from '@grpc/grpc-js';
import { Frame, FrameReader, frameHeader } from '../src/contract/channel';
import { scriptShape, serveRaw } from './raw-server';
import { countRows, numericReply } from './wire';

const CHILD_FD = 3;
/** The task id's low bit says what the child answers: 1 echo (strings), 0 numeric rows. */
const ECHO = 1;

/** The task's bytes back, through an isolate when BENCH_RELAY_ISOLATE=1 asks for one. */
function passThrough(): (bytes: Uint8Array) => Uint8Array {
  if (process.env['BENCH_RELAY_ISOLATE'] !== '1') return (bytes) => bytes;
  // Loaded in the child only: the relay's gRPC process never loads isolated-vm, as the plugin's front.
  const ivm = require('isolated-vm') as typeof import('isolated-vm');
  const isolate = new ivm.Isolate({ memoryLimit: 128 });
  const context = isolate.createContextSync();
  const echo = context.evalSync('(function (bytes) { return bytes; })', { reference: true }) as import('isolated-vm').Reference<
    (bytes: Uint8Array) => Uint8Array
  >;
  return (bytes) =>
    echo.applySync(undefined, [new ivm.ExternalCopy(bytes).copyInto()], { timeout: 5_000, result: { copy: true } }) as Uint8Array;
}

/** The child: answers each TASK frame with a RESULT frame of the same id. */
function child(): void {
  const socket = new net.Socket({ fd: CHILD_FD, readable: true, writable: true });
  const pass = passThrough();
  const reader = new FrameReader((frame) => {
    const bytes = pass(frame.payload);
    const reply =
      (frame.id & ECHO) === ECHO ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) : numericReply(countRows(bytes));
    socket.write(frameHeader(Frame.RESULT, frame.id, reply.length));
    socket.write(reply);
  });
  socket.on('data', (chunk: Buffer) => reader.push(chunk));
  socket.on('close', () => process.exit(0));
}

function server(): void {
  const sandbox = spawn(process.execPath, [...process.execArgv, __filename], {
    env: { ...process.env, BENCH_RELAY_CHILD: '1' },
    stdio: ['ignore', 'inherit', 'inherit', 'pipe'],
  });
  const channel = sandbox.stdio[CHILD_FD] as net.Socket;
  /** Replies come back in the order their messages went; each names the call to write it to. */
  const waiting: { call: grpc.ServerDuplexStream<Buffer, Buffer>; last: boolean }[] = [];
  let nextId = 0;
  const reader = new FrameReader((frame) => {
    const entry = waiting.shift();
    if (entry === undefined) return;
    const reply = Buffer.from(frame.payload.buffer, frame.payload.byteOffset, frame.payload.byteLength);
    if (reply.length > 0 && !entry.call.write(reply)) entry.call.pause();
    if (entry.last) entry.call.end();
  });
  channel.on('data', (chunk: Buffer) => reader.push(chunk));

  const send = (call: grpc.ServerDuplexStream<Buffer, Buffer>, message: Buffer, echo: boolean, last: boolean): void => {
    nextId = (nextId + 2) & 0x7ffffffe;
    channel.write(frameHeader(Frame.TASK, nextId | (echo ? ECHO : 0), message.length));
    channel.write(message);
    waiting.push({ call, last });
  };

  const evaluateScript = (call: grpc.ServerDuplexStream<Buffer, Buffer>): void => {
    const { aggregate, echo } = scriptShape(call);
    call.on('data', (message: Buffer) => {
      if (!aggregate) send(call, message, echo, false);
    });
    call.on('drain', () => call.resume());
    call.on('end', () => {
      // The last reply (or none) ends the call once every earlier one came back.
      send(call, aggregate ? numericReply(1) : Buffer.alloc(0), true, true);
    });
    call.on('error', () => undefined);
  };

  serveRaw('relay ceiling', evaluateScript, () => sandbox.kill());
}

if (process.env['BENCH_RELAY_CHILD'] === '1') child();
else server();
