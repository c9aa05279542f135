/**
 * Preloaded (`node --require`) into the real plugin process by test/ops/tls.test.ts when the suite
 * runs as root, to see the plugin refuse a key file its user may not read.
 *
 * Why not simply spawn the plugin as `nobody`: `nobody` must then read the checkout (dist/ and
 * node_modules/), and a fresh clone inside a private folder (mode 0700, a home folder, `sudo npm
 * test` in someone else's checkout) is out of its reach, so the plugin died on its first `require`
 * with exit code 1, not on the key. Copying dist/ and node_modules/ (80 MB, a native addon) to a
 * public place would be slow and would test a copy. Dropping root's file-permission capabilities
 * (setpriv) fails the same way when the checkout belongs to another user. So the process starts as
 * root, loads every module of main.js while it can read anything, and becomes `nobody` the moment
 * the plugin turns to its certificates: the key file then fails with the kernel's own EACCES,
 * wherever the checkout lies and whoever owns it. main.js itself runs unchanged.
 */
import tls = require('../../src/ops/tls');

const uid = Number(process.env['TEST_BECOME_UID']);
const gid = Number(process.env['TEST_BECOME_GID']);
if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error('become-user: set TEST_BECOME_UID and TEST_BECOME_GID');

const loadTlsFiles = tls.loadTlsFiles;
// main.js calls tls.loadTlsFiles through the module object (CommonJS), so replacing the export reaches it.
(tls as { loadTlsFiles: typeof loadTlsFiles }).loadTlsFiles = (...args) => {
  process.setgroups?.([]);
  process.setgid?.(gid);
  process.setuid?.(uid);
  return loadTlsFiles(...args);
};
