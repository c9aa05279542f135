/**
 * `npm run certs -- --out DIR --host NAME[,NAME…]`: the command line of src/ops/certs.ts, and what to
 * do with the files afterwards, printed where the administrator is looking.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';

import { CERT_FILES, CertRequestError, DEFAULT_LEAF_DAYS, writeCertificates } from '../ops/certs';

const EXIT_FAILED = 1;
const EXIT_USAGE = 2;
const MAX_DAYS = 3_650;

export const CERTS_USAGE = `Makes a root, a server certificate and Qlik's client certificate, named as Qlik's SSE guide names them.

usage: npm run certs -- --out <folder> --host <name>[,<name>...] [--days <n>]

  --out <folder>     where to write the five files (created mode 0700; must not hold them already)
  --host <names>     every DNS name and IP address the Qlik engine uses to reach the plugin, comma-separated
                     (the server certificate names exactly these: connecting by any other name fails)
  --days <n>         validity of the server and client certificates (default ${DEFAULT_LEAF_DAYS}; the root: 10 years)
  -h, --help         this text`;

const OPTIONS = {
  out: { type: 'string' },
  host: { type: 'string', multiple: true },
  days: { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

interface CertsArgs {
  readonly outDir: string;
  readonly hosts: string[];
  readonly leafDays: number;
}

function parse(argv: readonly string[]): CertsArgs | undefined {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: false }>>;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: false, strict: true });
  } catch (error) {
    throw new CertRequestError(error instanceof Error ? error.message : String(error));
  }
  const { values } = parsed;
  if (values.help) return undefined;
  if (values.out === undefined || values.out.trim() === '') throw new CertRequestError('--out <folder> is required');
  const hosts = (values.host ?? [])
    .flatMap((list) => list.split(','))
    .map((name) => name.trim())
    .filter((name) => name !== '');
  const leafDays = values.days === undefined ? DEFAULT_LEAF_DAYS : Number(values.days);
  if (!Number.isInteger(leafDays) || leafDays < 1 || leafDays > MAX_DAYS)
    throw new CertRequestError(`--days ${values.days}: expected an integer from 1 to ${MAX_DAYS}`);
  return { outDir: path.resolve(values.out), hosts, leafDays };
}

function nextSteps(args: CertsArgs): string {
  const dir = args.outDir;
  return [
    `Wrote ${Object.values(CERT_FILES).join(', ')} to ${dir} (private keys mode 0600).`,
    '',
    `The plugin: SSE_TLS_DIR=${dir} (it reads ${CERT_FILES.root}, ${CERT_FILES.serverCert}, ${CERT_FILES.serverKey};`,
    '  the user running it must be able to read the key).',
    `The Qlik engine's machine: copy ${CERT_FILES.root}, ${CERT_FILES.clientCert} and ${CERT_FILES.clientKey} into one folder`,
    '  and name it in the analytic connection: QMC > Analytic connections > Certificate file path, or the third',
    '  field of SSEPlugin=<name>,<host>:<port>,<folder> in Settings.ini (Qlik Sense Desktop); the key stays private there.',
    `  Connect with one of: ${args.hosts.join(', ')}.`,
    `Check from the engine's machine: npm run try -- --target ${args.hosts[0]}:50051 --tls-dir <that folder> 'args[0] * 2' 21`,
  ].join('\n');
}

async function run(argv: readonly string[]): Promise<number> {
  let args: CertsArgs | undefined;
  try {
    args = parse(argv);
    if (args === undefined) {
      process.stdout.write(`${CERTS_USAGE}\n`);
      return 0;
    }
    await writeCertificates(args);
  } catch (error) {
    if (!(error instanceof CertRequestError)) throw error;
    process.stderr.write(`certs: ${error.message}\n(npm run certs -- --help shows the options)\n`);
    return EXIT_USAGE;
  }
  process.stdout.write(`${nextSteps(args)}\n`);
  return 0;
}

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`certs: failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = EXIT_FAILED;
  },
);
