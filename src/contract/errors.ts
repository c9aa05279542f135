/**
 * The one error class of the plugin. Every failure that reaches a client is a PluginError with a
 * code from a closed set and a one-line message the app author can act on. Errors cross the worker
 * boundary as plain data ({ code, message }) and are rebuilt here.
 */
export const ERROR_CODES = [
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'RESOURCE_EXHAUSTED',
  'PERMISSION_DENIED',
  'UNIMPLEMENTED',
  'CANCELLED',
  'UNAVAILABLE',
  'INTERNAL',
  // A task the front asked back from its thread to let another host go first (src/sandboxes/task-queue.ts):
  // it runs again, and a client never sees this code.
  'ABORTED',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** What crosses a thread boundary or a log line: never a stack. */
export interface ErrorData {
  readonly code: ErrorCode;
  readonly message: string;
}

const MAX_MESSAGE_CHARS = 500;

/** Cuts a message to one line of bounded length, so no stack or row dump reaches a client. */
export function oneLine(text: string): string {
  const line = text.split(/\r?\n/, 1)[0] ?? '';
  const trimmed = line.trim();
  return trimmed.length > MAX_MESSAGE_CHARS ? `${trimmed.slice(0, MAX_MESSAGE_CHARS - 1)}…` : trimmed;
}

export class PluginError extends Error {
  override readonly name = 'PluginError';

  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(oneLine(message), options);
  }

  toData(): ErrorData {
    return { code: this.code, message: this.message };
  }

  static fromData(data: ErrorData): PluginError {
    return new PluginError(data.code, data.message);
  }

  /** Anything thrown becomes a PluginError; unknown causes are INTERNAL and keep their cause for the log. */
  static from(error: unknown): PluginError {
    if (error instanceof PluginError) return error;
    const text = error instanceof Error ? error.message : String(error);
    return new PluginError('INTERNAL', `internal error: ${text}`, { cause: error });
  }
}

export function isErrorData(value: unknown): value is ErrorData {
  if (typeof value !== 'object' || value === null) return false;
  const { code, message } = value as Record<string, unknown>;
  return typeof message === 'string' && (ERROR_CODES as readonly unknown[]).includes(code);
}
