/**
 * The plugin functions in force, and their hot reload. The folder is read at start and again, after
 * a short quiet time, whenever fs.watch reports a change in it (editors save in bursts: write, rename,
 * chmod). A reload builds a new immutable FunctionSet and swaps it in one assignment: a call keeps
 * the PluginFunction (and its ScriptSpec) it looked up when it started, so a call in flight always
 * finishes on the version it started with, and no call ever fails because of a reload.
 *
 * The log says what was loaded, changed, removed or refused. Qlik reads the function list only when
 * it connects, so a change of names or signatures is logged with what the administrator must do.
 *
 * A deployment may replace the whole folder (`rm -rf functions && cp -r new functions`): a watch
 * follows one folder, not a path, so when the folder is gone or another one stands at its path the
 * registry watches the path again (checking every REWATCH_MS while it is missing), keeping the
 * functions loaded before meanwhile.
 */
import { type FSWatcher, watch } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';

import { ConfigError } from '../ops/config';
import type { Logger } from '../ops/log';
import { EMPTY_FUNCTION_SET, type FunctionSet, loadFunctionFolder } from './load-folder';
import { functionDefinition, type PluginFunction } from './signature';

/** Quiet time after the last change event before the folder is read again. */
export const RELOAD_DEBOUNCE_MS = 200;
/** While the folder is missing, how often to look for it again. */
const REWATCH_MS = 1_000;

export class FunctionRegistry {
  private current: FunctionSet = EMPTY_FUNCTION_SET;
  private watcher: FSWatcher | undefined;
  /** The folder the watcher follows (its inode): another one at the path needs a new watch. */
  private watchedIno: number | undefined;
  private rewatchTimer: NodeJS.Timeout | undefined;
  private timer: NodeJS.Timeout | undefined;
  private reloading: Promise<void> | undefined;
  private again = false;
  private closed = false;
  /** Resolves after each completed reload (tests and callers that must see a change take effect). */
  private reloadListeners: (() => void)[] = [];

  private constructor(
    readonly dir: string,
    private readonly logger: Logger,
  ) {}

  /** Reads the folder and starts watching it; a folder that cannot be read stops the start. */
  static async open(dir: string, logger: Logger): Promise<FunctionRegistry> {
    const info = await stat(dir).catch((error: unknown) => {
      throw new ConfigError(
        `SSE_FUNCTIONS_DIR=${JSON.stringify(dir)} cannot be read: ${error instanceof Error ? error.message : String(error)}`,
      );
    });
    if (!info.isDirectory())
      throw new ConfigError(`SSE_FUNCTIONS_DIR=${JSON.stringify(dir)} is not a folder: expected a folder of .js function files`);
    const registry = new FunctionRegistry(dir, logger);
    await registry.reload();
    registry.watch(info.ino);
    return registry;
  }

  get functions(): FunctionSet {
    return this.current;
  }

  lookup(id: number): PluginFunction | undefined {
    return this.current.byId.get(id);
  }

  /** The FunctionDefinitions for GetCapabilities. */
  definitions(): Record<string, unknown>[] {
    return this.current.functions.map(functionDefinition);
  }

