/**
 * Follows an administrator's folder and calls `reload` after a short quiet time whenever fs.watch
 * reports a change in it (editors save in bursts: write, rename, chmod), one reload at a time, with
 * one more for changes that arrive during one. A deployment may replace the whole folder (`rm -rf
 * libs && cp -r new libs`): a watch follows one folder, not a path, so when the folder is gone or
 * another one stands at its path the watch is made again (checking every REWATCH_MS while it is
 * missing), and what was loaded before stays in force meanwhile. The same rules as the plugin
 * functions' folder (src/functions/registry.ts).
 */
import { type FSWatcher, watch } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';

import type { Logger } from './log';

/** Quiet time after the last change event before the folder is read again. */
export const FOLDER_RELOAD_DEBOUNCE_MS = 200;
/** While the folder is missing, how often to look for it again. */
const REWATCH_MS = 1_000;

export class FolderWatch {
  private watcher: FSWatcher | undefined;
  private watchedIno: number | undefined;
  private rewatchTimer: NodeJS.Timeout | undefined;
  private timer: NodeJS.Timeout | undefined;
  private reloading: Promise<void> | undefined;
  private again = false;
  private closed = false;

  constructor(
    private readonly dir: string,
    /** The variable that names the folder, for the log. */
    private readonly variable: string,
    private readonly logger: Logger,
    /** Reads the folder again; never rejects (it logs its own problems). */
    private readonly reload: () => Promise<void>,
  ) {}

  start(ino: number): void {
    this.watch(ino);
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
      // An event naming the folder itself: it was removed or renamed, and the watch died with it.
      const self = path.basename(path.resolve(this.dir));
      this.watcher = watch(this.dir, (_event, name) => (name === self ? this.rewatchLater() : this.schedule()));
      this.watcher.on('error', () => this.rewatchLater());
    } catch (error) {
      this.logger.error({ dir: this.dir, err: error }, `cannot watch ${this.variable}: looking for it again every second`);
      this.rewatchLater();
    }
  }

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
          this.logger.info({ dir: this.dir }, `${this.variable} is back: watching it again`);
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
    this.timer = setTimeout(() => void this.reloadSoon(), FOLDER_RELOAD_DEBOUNCE_MS);
  }

  private async reloadSoon(): Promise<void> {
    if (this.reloading) {
      this.again = true;
      return;
    }
    do {
      this.again = false;
      this.reloading = this.checkedReload();
      await this.reloading;
      this.reloading = undefined;
    } while (this.again && !this.closed);
  }

  /** Reloads, then follows another folder now standing at the path (its inode may even be reused). */
  private async checkedReload(): Promise<void> {
    await this.reload();
    try {
      const info = await stat(this.dir);
      if (this.watchedIno !== undefined && info.ino !== this.watchedIno && !this.closed) {
        this.watch(info.ino);
        // What changed between the read and the new watch would go unseen: read once more.
        this.schedule();
      }
    } catch {
      this.rewatchLater();
    }
  }
}
