// A 2-D UMAP embedding of features (McInnes et al. 2018, with umap-js) and
// two numbers that say how faithful and how separable it is:
//
// - trustworthiness (Venna & Kaski 2001; sklearn.manifold.trustworthiness):
//     T(k) = 1 - 2 / (n k (2n - 3k - 1)) * sum_i sum_{j in U_i^k} (r(i, j) - k)
//   where U_i^k are the points among i's k nearest in the embedding but not
//   among its k nearest in the feature space, and r(i, j) is j's rank (1 =
//   nearest) among i's neighbours in the feature space. 1 when every
//   embedded neighbourhood is a true one; needs k < n / 2. Distances are
//   Euclidean in both spaces; ties rank the lower index first.
// - kNN accuracy in a space (the embedding, or the features for comparison):
//   leave-one-out, each point's k nearest other points vote one each; a tie
//   goes to the class whose voters are nearer in total, then the lower class.
//
// Neighbours: exact, not umap-js's NN-descent. In the feature space the
// squared distances |x|^2 + |y|^2 - 2 x.y come from blocked tfjs matrix
// products (float32; the native backend's GEMM); in the embedding (a few
// dimensions) they are plain float64 loops. umap-js is given the exact k
// nearest (the point itself first, as UMAP's own search returns) and a seeded
// random stream (core/random.ts's Rng), so an embedding reproduces.
//
// The plot is a hand-written, self-contained SVG: one circle per point,
// coloured by class (tab10 / tab20, golden-angle hues beyond 20 classes),
// with a legend; sharp renders it to PNG on request.
import sharp from 'sharp';
import { UMAP } from 'umap-js';
import { writeFileAtomic } from '../core/files.js';
import { Rng } from '../core/random.js';
import { forEachDotProductBlock } from './knn.js';

/** Squared-distance entries per block: 8M floats (32 MB), as knn.ts. */
const BLOCK_FLOATS = 8 * 1024 * 1024;
/** Up to this many dimensions distances are exact float64 loops; above, tfjs GEMM. */
const LOOP_MAX_DIM = 16;

function rowCount(x: ArrayLike<number>, dim: number, what: string): number {
  if (!(Number.isInteger(dim) && dim > 0)) throw new Error(`umap: ${what}: dim must be a positive integer, got ${dim}`);
  if (x.length % dim !== 0) throw new Error(`umap: ${what} has ${x.length} values, not a multiple of dim ${dim}`);
  return x.length / dim;
}

/**
 * Squared Euclidean distances of every row of `x` to every row, a block of
 * rows at a time: `visit(start, count, block)` gets rows start .. start +
 * count as a [count, n] block. The diagonal is 0 and nothing is negative.
 */
export function forEachDistanceBlock(x: Float32Array | Float64Array, dim: number, visit: (start: number, count: number, block: Float64Array | Float32Array) => void): void {
  const n = rowCount(x, dim, 'points');
  if (n === 0) return;
  const rows = Math.max(1, Math.min(n, Math.floor(BLOCK_FLOATS / n)));
  if (dim <= LOOP_MAX_DIM) {
    const block = new Float64Array(rows * n);
    for (let start = 0; start < n; start += rows) {
      const b = Math.min(rows, n - start);
      for (let r = 0; r < b; r++) {
        const i = start + r;
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let d = 0; d < dim; d++) {
            const t = x[i * dim + d]! - x[j * dim + d]!;
            s += t * t;
          }
          block[r * n + j] = s;
        }
      }
      visit(start, b, block.subarray(0, b * n));
    }
    return;
  }
  const data = x instanceof Float32Array ? x : Float32Array.from(x);
  const norms = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let d = 0; d < dim; d++) s += data[i * dim + d]! * data[i * dim + d]!;
    norms[i] = s;
  }
  forEachDotProductBlock(data, data, dim, rows, (start, b, g) => {
    for (let r = 0; r < b; r++) {
      const i = start + r;
      for (let j = 0; j < n; j++) g[r * n + j] = Math.max(0, norms[i]! + norms[j]! - 2 * g[r * n + j]!);
      g[r * n + i] = 0;
    }
    visit(start, b, g);
  });
}

export interface NearestNeighbours {
  k: number;
  /** Each point's k nearest other points, nearest first (ties: lower index): [n, k]. */
  indices: Int32Array;
  /** Their Euclidean distances: [n, k]. */
  distances: Float64Array;
}

