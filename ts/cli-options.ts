/**
 * Argument parsers and options shared by the CLI's commands (`train`, `experiment ...`).
 *
 * @module
 */

import { InvalidArgumentError, Option } from 'commander';

/** Parses an integer of at least `min`. */
export function int(name: string, min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return n;
  };
}

/** Parses a finite number above 0. */
export function positiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a positive number');
  return n;
}

/** `--precision fp32|mixed`, default fp32. */
export const precisionOption = (): Option =>
  new Option('--precision <precision>', "GEMM arithmetic: fp32, or mixed (f16 operands, f32 sums, loss scaling; needs a GPU)")
    .choices(['fp32', 'mixed'])
    .default('fp32');

/** `--device cpu|auto|gpu`, default auto. */
export const deviceOption = (): Option =>
  new Option('--device <device>', 'where to run').choices(['cpu', 'auto', 'gpu']).default('auto');
