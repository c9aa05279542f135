/**
 * Native memory that JavaScript objects own is freed only when V8 collects those objects, and V8 sees
 * little reason to collect when the objects themselves are small. Node's HTTP/2 stack hands every received
 * header value of 64 bytes or more to JavaScript as an external string that owns the decoded bytes: a
 * client opening streams with large headers (to any path, before any of our code runs) fills native
 * memory while the JS heap barely moves. Measured on a bare Node http2 server, 128 connections × 250
 * streams × 60 KB of headers: 45 MB → 1.5-2.2 GB resident, kept; `process.memoryUsage().external` showed
 * ~1 GB still owned by header strings nobody referenced. V8's own external-memory trigger starts an
 * incremental collection that ends long after the flood does.
 *
 * So the front samples external memory and, when it has grown by a step since the last collection, asks
 * for a full collection at once (the same run: 450-500 MB and flat). A collection that frees little
 * raises the floor, so memory that is really held (rows the budget counts) costs one collection per step
 * of growth, not one per sample, and is looked at again later, less often each time, until it is gone.
 */
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export interface ExternalMemorySettings {
  /** Growth of external memory over the floor that triggers a collection. */
  stepBytes: number;
  /** How often external memory is sampled. */
  intervalMs: number;
  /** Told after each forced collection, for the metric and the debug log. */
  collected?: (collection: { beforeBytes: number; afterBytes: number; pauseMs: number }) => void;
}

/** Bytes V8 is told native objects hold: Buffers, ArrayBuffers, external strings. */
type Sample = () => number;

export const EXTERNAL_MEMORY_DEFAULTS = { stepBytes: 64 * 1024 * 1024, intervalMs: 100 } as const;
/**
 * After a collection that found the memory still held (rows of calls in flight), it is looked at again
 * this long after, then twice as long each time up to RECHECK_MAX_MS: when those calls end their Buffers
 * are garbage, but nothing grows any more to trigger a collection (15 MiB messages on 40 streams left
 * 1.1 GB of dead Buffers for as long as the front stayed idle).
 */
const RECHECK_MIN_MS = 1_000;
const RECHECK_MAX_MS = 10_000;

/** Starts the sampler; the returned function stops it. The timer never keeps the process alive. */
export function collectOnExternalGrowth(
  settings: ExternalMemorySettings,
  // Not process.memoryUsage(): it also reads /proc/self/stat, which throws while descriptors are used up.
  sample: Sample = () => getHeapStatistics().external_memory,
  collect: () => void = fullCollection(),
  nowMs: () => number = () => performance.now(),
): () => void {
  let floorBytes = sample();
  /** The least external memory seen: what the front holds at rest. */
  let restingBytes = floorBytes;
  let recheckAtMs = Number.POSITIVE_INFINITY;
  let recheckDelayMs = RECHECK_MIN_MS;
  const timer = setInterval(() => {
    const beforeBytes = sample();
    floorBytes = Math.min(floorBytes, beforeBytes);
    restingBytes = Math.min(restingBytes, beforeBytes);
    const grew = beforeBytes - floorBytes >= settings.stepBytes;
    const recheck = nowMs() >= recheckAtMs && beforeBytes - restingBytes >= settings.stepBytes;
    if (!grew && !recheck) return;
    const started = performance.now();
    collect();
    const afterBytes = sample();
    floorBytes = afterBytes;
    if (afterBytes - restingBytes >= settings.stepBytes) {
      recheckAtMs = nowMs() + recheckDelayMs;
      recheckDelayMs = Math.min(2 * recheckDelayMs, RECHECK_MAX_MS);
    } else {
      recheckAtMs = Number.POSITIVE_INFINITY;
      recheckDelayMs = RECHECK_MIN_MS;
    }
    settings.collected?.({ beforeBytes, afterBytes, pauseMs: performance.now() - started });
  }, settings.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * V8's `gc()`, without starting Node with --expose-gc: the flag is set just long enough to fetch the
 * function from a fresh context, then cleared, so no other context gets it. The front runs no script
 * code; the function stays in this module. Called with no argument it is the forced full collection
 * that finalises external strings at once (with an options bag, { type: 'major' }, it did not free them
 * in the measurement above).
 */
function fullCollection(): () => void {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed) return () => exposed();
  setFlagsFromString('--expose-gc');
  try {
    const gc = runInNewContext('gc') as () => void;
    return () => gc();
  } finally {
    setFlagsFromString('--no-expose-gc');
  }
}