/** The k nearest other points of every row of `x` (exact; Euclidean). */
export function nearestNeighbours(x: Float32Array | Float64Array, dim: number, k: number): NearestNeighbours {
  const n = rowCount(x, dim, 'points');
  if (!(Number.isInteger(k) && k >= 1 && k < n)) throw new Error(`umap: k must be an integer in 1..${n - 1} (${n} points), got ${k}`);
  const indices = new Int32Array(n * k);
  const distances = new Float64Array(n * k);
  const val = new Float64Array(k);
  const idx = new Int32Array(k);
  forEachDistanceBlock(x, dim, (start, count, block) => {
    for (let r = 0; r < count; r++) {
      const i = start + r;
      let size = 0;
      for (let j = 0; j < n; j++) {
        if (j === i) continue;
        const v = block[r * n + j]!;
        // Sorted insertion into the k best; later indices lose ties, so only a strictly smaller value enters.
        if (size === k && !(v < val[k - 1]!)) continue;
        let p = size < k ? size++ : k - 1;
        while (p > 0 && val[p - 1]! > v) {
          val[p] = val[p - 1]!;
          idx[p] = idx[p - 1]!;
          p--;
        }
        val[p] = v;
        idx[p] = j;
      }
      for (let m = 0; m < k; m++) {
        indices[i * k + m] = idx[m]!;
        distances[i * k + m] = Math.sqrt(val[m]!);
      }
    }
  });
  return { k, indices, distances };
}

/**
 * Trustworthiness T(k) of `embedded` (the low-dimensional points) against
 * `original` (sklearn.manifold.trustworthiness, Euclidean): in [0, 1] for
 * k < n / 2 (the file comment has the definition).
 */
export function trustworthiness(original: Float32Array | Float64Array, originalDim: number, embedded: Float32Array | Float64Array, embeddedDim: number, k = 5): number {
  const n = rowCount(original, originalDim, 'original');
  const m = rowCount(embedded, embeddedDim, 'embedded');
  if (n !== m) throw new Error(`umap: trustworthiness: ${n} original points but ${m} embedded ones`);
  if (!(Number.isInteger(k) && k >= 1 && k < n / 2)) throw new Error(`umap: trustworthiness needs an integer k with 1 <= k < n / 2 (n = ${n}), got ${k}`);
  const near = nearestNeighbours(embedded, embeddedDim, k);
  let sum = 0;
  forEachDistanceBlock(original, originalDim, (start, count, block) => {
    for (let r = 0; r < count; r++) {
      const i = start + r;
      const row = r * n;
      for (let q = 0; q < k; q++) {
        const j = near.indices[i * k + q]!;
        const d = block[row + j]!;
        // r(i, j): 1 + the other points (not i) ranked before j.
        let rank = 1;
        for (let l = 0; l < n; l++) {
          if (l === i || l === j) continue;
          const e = block[row + l]!;
          if (e < d || (e === d && l < j)) rank++;
        }
        if (rank > k) sum += rank - k;
      }
    }
  });
  return 1 - (sum * 2) / (n * k * (2 * n - 3 * k - 1));
}

export interface KnnAccuracy {
  k: number;
  /** Percent of points whose leave-one-out vote is their class. */
  accuracy: number;
  predictions: Int32Array;
}

/**
 * Leave-one-out k-nearest-neighbour classification of every point from its
 * neighbours: one vote each, ties to the class whose voters are nearer in
 * total, then to the lower class.
 */
export function knnVoteAccuracy(neighbours: NearestNeighbours, labels: Int32Array, k = neighbours.k): KnnAccuracy {
  const n = labels.length;
  if (neighbours.indices.length !== n * neighbours.k) throw new Error(`umap: ${n} labels but neighbours of ${neighbours.indices.length / neighbours.k} points`);
  if (!(Number.isInteger(k) && k >= 1 && k <= neighbours.k)) throw new Error(`umap: k must be an integer in 1..${neighbours.k}, got ${k}`);
  let numClasses = 0;
  for (let i = 0; i < n; i++) {
    if (!(labels[i]! >= 0)) throw new Error(`umap: label ${labels[i]} at ${i} is negative`);
    numClasses = Math.max(numClasses, labels[i]! + 1);
  }
  const votes = new Int32Array(numClasses);
  const total = new Float64Array(numClasses);
  const predictions = new Int32Array(n);
  let correct = 0;
  for (let i = 0; i < n; i++) {
    votes.fill(0);
    total.fill(0);
    for (let q = 0; q < k; q++) {
      const j = neighbours.indices[i * neighbours.k + q]!;
      votes[labels[j]!]!++;
      total[labels[j]!]! += neighbours.distances[i * neighbours.k + q]!;
    }
    let best = 0;
    for (let c = 1; c < numClasses; c++) {
      if (votes[c]! > votes[best]! || (votes[c] === votes[best] && total[c]! < total[best]!)) best = c;
    }
    predictions[i] = best;
    if (best === labels[i]) correct++;
  }
  return { k, accuracy: n === 0 ? 0 : (100 * correct) / n, predictions };
}

