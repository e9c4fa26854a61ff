/**
 * Data-parallel training across processes (MPI). `distributed.init()` returns the {@link World}
 * this process belongs to: under `mpiexec -n N` one of N ranks, otherwise a one-process world, so
 * the same script runs alone unchanged. Pass it to `fit({ distributed: world })`.
 *
 * ```ts
 * import { distributed, fit, Model, resnet } from 'resnet-wgpu';
 * const world = await distributed.init();
 * const model = Model.create(resnet.cifar({ depth: 20 }), { seed: 0 });
 * await fit(model, train, { batchSize: 64, distributed: world }); // 64 per rank
 * if (world.rank === 0) await model.save('runs/model.safetensors');
 * ```
 *
 * MPI itself is a plugin (`native/libresnet_mpi.so`, built by `npm run build:mpi` against the
 * system MPI) loaded only here, so the package installs and loads on machines without MPI.
 *
 * @module
 */

import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { native, type NativeWorld } from './native.js';

/** This process among the ranks of a run, and the collectives they share. */
export interface World {
  /** 0 .. size-1; rank 0 prints, writes checkpoints and figures. */
  readonly rank: number;
  /** Number of processes (1 when not launched by an MPI launcher). */
  readonly size: number;
  /** Rank among the processes on this machine: picks the GPU adapter. */
  readonly localRank: number;
  /** Processes on this machine: the CPU cores are split between them. */
  readonly localSize: number;
  /** The MPI library underneath (e.g. `MPICH Version: 4.0.2 ...`), or a note that there is none. */
  readonly library: string;
  /** `size > 1`: training must agree across ranks. */
  readonly isDistributed: boolean;
  /** Element-wise sum over all ranks (every rank must call it, with the same length). */
  allReduceSum(values: Float64Array | readonly number[]): Promise<Float64Array>;
  /** Resolves once every rank has called it. */
  barrier(): Promise<void>;
  /** Prints `message` on stderr and stops every rank with exit code `code`. Never returns. */
  abort(code: number, message: string): never;
  /** Orderly shutdown of MPI (also done at a clean exit); idempotent. */
  finalize(): void;
}

/** Options of {@link init}. */
export interface InitOptions {
  /** The MPI plugin to load (default: `$RESNET_WGPU_MPI_PLUGIN`, else the package's `native/`). */
  plugin?: string;
  /**
   * GPU adapter index for this rank (default: its local rank, so rank k of a node takes the
   * node's GPU k), unless `RESNET_WGPU_ADAPTER` names an adapter, which then wins for every rank.
   */
  gpuAdapter?: number;
  /** CPU threads of this rank (default: the machine's cores / local ranks, at least 1). */
  cpuThreads?: number;
  /**
   * Seconds a collective waits for the other ranks before it fails (default 300): a rank that
   * died without MPI noticing makes the others stop with an error instead of hanging.
   */
  timeoutSeconds?: number;
}

/** Environment variables an MPI launcher sets (MPICH/Hydra and Slurm's PMI, Open MPI, PMIx). */
export const LAUNCHER_VARIABLES: readonly string[] = ['PMI_RANK', 'PMI_SIZE', 'OMPI_COMM_WORLD_SIZE', 'PMIX_RANK'];

/** Names the plugin file when set. */
export const PLUGIN_ENV = 'RESNET_WGPU_MPI_PLUGIN';

/**
 * Environment variables as `process.env` holds them (structural, so the package's typings need
 * no `@types/node`).
 */
export type Environment = Readonly<Record<string, string | undefined>>;

/** Whether this process was started by an MPI launcher (`mpiexec`, `srun --mpi=...`). */
export function launchedByMpi(env: Environment = process.env): boolean {
  return LAUNCHER_VARIABLES.some((name) => env[name] !== undefined);
}

/** The plugin's file name on `platform`: what `npm run build:mpi` writes into `native/`. */
export function pluginFileName(platform: string = process.platform): string {
  if (platform === 'darwin') return 'libresnet_mpi.dylib';
  if (platform === 'win32') return 'resnet_mpi.dll';
  return 'libresnet_mpi.so';
}

/** Where the plugin is looked for, and what chose that place. */
export interface PluginLocation {
  path: string;
  /** `option`: `init({ plugin })`; `env`: `$RESNET_WGPU_MPI_PLUGIN`; `package`: the package's `native/`. */
  source: 'option' | 'env' | 'package';
  found: boolean;
}

