// A binary linear SVM for the VOC07-style SVM protocol (protocols/svm.ts):
// L2-regularised, squared-hinge (L2-loss) SVC solved in the dual by
// coordinate descent, as liblinear's solver 1 (L2R_L2LOSS_SVC_DUAL) does, the
// solver behind scikit-learn's LinearSVC(dual=True) that FAIR's svm_tools
// (OpenSelfSup / DetCo benchmarks/svm_tools) calls.
//
// Hsieh, Chang, Lin, Keerthi, Sundararajan, "A dual coordinate descent method
// for large-scale linear SVM", ICML 2008; Fan et al., "LIBLINEAR: a library
// for large linear classification", JMLR 2008.
//
// Primal, with x~_i = [x_i, B] (liblinear's bias: a constant feature B = 1,
// whose weight is regularised like the others, LinearSVC's intercept_scaling):
//   P(w) = 1/2 |w|^2 + sum_i C_i max(0, 1 - y_i w.x~_i)^2
// Dual (Hsieh et al. eq. 4 with D_ii = 1/(2 C_i) and no upper bound on alpha):
//   min_{alpha >= 0} f(alpha) = 1/2 alpha' (Q + D) alpha - e' alpha,
//   Q_ij = y_i y_j x~_i.x~_j,   w = sum_i alpha_i y_i x~_i.
// Strong duality: P(w*) = -f(alpha*); `dualObjective` below is -f, so it
// meets the primal objective from below as the solver converges.
//
// Per-sample costs C_i = C * weight(y_i), svm_tools' class_weight {1: 2, -1: 1}.
// Cross-validated average precision (svm_tools: sklearn's cross_val_score with
// cv=3, scoring='average_precision', i.e. StratifiedKFold without shuffling)
// picks the cost per class; the test split is scored with svm_tools' own
// interpolated AP (svm_helper.calculate_ap). Both AP definitions are below.
import { Rng, type RandomStream } from '../core/random.js';

/** svm_tools' costs: eval_svm_full.sh's "1.0,10.0,100.0", to which svm_helper.parse_cost_list appends 0.5^k, k = 4..19. */
export const SVM_TOOLS_COSTS: readonly number[] = [1, 10, 100, ...Array.from({ length: 16 }, (_, k) => 0.5 ** (k + 4))];

export interface BinaryProblem {
  /** rows x dim, row-major. */
  features: Float32Array;
  dim: number;
  /** +1 or -1 for each row of `features`. */
  labels: ArrayLike<number>;
  /** Train on these rows of `features` only (a cross-validation fold); default: all. */
  rows?: Int32Array;
}

export interface SvmOptions {
  /** C, the cost of the squared hinge. */
  cost: number;
  /** Class weights multiplying C (svm_tools: 2 for positives, 1 for negatives). */
  positiveWeight?: number;
  negativeWeight?: number;
  /** The constant feature appended for the intercept (liblinear's bias, LinearSVC's intercept_scaling); 0: no intercept. */
  biasFeature?: number;
  /** Stop when the projected gradient's spread max PG - min PG falls to this (liblinear's eps; svm_tools passes tol=1e-4). */
  tolerance?: number;
  /** Epochs over the (active) coordinates (svm_tools: max_iter=2000). */
  maxIterations?: number;
  /** liblinear's shrinking of coordinates stuck at alpha = 0. */
  shrinking?: boolean;
  /** The coordinate order's stream; default Rng.seeded(0). */
  rng?: RandomStream;
}

export interface SvmModel {
  /** w on the original features. */
  weights: Float64Array;
  /** w_bias * biasFeature: the decision value is weights.x + intercept. */
  intercept: number;
  /** The dual variables, one per training row (in `rows` order). */
  alpha: Float64Array;
  /** -f(alpha): a lower bound on the primal objective, equal at the optimum. */
  dualObjective: number;
  iterations: number;
  /** False when maxIterations ran out before the stopping rule held (liblinear warns then). */
  converged: boolean;
}

export const SVM_DEFAULTS = {
  positiveWeight: 2,
  negativeWeight: 1,
  biasFeature: 1,
  tolerance: 1e-4,
  maxIterations: 2000,
  shrinking: true,
} as const;

