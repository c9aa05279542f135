/** A call's console bounds in the front (src/calls/call-console.ts), over the lines of several tasks. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { CallConsole, consoleLineBytes } from '../../src/calls/call-console';
import { LogRate } from '../../src/calls/log-rate';
import { createLogger } from '../../src/ops/log';

const OWNER = { requestId: 'r-1', appId: 'app', userId: 'user' };

function collected(maxLines: number, maxBytes: number, rate?: LogRate): { console: CallConsole; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger('info', { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { console: new CallConsole(logger, OWNER, maxLines, maxBytes, rate), lines };
}

describe('CallConsole', () => {
  it('logs lines of every task against one bound, then one line with all that was dropped', () => {
    const { console, lines } = collected(3, 1_000);
    console.add({
      lines: [
        { level: 'info', text: 'a' },
        { level: 'warn', text: 'b' },
      ],
      dropped: 0,
    });
    console.add({
      lines: [
        { level: 'info', text: 'c' },
        { level: 'info', text: 'd' },
      ],
      dropped: 7,
    });
    console.finish();
    assert.deepEqual(
      lines.map((line) => [line['level'], line['msg'], line['requestId'], line['appId'], line['userId'], line['source']]),
      [
        [30, 'a', 'r-1', 'app', 'user', 'console'],
        [40, 'b', 'r-1', 'app', 'user', 'console'],
        [30, 'c', 'r-1', 'app', 'user', 'console'],
        [
          40,
          '8 more console lines dropped: a call keeps 3 lines and 1000 bytes (SSE_CONSOLE_LINES, SSE_CONSOLE_BYTES)',
          'r-1',
          'app',
          'user',
          'console',
        ],
      ],
    );
    assert.equal(lines[3]?.['dropped'], 8);
  });

  it('cuts a line at a character to the bytes left, with an ellipsis, and drops what no longer fits', () => {
    const { console, lines } = collected(10, 10);
    console.add({
      lines: [
        { level: 'info', text: 'ab€€€€' },
        { level: 'info', text: 'x' },
      ],
      dropped: 0,
    });
    console.finish();
    // 10 bytes: "ab" (2) and one "€" (3) fit before the three bytes of "…"; a second "€" would be cut in two.
    // The 8 bytes kept leave room for "x".
    assert.deepEqual(
      lines.map((line) => line['msg']),
      ['ab€…', 'x'],
    );
  });

  it('writes nothing, not even a count, when SSE_CONSOLE_LINES is 0', () => {
    const { console, lines } = collected(0, 1_000);
    console.add({ lines: [], dropped: 12 });
    console.finish();
    assert.deepEqual(lines, []);
  });

  it('writes control characters out, so a line cannot forge log lines or drive a terminal, and counts them as written', () => {
    const { console, lines } = collected(10, 40);
    console.add({ lines: [{ level: 'info', text: 'l1\n07:00 ERROR FAKE\u001b[2J\ttab' }], dropped: 0 });
    console.add({ lines: [{ level: 'info', text: '\u0001'.repeat(10) }], dropped: 0 });
    assert.deepEqual(
      lines.map((line) => line['msg']),
      ['l1\\u000a07:00 ERROR FAKE\\u001b[2J\ttab'],
    );
  });
});

describe('the console rate all calls share', () => {
  it("drops what comes past the rate, across calls, and says so in each call's dropped line; time refills it", () => {
    let nowMs = 0;
    const line = { level: 'info' as const, text: 'x'.repeat(40) };
    // Two lines' worth a second, a burst of two lines.
    const twoLines = 2 * consoleLineBytes(OWNER, line.text);
    const rate = new LogRate(twoLines, twoLines, () => nowMs);
    const first = collected(100, 1_000, rate);
    const second = collected(100, 1_000, rate);
    first.console.add({ lines: [line, line, line], dropped: 0 });
    second.console.add({ lines: [line], dropped: 0 });
    nowMs += 1_000;
    second.console.add({ lines: [line], dropped: 0 });
    first.console.finish();
    second.console.finish();
    assert.equal(first.lines.filter((l) => l['msg'] === line.text).length, 2);
    assert.equal(second.lines.filter((l) => l['msg'] === line.text).length, 1);
    assert.match(
      String(first.lines.at(-1)?.['msg']),
      /^1 more console lines dropped: .*1 of them past the rate all calls share \(SSE_CONSOLE_RATE_KB\)$/,
    );
    assert.equal(second.lines.at(-1)?.['droppedByRate'], 1);
  });

  it('counts what the log gets for a line, its fields and JSON escapes too, within a little of what is written', () => {
    for (const text of ['x'.repeat(204), '"'.repeat(300), '\\'.repeat(50) + 'åäö', '']) {
      const { console, lines } = collected(10, 10_000);
      const written: string[] = [];
      const logger = createLogger('info', { write: (l: string) => void written.push(l) });
      new CallConsole(logger, OWNER, 10, 10_000).add({ lines: [{ level: 'info', text }], dropped: 0 });
      console.add({ lines: [{ level: 'info', text }], dropped: 0 });
      assert.equal(lines[0]?.['msg'], text);
      const actual = Buffer.byteLength(written[0] ?? '');
      const counted = consoleLineBytes(OWNER, text);
      assert.ok(counted >= actual && counted <= actual + 64, `counted ${counted} bytes for a ${actual}-byte line`);
    }
  });

  it('a rate of 0 bounds nothing', () => {
    const rate = new LogRate(0, 0);
    assert.equal(rate.take(1e9), true);
  });
});
