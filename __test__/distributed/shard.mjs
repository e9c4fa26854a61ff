// Each rank lists the dataset indices of its batches for two epochs of a sharded loader and
// prints them as one JSON line (the test checks the union).
import { DataLoader, distributed } from '../../dist/index.js';
import { config, randomDataset } from './common.mjs';

const world = await distributed.init();
const loader = new DataLoader(randomDataset(config.images, 1), {
  batchSize: config.batch,
  shuffle: true,
  seed: 9,
  shard: { rank: world.rank, count: world.size },
});
const epochs = [];
for (const epoch of [0, 1]) {
  const batches = [];
  for await (const batch of loader.epoch(epoch)) batches.push(Array.from(batch.indices ?? []));
  epochs.push(batches);
}
console.log(JSON.stringify({ rank: world.rank, length: loader.length, epochs }));
