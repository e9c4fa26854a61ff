// Trains 3 steps alone on every rank (the same steps: one model everywhere), then evaluates
// with the evaluation sharded over the ranks; rank 0 prints the figures.
import { Model, distributed, fit } from '../../dist/index.js';
import { randomDataset, tinySpec } from './common.mjs';

const world = await distributed.init();
const model = Model.create(tinySpec({ numClasses: 10 }), { seed: 4, device: 'cpu' });
await fit(model, randomDataset(128, 2, 10), { batchSize: 32, iterations: 3, optimizer: { lr: 0.05 } });
const r = await model.evaluate(randomDataset(203, 3, 10), { batchSize: 16, distributed: world });
if (world.rank === 0) console.log(JSON.stringify(r));
