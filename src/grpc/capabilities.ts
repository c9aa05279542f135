/** GetCapabilities: script support (unless disabled) and the plugin functions (src/functions/). */
import { readFileSync } from 'node:fs';
import path from 'node:path';

export const PLUGIN_IDENTIFIER = 'qlik-sse-js-sandbox';

export const PLUGIN_VERSION: string = (
  JSON.parse(readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { version: string }
).version;

export function capabilities(allowScript: boolean, functions: readonly Record<string, unknown>[] = []): Record<string, unknown> {
  return { allowScript, functions, pluginIdentifier: PLUGIN_IDENTIFIER, pluginVersion: PLUGIN_VERSION };
}
