// Initialises MPI on both ranks and says which UCX memory-event setting each ran with; the test
// reads UCX's debug log (stderr) for the memory hooks it installed, if any.
import { distributed } from '../../dist/index.js';

const world = await distributed.init({ timeoutSeconds: 30 });
await world.barrier();
console.log(JSON.stringify({ ucxMemEvents: process.env['UCX_MEM_EVENTS'] }));