/** The package root: the same relative path works from `ts/` (tests) and `dist/` (published). */
const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Where {@link init} would load the MPI plugin from (it loads nothing). */
export function locatePlugin(plugin?: string, env: Environment = process.env): PluginLocation {
  const fromEnv = env[PLUGIN_ENV];
  const [path, source]: [string, PluginLocation['source']] =
    plugin !== undefined
      ? [plugin, 'option']
      : fromEnv !== undefined && fromEnv !== ''
        ? [fromEnv, 'env']
        : [join(PACKAGE_ROOT, 'native', pluginFileName()), 'package'];
  return { path, source, found: existsSync(path) };
}

/** The Error for a missing plugin: what to install and build, or which setting to fix. */
export function missingPluginError(where: PluginLocation): Error {
  const how =
    where.source === 'package'
      ? 'Install an MPI and build the plugin: on Debian/Ubuntu `apt-get install mpich libmpich-dev libclang-dev`, ' +
        `then \`npm run build:mpi\` in the resnet-wgpu checkout (it writes native/${pluginFileName()}); ` +
        `or set ${PLUGIN_ENV} to a plugin built elsewhere`
      : `the file named by ${where.source === 'env' ? PLUGIN_ENV : 'the plugin option'} does not exist; ` +
        'build it with `npm run build:mpi` (after `apt-get install mpich libmpich-dev libclang-dev`) or fix the path';
  return new Error(`resnet-wgpu: launched by MPI but the MPI plugin is missing: ${where.path}. ${how}.`);
}

/** The one world of this process: MPI can be initialised once. */
let current: Promise<World> | undefined;

/** The native world behind an MPI {@link World}, for the model and the bench. */
const natives = new WeakMap<World, NativeWorld>();

/** @internal The native world behind `world`, or undefined for a one-process world. */
export function nativeWorldOf(world: World): NativeWorld | undefined {
  return natives.get(world);
}

/**
 * The world of this process. Not started by an MPI launcher: a one-process world (no plugin is
 * loaded). Under MPI: loads the plugin, initialises MPI, selects this rank's GPU adapter and its
 * share of the CPU cores, and arranges that a clean exit finalises MPI while a failing one (a
 * non-zero exit code, an uncaught exception) stops every rank. Call it before creating models or
 * loading data (the adapter and the thread count are fixed at their first use). Calling it
 * again returns the same world.
 *
 * @throws Error naming what to install when launched by MPI and the plugin is missing.
 */
export function init(options: InitOptions = {}): Promise<World> {
  current ??= start(options).catch((error: unknown) => {
    current = undefined; // nothing was initialised: a corrected call may try again
    throw error;
  });
  return current;
}

async function start(options: InitOptions): Promise<World> {
  if (!launchedByMpi()) {
    applyResources(options, undefined);
    return new OneProcessWorld();
  }
  const where = locatePlugin(options.plugin);
  if (!where.found) throw missingPluginError(where);
  const timeout = options.timeoutSeconds ?? 300;
  if (!(timeout > 0) || !Number.isFinite(timeout)) throw new Error(`timeoutSeconds must be a positive number, got ${timeout}`);
  // An addon built before the distributed binding (a stale native/ build) lacks the class.
  if (typeof (native as { NativeWorld?: unknown }).NativeWorld !== 'function') {
    throw new Error('resnet-wgpu: this build of the native addon has no distributed support; rebuild it (npm run build:native)');
  }
  keepUcxOutOfTheHeap();
  const nativeWorld = await native.NativeWorld.init(where.path, timeout);
  const world = new MpiWorld(nativeWorld);
  natives.set(world, nativeWorld);
  // Node prints an uncaught error only after the 'exit' event, which aborts: keep it for the message.
  let uncaught: unknown;
  process.on('uncaughtExceptionMonitor', (error) => {
    uncaught = error;
  });
  process.on('exit', (code) => {
    // A failing rank takes the others down (mpiexec ends the job) instead of leaving them waiting
    // in a collective; a clean exit shuts MPI down in order.
    if (code === 0) return world.finalize();
    const why = uncaught === undefined ? `exited with code ${code}` : `failed: ${uncaught instanceof Error ? (uncaught.stack ?? uncaught.message) : String(uncaught)}`;
    world.abort(code, `resnet-wgpu: rank ${world.rank} ${why}`);
  });
  try {
    applyResources(options, world);
  } catch (error) {
    world.abort(1, `resnet-wgpu: rank ${world.rank} failed: ${error instanceof Error ? error.message : String(error)}`);
  }
  return world;
}

