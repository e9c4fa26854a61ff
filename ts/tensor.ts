/**
 * Tensors and differentiable ops for explicit training loops and custom heads. Values live in
 * Rust; `toArray()` copies them out. Every op checks shapes and throws an `Error` naming them.
 *
 * @module
 */

import { native, type NativeTensor } from './native.js';
import { toSgdConfig, type SgdOptions } from './optim.js';
import * as check from './validate.js';

/** A tensor held by Rust (CPU for now), possibly part of a recorded graph. */
export class Tensor {
  /** @internal */
  readonly native: NativeTensor;

  /** @internal Use {@link Tensor.fromArray} or an op. */
  constructor(nativeTensor: NativeTensor) {
    this.native = nativeTensor;
  }

  /**
   * A tensor from host values (copied). With `requiresGrad` it is a trainable leaf whose `grad`
   * is filled by `backward()`.
   */
  static fromArray(data: Float32Array | readonly number[], shape: readonly number[], options: { requiresGrad?: boolean } = {}): Tensor {
    const what = 'Tensor.fromArray';
    let values: Float32Array;
    if (data instanceof Float32Array) values = data;
    else if (Array.isArray(data)) {
      const i = data.findIndex((v) => typeof v !== 'number');
      if (i >= 0) throw new Error(`${what}: data must hold numbers, got ${check.show(data[i])} at index ${i}`);
      values = Float32Array.from(data);
    } else throw check.invalid(what, 'data', 'a Float32Array or an array of numbers', data);
    const dims = Array.from(shape); // its values are checked in Rust
    const requiresGrad = check.boolean(what, 'options.requiresGrad', options.requiresGrad ?? false);
    return new Tensor(native.NativeTensor.fromArray(values, dims, requiresGrad));
  }

  /** Dimensions, outermost first. */
  get shape(): number[] {
    return this.native.shape;
  }

  /** Number of elements. */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Whether gradients flow to or through this tensor. */
  get requiresGrad(): boolean {
    return this.native.requiresGrad;
  }

  /** The accumulated gradient of a leaf, or `null` before `backward()` reaches it. */
  get grad(): Tensor | null {
    const g = this.native.grad;
    return g === null ? null : new Tensor(g);
  }

  /** The values, copied to a new `Float32Array` (row-major). */
  toArray(): Float32Array {
    return this.native.toArray();
  }

  /** The value of a one-element tensor (a loss). */
  item(): number {
    const values = this.toArray();
    if (values.length !== 1) throw new Error(`item() needs a one-element tensor, got shape [${this.shape.join(', ')}]`);
    return values[0] as number;
  }

  /** Back-propagates from this one-element tensor into the leaves' `grad`. */
  backward(): void {
    this.native.backward();
  }

  /** Clears this leaf's gradient. */
  zeroGrad(): void {
    this.native.zeroGrad();
  }

  /** The same values, cut off from the graph. */
  detach(): Tensor {
    return new Tensor(this.native.detach());
  }

  /**
   * Lets go of this tensor's native memory now instead of when the garbage collector gets to it
   * (a model parameter or a recorded graph that still uses the values keeps them). Any later use
   * of this tensor throws an `Error` saying it has been disposed.
   */
  dispose(): void {
    this.native.dispose();
  }

  /** Whether {@link Tensor.dispose} has been called. */
  get disposed(): boolean {
    return this.native.disposed;
  }
}

const T = native.NativeTensor;
const wrap = (t: NativeTensor): Tensor => new Tensor(t);

/** Differentiable ops (NCHW layout, OIHW convolution weights). */
export const ops = {
  /** 2-d convolution with square `stride` (default 1) and `padding` (default 0). */
  conv2d(x: Tensor, weight: Tensor, options: { bias?: Tensor; stride?: number; padding?: number } = {}): Tensor {
    return wrap(T.conv2d(x.native, weight.native, options.bias?.native ?? null, options.stride ?? 1, options.padding ?? 0));
  },
  relu(x: Tensor): Tensor {
    return wrap(T.relu(x.native));
  },
  tanh(x: Tensor): Tensor {
    return wrap(T.activation(x.native, 'tanh'));
  },
  sigmoid(x: Tensor): Tensor {
    return wrap(T.activation(x.native, 'sigmoid'));
  },
  /** Elementwise sum of two tensors of the same shape. */
  add(a: Tensor, b: Tensor): Tensor {
    return wrap(T.add(a.native, b.native));
  },
  /** `alpha * x`. */
  scale(x: Tensor, alpha: number): Tensor {
    return wrap(T.scale(x.native, alpha));
  },
  /** Max pooling with a square `kernel`, `stride` (default kernel) and `padding` (default 0). */
  maxPool2d(x: Tensor, options: { kernel: number; stride?: number; padding?: number }): Tensor {
    return wrap(T.maxPool2d(x.native, options.kernel, options.stride ?? options.kernel, options.padding ?? 0));
  },
  /** [N, C, H, W] -> [N, C]. */
  globalAvgPool(x: Tensor): Tensor {
    return wrap(T.globalAvgPool(x.native));
  },
  /** `x[N, I] . weight[O, I]^T + bias[O]`. */
  linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
    return wrap(T.linear(x.native, weight.native, bias?.native ?? null));
  },
  /** [N, ...] -> [N, rest]. */
  flatten(x: Tensor): Tensor {
    return wrap(T.flatten(x.native));
  },
  reshape(x: Tensor, shape: readonly number[]): Tensor {
    return wrap(T.reshape(x.native, Array.from(shape)));
  },
  /** Mean softmax cross-entropy of logits [N, classes] against integer labels (length N). */
  crossEntropy(logits: Tensor, labels: Int32Array | readonly number[]): Tensor {
    return wrap(T.crossEntropy(logits.native, check.labels('crossEntropy', labels)));
  },
};

/**
 * SGD over tensors you choose, for explicit loops:
 * `loss.backward(); opt.step(); opt.zeroGrad()`.
 * Relative schedules (fractions of a run) need `totalSteps`.
 */
export class SGD {
  readonly #native;

  constructor(params: readonly Tensor[], options: SgdOptions = {}, run: { totalSteps?: number } = {}) {
    this.#native = new native.NativeSgd(
      params.map((p) => p.native),
      JSON.stringify(toSgdConfig(options, run.totalSteps)),
    );
  }

  /** One update from the accumulated gradients (advances the schedule). */
  step(): void {
    this.#native.step();
  }

  /** Clears the gradients of every parameter. */
  zeroGrad(): void {
    this.#native.zeroGrad();
  }

  /** The rate the next step will use. */
  get lr(): number {
    return this.#native.lr;
  }
}