function positiveFinite(value: number, name: string): void {
  if (!(Number.isFinite(value) && value > 0)) throw new Error(`svm: ${name} must be a positive finite number, got ${value}`);
}

/** Checks the problem and returns its training rows. */
function checkProblem(p: BinaryProblem): Int32Array {
  if (!(Number.isInteger(p.dim) && p.dim > 0)) throw new Error(`svm: dim must be a positive integer, got ${p.dim}`);
  if (p.features.length % p.dim !== 0) throw new Error(`svm: features (${p.features.length} values) are not a multiple of dim ${p.dim}`);
  const n = p.features.length / p.dim;
  if (p.labels.length !== n) throw new Error(`svm: ${n} feature rows but ${p.labels.length} labels`);
  const rows = p.rows ?? Int32Array.from({ length: n }, (_, i) => i);
  let pos = 0;
  for (let s = 0; s < rows.length; s++) {
    const r = rows[s]!;
    if (!(r >= 0 && r < n)) throw new Error(`svm: rows[${s}] = ${r} is outside 0..${n - 1}`);
    const y = p.labels[r]!;
    if (y !== 1 && y !== -1) throw new Error(`svm: labels[${r}] is ${y}; labels must be +1 or -1`);
    if (y === 1) pos++;
  }
  if (rows.length === 0) throw new Error('svm: no training rows');
  if (pos === 0 || pos === rows.length) throw new Error(`svm: the training rows need both classes (${pos} positive of ${rows.length})`);
  return rows;
}

// The solver's two O(d) kernels, unrolled by four: independent partial sums
// let V8's code overlap the multiply-adds (about 1.5x over the plain loop).
function rowDot(w: Float64Array, X: Float32Array, off: number, dim: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let j = 0;
  for (; j + 3 < dim; j += 4) {
    s0 += w[j]! * X[off + j]!;
    s1 += w[j + 1]! * X[off + j + 1]!;
    s2 += w[j + 2]! * X[off + j + 2]!;
    s3 += w[j + 3]! * X[off + j + 3]!;
  }
  for (; j < dim; j++) s0 += w[j]! * X[off + j]!;
  return s0 + s1 + (s2 + s3);
}

function rowAxpy(w: Float64Array, a: number, X: Float32Array, off: number, dim: number): void {
  let j = 0;
  for (; j + 3 < dim; j += 4) {
    w[j] += a * X[off + j]!;
    w[j + 1] += a * X[off + j + 1]!;
    w[j + 2] += a * X[off + j + 2]!;
    w[j + 3] += a * X[off + j + 3]!;
  }
  for (; j < dim; j++) w[j] += a * X[off + j]!;
}

