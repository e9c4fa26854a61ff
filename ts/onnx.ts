/**
 * ONNX export (opset 17) for inference: the network in eval mode (batch norm with its running
 * statistics), a dynamic batch dimension, weights as initializers. Written with a small protobuf
 * encoder (the few ONNX messages it needs), no dependency.
 *
 * @module
 */

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { Model } from './model.js';
import type { ResNetSpec } from './spec.js';

// --- protobuf -----------------------------------------------------------------------------------

/** Protobuf wire format: varints, length-delimited fields, fixed32. */
export class ProtoWriter {
  #chunks: Uint8Array[] = [];
  #length = 0;

  #push(bytes: Uint8Array): void {
    this.#chunks.push(bytes);
    this.#length += bytes.length;
  }

  #varint(value: bigint): void {
    let v = BigInt.asUintN(64, value); // negative int64 as two's complement, 10 bytes
    const out: number[] = [];
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v !== 0n) byte |= 0x80;
      out.push(byte);
    } while (v !== 0n);
    this.#push(Uint8Array.from(out));
  }

  #tag(field: number, wire: number): void {
    this.#varint(BigInt((field << 3) | wire));
  }

  /** int32/int64/enum/bool field (wire type 0). */
  int(field: number, value: number | bigint): this {
    this.#tag(field, 0);
    this.#varint(BigInt(value));
    return this;
  }

  /** float field (wire type 5). */
  float(field: number, value: number): this {
    this.#tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    this.#push(b);
    return this;
  }

  /** bytes / embedded message field (wire type 2). */
  bytes(field: number, value: Uint8Array): this {
    this.#tag(field, 2);
    this.#varint(BigInt(value.length));
    this.#push(value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  message(field: number, build: (w: ProtoWriter) => void): this {
    const w = new ProtoWriter();
    build(w);
    return this.bytes(field, w.finish());
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.#length);
    let at = 0;
    for (const c of this.#chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

// --- ONNX messages ------------------------------------------------------------------------------

const FLOAT = 1;
const INT64 = 7;

type Attr = { name: string; ints: number[] } | { name: string; int: number } | { name: string; float: number };

interface Node {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs?: Attr[];
}

interface Initializer {
  name: string;
  dims: number[];
  data: Float32Array | BigInt64Array;
}

function writeAttr(w: ProtoWriter, a: Attr): void {
  w.string(1, a.name);
  if ('ints' in a) {
    for (const v of a.ints) w.int(8, v);
    w.int(20, 7); // INTS
  } else if ('int' in a) {
    w.int(3, a.int).int(20, 2); // INT
  } else {
    w.float(2, a.float).int(20, 1); // FLOAT
  }
}

function writeTensor(w: ProtoWriter, t: Initializer): void {
  for (const d of t.dims) w.int(1, d);
  w.int(2, t.data instanceof Float32Array ? FLOAT : INT64);
  w.string(8, t.name);
  const bytes = new Uint8Array(t.data.byteLength);
  bytes.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)); // little-endian hosts
  w.bytes(9, bytes);
}

/** ValueInfoProto of a float tensor; a string dimension is symbolic (`dim_param`). */
function writeValueInfo(w: ProtoWriter, name: string, dims: (number | string)[]): void {
  w.string(1, name);
  w.message(2, (type) =>
    type.message(1, (tensor) => {
      tensor.int(1, FLOAT);
      tensor.message(2, (shape) => {
        for (const d of dims) shape.message(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.string(2, d)));
      });
    }),
  );
}

/** Encodes a ModelProto (IR version 8, opset 17). */
export function encodeOnnxModel(graph: {
  name: string;
  nodes: Node[];
  initializers: Initializer[];
  input: { name: string; dims: (number | string)[] };
  output: { name: string; dims: (number | string)[] };
}): Uint8Array {
  const w = new ProtoWriter();
  w.int(1, 8); // ir_version
  w.string(2, 'resnet-wgpu');
  w.message(7, (g) => {
    graph.nodes.forEach((n, i) =>
      g.message(1, (node) => {
        n.inputs.forEach((x) => node.string(1, x));
        n.outputs.forEach((y) => node.string(2, y));
        node.string(3, `${n.op}_${i}`);
        node.string(4, n.op);
        (n.attrs ?? []).forEach((a) => node.message(5, (attr) => writeAttr(attr, a)));
      }),
    );
    g.string(2, graph.name);
    graph.initializers.forEach((t) => g.message(5, (tensor) => writeTensor(tensor, t)));
    g.message(11, (v) => writeValueInfo(v, graph.input.name, graph.input.dims));
    g.message(12, (v) => writeValueInfo(v, graph.output.name, graph.output.dims));
  });
  w.message(8, (op) => op.string(1, '').int(2, 17)); // opset_import
  return w.finish();
}

