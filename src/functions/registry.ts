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
 * A deployment may replace the whole folder (`rm -rf functions && cp -r new functions`): the watch
 * (src/ops/folder-watch.ts, shared with SSE_LIBRARIES_DIR) follows the path again, keeping the
 * functions loaded before meanwhile.
 */
import { stat } from 'node:fs/promises';

import { ConfigError } from '../ops/config';
import { FolderWatch } from '../ops/folder-watch';
import type { Logger } from '../ops/log';
import { EMPTY_FUNCTION_SET, type FunctionSet, loadFunctionFolder } from './load-folder';
import { functionDefinition, type PluginFunction } from './signature';

export class FunctionRegistry {
  private current: FunctionSet = EMPTY_FUNCTION_SET;
  private folder: FolderWatch | undefined;
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
    registry.folder = new FolderWatch(dir, 'SSE_FUNCTIONS_DIR', logger, () => registry.reload());
    registry.folder.start(info.ino);
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
    this.folder?.close();
  }

  /** Never rejects: a folder that cannot be read keeps the functions loaded before (FolderWatch looks for it again). */
  private async reload(): Promise<void> {
    try {
      const next = await loadFunctionFolder(this.dir);
      const previous = this.current;
      this.current = next;
      logChanges(this.logger, this.dir, previous, next, previous === EMPTY_FUNCTION_SET);
    } catch (error) {
      this.logger.error(
        { dir: this.dir, err: error },
        'cannot read SSE_FUNCTIONS_DIR: keeping the functions loaded before, and looking for the folder again every second',
      );
    }
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
