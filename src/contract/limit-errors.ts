/** The errors that name a limit and the variable that sets it, shared by the pool and the workers. */
import { PluginError } from './errors';

export function timeLimitError(timeoutMs: number): PluginError {
  return new PluginError('DEADLINE_EXCEEDED', `the script ran past its time limit of ${timeoutMs} ms (SSE_SCRIPT_TIMEOUT_MS)`);
}

/** `detail` (the script's own RangeError, say) is appended after the limit. */
export function memoryLimitError(memoryLimitMb: number, detail?: string): PluginError {
  const message = `the script went past its memory limit of ${memoryLimitMb} MB (SSE_MEMORY_LIMIT_MB)`;
  return new PluginError('RESOURCE_EXHAUSTED', detail === undefined ? message : `${message}: ${detail}`);
}

export function tableTooLargeError(memoryLimitMb: number): PluginError {
  return new PluginError(
    'RESOURCE_EXHAUSTED',
    `the table result is larger than the memory limit of ${memoryLimitMb} MB (SSE_MEMORY_LIMIT_MB)`,
  );
}

/** A table result with more columns, or longer names, than MAX_TABLE_COLUMNS / MAX_TABLE_KEY_BYTES. */
export function tableColumnsError(maxColumns: number, maxKeyBytes: number): PluginError {
  return new PluginError(
    'RESOURCE_EXHAUSTED',
    `the table result has more than ${maxColumns} columns or more than ${maxKeyBytes} bytes of column names, more than a Qlik engine reads; return fewer columns or shorter names`,
  );
}