// --- the ResNet graph ---------------------------------------------------------------------------

/** F32 and I64 tensors of a safetensors file, by name. */
function parseSafetensors(buf: Buffer): Map<string, { shape: number[]; data: Float32Array }> {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>;
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const e = raw as { dtype: string; shape: number[]; data_offsets: [number, number] };
    if (e.dtype !== 'F32') continue;
    const bytes = new Uint8Array(buf.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]));
    out.set(name, { shape: e.shape, data: new Float32Array(bytes.buffer) });
  }
  return out;
}

const ACT: Record<string, string> = { relu: 'Relu', tanh: 'Tanh', sigmoid: 'Sigmoid' };

/** The ONNX graph of `spec` with the weights of `state` (torchvision names). */
export function resnetToOnnx(spec: ResNetSpec, state: Map<string, { shape: number[]; data: Float32Array }>): Uint8Array {
  const nodes: Node[] = [];
  const initializers: Initializer[] = [];
  const act = ACT[spec.activation ?? 'relu'] ?? 'Relu';
  let counter = 0;
  const fresh = (): string => `t${counter++}`;
  const param = (name: string): string => {
    const t = state.get(name);
    if (t === undefined) throw new Error(`ONNX export: the model has no tensor ${name}`);
    if (!initializers.some((i) => i.name === name)) initializers.push({ name, dims: t.shape, data: t.data });
    return name;
  };
  const has = (name: string): boolean => state.has(name);
  const conv = (x: string, prefix: string, stride: number): string => {
    const w = state.get(`${prefix}.weight`);
    if (w === undefined) throw new Error(`ONNX export: the model has no tensor ${prefix}.weight`);
    const k = w.shape[2] ?? 1;
    const p = Math.floor(k / 2);
    const y = fresh();
    const inputs = [x, param(`${prefix}.weight`)];
    if (has(`${prefix}.bias`)) inputs.push(param(`${prefix}.bias`));
    nodes.push({
      op: 'Conv',
      inputs,
      outputs: [y],
      attrs: [
        { name: 'kernel_shape', ints: [k, k] },
        { name: 'strides', ints: [stride, stride] },
        { name: 'pads', ints: [p, p, p, p] },
      ],
    });
    return y;
  };
  const bn = (x: string, prefix: string): string => {
    const y = fresh();
    nodes.push({
      op: 'BatchNormalization',
      inputs: [x, ...['weight', 'bias', 'running_mean', 'running_var'].map((s) => param(`${prefix}.${s}`))],
      outputs: [y],
      attrs: [{ name: 'epsilon', float: 1e-5 }],
    });
    return y;
  };
  const unary = (op: string, x: string, attrs?: Attr[]): string => {
    const y = fresh();
    nodes.push({ op, inputs: [x], outputs: [y], ...(attrs ? { attrs } : {}) });
    return y;
  };
  const constant = (name: string, values: number[]): string => {
    if (!initializers.some((i) => i.name === name)) {
      initializers.push({ name, dims: [values.length], data: BigInt64Array.from(values, (v) => BigInt(v)) });
    }
    return name;
  };

  // Pre-activation nets (He et al. 2016; the layout is documented in crates/resnet-core/src/nn/
  // blocks.rs): bnK + act before convK (the first block after an ImageNet stem has no bn1), a
  // shortcut that changes the shape takes the pre-activated input, nothing after the addition,
  // bn_final + act before the pool; a CIFAR stem is the bare convolution. Nets without batch norm
  // (`batchNorm: false`): the same graph with every batch norm left out.
  const pre = spec.preActivation === true;
  const norm: (x: string, prefix: string) => string = spec.batchNorm === false ? (x) => x : bn;
  const stemStride = spec.stem === 'imagenet' ? 2 : 1;
  const stem = conv('input', 'conv1', stemStride);
  let x = pre && spec.stem === 'cifar' ? stem : unary(act, norm(stem, 'bn1'));
  if (spec.stem === 'imagenet') {
    x = unary('MaxPool', x, [
      { name: 'kernel_shape', ints: [3, 3] },
      { name: 'strides', ints: [2, 2] },
      { name: 'pads', ints: [1, 1, 1, 1] },
    ]);
  }
  let channels = spec.stemWidth;
  spec.stages.forEach((stage, i) => {
    for (let j = 0; j < stage.count; j++) {
      const prefix = `layer${i + 1}.${j}`;
      const stride = j === 0 ? stage.stride : 1;
      const strides =
        stage.block === 'basic' ? [stride, 1] : (spec.bottleneckStride ?? '3x3') === '3x3' ? [1, stride, 1] : [stride, 1, 1];
      let y = x;
      let h = x; // the pre-activated input (pre-activation nets)
      strides.forEach((s, k) => {
        if (pre) {
          const afterImagenetStem = spec.stem === 'imagenet' && i === 0 && j === 0 && k === 0;
          if (!afterImagenetStem) y = unary(act, norm(y, `${prefix}.bn${k + 1}`));
          if (k === 0) h = y;
          y = conv(y, `${prefix}.conv${k + 1}`, s);
        } else {
          y = norm(conv(y, `${prefix}.conv${k + 1}`, s), `${prefix}.bn${k + 1}`);
          if (k < strides.length - 1) y = unary(act, y);
        }
      });
      const cOut = stage.block === 'basic' ? stage.width : stage.width * 4;
      let shortcut: string | undefined;
      if (spec.plain) {
        shortcut = undefined;
      } else if (has(`${prefix}.downsample.0.weight`)) {
        const projected = conv(h, `${prefix}.downsample.0`, stride);
        shortcut = has(`${prefix}.downsample.1.weight`) ? bn(projected, `${prefix}.downsample.1`) : projected;
      } else if (stride !== 1 || cOut !== channels) {
        // Option A: subsample, then zero-pad channels ((c_out - c_in) / 2 before, the rest after).
        let s = h;
        if (stride !== 1) {
          const sliced = fresh();
          nodes.push({
            op: 'Slice',
            inputs: [
              s,
              constant('slice_starts', [0, 0]),
              constant('slice_ends', [2 ** 31 - 1, 2 ** 31 - 1]),
              constant('slice_axes', [2, 3]),
              constant(`slice_steps_${stride}`, [stride, stride]),
            ],
            outputs: [sliced],
          });
          s = sliced;
        }
        const before = Math.floor((cOut - channels) / 2);
        const after = cOut - channels - before;
        const padded = fresh();
        nodes.push({ op: 'Pad', inputs: [s, constant(`pads_${before}_${after}`, [0, before, 0, 0, 0, after, 0, 0])], outputs: [padded] });
        shortcut = padded;
      } else {
        shortcut = x;
      }
      if (shortcut !== undefined) {
        const sum = fresh();
        nodes.push({ op: 'Add', inputs: [y, shortcut], outputs: [sum] });
        y = sum;
      }
      x = pre ? y : unary(act, y);
      channels = cOut;
    }
  });
  if (pre) x = unary(act, norm(x, 'bn_final'));
  const pooled = unary('Flatten', unary('GlobalAveragePool', x), [{ name: 'axis', int: 1 }]);
  nodes.push({ op: 'Gemm', inputs: [pooled, param('fc.weight'), param('fc.bias')], outputs: ['logits'], attrs: [{ name: 'transB', int: 1 }] });
  return encodeOnnxModel({
    name: 'resnet',
    nodes,
    initializers,
    input: { name: 'input', dims: ['batch', spec.inChannels, 'height', 'width'] },
    output: { name: 'logits', dims: ['batch', spec.numClasses] },
  });
}

/**
 * Writes `model` as an ONNX file (opset 17) for inference: input `input` [batch, C, H, W]
 * (normalised as for `predict`), output `logits` [batch, classes]; the batch (and image size)
 * is dynamic.
 */
export async function exportOnnx(model: Model, path: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'resnet-wgpu-onnx-'));
  try {
    const weights = join(dir, 'weights.safetensors');
    await model.save(weights);
    const bytes = resnetToOnnx(model.spec, parseSafetensors(await readFile(weights)));
    await writeFile(path, bytes);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