/** Leave-one-out kNN accuracy of `points` (any dimension; Euclidean). */
export function knnAccuracy(points: Float32Array | Float64Array, dim: number, labels: Int32Array, k = 20): KnnAccuracy {
  return knnVoteAccuracy(nearestNeighbours(points, dim, k), labels, k);
}

export interface UmapSettings {
  /** umap-js nNeighbors: the size of the local neighbourhood (the point itself included, as UMAP counts). */
  nNeighbors: number;
  minDist: number;
  seed: number;
  /** umap-js nEpochs; default its own (500 up to 2500 points, fewer beyond). */
  nEpochs?: number;
  /** After each optimisation epoch. */
  onEpoch?: (epoch: number, total: number) => void;
}

export interface UmapEmbedding {
  /** [n, 2], row-major. */
  embedding: Float64Array;
  epochs: number;
  /** Seconds: the exact neighbour search, umap-js's fuzzy graph and initial layout, and its optimisation. */
  seconds: { neighbours: number; graph: number; layout: number };
}

/** A seeded 2-D UMAP embedding of the rows of `x` (Euclidean). */
export async function umapEmbed(x: Float32Array | Float64Array, dim: number, o: UmapSettings): Promise<UmapEmbedding> {
  const n = rowCount(x, dim, 'features');
  if (!(Number.isInteger(o.nNeighbors) && o.nNeighbors >= 2)) throw new Error(`umap: neighbors must be an integer >= 2, got ${o.nNeighbors}`);
  if (n <= o.nNeighbors) throw new Error(`umap: ${n} points are too few for ${o.nNeighbors} neighbours; embed more points or use fewer neighbours`);
  if (!(o.minDist >= 0 && o.minDist <= 1)) throw new Error(`umap: minDist must be in [0, 1] (the spread), got ${o.minDist}`);
  const t0 = performance.now();
  const near = nearestNeighbours(x, dim, o.nNeighbors - 1);
  const knnIndices: number[][] = [];
  const knnDistances: number[][] = [];
  for (let i = 0; i < n; i++) {
    const row = i * near.k;
    knnIndices.push([i, ...near.indices.subarray(row, row + near.k)]);
    knnDistances.push([0, ...near.distances.subarray(row, row + near.k)]);
  }
  const t1 = performance.now();
  const rng = Rng.seeded(o.seed);
  const umap = new UMAP({ nComponents: 2, nNeighbors: o.nNeighbors, minDist: o.minDist, random: () => rng.next(), ...(o.nEpochs ? { nEpochs: o.nEpochs } : {}) });
  umap.setPrecomputedKNN(knnIndices, knnDistances);
  const rows: number[][] = [];
  for (let i = 0; i < n; i++) rows.push(Array.from(x.subarray(i * dim, (i + 1) * dim)));
  // initializeFit builds the graph and returns the epoch count; fitAsync then skips straight to the layout.
  const epochs = umap.initializeFit(rows);
  const t2 = performance.now();
  const result = await umap.fitAsync(rows, (epoch) => {
    o.onEpoch?.(epoch, epochs);
  });
  const embedding = new Float64Array(n * 2);
  result.forEach((p, i) => {
    embedding[2 * i] = p[0]!;
    embedding[2 * i + 1] = p[1]!;
  });
  return { embedding, epochs, seconds: { neighbours: (t1 - t0) / 1000, graph: (t2 - t1) / 1000, layout: (performance.now() - t2) / 1000 } };
}

const TAB10 = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const TAB20 = [
  '#1f77b4', '#aec7e8', '#ff7f0e', '#ffbb78', '#2ca02c', '#98df8a', '#d62728', '#ff9896', '#9467bd', '#c5b0d5',
  '#8c564b', '#c49c94', '#e377c2', '#f7b6d2', '#7f7f7f', '#c7c7c7', '#bcbd22', '#dbdb8d', '#17becf', '#9edae5',
];

