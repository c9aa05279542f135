/**
 * Reads every `.js` file of SSE_FUNCTIONS_DIR into one immutable FunctionSet. Files are read in name
 * order, so the outcome does not depend on the order the file system lists them: of two functions
 * with the same name (Qlik names are case-insensitive) the one in the earlier file is kept, and a
 * name whose id collides with an earlier name's is refused. A bad file never stops the others.
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';

import { parseFunctionFile, type Problem } from './parse-file';
import { toPluginFunction, type PluginFunction } from './signature';

/** Larger files are refused: function files are hand-written code, not data. */
export const MAX_FUNCTION_FILE_BYTES = 1024 * 1024;

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
  const problems: Problem[] = [];
  for (const name of names) {
    const parsed = await readOneFile(path.join(dir, name), name);
    problems.push(...parsed.problems);
    for (const source of parsed.functions) {
      const fn = toPluginFunction(source);
      const clash = functions.find((other) => other.name.toLowerCase() === fn.name.toLowerCase() || other.id === fn.id);
      if (clash === undefined) functions.push(fn);
      else problems.push(clashProblem(fn, clash));
    }
  }
  return { functions, byId: new Map(functions.map((fn) => [fn.id, fn])), problems };
}

async function readOneFile(
  filePath: string,
  name: string,
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
