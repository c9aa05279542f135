/**
 * Reads SSE_LIBRARIES_DIR: each `NAME.js` is `require('NAME')`, a single-file CommonJS module or UMD
 * bundle. The front never runs them: it checks that each parses as the body of a function (what the
 * sandbox wraps it in), with acorn, and refuses one that does not with its line; the others are kept.
 * What a file does when it runs (a Node API it calls, an error it throws) shows in the calls that
 * require it, inside the sandbox.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';

import { parse } from 'acorn';

import { LIBRARY_NAME } from '../contract/libraries';

/** A library is code an admin chose, not data: larger ones are refused (the sandbox heap holds every one). */
export const MAX_LIBRARY_FILE_BYTES = 8 * 1024 * 1024;
/** What a folder may hold in all: every sandbox isolate compiles them all. */
export const MAX_LIBRARY_FOLDER_BYTES = 32 * 1024 * 1024;
/** The ECMAScript version Node 20's V8 runs (as for function files, src/functions/parse-file.ts). */
const ECMA_VERSION = 2023;

export interface FolderLibrary {
  readonly name: string;
  readonly file: string;
  readonly sha256: string;
  readonly code: string;
}

export interface LibraryProblem {
  readonly file: string;
  readonly line: number;
  readonly message: string;
}

export interface FolderRead {
  readonly libraries: FolderLibrary[];
  readonly problems: LibraryProblem[];
}

/** Throws when the folder itself cannot be listed; problems with single files are in `problems`. */
export async function readLibraryFolder(dir: string): Promise<FolderRead> {
  const files = (await readdir(dir)).filter((name) => name.endsWith('.js') && !name.startsWith('.')).sort();
  const libraries: FolderLibrary[] = [];
  const problems: LibraryProblem[] = [];
  let bytesLeft = MAX_LIBRARY_FOLDER_BYTES;
  for (const file of files) {
    const name = file.slice(0, -'.js'.length);
    if (!LIBRARY_NAME.test(name)) {
      problems.push({
        file,
        line: 0,
        message: 'the name is not one require() can take: letters, digits, ".", "_" and "-" only, not first',
      });
      continue;
    }
    try {
      const info = await stat(path.join(dir, file));
      if (!info.isFile()) throw new Error('not a regular file');
      if (info.size > MAX_LIBRARY_FILE_BYTES) throw new Error(`${info.size} bytes, more than ${MAX_LIBRARY_FILE_BYTES}`);
      if (info.size > bytesLeft) throw new Error(`the folder's files pass ${MAX_LIBRARY_FOLDER_BYTES} bytes together`);
      bytesLeft -= info.size;
      const code = await readFile(path.join(dir, file), 'utf8');
      const problem = syntaxProblem(code);
      if (problem) problems.push({ file, ...problem });
      else libraries.push({ name, file, code, sha256: createHash('sha256').update(code).digest('hex') });
    } catch (error) {
      problems.push({ file, line: 0, message: `cannot read the file: ${error instanceof Error ? error.message : String(error)}` });
    }
  }
  return { libraries, problems };
}

/** Null when the code parses as a CommonJS body; else the line and what is wrong. */
export function syntaxProblem(code: string): { line: number; message: string } | null {
  try {
    parse(code, { ecmaVersion: ECMA_VERSION, sourceType: 'script', allowReturnOutsideFunction: true, allowHashBang: true });
    return null;
  } catch (error) {
    const line = (error as { loc?: { line?: number } }).loc?.line ?? 0;
    const text = error instanceof Error ? error.message.replace(/ \(\d+:\d+\)$/, '') : String(error);
    const hint = /'import' and 'export'/.test(text)
      ? ': ES modules cannot be loaded; bundle it as CommonJS or UMD (esbuild --format=cjs)'
      : '';
    return { line, message: `syntax error: ${text}${hint}` };
  }
}
