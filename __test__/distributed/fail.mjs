// Rank 1 throws from a callback at step 3: fit must stop every rank, naming rank 1.
import { Model, distributed, fit } from '../../dist/index.js';
import { randomDataset, tinySpec } from './common.mjs';

const world = await distributed.init({ timeoutSeconds: 30 });
const model = Model.create(tinySpec(), { seed: 3, device: 'cpu' });
await fit(model, randomDataset(640, 7), {
  batchSize: 16,
  epochs: 100,
  distributed: world,
  callbacks: {
    onBatchEnd: (step) => {
      if (world.rank === 1 && step === 3) throw new Error('deliberate failure at step 3');
    },
  },
});
console.log('not reached: training finished');
