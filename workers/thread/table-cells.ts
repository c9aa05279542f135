/**
 * Encodes a table-shaped result (every row an array, or every row a plain object) into cells that
 * are ready Row.duals entries, in the sandbox process and not in the front: the front then joins
 * chunks by copying bytes. The encoded size is what counts against the memory limit, text included,
 * so a table of one cached 10 KB string in every cell is charged 10 KB a cell (as it will be sent).
 */
import { tableTooLargeError } from '../../src/contract/limit-errors';
import { dualCellBytes, encodeDualCell } from '../../src/contract/replies';
import type { TableChunk } from '../../src/contract/task';
import type { RuntimeTable } from './isolate-runtime';

export function encodeTableChunk(table: RuntimeTable, rows: number, maxBytes: number, memoryLimitMb: number): TableChunk {
  const cellCount = rows * table.columns.length;
  const cellEnds = new Uint32Array(cellCount);
  const kinds = new Uint8Array(cellCount);
  let total = 0;
  table.columns.forEach((column, c) => {
    for (let r = 0; r < rows; r++) {
      const str = column.strs[r] ?? '';
      total += dualCellBytes(str === '' ? 0 : Buffer.byteLength(str, 'utf8'));
      if (total > maxBytes) throw tableTooLargeError(memoryLimitMb);
      cellEnds[c * rows + r] = total;
      kinds[c * rows + r] = column.kinds[r] as number;
    }
  });
  const cells = Buffer.allocUnsafeSlow(total);
  let at = 0;
  table.columns.forEach((column) => {
    for (let r = 0; r < rows; r++) at = encodeDualCell(cells, at, column.nums[r] as number, column.strs[r] ?? '');
  });
  return { shape: table.shape, keys: table.keys, rows, cells, cellEnds, kinds };
}
