// Trains a ResNet-8 for `steps` SGD steps with `batch` images per rank, then writes the weights
// (exportWeights: weights, running statistics, counters) to `<out>/rank<R>.safetensors` on the
// ranks listed in `dump` (default: rank 0). Alone (plain node) it is the one-process reference.
import { join } from 'node:path';
import { Model, distributed, fit } from '../../dist/index.js';
import { config, randomDataset, tinySpec } from './common.mjs';

const world = await distributed.init();
const data = randomDataset(config.images ?? 320, 7);
const model = Model.create(tinySpec({ batchNorm: config.batchNorm ?? true }), { seed: 3, device: config.device ?? 'cpu' });
const history = await fit(model, data, {
  batchSize: config.batch,
  iterations: config.steps,
  optimizer: { lr: 0.05, momentum: 0.9, weightDecay: 1e-4 },
  augment: true,
  seed: 5,
  distributed: world,
  syncBatchNorm: config.syncBatchNorm ?? false,
});
if ((config.dump ?? [0]).includes(world.rank)) await model.exportWeights(join(config.out, `rank${world.rank}.safetensors`));
if (world.rank === 0) console.log(JSON.stringify({ ranks: world.size, steps: history.steps, step: model.step, loss: history.history.loss }));
