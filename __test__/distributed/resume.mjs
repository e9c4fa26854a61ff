// Resuming on a different number of ranks. `leg: 'first'`: epoch 1 of a 2-epoch run with the
// paper's schedule (milestones at 50% and 75% of the run) on the ranks of this job, 16 images per
// rank, then rank 0 saves. `leg: 'second'`: loads that checkpoint and trains epoch 2 with 16 images
// per rank on this job's ranks, printing the step it started from and the rates it used.
import { join } from 'node:path';
import { Model, distributed, fit, schedules } from '../../dist/index.js';
import { config, randomDataset, tinySpec } from './common.mjs';

const world = await distributed.init();
const data = randomDataset(320, 7);
const options = {
  epochs: 2,
  batchSize: 16,
  optimizer: { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 },
  schedule: schedules.paper(),
  seed: 5,
  distributed: world,
};
const path = join(config.out, 'first.safetensors');
if (config.leg === 'first') {
  const model = Model.create(tinySpec(), { seed: 3, device: 'cpu' });
  const stop = new AbortController();
  await fit(model, data, { ...options, signal: stop.signal, callbacks: { onEpochEnd: () => stop.abort() } });
  if (world.rank === 0) await model.save(path);
} else {
  const model = await Model.load(path, { device: 'cpu' });
  const start = model.step;
  const lrs = [];
  await fit(model, data, { ...options, initialEpoch: 1, callbacks: { onBatchEnd: (_s, logs) => void lrs.push(logs.lr) } });
  if (world.rank === 0) console.log(JSON.stringify({ ranks: world.size, start, end: model.step, lrs }));
}