/** A colour per class: tab10 up to 10 classes, tab20 up to 20, golden-angle hues beyond. */
export function classColors(numClasses: number): string[] {
  if (numClasses <= 10) return TAB10.slice(0, numClasses);
  if (numClasses <= 20) return TAB20.slice(0, numClasses);
  return Array.from({ length: numClasses }, (_, c) => `hsl(${((c * 137.508) % 360).toFixed(1)}, 65%, ${c % 2 === 0 ? 45 : 60}%)`);
}

const escapeXml = (s: string) => s.replace(/[<>&'"]/g, (ch) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[ch]!);

export interface SvgOptions {
  /** Legend names by class (default "class c"). */
  classNames?: readonly string[];
  title?: string;
  /** Side of the square plot area in px (default 800). */
  size?: number;
  /** Circle radius in px (default 2.5). */
  radius?: number;
}

/** The plot's size in px: the square plot area, a legend column to its right and a title line. */
export function svgSize(numClasses: number, o: Pick<SvgOptions, 'size'> = {}): { width: number; height: number } {
  const size = o.size ?? 800;
  return { width: size + 200, height: Math.max(size + 40, 40 + 30 + numClasses * 18) };
}

/**
 * A self-contained SVG scatter plot of a 2-D embedding ([n, 2]), one circle
 * per point in input order, coloured by class, equal scaling on both axes,
 * with a legend of the classes.
 */
export function umapSvg(embedding: Float64Array | Float32Array, labels: Int32Array, o: SvgOptions = {}): string {
  const n = rowCount(embedding, 2, 'embedding');
  if (labels.length !== n) throw new Error(`umap: ${n} points but ${labels.length} labels`);
  let numClasses = o.classNames?.length ?? 0;
  for (const l of labels) numClasses = Math.max(numClasses, l + 1);
  const colors = classColors(numClasses);
  const size = o.size ?? 800;
  const radius = o.radius ?? 2.5;
  const { width, height } = svgSize(numClasses, o);
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (let i = 0; i < n; i++) {
    x0 = Math.min(x0, embedding[2 * i]!);
    x1 = Math.max(x1, embedding[2 * i]!);
    y0 = Math.min(y0, embedding[2 * i + 1]!);
    y1 = Math.max(y1, embedding[2 * i + 1]!);
  }
  const margin = 10 + radius;
  const span = Math.max(x1 - x0, y1 - y0) || 1;
  const scale = (size - 2 * margin) / span;
  // Centre the data in the plot area (top 40 px hold the title); SVG y grows downwards.
  const ox = margin + (size - 2 * margin - (x1 - x0) * scale) / 2;
  const oy = 40 + margin + (size - 2 * margin - (y1 - y0) * scale) / 2;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<title>${escapeXml(o.title ?? 'UMAP embedding')}</title>`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="10" y="25" font-size="14">${escapeXml(o.title ?? 'UMAP embedding')}</text>`,
    `<rect x="0.5" y="40.5" width="${size - 1}" height="${size - 1}" fill="none" stroke="#cccccc"/>`,
    `<g id="points" fill-opacity="0.75" stroke="none">`,
  ];
  for (let i = 0; i < n; i++) {
    const cx = ox + (embedding[2 * i]! - x0) * scale;
    const cy = oy + (y1 - embedding[2 * i + 1]!) * scale;
    out.push(`<circle cx="${cx.toFixed(2)}" cy="${cy.toFixed(2)}" r="${radius}" fill="${colors[labels[i]!]}"/>`);
  }
  out.push('</g>', `<g id="legend" font-size="12">`);
  for (let c = 0; c < numClasses; c++) {
    const y = 40 + 20 + c * 18;
    const name = o.classNames?.[c] ?? `class ${c}`;
    out.push(`<rect x="${size + 15}" y="${y - 10}" width="12" height="12" fill="${colors[c]}"/>`, `<text x="${size + 33}" y="${y}">${escapeXml(`${c}: ${name}`)}</text>`);
  }
  out.push('</g>', '</svg>', '');
  return out.join('\n');
}

/** Writes the SVG, atomically. */
export function writeSvg(path: string, svg: string): void {
  writeFileAtomic(path, svg);
}

/** Renders an SVG to a PNG file with sharp (librsvg), at its own pixel size. */
export async function writeSvgPng(path: string, svg: string): Promise<void> {
  writeFileAtomic(path, await sharp(Buffer.from(svg)).png().toBuffer());
}
