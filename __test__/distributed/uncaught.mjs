// Rank 1 throws outside fit (an uncaught error) while rank 0 waits in a barrier: the exit hook
// of distributed.init must stop the job, with rank 1's error and stack on stderr.
import { distributed } from '../../dist/index.js';

const world = await distributed.init({ timeoutSeconds: 30 });
if (world.rank === 1) throw new Error('deliberate uncaught error');
await world.barrier();
console.log('not reached: the barrier completed');