  /** Resolves once a reload that starts after this call has completed. */
  nextReload(): Promise<void> {
    return new Promise((resolve) => this.reloadListeners.push(resolve));
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.rewatchTimer);
    this.watcher?.close();
    this.watcher = undefined;
  }

  private watch(ino: number): void {
    this.watcher?.close();
    this.watchedIno = ino;
    try {
      // Persistent: a change noticed is always applied; close() closes the watcher.
      // An event naming the folder itself: it was removed or renamed, and the watch died with it.
      const self = path.basename(path.resolve(this.dir));
      this.watcher = watch(this.dir, (_event, name) => (name === self ? this.rewatchLater() : this.schedule()));
      this.watcher.on('error', () => this.rewatchLater());
    } catch (error) {
      this.logger.error({ dir: this.dir, err: error }, 'cannot watch SSE_FUNCTIONS_DIR: looking for it again every second');
      this.rewatchLater();
    }
  }

  /** The folder is gone (or unwatchable): keep what is loaded, look for the path again until it is back. */
  private rewatchLater(): void {
    this.watcher?.close();
    this.watcher = undefined;
    if (this.closed || this.rewatchTimer !== undefined) return;
    this.rewatchTimer = setTimeout(() => {
      this.rewatchTimer = undefined;
      stat(this.dir).then(
        (info) => {
          if (this.closed) return;
          if (!info.isDirectory()) return this.rewatchLater();
          this.logger.info({ dir: this.dir }, 'SSE_FUNCTIONS_DIR is back: watching it again');
          this.watch(info.ino);
          this.schedule();
        },
        () => this.rewatchLater(),
      );
    }, REWATCH_MS);
  }

  private schedule(): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.reloadSoon(), RELOAD_DEBOUNCE_MS);
  }

  /** One reload at a time; changes that arrive during one cause one more. */
  private async reloadSoon(): Promise<void> {
    if (this.reloading) {
      this.again = true;
      return;
    }
    do {
      this.again = false;
      this.reloading = this.reload();
      await this.reloading;
      this.reloading = undefined;
    } while (this.again && !this.closed);
  }

  private async reload(): Promise<void> {
    let next: FunctionSet;
    try {
      next = await loadFunctionFolder(this.dir);
      const info = await stat(this.dir);
      // Another folder now stands at the path (replaced whole): watch that one.
      // Another folder now stands at the path (replaced whole; the inode may even be reused): watch that one.
      if (this.watchedIno !== undefined && info.ino !== this.watchedIno && !this.closed) {
        this.watch(info.ino);
        // What changed between this read and the new watch would go unseen: read once more.
        this.schedule();
      }
    } catch (error) {
      this.logger.error(
        { dir: this.dir, err: error },
        'cannot read SSE_FUNCTIONS_DIR: keeping the functions loaded before, and looking for the folder again every second',
      );
      if (this.watchedIno !== undefined) this.rewatchLater();
      return this.notify();
    }
    const previous = this.current;
    this.current = next;
    logChanges(this.logger, this.dir, previous, next, previous === EMPTY_FUNCTION_SET);
    this.notify();
  }

  private notify(): void {
    for (const listener of this.reloadListeners.splice(0)) listener();
  }
}

function logChanges(logger: Logger, dir: string, before: FunctionSet, after: FunctionSet, atStart: boolean): void {
  const old = new Map(before.functions.map((fn) => [fn.id, fn]));
  let signaturesChanged = false;
  for (const fn of after.functions) {
    const was = old.get(fn.id);
    old.delete(fn.id);
    const fields = { function: fn.name, functionId: fn.id, file: fn.file, line: fn.line, kind: fn.kind, version: fn.version };
    if (!was) {
      signaturesChanged = true;
      logger.info(fields, 'plugin function loaded');
    } else if (was.version !== fn.version) {
      if (JSON.stringify(functionDefinition(was)) !== JSON.stringify(functionDefinition(fn))) signaturesChanged = true;
      logger.info({ ...fields, previousVersion: was.version }, 'plugin function changed');
    }
  }
  for (const fn of old.values()) {
    signaturesChanged = true;
    logger.info({ function: fn.name, functionId: fn.id, file: fn.file }, 'plugin function removed');
  }
  for (const problem of after.problems)
    logger.warn({ file: problem.file, line: problem.line, problem: problem.message }, 'plugin function refused');
  if (after.functions.length === 0) logger.warn({ dir, refused: after.problems.length }, 'SSE_FUNCTIONS_DIR has no valid plugin function');
  else
    logger.info(
      { dir, functions: after.functions.length, refused: after.problems.length },
      atStart ? 'plugin functions read' : 'plugin functions reloaded',
    );
  if (signaturesChanged && !atStart) {
    logger.info(
      'the list of plugin functions changed: Qlik reads it when it connects, so reload the analytic connection (restart the Qlik engine service, or Desktop) for apps to see it',
    );
  }
}
