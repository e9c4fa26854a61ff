/**
 * Argument checks at the public API, so that a bad value is an `Error` naming the call, the
 * parameter, the value and what is allowed, before it reaches Rust (where napi would truncate
 * 4.5 to 4, wrap -4 to 4294967292, or say only "Get TypedArray info failed"). Shapes are not
 * checked here: the binding takes them as JS numbers and checks every dimension itself
 * (`crates/resnet-node/src/convert.rs`), with the same messages.
 *
 * @internal
 * @module
 */

/** A value as a message shows it: strings quoted, arrays and typed arrays by kind and length. */
export function show(value: unknown): string {
  if (typeof value === 'string') return `'${value}'`;
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (Array.isArray(value)) return value.length <= 8 ? `[${value.map(show).join(', ')}]` : `an Array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name} of length ${(value as unknown as { length?: number }).length ?? value.byteLength}`;
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'object') return `an object (${value.constructor?.name ?? 'Object'})`;
  return String(value);
}

/** `what: name must be <expected>, got <value>`. */
export function invalid(what: string, name: string, expected: string, value: unknown): Error {
  return new Error(`${what}: ${name} must be ${expected}, got ${show(value)}`);
}

/** An integer >= `min` (0 or 1). */
export function integer(what: string, name: string, value: unknown, min = 0): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw invalid(what, name, min === 1 ? 'a positive integer' : `an integer >= ${min}`, value);
  }
  return value;
}

/** A finite number, optionally >= `min`. */
export function finite(what: string, name: string, value: unknown, min?: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || (min !== undefined && value < min)) {
    throw invalid(what, name, min === undefined ? 'a finite number' : `a finite number >= ${min}`, value);
  }
  return value;
}

export function boolean(what: string, name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw invalid(what, name, 'true or false', value);
  return value;
}

/** One of `allowed` (strings or numbers). */
export function oneOf<T extends string | number>(what: string, name: string, value: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) {
    throw invalid(what, name, `one of ${allowed.map((a) => show(a)).join(', ')}`, value);
  }
  return value as T;
}

/** Refuses keys of `options` that are not in `known` (a typo such as `shortcuts` would otherwise be ignored). */
export function knownKeys(what: string, options: object, known: readonly string[]): void {
  for (const [key, value] of Object.entries(options)) {
    if (value !== undefined && !known.includes(key)) {
      throw new Error(`${what}: unknown option '${key}' (the options are ${known.join(', ')})`);
    }
  }
}

/** An options object (or undefined, meaning `{}`). */
export function optionsObject<T extends object>(what: string, value: T | undefined): T {
  if (value === undefined) return {} as T;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid(what, 'options', 'an object', value);
  return value;
}

/** Images for the model: a `Float32Array` (NCHW values). */
export function float32Array(what: string, name: string, value: unknown): Float32Array {
  if (!(value instanceof Float32Array)) throw invalid(what, name, 'a Float32Array (NCHW values)', value);
  return value;
}

/** Class labels accepted by the API. */
export type Labels = Int32Array | Uint8Array | readonly number[];

/**
 * Labels as the Int32Array Rust takes: an Int32Array as is; a Uint8Array, another integer typed
 * array or an array of numbers converted, each value checked to be an integer (1.5 or a
 * Float32Array's 1.5 would otherwise be truncated to 1 and trained on). The range
 * [0, numClasses) is checked in Rust, which knows the model.
 */
export function labels(what: string, value: unknown): Int32Array {
  if (value instanceof Int32Array) return value;
  const list = Array.isArray(value) || (ArrayBuffer.isView(value) && !(value instanceof DataView) && !isBigIntArray(value)) ? (value as ArrayLike<unknown>) : undefined;
  if (list === undefined) throw invalid(what, 'labels', 'an Int32Array, a Uint8Array or an array of integer class indices', value);
  const out = new Int32Array(list.length);
  for (let i = 0; i < list.length; i++) {
    const v = list[i];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < -2147483648 || v > 2147483647) {
      throw new Error(`${what}: labels must be integer class indices, got ${show(v)} at index ${i}`);
    }
    out[i] = v;
  }
  return out;
}

function isBigIntArray(v: ArrayBufferView): boolean {
  return v instanceof BigInt64Array || v instanceof BigUint64Array;
}
