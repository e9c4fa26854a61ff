// The second half of `npm run build:mpi`: copies the MPI plugin that `cargo build --release -p
// resnet-mpi` made into native/, where resnet-core looks for it (RESNET_WGPU_MPI_PLUGIN overrides).
// Through a temporary file and a rename: overwriting a library in place would corrupt it under a
// process that has it loaded.
import { copyFileSync, existsSync, renameSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const name =
  process.platform === 'win32' ? 'resnet_mpi.dll' : process.platform === 'darwin' ? 'libresnet_mpi.dylib' : 'libresnet_mpi.so'
const targetDir = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(root, 'target')
const from = join(targetDir, 'release', name)
if (!existsSync(from)) {
  console.error(`${from} is missing: run \`cargo build --release -p resnet-mpi\` first (npm run build:mpi does)`)
  process.exit(1)
}
const to = join(root, 'native', name)
const tmp = `${to}.tmp-${process.pid}`
copyFileSync(from, tmp)
renameSync(tmp, to)
console.log(`MPI plugin: ${to}`)
