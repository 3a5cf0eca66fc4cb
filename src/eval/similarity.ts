// Similarity statistics of contrastive pairs (DetCo, Xie et al. 2021,
// appendix Fig. IV): for a batch of queries q_i and keys k_j (row i of both
// from the same image), the cosine s_ij = cos(q_i, k_j) and
//
//   positives  exp(s_ii)               one per query
//   negatives  exp(s_ij), j != i       the other images of the batch
//   L_NCE      mean_i [ log sum_j exp(s_ij / T) - s_ii / T ]
//   bound      log(K) - L_NCE          K = n: 1 positive + (n - 1) negatives
//
// L_NCE is InfoNCE (van den Oord et al. 2018, eq. 4; MoCo's eq. 1) with the
// method's temperature T on exactly these pairs, and log(K) - L_NCE is CPC's
// lower bound on the mutual information of the two embeddings, I >= log(K) -
// L_NCE (van den Oord et al. 2018, section 2.3). Since L_NCE >= 0 the bound
// never exceeds log(K). P and N (the means of exp(cos), temperature 1) and
// their histograms lie in [1/e, e].
//
// Pure arithmetic on Float32Arrays, so the protocol (protocols/similarity.ts)
// accumulates batch after batch and the tests check it on hand-made vectors.

/** exp(cos) lies here: [1/e, e]. */
export const SIMILARITY_RANGE: readonly [number, number] = [1 / Math.E, Math.E];

/** The `bins + 1` edges of equal-width bins over [1/e, e]. */
export function histogramEdges(bins: number): number[] {
  checkBins(bins);
  const [lo, hi] = SIMILARITY_RANGE;
  return Array.from({ length: bins + 1 }, (_, i) => (i === bins ? hi : lo + ((hi - lo) * i) / bins));
}

/** The bin of `value` among `bins` equal bins over [1/e, e]; the ends clamp (rounding may step just outside). */
export function histogramBin(value: number, bins: number): number {
  const [lo, hi] = SIMILARITY_RANGE;
  const b = Math.floor(((value - lo) / (hi - lo)) * bins);
  return Math.min(bins - 1, Math.max(0, b));
}

function checkBins(bins: number): void {
  if (!(Number.isInteger(bins) && bins > 0)) throw new Error(`similarity: bins must be a positive integer, got ${bins}`);
}

/** What one pairing (global-global, local-global) accumulated. */
export interface SimilarityStats {
  /** Queries (= positive pairs) seen. */
  queries: number;
  negativePairs: number;
  /** K = negatives per query + 1. */
  k: number;
  /** Mean exp(cos) of the positive pairs (P) and of the negative pairs (N). */
  positiveMean: number;
  negativeMean: number;
  /** Mean InfoNCE loss at the method's temperature on the same pairs. */
  loss: number;
  /** log(K) - L_NCE, in nats. */
  bound: number;
  /** Counts per bin of exp(cos) over [1/e, e] (histogramEdges). */
  positiveHistogram: number[];
  negativeHistogram: number[];
}

/**
 * Sums over batches of (query, key) rows; `add` one batch at a time. Every
 * batch must have the same size, so that K is one number.
 */
export class SimilarityAccumulator {
  private queries = 0;
  private negatives = 0;
  private positiveSum = 0;
  private negativeSum = 0;
  private lossSum = 0;
  private k = 0;
  private readonly positiveHistogram: number[];
  private readonly negativeHistogram: number[];

  constructor(
    readonly temperature: number,
    readonly bins = 50,
  ) {
    if (!(temperature > 0)) throw new Error(`similarity: temperature must be > 0, got ${temperature}`);
    checkBins(bins);
    this.positiveHistogram = new Array<number>(bins).fill(0);
    this.negativeHistogram = new Array<number>(bins).fill(0);
  }

  /**
   * One batch: `q` and `k` are [n, dim] row-major, row i of both from image
   * i. Rows need not be unit length (cosines are taken); a zero row has cosine
   * 0 with everything.
   */
  add(q: Float32Array, k: Float32Array, n: number, dim: number): void {
    if (!(Number.isInteger(n) && n >= 2)) throw new Error(`similarity: a batch needs at least 2 rows (1 positive and 1 negative each), got ${n}`);
    if (q.length !== n * dim || k.length !== n * dim) {
      throw new Error(`similarity: q and k must both be [${n}, ${dim}] (${n * dim} values), got ${q.length} and ${k.length}`);
    }
    if (this.k !== 0 && this.k !== n) throw new Error(`similarity: batches of ${n} after batches of ${this.k}; K must stay fixed`);
    this.k = n;
    const qn = unitRows(q, n, dim);
    const kn = unitRows(k, n, dim);
    const T = this.temperature;
    const row = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let max = -Infinity;
      for (let j = 0; j < n; j++) {
        let dot = 0;
        for (let d = 0; d < dim; d++) dot += qn[i * dim + d]! * kn[j * dim + d]!;
        const cos = Math.max(-1, Math.min(1, dot));
        row[j] = cos;
        const sim = Math.exp(cos);
        if (i === j) {
          this.positiveSum += sim;
          this.positiveHistogram[histogramBin(sim, this.bins)]!++;
        } else {
          this.negativeSum += sim;
          this.negativeHistogram[histogramBin(sim, this.bins)]!++;
        }
        max = Math.max(max, cos / T);
      }
      let sum = 0;
      for (let j = 0; j < n; j++) sum += Math.exp(row[j]! / T - max);
      this.lossSum += max + Math.log(sum) - row[i]! / T;
    }
    this.queries += n;
    this.negatives += n * (n - 1);
  }

  result(): SimilarityStats {
    if (this.queries === 0) throw new Error('similarity: no pairs were added');
    const loss = this.lossSum / this.queries;
    return {
      queries: this.queries,
      negativePairs: this.negatives,
      k: this.k,
      positiveMean: this.positiveSum / this.queries,
      negativeMean: this.negativeSum / this.negatives,
      loss,
      bound: Math.log(this.k) - loss,
      positiveHistogram: [...this.positiveHistogram],
      negativeHistogram: [...this.negativeHistogram],
    };
  }
}

/** Rows scaled to unit length, in doubles. */
function unitRows(x: Float32Array, n: number, dim: number): Float64Array {
  const out = new Float64Array(n * dim);
  for (let i = 0; i < n; i++) {
    let ss = 0;
    for (let d = 0; d < dim; d++) ss += x[i * dim + d]! * x[i * dim + d]!;
    const inv = ss > 0 ? 1 / Math.sqrt(ss) : 0;
    for (let d = 0; d < dim; d++) out[i * dim + d] = x[i * dim + d]! * inv;
  }
  return out;
}

/**
 * ΔP = P^g - P^l and ΔN = N^g - N^l: how much higher the global-global
 * similarities are than the local-global ones, for positives and negatives.
 */
export function similarityDeltas(global: Pick<SimilarityStats, 'positiveMean' | 'negativeMean'>, local: Pick<SimilarityStats, 'positiveMean' | 'negativeMean'>): { deltaPositive: number; deltaNegative: number } {
  return { deltaPositive: global.positiveMean - local.positiveMean, deltaNegative: global.negativeMean - local.negativeMean };
}