/** Trains the SVM on `p` by dual coordinate descent (liblinear's solve_l2r_l1l2_svc for the L2 loss). */
export function trainBinarySvm(p: BinaryProblem, options: SvmOptions): SvmModel {
  const o = { ...SVM_DEFAULTS, ...options };
  positiveFinite(o.cost, 'cost');
  positiveFinite(o.positiveWeight, 'positiveWeight');
  positiveFinite(o.negativeWeight, 'negativeWeight');
  positiveFinite(o.tolerance, 'tolerance');
  if (!(Number.isFinite(o.biasFeature) && o.biasFeature >= 0)) throw new Error(`svm: biasFeature must be >= 0, got ${o.biasFeature}`);
  if (!(Number.isInteger(o.maxIterations) && o.maxIterations > 0)) throw new Error(`svm: maxIterations must be a positive integer, got ${o.maxIterations}`);
  const rows = checkProblem(p);
  const rng = o.rng ?? Rng.seeded(0);
  const X = p.features;
  const dim = p.dim;
  const n = rows.length;
  const B = o.biasFeature;
  const { shrinking, tolerance } = o;
  const w = new Float64Array(dim);
  let wb = 0;
  const alpha = new Float64Array(n);
  const y = new Float64Array(n);
  const diag = new Float64Array(n);
  // Q~_ii = x~_i.x~_i + D_ii: the exact step length of a one-coordinate Newton step on a quadratic.
  const qd = new Float64Array(n);
  const offset = new Int32Array(n);
  for (let s = 0; s < n; s++) {
    const r = rows[s]!;
    y[s] = p.labels[r]!;
    diag[s] = 0.5 / (o.cost * (y[s] === 1 ? o.positiveWeight : o.negativeWeight));
    offset[s] = r * dim;
    let sq = B * B;
    for (let j = 0, off = offset[s]!; j < dim; j++) sq += X[off + j]! * X[off + j]!;
    qd[s] = sq + diag[s]!;
  }
  const index = Int32Array.from({ length: n }, (_, i) => i);
  let active = n;
  // Shrinking threshold from the previous epoch: a coordinate at alpha = 0 whose
  // gradient exceeds every projected gradient seen last epoch is very likely to
  // stay at 0, so it leaves the active set until the final check (liblinear).
  let pgMaxOld = Infinity;
  let iterations = 0;
  let converged = false;
  while (iterations < o.maxIterations) {
    let pgMaxNew = -Infinity;
    let pgMinNew = Infinity;
    for (let k = 0; k < active - 1; k++) {
      const j = k + Math.floor(rng.next() * (active - k));
      const t = index[k]!;
      index[k] = index[j]!;
      index[j] = t;
    }
    for (let s = 0; s < active; s++) {
      const i = index[s]!;
      const off = offset[i]!;
      const yi = y[i]!;
      const dot = rowDot(w, X, off, dim) + wb * B;
      const a = alpha[i]!;
      const G = yi * dot - 1 + a * diag[i]!;
      let PG = 0;
      if (a === 0) {
        if (shrinking && G > pgMaxOld) {
          active--;
          index[s] = index[active]!;
          index[active] = i;
          s--;
          continue;
        }
        if (G < 0) PG = G;
      } else PG = G;
      if (PG > pgMaxNew) pgMaxNew = PG;
      if (PG < pgMinNew) pgMinNew = PG;
      if (Math.abs(PG) > 1e-12) {
        const next = Math.max(a - G / qd[i]!, 0);
        alpha[i] = next;
        const d = (next - a) * yi;
        rowAxpy(w, d, X, off, dim);
        wb += d * B;
      }
    }
    iterations++;
    if (pgMaxNew - pgMinNew <= tolerance) {
      // Converged on the active set; only a pass over every coordinate may stop the solver.
      if (active === n) {
        converged = true;
        break;
      }
      active = n;
      pgMaxOld = Infinity;
      continue;
    }
    pgMaxOld = pgMaxNew <= 0 ? Infinity : pgMaxNew;
  }
  let wSq = wb * wb;
  for (let j = 0; j < dim; j++) wSq += w[j]! * w[j]!;
  let f = wSq / 2;
  for (let s = 0; s < n; s++) f += alpha[s]! * (alpha[s]! * diag[s]! - 2) / 2;
  return { weights: w, intercept: wb * B, alpha, dualObjective: -f, iterations, converged };
}

/** weights.x + intercept for `rows` of `features` (default all), in that order. */
export function decisionValues(model: Pick<SvmModel, 'weights' | 'intercept'>, features: Float32Array, rows?: Int32Array): Float64Array {
  const w = model.weights;
  const dim = w.length;
  if (features.length % dim !== 0) throw new Error(`svm: features (${features.length} values) are not a multiple of the model's dim ${dim}`);
  const n = rows ? rows.length : features.length / dim;
  const out = new Float64Array(n);
  for (let s = 0; s < n; s++) {
    const off = (rows ? rows[s]! : s) * dim;
    out[s] = rowDot(w, features, off, dim) + model.intercept;
  }
  return out;
}

/** P(w) = 1/2 |w~|^2 + sum_i C_i max(0, 1 - y_i w~.x~_i)^2 on `p`'s training rows; for checking the solver. */
export function primalObjective(model: SvmModel, p: BinaryProblem, options: SvmOptions): number {
  const o = { ...SVM_DEFAULTS, ...options };
  const rows = checkProblem(p);
  const wb = o.biasFeature > 0 ? model.intercept / o.biasFeature : 0;
  let obj = (wb * wb) / 2;
  for (const v of model.weights) obj += (v * v) / 2;
  const f = decisionValues(model, p.features, rows);
  for (let s = 0; s < rows.length; s++) {
    const yi = p.labels[rows[s]!]!;
    const slack = Math.max(0, 1 - yi * f[s]!);
    obj += o.cost * (yi === 1 ? o.positiveWeight : o.negativeWeight) * slack * slack;
  }
  return obj;
}

