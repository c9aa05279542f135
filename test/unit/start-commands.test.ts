/** Every way the plugin is documented to start runs the front with the same Node flags. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

import { FRONT_NODE_FLAGS } from '../../src/ops/node-flags';

const ROOT = path.join(__dirname, '..', '..', '..');

function read(file: string): string {
  return readFileSync(path.join(ROOT, file), 'utf8');
}

/** The flags between `node` and the entry point in one command line. */
function flagsBefore(entry: string, command: string): string[] {
  const words = command.replace(/[[\]",]/g, ' ').split(/\s+/);
  const at = words.findIndex((word) => word.endsWith(entry));
  assert.ok(at > 0, `no ${entry} in: ${command}`);
  return words.slice(0, at).filter((word) => word.startsWith('--'));
}

describe('start commands', () => {
  const commands: Record<string, string> = {
    'npm start': (JSON.parse(read('package.json')) as { scripts: { start: string } }).scripts.start,
    Dockerfile:
      read('Dockerfile')
        .split('\n')
        .find((line) => line.startsWith('CMD ')) ?? '',
    'systemd unit':
      read('deploy/systemd/qlik-sse-js.service')
        .split('\n')
        .find((line) => line.startsWith('ExecStart=')) ?? '',
    'Windows service':
      read('deploy/windows.md')
        .split('\n')
        .find((line) => line.startsWith('nssm install')) ?? '',
  };
  for (const [name, command] of Object.entries(commands)) {
    it(`${name} starts the front with its node flags`, () => {
      assert.deepEqual(flagsBefore('main.js', command), FRONT_NODE_FLAGS);
    });
  }
});
