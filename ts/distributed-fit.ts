/**
 * What `fit` needs beyond the one-process loop when it trains on several ranks: the check that
 * every rank is about to run the same loop, and the way a failing rank stops the others.
 *
 * @internal
 * @module
 */

import type { World } from './distributed.js';

/**
 * Throws on every rank, naming each quantity that differs between ranks and this rank's value,
 * when the ranks disagree on a quantity that decides how many steps or collectives they take
 * (a rank that stopped one step early would leave the others waiting).
 *
 * One all-reduce of each value and its square: the sum is N x v and the sum of squares N x v^2
 * on a rank whose value is v exactly when every rank has v (the variance is then zero), so every
 * rank reaches the same verdict.
 */
export async function agreeOnRun(world: World, facts: Readonly<Record<string, number>>): Promise<void> {
  const entries = Object.entries(facts);
  const sums = await world.allReduceSum(entries.flatMap(([, v]) => [v, v * v]));
  const n = world.size;
  const differ = entries.filter(([, v], i) => sums[2 * i] !== n * v || sums[2 * i + 1] !== n * v * v);
  if (differ.length > 0) {
    const list = differ.map(([name, v]) => `${name} (${v} on rank ${world.rank})`).join(', ');
    throw new Error(
      `the ${n} ranks disagree on ${list}: every rank must train the same dataset with the same options from the same model state ` +
        '(load the same checkpoint on every rank)',
    );
  }
}

/** Stops every rank because `error` was thrown on this one: mpiexec then ends the job non-zero. */
export function failRank(world: World, error: unknown): never {
  const message = error instanceof Error ? error.message : String(error);
  return world.abort(1, `resnet-wgpu: rank ${world.rank} failed: ${message}`);
}