/** Rows divided by (their L2 norm + eps), svm_helper.normalize_features' rule (eps 1e-5 keeps zero rows finite). */
export function l2NormalizeRows(features: Float32Array, dim: number, eps = 1e-5): Float32Array {
  if (features.length % dim !== 0) throw new Error(`svm: features (${features.length} values) are not a multiple of dim ${dim}`);
  const out = new Float32Array(features.length);
  for (let off = 0; off < features.length; off += dim) {
    let sq = 0;
    for (let j = 0; j < dim; j++) sq += features[off + j]! * features[off + j]!;
    const scale = 1 / (Math.sqrt(sq) + eps);
    for (let j = 0; j < dim; j++) out[off + j] = features[off + j]! * scale;
  }
  return out;
}

/**
 * Precision and recall after each distinct score, scores taken from the
 * highest down. Tied scores form one threshold: the ranking inside a tie is
 * arbitrary, so no AP below depends on it (sklearn's rule; svm_tools' own
 * get_precision_recall ranks ties in np.argsort's order instead).
 */
function precisionRecall(scores: ArrayLike<number>, positive: ArrayLike<boolean>): { precision: Float64Array; recall: Float64Array } | null {
  const n = scores.length;
  if (positive.length !== n) throw new Error(`average precision: ${n} scores but ${positive.length} labels`);
  let total = 0;
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(scores[i])) throw new Error(`average precision: score ${i} is NaN`);
    if (positive[i]) total++;
  }
  if (total === 0) return null;
  const order = Int32Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[b]! - scores[a]!);
  const precision: number[] = [];
  const recall: number[] = [];
  let tp = 0;
  for (let k = 0; k < n; k++) {
    if (positive[order[k]!]) tp++;
    if (k + 1 < n && scores[order[k + 1]!] === scores[order[k]!]) continue;
    precision.push(tp / (k + 1));
    recall.push(tp / total);
  }
  return { precision: Float64Array.from(precision), recall: Float64Array.from(recall) };
}

/**
 * sklearn's average_precision_score, the CV score of svm_tools:
 *   AP = sum_k (R_k - R_{k-1}) P_k,  R_0 = 0,
 * over the distinct thresholds k from the highest score down; P_k and R_k are
 * the precision and recall of everything scored >= the k-th threshold. It is
 * the area under the precision-recall step function, each recall increment
 * weighted by the precision at which it was reached, without interpolation.
 * NaN when there is no positive.
 */
export function averagePrecision(scores: ArrayLike<number>, positive: ArrayLike<boolean>): number {
  const pr = precisionRecall(scores, positive);
  if (!pr) return Number.NaN;
  let ap = 0;
  let prev = 0;
  for (let k = 0; k < pr.recall.length; k++) {
    ap += (pr.recall[k]! - prev) * pr.precision[k]!;
    prev = pr.recall[k]!;
  }
  return ap;
}

/**
 * svm_tools' test AP (svm_helper.calculate_ap, the VOC2010+ "all-point"
 * interpolation): with the curve padded as recall [0, R_1..R_m, 1] and
 * precision [0, P_1..P_m, 0], precision is replaced by its running maximum
 * from the right, p~(k) = max_{j >= k} P_j (the best precision at any recall
 * >= R_k), and
 *   AP = sum over k where recall grows: (R_k - R_{k-1}) p~(k).
 * As p~ >= P pointwise, this is >= averagePrecision on the same ranking.
 * Ties: one threshold, as in averagePrecision. NaN when there is no positive.
 */
export function interpolatedAveragePrecision(scores: ArrayLike<number>, positive: ArrayLike<boolean>): number {
  const pr = precisionRecall(scores, positive);
  if (!pr) return Number.NaN;
  const m = pr.recall.length;
  const best = new Float64Array(m + 1); // best[m] = the padding's precision 0
  for (let k = m - 1; k >= 0; k--) best[k] = Math.max(pr.precision[k]!, best[k + 1]!);
  let ap = 0;
  let prev = 0;
  for (let k = 0; k < m; k++) {
    ap += (pr.recall[k]! - prev) * best[k]!;
    prev = pr.recall[k]!;
  }
  // The padding's final recall 1 adds nothing: every positive is scored, so R_m = 1.
  return ap;
}

