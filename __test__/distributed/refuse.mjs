// Ranks that differ must be refused at the start: `spec` gives rank 1 a deeper network;
// `data` gives rank 1 a smaller training set.
import { Model, distributed, fit } from '../../dist/index.js';
import { config, randomDataset, tinySpec } from './common.mjs';

const world = await distributed.init({ timeoutSeconds: 30 });
const deeper = config.differ === 'spec' && world.rank === 1;
const model = Model.create(tinySpec({}, deeper ? 14 : 8), { seed: 3, device: 'cpu' });
const images = config.differ === 'data' && world.rank === 1 ? 96 : 128;
await fit(model, randomDataset(images, 7), { batchSize: 16, iterations: 2, distributed: world });
console.log('not reached: the ranks trained');
