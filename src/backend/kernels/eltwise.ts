// Native element-wise kernels: unary maps, broadcasting binary ops, AddN and
// Softmax. float32 only; anything else declines to the tfjs-cpu kernel.
import * as tf from '../../core/tf.js';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { Axpby, FirstNonFinite, ReluGrad, SgdMomentumUpdate } from '../ops.js';
import { nativeKernel, sizeOf, type NativeBackend } from '../native_backend.js';

/** The addon's code for an op name in one of its op tables (looked up once per table). */
const opCodes = new WeakMap<object, Map<string, number>>();
export function opCode(backend: NativeBackend, table: 'unaryOps' | 'binaryOps' | 'reduceOps', name: string): number {
  const names = backend.addon[table] as string[];
  let codes = opCodes.get(names);
  if (!codes) opCodes.set(names, (codes = new Map(names.map((n, i) => [n, i]))));
  const code = codes.get(name);
  if (code === undefined) throw new Error(`the native addon has no ${table} entry '${name}'; rebuild it`);
  return code;
}

/** tfjs kernel name -> the addon's unary op, and the attribute passed as alpha. */
const unaryOps: Array<[kernel: string, op: string, alphaAttr?: string]> = [
  [tf.Relu, 'relu'],
  [tf.Relu6, 'relu6'],
  [tf.LeakyRelu, 'leakyRelu', 'alpha'],
  [tf.Elu, 'elu'],
  [tf.Step, 'step', 'alpha'],
  [tf.Exp, 'exp'],
  [tf.Log, 'log'],
  [tf.Sqrt, 'sqrt'],
  [tf.Rsqrt, 'rsqrt'],
  [tf.Square, 'square'],
  [tf.Abs, 'abs'],
  [tf.Neg, 'neg'],
  [tf.Reciprocal, 'reciprocal'],
  [tf.Sigmoid, 'sigmoid'],
  [tf.Tanh, 'tanh'],
];

const unaryKernels = unaryOps.map(([kernel, op, alphaAttr]) =>
  nativeKernel(kernel, ({ inputs, attrs, backend }) => {
    const x = inputs.x!;
    const xv = backend.floats(x);
    if (!xv) return null;
    const out = backend.output(x.shape);
    const alpha = alphaAttr ? Number(attrs[alphaAttr]) : 0;
    backend.addon.unary(opCode(backend, 'unaryOps', op), xv, out.values, alpha);
    return out.info;
  }),
);

/** Runs binary op `op` on a and b (numpy broadcasting), or null for non-float32 inputs. */
export function nativeBinary(backend: NativeBackend, op: string, a: TensorInfo, b: TensorInfo): TensorInfo | null {
  const av = backend.floats(a);
  const bv = backend.floats(b);
  if (!av || !bv) return null;
  const shape = tf.broadcast_util.assertAndGetBroadcastShape(a.shape, b.shape);
  const out = backend.output(shape);
  backend.addon.binary(opCode(backend, 'binaryOps', op), av, a.shape, bv, b.shape, out.values, shape);
  return out.info;
}

const binaryOps: Array<[kernel: string, op: string, a: string, b: string]> = [
  [tf.Add, 'add', 'a', 'b'],
  [tf.Sub, 'sub', 'a', 'b'],
  [tf.Multiply, 'mul', 'a', 'b'],
  [tf.RealDiv, 'div', 'a', 'b'],
  [tf.Maximum, 'max', 'a', 'b'],
  [tf.Minimum, 'min', 'a', 'b'],
  [tf.SquaredDifference, 'squaredDifference', 'a', 'b'],
  [tf.EluGrad, 'eluGrad', 'dy', 'y'],
  [ReluGrad, 'reluGrad', 'dy', 'x'],
];

const binaryKernels = binaryOps.map(([kernel, op, a, b]) =>
  nativeKernel(kernel, ({ inputs, backend }) => nativeBinary(backend, op, inputs[a]!, inputs[b]!)),
);

const addN = nativeKernel(tf.AddN, ({ inputs, backend }) => {
  const xs = Object.values(inputs) as TensorInfo[];
  const values = xs.map((x) => backend.floats(x));
  if (xs.length === 0 || values.some((v) => v === null)) return null;
  const out = backend.output(xs[0]!.shape);
  backend.addon.addN(values as Float32Array[], out.values);
  return out.info;
});

const softmax = nativeKernel(tf.Softmax, ({ inputs, attrs, backend }) => {
  const logits = inputs.logits!;
  const xv = backend.floats(logits);
  const rank = logits.shape.length;
  const dim = Number(attrs.dim);
  if (!xv || rank === 0 || (dim !== -1 && dim !== rank - 1)) return null;
  const cols = logits.shape[rank - 1]!;
  const out = backend.output(logits.shape);
  if (cols > 0) backend.addon.softmax(xv, out.values, sizeOf(logits.shape) / cols, cols, false);
  return out.info;
});

const sgdMomentum = nativeKernel(SgdMomentumUpdate, ({ inputs, attrs, backend }) => {
  const [p, g, buf] = [inputs.p!, inputs.g!, inputs.buf!].map((t) => backend.floats(t));
  if (!p || !g || !buf || g.length !== p.length || buf.length !== p.length) {
    throw new Error(`sgdMomentumUpdate: p, g and buf must be float32 of one size, got [${inputs.p!.shape}], [${inputs.g!.shape}], [${inputs.buf!.shape}]`);
  }
  const value = backend.output(inputs.p!.shape);
  const velocity = backend.output(inputs.p!.shape);
  const { lr, momentum, weightDecay, nesterov } = attrs as unknown as { lr: number; momentum: number; weightDecay: number; nesterov: boolean };
  backend.addon.sgdMomentum(p, g, buf, value.values, velocity.values, lr, momentum, weightDecay, nesterov);
  return [value.info, velocity.info];
});

/** Inputs x0..x{count-1} (or another prefix) as float32 arrays, with a clear error for anything else. */
function numberedFloats(kernel: string, inputs: Record<string, TensorInfo | undefined>, prefix: string, count: number, backend: NativeBackend): Array<{ info: TensorInfo; values: Float32Array }> {
  return Array.from({ length: count }, (_, i) => {
    const info = inputs[`${prefix}${i}`];
    const values = info ? backend.floats(info) : null;
    if (!info || !values) throw new Error(`${kernel}: input ${prefix}${i} must be a float32 tensor`);
    return { info, values };
  });
}

const firstNonFinite = nativeKernel(FirstNonFinite, ({ inputs, attrs, backend }) => {
  const xs = numberedFloats('firstNonFiniteIndex', inputs, 'x', Number(attrs.count), backend);
  const out = backend.output([]);
  out.values[0] = backend.addon.firstNonFinite(xs.map((x) => x.values));
  return out.info;
});

const axpby = nativeKernel(Axpby, ({ inputs, attrs, backend }) => {
  const count = Number(attrs.count);
  const xs = numberedFloats('axpbyAll', inputs, 'x', count, backend);
  const ys = numberedFloats('axpbyAll', inputs, 'y', count, backend);
  const outs = xs.map((x) => backend.output(x.info.shape));
  backend.addon.axpby(
    xs.map((x) => x.values),
    ys.map((y) => y.values),
    outs.map((o) => o.values),
    Number(attrs.a),
    Number(attrs.b),
  );
  return outs.map((o) => o.info);
});

export const kernels: KernelConfig[] = [...unaryKernels, ...binaryKernels, addN, softmax, sgdMomentum, firstNonFinite, axpby];