/**
 * Turns off UCX's memory events (`UCX_MEM_EVENTS=no`) unless the user set them. UCX (under MPICH's
 * ch4:ucx and Open MPI's pml/ucx) otherwise patches glibc's mmap/munmap/brk/sbrk/madvise in place
 * during MPI_Init and tests the patches by moving the program break up one page and back down.
 * MPI_Init runs on the communication thread while Node's main thread keeps allocating from the
 * brk heap, so that "back down" can cut off the page the main thread just got: a later access to
 * it is a segmentation fault inside V8 or libuv (seen in one `mpiexec` job in 30 to 100). The
 * events only feed UCX's registration cache, which shared memory and TCP do not need; on
 * InfiniBand a user may set `UCX_MEM_EVENTS=yes` to get it back. Set here, on the main thread and
 * before the plugin loads: UCX reads its options when the plugin brings it in.
 */
function keepUcxOutOfTheHeap(): void {
  process.env['UCX_MEM_EVENTS'] ??= 'no';
}

/**
 * Picks this rank's GPU adapter and CPU thread count: what the options say, else (under MPI)
 * local rank k takes adapter k and the cores are shared evenly between the local ranks.
 */
function applyResources(options: InitOptions, world: World | undefined): void {
  const hint = ' (call distributed.init() before creating a model or a data loader)';
  const adapter = options.gpuAdapter ?? (world !== undefined && process.env['RESNET_WGPU_ADAPTER'] === undefined ? world.localRank : undefined);
  if (adapter !== undefined) {
    if (!Number.isInteger(adapter) || adapter < 0) throw new Error(`gpuAdapter must be an integer >= 0, got ${adapter}`);
    rethrowWith(() => native.selectGpuAdapter(adapter), hint);
  }
  const threads = options.cpuThreads ?? (world !== undefined ? Math.max(1, Math.floor(availableParallelism() / world.localSize)) : undefined);
  if (threads !== undefined) {
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`cpuThreads must be an integer >= 1, got ${threads}`);
    rethrowWith(() => native.setCpuThreads(threads), hint);
  }
}

function rethrowWith(call: () => void, hint: string): void {
  try {
    call();
  } catch (error) {
    throw new Error(`${error instanceof Error ? error.message : String(error)}${hint}`);
  }
}

/** Not launched by MPI: collectives over one rank are identities. */
class OneProcessWorld implements World {
  readonly rank = 0;
  readonly size = 1;
  readonly localRank = 0;
  readonly localSize = 1;
  readonly library = 'none (one process: not launched by an MPI launcher)';
  readonly isDistributed = false;

  async allReduceSum(values: Float64Array | readonly number[]): Promise<Float64Array> {
    return Float64Array.from(values);
  }

  async barrier(): Promise<void> {}

  abort(code: number, message: string): never {
    process.stderr.write(`${message}\n`);
    process.exit(code);
  }

  finalize(): void {}
}

/** One rank of an MPI job. */
class MpiWorld implements World {
  readonly #native: NativeWorld;
  readonly rank: number;
  readonly size: number;
  readonly localRank: number;
  readonly localSize: number;
  readonly library: string;
  readonly isDistributed: boolean;

  constructor(nativeWorld: NativeWorld) {
    this.#native = nativeWorld;
    this.rank = nativeWorld.rank;
    this.size = nativeWorld.size;
    this.localRank = nativeWorld.localRank;
    this.localSize = nativeWorld.localSize;
    this.library = nativeWorld.library;
    this.isDistributed = this.size > 1;
  }

  allReduceSum(values: Float64Array | readonly number[]): Promise<Float64Array> {
    return this.#native.allReduceSum(Float64Array.from(values));
  }

  barrier(): Promise<void> {
    return this.#native.barrier();
  }

  abort(code: number, message: string): never {
    this.#native.abort(code, message);
    // MPI_Abort does not return; should a library return anyway, this rank still stops.
    process.exit(code === 0 ? 1 : code);
  }

  finalize(): void {
    this.#native.finalize();
  }
}
