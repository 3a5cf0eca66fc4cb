// Row-wise log-sum-exp over column blocks, with its gradient written out.
// tfjs's logSumExp differentiates through max() (an Equal mask and a Multiply
// per call) and the contrastive losses would concatenate [positive, queue]
// logits first (a SplitV in the backward pass); on the [N, 1+K] logits of a
// key queue those cost more than the matmul that made them.
import * as tf from '../core/tf.js';
import type { GradSaveFunc, Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs-core';

const blockLogSumExp = tf.customGrad((...args: unknown[]) => {
  const save = args.pop() as GradSaveFunc;
  const blocks = args as Tensor2D[];
  // Shifting by the row maximum keeps exp() finite; it cancels in the result.
  const max = blocks.map((b) => tf.max(b, 1, true)).reduce((a, b) => tf.maximum(a, b));
  const sum = tf.addN(blocks.map((b) => tf.sum(tf.exp(tf.sub(b, max)), 1, true)));
  const lse = tf.add(max, tf.log(sum)) as Tensor2D;
  save([lse, ...blocks]);
  return {
    value: tf.reshape(lse, [lse.shape[0]]),
    // d lse / d x = softmax(x), block by block.
    gradFunc: (dy: Tensor, saved: Tensor[]) => {
      const [savedLse, ...xs] = saved as Tensor2D[];
      const scale = tf.reshape(dy, [dy.shape[0]!, 1]);
      return xs.map((x) => tf.mul(tf.exp(tf.sub(x, savedLse!)), scale));
    },
  };
});

/** log sum_j exp(x[i, j]) over the columns of all `blocks` side by side ([N, K_b] each) -> [N], without concatenating them. */
export function rowLogSumExp(...blocks: Tensor2D[]): Tensor1D {
  if (blocks.length === 0) throw new Error('rowLogSumExp: needs at least one block');
  const rows = blocks[0]!.shape[0];
  for (const b of blocks) {
    if (b.rank !== 2 || b.shape[0] !== rows) throw new Error(`rowLogSumExp: every block must be [${rows}, K], got [${b.shape}]`);
  }
  return (blockLogSumExp as (...xs: Tensor[]) => Tensor)(...blocks) as Tensor1D;
}
