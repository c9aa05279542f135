/** The command line of npm run try: parameters in the order typed, the CSV delimiter, and refusals that say what is accepted. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { sniffDelimiter } from '../../src/cli/input';
import { parseTryArgs, UsageError } from '../../src/cli/options';

const parse = (...argv: string[]) => parseTryArgs(argv, '/starter');

describe('npm run try options', () => {
  it('--arg and --const are parameters in the order typed, after the values that follow the script', () => {
    const options = parse('args.join()', '1', '2', '--const', 'x', '--arg', 'a,b');
    assert.deepEqual(options?.values, {
      kind: 'lists',
      lists: [
        { kind: 'list', text: '1,2' },
        { kind: 'const', value: 'x' },
        { kind: 'list', text: 'a,b' },
      ],
    });
  });

  it('--const follows the CSV columns; --delimiter takes one character or tab', () => {
    const options = parse('--csv', 'f.csv', '--columns', 'Sales', '--const', '0.9', '--delimiter', 'tab', 'x');
    assert.deepEqual(options?.values, { kind: 'csv', file: 'f.csv', columns: ['Sales'], delimiter: '\t', constants: ['0.9'] });
    assert.throws(() => parse('--csv', 'f.csv', '--delimiter', ';;', 'x'), /--delimiter ";;": expected one character/);
    assert.throws(() => parse('--delimiter', ';', 'x', '1'), /--delimiter is for --csv/);
  });

  it('--function takes no script: every positional is a value; its folder defaults to the one given', () => {
    const options = parse('--function', 'Median', '1', '2');
    assert.deepEqual(options?.callee, { kind: 'function', name: 'Median', functionsDir: '/starter' });
    assert.deepEqual(options?.values, { kind: 'lists', lists: [{ kind: 'list', text: '1,2' }] });
    assert.throws(() => parse('--function', 'Median', '--fn', 'ScriptAggr', '1'), /--fn and --types are for scripts/);
    assert.throws(() => parse('--functions', 'dir', 'args[0]', '1'), /--functions is for --function NAME/);
  });

  it('--group-by needs a CSV column', () => {
    assert.throws(() => parse('--group-by', 'Region', '--fn', 'ScriptAggr', 'args[0]', '1'), UsageError);
  });

  it('the delimiter is sniffed from the header line, quotes left out; a tie goes to the comma', () => {
    assert.equal(sniffDelimiter('Region;Sales;Cost\n'), ';');
    assert.equal(sniffDelimiter('a\tb\tc\n'), '\t');
    assert.equal(sniffDelimiter('"a;b;c",d\n'), ',');
    assert.equal(sniffDelimiter('a;b,c\n'), ',');
    assert.equal(sniffDelimiter('\uFEFFName|Sales\n'), '|');
  });
});
