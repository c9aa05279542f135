/** The connection limit is derived from the descriptor limit so that connections never take what sandbox spawns need. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { DEFAULT_MAX_CONNECTIONS, descriptorBudget, softDescriptorLimit } from '../../src/grpc/admission';
import {
  ConnectionTable,
  MAX_HEADER_BYTES_PER_CONNECTION,
  MAX_RESETS_PER_HOST_PER_SECOND,
  MAX_WATCHES_PER_CONNECTION,
  MIN_RESETS_TO_CLOSE,
  streamsPerConnection,
  type TrackedConnection,
  worthOf,
} from '../../src/grpc/connection-table';
import { ConfigError } from '../../src/ops/config';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            400                  4096                 files
Max locked memory         8388608              8388608              bytes
`;

describe('descriptor budget', () => {
  it('reads the soft "Max open files" of /proc/self/limits', () => {
    assert.equal(softDescriptorLimit(LIMITS), 400);
    assert.equal(softDescriptorLimit(LIMITS.replace('400                  4096', 'unlimited            unlimited')), undefined);
    assert.equal(softDescriptorLimit(''), undefined);
  });

  it('keeps descriptors for the front, each sandbox process and the metrics endpoint; connections get the rest, up to the default', () => {
    const one = descriptorBudget(300, { sandboxProcesses: 1, metrics: false, maxConnections: undefined });
    const four = descriptorBudget(300, { sandboxProcesses: 4, metrics: true, maxConnections: undefined });
    assert.ok(four.reserved > one.reserved);
    assert.ok(one.maxConnections < DEFAULT_MAX_CONNECTIONS);
    assert.deepEqual(one, {
      descriptorLimit: 300,
      reserved: one.reserved,
      maxConnections: 300 - one.reserved,
      maxConnectionsPerHost: Math.ceil((300 - one.reserved) / 2),
    });
    assert.equal(four.maxConnections, 300 - four.reserved);
    assert.equal(
      descriptorBudget(1_048_576, { sandboxProcesses: 4, metrics: true, maxConnections: undefined }).maxConnections,
      DEFAULT_MAX_CONNECTIONS,
    );
    assert.equal(
      descriptorBudget(undefined, { sandboxProcesses: 1, metrics: false, maxConnections: undefined }).maxConnections,
      DEFAULT_MAX_CONNECTIONS,
    );
  });

  it('takes SSE_MAX_CONNECTIONS when it fits, and refuses it, naming both limits, when it does not', () => {
    const fits = descriptorBudget(400, { sandboxProcesses: 1, metrics: false, maxConnections: 100 });
    assert.equal(fits.maxConnections, 100);
    assert.throws(
      () => descriptorBudget(400, { sandboxProcesses: 1, metrics: false, maxConnections: 400 }),
      (error: unknown) =>
        error instanceof ConfigError &&
        /^SSE_MAX_CONNECTIONS=400 does not fit the descriptor limit: this process may open 400 files and keeps \d+ for itself and its sandbox processes, which leaves \d+ for connections; lower SSE_MAX_CONNECTIONS or raise the limit/.test(
          error.message,
        ),
    );
  });

  it('gives one host half the connections unless SSE_MAX_CONNECTIONS_PER_HOST says otherwise, never more than all', () => {
    const needs = { sandboxProcesses: 1, metrics: false, maxConnections: 100 };
    assert.equal(descriptorBudget(undefined, needs).maxConnectionsPerHost, 50);
    assert.equal(descriptorBudget(undefined, { ...needs, maxConnections: 5 }).maxConnectionsPerHost, 3);
    assert.equal(descriptorBudget(undefined, { ...needs, maxConnectionsPerHost: 10 }).maxConnectionsPerHost, 10);
    assert.equal(descriptorBudget(undefined, { ...needs, maxConnectionsPerHost: 1_000 }).maxConnectionsPerHost, 100);
  });

  it('refuses a descriptor limit that leaves almost nothing for connections', () => {
    assert.throws(
      () => descriptorBudget(80, { sandboxProcesses: 2, metrics: false, maxConnections: undefined }),
      (error: unknown) =>
        error instanceof ConfigError && /^the descriptor limit is too low: this process may open 80 files/.test(error.message),
    );
  });
});

describe('connection table: whom a newcomer may take a slot from when all are taken', () => {
  function fill(table: ConnectionTable, hosts: readonly string[]): TrackedConnection[] {
    return hosts.map((host, i) => table.add(host, `${host}|${i}`, () => undefined));
  }

  it("past the per-host share takes the host's own oldest idle slot, or refuses when all are busy; admits freely below the limit", () => {
    const table = new ConnectionTable(4, 2);
    const [a1, a2] = fill(table, ['a', 'a']);
    for (const connection of [a1, a2]) table.callOpened((connection as TrackedConnection).key);
    assert.deepEqual(table.admit('a'), { admit: false, reason: 'host' });
    assert.deepEqual(table.admit('b'), { admit: true });
    // A neighbour in the same network holding the share idle does not keep the host's newcomer out.
    table.callClosed((a2 as TrackedConnection).key);
    table.callClosed((a1 as TrackedConnection).key);
    assert.deepEqual(table.admit('a'), { admit: true, evict: a1 });
  });

  it('takes a pending slot first, the oldest of the host holding most', () => {
    const table = new ConnectionTable(4, 4);
    const [a1, a2, a3, b1] = fill(table, ['a', 'a', 'a', 'b']);
    table.callOpened((a1 as TrackedConnection).key);
    (a2 as TrackedConnection).proven = true;
    const admission = table.admit('c');
    assert.equal(admission.admit && admission.evict, a3);
    table.closed(a3 as TrackedConnection);
    table.add('c', 'c|0', () => undefined);
    // Now b's pending one (b holds 1, the newcomer's host 0) goes before a's idle one.
    const next = table.admit('d');
    assert.equal(next.admit && next.evict, b1);
  });

  it("takes a pending slot before any verified one even from a host holding no more than the newcomer's: pending slots are no share", () => {
    const table = new ConnectionTable(5, 5);
    const [q1, q2, a1, b1, c1] = fill(table, ['qlik', 'qlik', 'a', 'b', 'c']);
    // Two engines of one /24 hold verified, idle connections; three /24s hold one handshake each that never ends.
    for (const engine of [q1, q2]) (engine as TrackedConnection).proven = true;
    // A newcomer of a host already holding one: before, only qlik held more, and its idle connection was closed.
    assert.deepEqual(table.admit('a'), { admit: true, evict: a1 });
    table.closed(a1 as TrackedConnection);
    table.add('a', 'a|9', () => undefined);
    // The oldest handshake left goes next, whoever's; the engines keep both of theirs.
    assert.deepEqual(table.admit('d'), { admit: true, evict: b1 });
    table.closed(b1 as TrackedConnection);
    table.add('d', 'd|9', () => undefined);
    assert.deepEqual(table.admit('e'), { admit: true, evict: c1 });
    assert.equal(table.countOf('qlik'), 2);
  });

  it("takes the oldest handshake of a host holding as many pending ones, not an engine's new one because the engine holds verified ones", () => {
    const table = new ConnectionTable(5, 5);
    const [q1, q2, a1, b1] = fill(table, ['qlik', 'qlik', 'a', 'b']);
    for (const engine of [q1, q2]) (engine as TrackedConnection).proven = true;
    // The engines' /24 opens a third connection (a reconnect, a health probe): its handshake is under way.
    const q3 = table.add('qlik', 'qlik|3', () => undefined);
    // Counted by all its slots, qlik "held most" (3) and its new handshake was closed for each newcomer.
    assert.deepEqual(table.admit('c'), { admit: true, evict: a1 });
    table.closed(a1 as TrackedConnection);
    table.add('c', 'c|0', () => undefined);
    assert.deepEqual(table.admit('d'), { admit: true, evict: b1 });
    assert.equal(q3.proven, false);
    assert.equal(table.countOf('qlik'), 3);
  });

  it('takes a busy slot only from a host holding two more than the newcomer, its newest one', () => {
    const table = new ConnectionTable(4, 4);
    const connections = fill(table, ['a', 'a', 'a', 'b']);
    for (const connection of connections) table.callOpened(connection.key);
    // a holds 3, the newcomer's host 0: after the move a still holds 2 against c's 1.
    assert.deepEqual(table.admit('c'), { admit: true, evict: connections[2] });
    table.closed(connections[2] as TrackedConnection);
    table.callOpened(table.add('c', 'c|0', () => undefined).key);
    // Now a holds 2, b and c 1 each: cutting a call would only move the unfairness, so b is refused.
    assert.deepEqual(table.admit('b'), { admit: false, reason: 'full' });
    assert.deepEqual(table.admit('d'), { admit: true, evict: connections[1] });
  });

  it("takes from the host holding most before an idle slot of a host holding few (Qlik's engine keeps its own)", () => {
    const table = new ConnectionTable(6, 6);
    const connections = fill(table, ['qlik', 'qlik', 'a', 'a', 'a', 'a']);
    for (const connection of connections.slice(0, 2)) (connection as TrackedConnection).proven = true;
    for (const connection of connections.slice(2)) table.callOpened(connection.key);
    assert.deepEqual(table.admit('d'), { admit: true, evict: connections[5] });
    // A pending slot is still taken before any proven one, whoever holds it.
    const small = new ConnectionTable(3, 3);
    const [x1, x2, y1] = fill(small, ['x', 'x', 'y']);
    small.callOpened((x1 as TrackedConnection).key);
    small.callOpened((x2 as TrackedConnection).key);
    assert.deepEqual(small.admit('z'), { admit: true, evict: y1 });
  });

  it("shares a host's streams among its connections, halving as they double, never below one", () => {
    assert.deepEqual([1, 2, 3, 4, 5, 8, 9, 16, 17, 64, 65, 256].map(streamsPerConnection), [100, 50, 25, 25, 12, 12, 6, 6, 3, 1, 1, 1]);
    const table = new ConnectionTable(8, 8);
    const sent: [string, number][] = [];
    const session = (name: string) => ({
      settings: ({ maxConcurrentStreams }: { maxConcurrentStreams: number }) => sent.push([name, maxConcurrentStreams]),
    });
    const [a1] = fill(table, ['a']);
    table.sessionOpened((a1 as TrackedConnection).key, session('a1'));
    assert.equal(sent.length, 0, 'one connection keeps the SETTINGS every connection starts with');
    const b1 = table.add('b', 'b|0', () => undefined);
    table.sessionOpened(b1.key, session('b1'));
    const a2 = table.add('a', 'a|1', () => undefined);
    table.sessionOpened(a2.key, session('a2'));
    assert.deepEqual(sent, [
      ['a1', 50],
      ['a2', 50],
    ]);
    table.closed(a2);
    assert.deepEqual(sent.at(-1), ['a1', 100]);
    assert.equal(sent.filter(([name]) => name === 'b1').length, 0, "another host's connections keep theirs");
  });

  it("closes a host's connections that reset many streams once the host passes its rate; its quiet ones and newcomers stay", () => {
    const table = new ConnectionTable(8, 8);
    const closed: string[] = [];
    const [a1, a2, quiet] = ['a|1', 'a|2', 'a|3'].map((key) => table.add('a', key, () => closed.push(key)));
    const b1 = table.add('b', 'b|1', () => closed.push('b|1'));
    // Spread over two windows, the same number is no rapid reset.
    for (let i = 0; i < MAX_RESETS_PER_HOST_PER_SECOND; i++)
      assert.equal(table.streamReset((a1 as TrackedConnection).key, 100 + i / 10), 0);
    // Then a1 and a2 reset 490 each and the quiet one 20: the host is at its rate, nothing closed yet.
    for (let i = 0; i < 490; i++) {
      assert.equal(table.streamReset((a1 as TrackedConnection).key, 1_200 + i / 10), 0);
      assert.equal(table.streamReset((a2 as TrackedConnection).key, 1_200 + i / 10), 0);
    }
    assert.ok(20 < MIN_RESETS_TO_CLOSE);
    for (let i = 0; i < 20; i++) assert.equal(table.streamReset((quiet as TrackedConnection).key, 1_260), 0);
    assert.equal(table.streamReset(b1.key, 1_260), 0);
    assert.equal(table.streamReset((a1 as TrackedConnection).key, 1_300), 2);
    assert.deepEqual(closed.sort(), ['a|1', 'a|2']);
    assert.equal(table.countOf('a'), 1);
    assert.equal(table.countOf('b'), 1);
    assert.deepEqual(table.admit('a'), { admit: true });
  });

  it('counts calls per connection: proven at its first call, busy while one is open', () => {
    const table = new ConnectionTable(2, 2);
    const [a] = fill(table, ['a']);
    const connection = a as TrackedConnection;
    assert.equal(worthOf(connection), 'pending');
    table.callOpened(connection.key);
    table.callOpened(connection.key);
    assert.equal(worthOf(connection), 'busy');
    table.callClosed(connection.key);
    table.callClosed(connection.key);
    assert.equal(worthOf(connection), 'idle');
    table.closed(connection);
    table.closed(connection);
    assert.equal(table.size, 0);
    assert.equal(table.countOf('a'), 0);
    table.callOpened(connection.key);
  });

  it("refuses a call that would make its connection's open calls hold too many header bytes, and gives them back", () => {
    const table = new ConnectionTable(2, 2);
    const [a] = fill(table, ['a']);
    const key = (a as TrackedConnection).key;
    assert.equal(table.callOpened(key, MAX_HEADER_BYTES_PER_CONNECTION - 10), undefined);
    assert.equal(table.callOpened(key, 11), 'headers');
    assert.equal(table.headerBytesOf(key), MAX_HEADER_BYTES_PER_CONNECTION - 10);
    assert.equal((a as TrackedConnection).openCalls, 1);
    table.callClosed(key, MAX_HEADER_BYTES_PER_CONNECTION - 10);
    assert.equal(table.callOpened(key, 11), undefined);
  });

  it('health calls leave a connection idle, so one that holds only Watch calls gives up its slot; Watch calls per connection are bounded', () => {
    const table = new ConnectionTable(2, 2);
    const [a, b] = fill(table, ['a', 'b']);
    const connection = a as TrackedConnection;
    for (let i = 0; i < MAX_WATCHES_PER_CONNECTION; i++) assert.equal(table.callOpened(connection.key, 100, 'watch'), undefined);
    assert.equal(table.callOpened(connection.key, 100, 'watch'), 'watches');
    assert.equal(table.callOpened(connection.key, 100, 'health'), undefined);
    assert.equal(worthOf(connection), 'idle');
    assert.equal(table.headerBytesOf(connection.key), 100 * (MAX_WATCHES_PER_CONNECTION + 1));
    table.callOpened((b as TrackedConnection).key);
    // A newcomer from a third host takes the slot of the connection that only watches.
    const admission = table.admit('c');
    assert.equal(admission.admit && admission.evict, connection);
    table.callClosed(connection.key, 100, 'watch');
    assert.equal(table.callOpened(connection.key, 100, 'watch'), undefined);
  });
});
