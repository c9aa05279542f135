/** GetCapabilities: script support (unless disabled), no plugin-defined functions. */
import { readFileSync } from 'node:fs';
import path from 'node:path';

export const PLUGIN_IDENTIFIER = 'qlik-sse-js-sandbox';

export const PLUGIN_VERSION: string = (
  JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }
).version;

export function capabilities(allowScript: boolean): Record<string, unknown> {
  return { allowScript, functions: [], pluginIdentifier: PLUGIN_IDENTIFIER, pluginVersion: PLUGIN_VERSION };
}
