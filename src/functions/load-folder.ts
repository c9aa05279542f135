/**
 * Reads every `.js` file of SSE_FUNCTIONS_DIR into one immutable FunctionSet. Files are read in name
 * order, so the outcome does not depend on the order the file system lists them: of two functions
 * with the same name (Qlik names are case-insensitive) the one in the earlier file is kept, and a
 * name whose id collides with an earlier name's is refused. A bad file never stops the others.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';

import { type Problem, parseFunctionFile } from './parse-file';
import { type PluginFunction, toPluginFunction } from './signature';

/** Larger files are refused: function files are hand-written code, not data. */
export const MAX_FUNCTION_FILE_BYTES = 1024 * 1024;
/**
 * What one folder may hold: the front keeps about twice a folder's bytes (the text and its script)
 * and holds two folders' worth during a reload; files past either bound, in name order, are refused.
 */
export const MAX_FUNCTION_FOLDER_BYTES = 16 * 1024 * 1024;
export const MAX_FUNCTION_FILES = 1_000;

export interface FunctionSet {
  /** In load order: by file name, then by position in the file. */
  readonly functions: readonly PluginFunction[];
  readonly byId: ReadonlyMap<number, PluginFunction>;
  readonly problems: readonly Problem[];
}

export const EMPTY_FUNCTION_SET: FunctionSet = { functions: [], byId: new Map(), problems: [] };

/** Throws when the folder itself cannot be listed; problems with single files are in `problems`. */
export async function loadFunctionFolder(dir: string): Promise<FunctionSet> {
  const names = (await readdir(dir)).filter((name) => name.endsWith('.js') && !name.startsWith('.')).sort();
  const functions: PluginFunction[] = [];
  const byId = new Map<number, PluginFunction>();
  const byName = new Map<string, PluginFunction>();
  const problems: Problem[] = [];
  const budget = { bytesLeft: MAX_FUNCTION_FOLDER_BYTES };
  if (names.length > MAX_FUNCTION_FILES) problems.push(tooManyFiles(names));
  for (const name of names.slice(0, MAX_FUNCTION_FILES)) {
    const parsed = await readOneFile(path.join(dir, name), name, budget);
    problems.push(...parsed.problems);
    for (const source of parsed.functions) {
      const fn = toPluginFunction(source);
      // By map, not by a search of the functions so far: a folder's cost stays linear in its size.
      const clash = byName.get(fn.name.toLowerCase()) ?? byId.get(fn.id);
      if (clash !== undefined) {
        problems.push(clashProblem(fn, clash));
        continue;
      }
      functions.push(fn);
      byId.set(fn.id, fn);
      byName.set(fn.name.toLowerCase(), fn);
    }
  }
  return { functions, byId, problems };
}

function tooManyFiles(names: readonly string[]): Problem {
  const first = names[MAX_FUNCTION_FILES] ?? '';
  const message = `${names.length - MAX_FUNCTION_FILES} .js files from ${first} on are not read: a functions folder holds at most ${MAX_FUNCTION_FILES} files (MAX_FUNCTION_FILES)`;
  return { file: first, line: 0, message };
}

async function readOneFile(
  filePath: string,
  name: string,
  budget: { bytesLeft: number },
): Promise<{ functions: ReturnType<typeof parseFunctionFile>['functions']; problems: Problem[] }> {
  try {
    const info = await stat(filePath);
    if (!info.isFile())
      return { functions: [], problems: [{ file: name, line: 0, message: 'not a regular file (a folder, a pipe or a device): skipped' }] };
    if (info.size > MAX_FUNCTION_FILE_BYTES) {
      return {
        functions: [],
        problems: [
          {
            file: name,
            line: 0,
            message: `the file is ${info.size} bytes, more than ${MAX_FUNCTION_FILE_BYTES}: split it; the file is not loaded`,
          },
        ],
      };
    }
    if (info.size > budget.bytesLeft) {
      const message = `the folder's files before it and this one pass ${MAX_FUNCTION_FOLDER_BYTES} bytes together (MAX_FUNCTION_FOLDER_BYTES): move some functions to another plugin instance; the file is not loaded`;
      return { functions: [], problems: [{ file: name, line: 0, message }] };
    }
    budget.bytesLeft -= info.size;
    return parseFunctionFile(await readFile(filePath, 'utf8'), name);
  } catch (error) {
    // Removed between listing and reading (an editor saving), or unreadable: say so, keep the others.
    const reason = error instanceof Error ? error.message : String(error);
    return { functions: [], problems: [{ file: name, line: 0, message: `cannot read the file: ${reason}` }] };
  }
}

function clashProblem(fn: PluginFunction, kept: PluginFunction): Problem {
  const where = `${kept.file}:${kept.line}`;
  const message =
    kept.name.toLowerCase() === fn.name.toLowerCase()
      ? `${fn.name}: a function of that name is already defined at ${where} (Qlik names are case-insensitive): rename or remove one`
      : `${fn.name}: its function id ${fn.id} is the id of ${kept.name} (${where}), a hash collision: rename one of them`;
  return { file: fn.file, line: fn.line, message };
}
