// Balanced sampling of positive and negative training examples, detectron2's
// subsample_labels (modeling/sampling.py): up to perImage * positiveFraction
// positives chosen at random, negatives fill the rest of perImage.
import type { RandomStream } from '../core/random.js';

export interface BalancedSample {
  /** Indices into `labels` of the chosen positives, in random order. */
  positive: Int32Array;
  /** Indices of the chosen negatives, in random order. */
  negative: Int32Array;
}

/**
 * Positives are the indices where isPositive(label) holds, negatives where
 * isNegative(label) does (for the RPN: label 1 and label 0; -1 is neither).
 * numPos = min(#positives, floor(perImage * positiveFraction)),
 * numNeg = min(#negatives, perImage - numPos). Each set is chosen as the
 * first numPos (numNeg) entries of a random permutation of its candidates, as
 * torch.randperm(n)[:k] does; the permutation of positives is drawn before the
 * one of negatives, so a seeded `rng` fixes both.
 */
export function sampleBalanced(
  labels: ArrayLike<number>,
  perImage: number,
  positiveFraction: number,
  isPositive: (label: number) => boolean,
  isNegative: (label: number) => boolean,
  rng: RandomStream,
): BalancedSample {
  if (!Number.isInteger(perImage) || perImage < 0) throw new Error(`sampleBalanced: perImage must be a whole number >= 0, got ${perImage}`);
  if (!(positiveFraction >= 0 && positiveFraction <= 1)) throw new Error(`sampleBalanced: positiveFraction must be in [0, 1], got ${positiveFraction}`);
  const positives: number[] = [];
  const negatives: number[] = [];
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i]!;
    if (isPositive(l)) positives.push(i);
    else if (isNegative(l)) negatives.push(i);
  }
  const numPos = Math.min(positives.length, Math.floor(perImage * positiveFraction));
  const numNeg = Math.min(negatives.length, perImage - numPos);
  const pick = (candidates: number[], k: number): Int32Array => {
    const perm = rng.permutation(candidates.length);
    const out = new Int32Array(k);
    for (let i = 0; i < k; i++) out[i] = candidates[perm[i]!]!;
    return out;
  };
  const positive = pick(positives, numPos);
  const negative = pick(negatives, numNeg);
  return { positive, negative };
}