/**
 * Stratified folds as sklearn's StratifiedKFold(n_splits, shuffle=False), the
 * folds of svm_tools' cross_val_score(cv=3): each class's rows, in data order,
 * are cut into consecutive blocks, the block sizes being how that class falls
 * on positions f, f + n_splits, ... of the label-sorted data. Returns each
 * row's fold.
 */
export function stratifiedFolds(labels: ArrayLike<number>, folds: number): Int32Array {
  if (!(Number.isInteger(folds) && folds >= 2)) throw new Error(`svm: folds must be an integer >= 2, got ${folds}`);
  const n = labels.length;
  let negatives = 0;
  for (let i = 0; i < n; i++) if (labels[i]! !== 1) negatives++;
  // Sorted labels: negatives at positions [0, negatives), positives after.
  const allocation = [new Int32Array(folds), new Int32Array(folds)];
  for (let p = 0; p < n; p++) allocation[p < negatives ? 0 : 1]![p % folds]++;
  const out = new Int32Array(n);
  const next = [0, 0];
  const used = [0, 0];
  for (let i = 0; i < n; i++) {
    const c = labels[i]! === 1 ? 1 : 0;
    while (used[c]! >= allocation[c]![next[c]!]!) {
      next[c]!++;
      used[c] = 0;
    }
    out[i] = next[c]!;
    used[c]!++;
  }
  return out;
}

export interface CostSearch {
  costs: number[];
  /** Mean cross-validated AP (a fraction) for each cost. */
  cvAP: number[];
  /** Per cost, each fold's AP. */
  foldAP: number[][];
  /** Index into `costs` of the best mean CV AP; ties go to the smaller cost. */
  best: number;
  /** Solves that stopped at maxIterations. */
  unconverged: number;
}

export interface CostSearchOptions extends Omit<SvmOptions, 'cost' | 'rng'> {
  costs: readonly number[];
  folds: number;
  /** Fold f's coordinate order is drawn from rng.split(f), so every cost of a fold sees the same stream; default Rng.seeded(0). */
  rng?: Rng;
  /** After each cost. */
  onCost?: (costIndex: number, cost: number, cvAP: number, foldAP: number[]) => void;
}

/** Cross-validated AP of every cost on `p` (svm_tools' cross_val_score), and the chosen cost. */
export function searchCost(p: BinaryProblem, o: CostSearchOptions): CostSearch {
  if (o.costs.length === 0) throw new Error('svm: costs is empty');
  for (const c of o.costs) positiveFinite(c, 'every cost');
  const rows = checkProblem(p);
  const y = Int8Array.from(rows, (r) => p.labels[r]!);
  const fold = stratifiedFolds(y, o.folds);
  for (const want of [1, -1]) {
    const count = y.reduce((s, v) => s + (v === want ? 1 : 0), 0);
    if (count < o.folds) throw new Error(`svm: ${count} ${want === 1 ? 'positive' : 'negative'} rows, fewer than folds (${o.folds}); every fold needs both classes`);
  }
  const splits = Array.from({ length: o.folds }, (_, f) => ({
    train: rows.filter((_, s) => fold[s] !== f),
    test: rows.filter((_, s) => fold[s] === f),
  }));
  const { costs, folds: _folds, rng: root = Rng.seeded(0), onCost, ...svm } = o;
  const cvAP: number[] = [];
  const foldAP: number[][] = [];
  let unconverged = 0;
  for (let c = 0; c < costs.length; c++) {
    const aps = splits.map((split, f) => {
      const model = trainBinarySvm({ ...p, rows: split.train }, { ...svm, cost: costs[c]!, rng: root.split(f) });
      if (!model.converged) unconverged++;
      const scores = decisionValues(model, p.features, split.test);
      return averagePrecision(scores, Array.from(split.test, (r) => p.labels[r] === 1));
    });
    const mean = aps.reduce((a, b) => a + b, 0) / aps.length;
    cvAP.push(mean);
    foldAP.push(aps);
    onCost?.(c, costs[c]!, mean, aps);
  }
  let best = 0;
  for (let c = 1; c < costs.length; c++) {
    if (cvAP[c]! > cvAP[best]! || (cvAP[c] === cvAP[best] && costs[c]! < costs[best]!)) best = c;
  }
  return { costs: [...costs], cvAP, foldAP, best, unconverged };
}
