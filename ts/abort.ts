/**
 * Cancellation, one behaviour for every long call (`fit`, `Model.evaluate`, `evaluateViews`): a
 * call whose signal fires stops between batches, resolves with what it did so far and
 * `aborted: true`, and says so in one line on stderr, so a run cut short is never mistaken for a
 * finished one.
 *
 * @module
 */

/**
 * The part of an `AbortSignal` these calls read. Structural, so the package's typings need neither
 * the DOM library nor `@types/node`; pass an ordinary `AbortSignal` (`AbortSignal.timeout(ms)`,
 * `new AbortController().signal`).
 */
export interface AbortSignalLike {
  readonly aborted: boolean;
  readonly reason?: unknown;
}

function describeReason(reason: unknown): string {
  if (reason instanceof Error) return reason.message ? `${reason.name}: ${reason.message}` : reason.name;
  return reason === undefined ? 'no reason given' : String(reason);
}

/** Writes the one stderr line that says a call was stopped by its signal, and how far it got. */
export function reportAborted(call: string, signal: AbortSignalLike, progress: string, consequence: string): void {
  process.stderr.write(`resnet-wgpu: ${call} stopped by its AbortSignal (${describeReason(signal.reason)}) ${progress}; ${consequence}\n`);
}
