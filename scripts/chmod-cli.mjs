// tsc writes dist/cli.js without the executable bit, and `npx resnet-wgpu` (the Quick start) runs
// the bin file directly: without the bit it fails with "Permission denied". npm sets the bit only
// when it links a dependency's bins, never for the package being built.
import { chmodSync } from 'node:fs';

chmodSync(new URL('../dist/cli.js', import.meta.url), 0o755);
