/**
 * The libraries scripts may `require`, as the administrator chose them: the bundled ones named by
 * SSE_LIBRARIES (all by default, `none` for none), plus every good file of SSE_LIBRARIES_DIR, read at
 * start and again when its files change (src/ops/folder-watch.ts). Each set in force goes to the
 * sandbox processes as one LIBRARIES frame (src/contract/libraries.ts) through `publish`: once per
 * process and reload, never with a task. A broken file is logged with its line and left out; the
 * others stay. The start-up log lists every library offered with its version (bundled) or SHA-256
 * (a file), after the lines that say where the plugin listens (logOffered).
 */
import { stat } from 'node:fs/promises';

import { type LibraryBundle, librariesFrame } from '../contract/libraries';
import { ConfigError } from '../ops/config';
import { FolderWatch } from '../ops/folder-watch';
import type { Logger } from '../ops/log';
import { type BundledLibrary, readBundled } from './bundled';
import { type FolderLibrary, type FolderRead, readLibraryFolder } from './folder';

export interface LibrarySettings {
  /** SSE_LIBRARIES: the bundled libraries to offer; undefined: all of them; []: none. */
  readonly libraries: readonly string[] | undefined;
  /** SSE_LIBRARIES_DIR. */
  readonly librariesDir: string | undefined;
}

const NO_FOLDER: FolderRead = { libraries: [], problems: [] };
/** Hash characters the log shows of a file: enough to tell two versions apart at a glance. */
const HASH_CHARS = 16;

export class LibraryRegistry {
  private folder: FolderRead = NO_FOLDER;
  private watch: FolderWatch | undefined;
  private reloadListeners: (() => void)[] = [];

  private constructor(
    private readonly bundled: readonly BundledLibrary[],
    private readonly inspector: string,
    private readonly logger: Logger,
    private readonly publish: (frame: Buffer) => void,
  ) {}

  /** Reads the bundled set and the folder; a name SSE_LIBRARIES does not know, or a folder that cannot be read, stops the start. */
  static async open(settings: LibrarySettings, logger: Logger, publish: (frame: Buffer) => void): Promise<LibraryRegistry> {
    const { libraries, inspector } = readBundled();
    const registry = new LibraryRegistry(select(libraries, settings.libraries), inspector, logger, publish);
    const dir = settings.librariesDir;
    if (dir !== undefined) {
      const info = await stat(dir).catch((error: unknown) => {
        throw new ConfigError(
          `SSE_LIBRARIES_DIR=${JSON.stringify(dir)} cannot be read: ${error instanceof Error ? error.message : String(error)}`,
        );
      });
      if (!info.isDirectory())
        throw new ConfigError(`SSE_LIBRARIES_DIR=${JSON.stringify(dir)} is not a folder: expected a folder of NAME.js files`);
      registry.folder = registry.withoutClashes(await readLibraryFolder(dir));
      registry.watch = new FolderWatch(dir, 'SSE_LIBRARIES_DIR', logger, () => registry.reload(dir));
      registry.watch.start(info.ino);
    }
    registry.logProblems();
    registry.publish(librariesFrame(registry.bundle));
    return registry;
  }

  /** What the sandboxes get: the bundled libraries first, then the folder's, in name order. */
  get bundle(): LibraryBundle {
    const libraries = [...this.bundled, ...this.folder.libraries].map(({ name, code }) => ({ name, code }));
    return { libraries, inspector: this.inspector };
  }

  get names(): string[] {
    return this.bundle.libraries.map((library) => library.name);
  }

  /** Resolves once a reload that starts after this call has completed (tests). */
  nextReload(): Promise<void> {
    return new Promise((resolve) => this.reloadListeners.push(resolve));
  }

  close(): void {
    this.watch?.close();
  }

  private async reload(dir: string): Promise<void> {
    try {
      const before = this.folder;
      this.folder = this.withoutClashes(await readLibraryFolder(dir));
      this.logReload(before);
      // A save that changed nothing (a touch, an editor's temporary file) costs the sandboxes nothing:
      // a new set makes every thread let its kept contexts go.
      if (fingerprint(before) !== fingerprint(this.folder)) this.publish(librariesFrame(this.bundle));
    } catch (error) {
      this.logger.error({ dir, err: error }, 'cannot read SSE_LIBRARIES_DIR: keeping the libraries loaded before');
    }
    for (const listener of this.reloadListeners.splice(0)) listener();
  }

  /** A file may not stand in for a bundled library in force: the log says which one and how to replace it. */
  private withoutClashes(read: FolderRead): FolderRead {
    const taken = new Set(this.bundled.map((library) => library.name));
    const problems = [...read.problems];
    const libraries = read.libraries.filter((library) => {
      if (!taken.has(library.name)) return true;
      problems.push({
        file: library.file,
        line: 0,
        message: `a bundled library is named ${library.name}: to offer this file instead, leave ${library.name} out of SSE_LIBRARIES`,
      });
      return false;
    });
    return { libraries, problems };
  }

  /** The start-up log's lines (src/main.ts, after where the plugin listens): every library offered, then the list. */
  logOffered(): void {
    for (const library of this.bundled)
      this.logger.info(
        { library: library.name, version: library.version, license: library.license },
        'library offered to scripts (bundled)',
      );
    for (const library of this.folder.libraries) this.logger.info(folderFields(library), 'library offered to scripts (SSE_LIBRARIES_DIR)');
    this.logger.info(
      { libraries: this.names },
      this.names.length === 0 ? 'no library offered to scripts' : 'libraries scripts may require',
    );
  }

  private logReload(before: FolderRead): void {
    const old = new Map(before.libraries.map((library) => [library.name, library]));
    for (const library of this.folder.libraries) {
      const was = old.get(library.name);
      old.delete(library.name);
      if (!was) this.logger.info(folderFields(library), 'library loaded (SSE_LIBRARIES_DIR)');
      else if (was.sha256 !== library.sha256)
        this.logger.info(
          { ...folderFields(library), previousSha256: was.sha256.slice(0, HASH_CHARS) },
          'library changed (SSE_LIBRARIES_DIR)',
        );
    }
    for (const library of old.values())
      this.logger.info({ library: library.name, file: library.file }, 'library removed (SSE_LIBRARIES_DIR)');
    this.logProblems();
    this.logger.info({ libraries: this.names }, 'SSE_LIBRARIES_DIR read again: new calls get this set');
  }

  private logProblems(): void {
    for (const problem of this.folder.problems)
      this.logger.warn(
        { file: problem.file, line: problem.line, problem: problem.message },
        'library refused (SSE_LIBRARIES_DIR): left out',
      );
  }
}

function fingerprint(read: FolderRead): string {
  return read.libraries.map((library) => `${library.name}:${library.sha256}`).join('\n');
}

function folderFields(library: FolderLibrary): Record<string, unknown> {
  return { library: library.name, file: library.file, sha256: library.sha256.slice(0, HASH_CHARS), bytes: Buffer.byteLength(library.code) };
}

/** The bundled libraries SSE_LIBRARIES names, in the bundle's order; an unknown name stops the start. */
function select(bundled: BundledLibrary[], names: readonly string[] | undefined): BundledLibrary[] {
  if (names === undefined) return bundled;
  const known = new Set(bundled.map((library) => library.name));
  const unknown = names.filter((name) => !known.has(name));
  if (unknown.length > 0)
    throw new ConfigError(
      `SSE_LIBRARIES names ${unknown.join(', ')}, not bundled: expected none, or names among ${[...known].join(', ')} (a file of your own goes in SSE_LIBRARIES_DIR)`,
    );
  return bundled.filter((library) => names.includes(library.name));
}
