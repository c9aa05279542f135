/** The channel's frames: whole however the stream cuts them, and a frame that spans chunks owns its buffer. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { type CallSpec, Frame, FrameReader, frameHeader, jsonFrame, openCallFrame, type ReceivedFrame } from '../../src/contract/channel';
import { DataType } from '../../src/contract/task';

function frame(id: number, payloadBytes: number): Buffer {
  const payload = Buffer.alloc(payloadBytes, id % 251);
  return Buffer.concat([frameHeader(Frame.TASK, id, payloadBytes), payload]);
}

function read(stream: Buffer, cuts: number[]): ReceivedFrame[] {
  const frames: ReceivedFrame[] = [];
  const reader = new FrameReader((f) => frames.push({ ...f, payload: Buffer.from(f.payload) }));
  let at = 0;
  for (const cut of [...cuts, stream.length]) {
    reader.push(stream.subarray(at, Math.min(cut, stream.length)));
    at = Math.min(cut, stream.length);
  }
  return frames;
}

describe('FrameReader', () => {
  const frames = [frame(1, 0), frame(2, 5), jsonFrame(Frame.READY, 0, { threads: 2 }), frame(3, 200_000), frame(4, 3), frame(5, 70_000)];
  const stream = Buffer.concat(frames);

  for (const [name, step] of [
    ['in one piece', stream.length],
    ['a byte at a time', 1],
    ['in 7-byte pieces (headers cut too)', 7],
    ['in 64 KiB pieces', 65_536],
  ] as const) {
    it(`reads every frame whole, ${name}`, () => {
      const cuts = [];
      for (let at = step; at < stream.length; at += step) cuts.push(at);
      const got = read(stream, cuts);
      assert.deepEqual(
        got.map((f) => [f.kind, f.id, f.payload.length]),
        [
          [Frame.TASK, 1, 0],
          [Frame.TASK, 2, 5],
          [Frame.READY, 0, 13],
          [Frame.TASK, 3, 200_000],
          [Frame.TASK, 4, 3],
          [Frame.TASK, 5, 70_000],
        ],
      );
      for (const f of got) if (f.kind === Frame.TASK) assert.ok(f.payload.every((b) => b === f.id % 251));
    });
  }

  it('a frame that spans chunks owns its buffer; one inside a chunk is a view', () => {
    const owned: [number, boolean, number][] = [];
    const reader = new FrameReader((f) => owned.push([f.id, f.owned, f.payload.buffer.byteLength]));
    reader.push(Buffer.concat([frame(1, 10), frame(2, 100_000)]).subarray(0, 50_000));
    reader.push(Buffer.concat([frame(1, 10), frame(2, 100_000)]).subarray(50_000));
    assert.deepEqual(owned[0]?.slice(0, 2), [1, false]);
    assert.deepEqual(owned[1], [2, true, 100_009]);
  });

  it('refuses a frame larger than any side sends', () => {
    const reader = new FrameReader(() => undefined);
    const header = frameHeader(Frame.RESULT, 1, 0);
    header.writeUInt32LE(0xffffffff, 0);
    assert.throws(() => reader.push(header), /larger than any the other side sends/);
  });
});

describe('OPEN_CALL frames of plugin functions', () => {
  it("carry their file's script, whose bytes are shared by the file's functions, and read back as the call", () => {
    const script = `(function () { ${'/* helpers */ '.repeat(10_000)} })()`;
    const spec = (entry: number): CallSpec['spec'] => ({
      script,
      paramTypes: [DataType.NUMERIC],
      boundNames: [],
      returnType: DataType.NUMERIC,
      mode: 'rows',
      tableAllowed: false,
      factory: true,
      entry,
    });
    const calls: CallSpec[] = [0, 1].map((entry) => ({
      spec: spec(entry),
      contextKey: `k${entry}`,
      callTimeoutMs: 5_000,
      maxReplyBytes: 1024,
    }));
    const frames = calls.map((call, i) => openCallFrame(i + 1, call));
    for (const [i, pieces] of frames.entries()) {
      const [received] = read(Buffer.concat(pieces), []);
      assert.equal(received?.kind, Frame.OPEN_CALL);
      assert.deepEqual(JSON.parse(Buffer.from(received?.payload ?? []).toString('utf8')), calls[i]);
    }
    const big = (pieces: Buffer[]): Buffer[] => pieces.filter((piece) => piece.length > script.length);
    assert.equal(big(frames[0] ?? []).length, 1);
    assert.equal(big(frames[0] ?? [])[0], big(frames[1] ?? [])[0]);
  });
});
