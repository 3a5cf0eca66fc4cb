// The permutation set of the jigsaw puzzle (Noroozi & Favaro 2016, section
// 3.2, algorithm 1): the classes of the puzzle are N of the 9! orders of the 9
// tiles, chosen far apart in Hamming distance (the number of tiles in a
// different place), so that no two classes are told apart by a tile or two.
//
// The paper's algorithm is greedy: start from one permutation drawn at
// random, then repeatedly add the remaining permutation that is farthest from
// those already chosen. Its algorithm 1 scores a candidate by the sum of its
// distances to the chosen ones (1ᵀD); we score by the minimum distance first,
// which is what the set's quality is measured by (the paper's ablation
// reports each set's average and minimum distance), and break ties by the
// paper's sum, then by lexicographic order. The first permutation comes from
// a fixed seed, so every run gets the same set.
import { Rng } from '../core/random.js';

function factorial(n: number): number {
  let f = 1;
  for (let i = 2; i <= n; i++) f *= i;
  return f;
}

/** Every permutation of 0..n-1 in lexicographic order, flat: [n!, n]. */
function allPermutations(n: number): Uint8Array {
  const total = factorial(n);
  const out = new Uint8Array(total * n);
  const p = Uint8Array.from({ length: n }, (_, i) => i);
  for (let k = 0; k < total; k++) {
    out.set(p, k * n);
    // Next lexicographic permutation (Narayana Pandita).
    let i = n - 2;
    while (i >= 0 && p[i]! > p[i + 1]!) i--;
    if (i < 0) break;
    let j = n - 1;
    while (p[j]! < p[i]!) j--;
    [p[i], p[j]] = [p[j]!, p[i]!];
    p.subarray(i + 1).reverse();
  }
  return out;
}

/** Positions at which two permutations differ. */
export function hammingDistance(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`hammingDistance: lengths ${a.length} and ${b.length} differ`);
  let d = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) d++;
  return d;
}

const cache = new Map<string, number[][]>();

/**
 * `count` permutations of 0..n-1 (n = 9 tiles by default), greedily of
 * maximal minimum Hamming distance; the same for the same (count, seed, n).
 * n = 9 searches all 362,880 orders: about a second for 100.
 */
export function maxHammingPermutations(count: number, seed = 0, n = 9): number[][] {
  if (!(Number.isInteger(n) && n >= 2 && n <= 10)) throw new Error(`permutation set: n must be an integer in [2, 10], got ${n}`);
  const total = factorial(n);
  if (!(Number.isInteger(count) && count >= 1 && count <= total)) {
    throw new Error(`permutation set: count must be an integer in [1, ${total}] for ${n} tiles, got ${count}`);
  }
  const key = `${n}:${count}:${seed}`;
  const cached = cache.get(key);
  if (cached) return cached.map((p) => p.slice());
  const all = allPermutations(n);
  const taken = new Uint8Array(total);
  const minDistance = new Uint8Array(total).fill(255);
  const sumDistance = new Uint32Array(total);
  const chosen: number[][] = [];
  let next = Rng.seeded(seed).int(0, total - 1);
  for (;;) {
    taken[next] = 1;
    const p = all.subarray(next * n, next * n + n);
    chosen.push(Array.from(p));
    if (chosen.length === count) break;
    let best = -1;
    let bestMin = -1;
    let bestSum = -1;
    for (let k = 0, o = 0; k < total; k++, o += n) {
      if (taken[k]) continue;
      let d = 0;
      for (let t = 0; t < n; t++) if (all[o + t] !== p[t]) d++;
      const m = Math.min(minDistance[k]!, d);
      minDistance[k] = m;
      const s = (sumDistance[k] += d);
      if (m > bestMin || (m === bestMin && s > bestSum)) {
        best = k;
        bestMin = m;
        bestSum = s;
      }
    }
    next = best;
  }
  cache.set(key, chosen);
  return chosen.map((q) => q.slice());
}
