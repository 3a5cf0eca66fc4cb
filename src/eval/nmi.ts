// Normalised mutual information between two labelings of the same samples,
// the usual score of a clustering against classes (DeepCluster, SwAV's
// prototype assignments):
//
//   NMI(A, B) = I(A; B) / ((H(A) + H(B)) / 2)
//
// with the arithmetic mean of the entropies, scikit-learn's default
// (`normalized_mutual_info_score`), so 1 is the same partition up to renaming
// and 0 independent ones. Natural logarithms; they cancel in the ratio.

/** NMI of two labelings (non-negative integers) of the same samples. Two single-cluster labelings score 1. */
export function normalizedMutualInfo(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length;
  if (n !== b.length) throw new Error(`normalizedMutualInfo: the labelings have ${n} and ${b.length} samples`);
  if (n === 0) throw new Error('normalizedMutualInfo: no samples');
  const joint = new Map<string, number>();
  const countA = new Map<number, number>();
  const countB = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (!(Number.isInteger(x) && x >= 0 && Number.isInteger(y) && y >= 0)) {
      throw new Error(`normalizedMutualInfo: labels must be non-negative integers, got ${x} and ${y} at ${i}`);
    }
    joint.set(`${x},${y}`, (joint.get(`${x},${y}`) ?? 0) + 1);
    countA.set(x, (countA.get(x) ?? 0) + 1);
    countB.set(y, (countB.get(y) ?? 0) + 1);
  }
  const entropy = (counts: Map<number, number>) => -[...counts.values()].reduce((h, c) => h + (c / n) * Math.log(c / n), 0);
  const hA = entropy(countA);
  const hB = entropy(countB);
  if (hA === 0 && hB === 0) return 1;
  let mutual = 0;
  for (const [key, c] of joint) {
    const [x, y] = key.split(',').map(Number) as [number, number];
    mutual += (c / n) * Math.log((c * n) / (countA.get(x)! * countB.get(y)!));
  }
  // Rounding can leave I a hair below 0 for independent labelings.
  return Math.max(0, mutual) / ((hA + hB) / 2);
}
