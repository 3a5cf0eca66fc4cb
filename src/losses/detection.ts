// The losses of a two-stage detector (detectron2's RPN and Fast R-CNN heads),
// as compositions of ops that have gradients: binary cross-entropy on logits,
// softmax cross-entropy on integer labels, and the L1 box loss (detectron2's
// smooth L1 with beta 0). Targets are host arrays: they come from matching
// on the host, detached as in detectron2.
import * as tf from '../core/tf.js';
import type { Scalar, Tensor, Tensor2D } from '@tensorflow/tfjs-core';

/**
 * sum over elements of BCE(sigmoid(x), z), in the overflow-free form
 * max(x, 0) - x z + log(1 + exp(-|x|)).
 */
export function sigmoidCrossEntropySum(logits: Tensor, targets: Float32Array): Scalar {
  if (targets.length !== logits.size) throw new Error(`sigmoidCrossEntropySum: ${targets.length} targets for ${logits.size} logits`);
  return tf.tidy(() => {
    const z = tf.tensor(targets, logits.shape);
    const loss = tf.add(tf.sub(tf.relu(logits), tf.mul(logits, z)), tf.softplus(tf.neg(tf.abs(logits))));
    return tf.sum(loss);
  });
}

/** mean over rows of -log softmax(logits)[label]; labels index the columns. */
export function softmaxCrossEntropyMean(logits: Tensor2D, labels: Int32Array): Scalar {
  const [rows, classes] = logits.shape;
  if (labels.length !== rows) throw new Error(`softmaxCrossEntropyMean: ${labels.length} labels for ${rows} rows`);
  return tf.tidy(() => {
    const oneHot = tf.oneHot(tf.tensor1d(labels, 'int32'), classes);
    const picked = tf.sum(tf.mul(tf.logSoftmax(logits), oneHot), 1);
    return tf.neg(tf.mean(picked)) as Scalar;
  });
}

/** sum |pred - target| (detectron2's smooth_l1_loss with beta 0, reduction "sum"). */
export function l1LossSum(pred: Tensor, target: Float32Array): Scalar {
  if (target.length !== pred.size) throw new Error(`l1LossSum: ${target.length} targets for ${pred.size} predictions`);
  return tf.tidy(() => tf.sum(tf.abs(tf.sub(pred, tf.tensor(target, pred.shape)))));
}
