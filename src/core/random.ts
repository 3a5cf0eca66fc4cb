// The project's seeded random generators, one API over two streams:
// - `Rng` (sfc32, splittable): the default; the data layer, the loader and
//   the evaluation splits draw from it.
// - `Mulberry32`: weight initialisation and the methods' per-step draws. Kept
//   because every checkpoint and recorded benchmark depends on its exact
//   stream; new code uses `Rng`.
//
// Reproducibility rule: a generator's `split(key)` depends only on the seed it
// was made from, never on how many numbers it has drawn. The loader derives
// every sample's generator as root.split(epoch).split(datasetIndex), so a
// sample's augmentations are the same whichever worker draws them and in
// whatever order the workers finish.
//
// The stream is sfc32 (Chris Doty-Humphrey's small fast counting generator):
// 32-bit integer ops only, passes PractRand to large sizes, and costs a few
// nanoseconds per draw in V8. Seeds are mixed with a murmur3-style finaliser.

const TWO_POW_32 = 4294967296;

/** murmur3's 32-bit finaliser: a bijective mix with full avalanche. */
function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** What every generator offers, derived from its uniform stream `next()`. */
export abstract class RandomStream {
  private spare: number | undefined;

  /** Uniform in [0, 1). */
  abstract next(): number;

  /** Uniform in [lo, hi); [0, 1) without arguments. */
  uniform(lo = 0, hi = 1): number {
    return lo + (hi - lo) * this.next();
  }

  /** Uniform integer in [lo, hi] (both ends included, as torch.randint's high+1). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** True with probability p. Always draws, so the stream does not depend on p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** Standard normal (Box-Muller; the second value of each pair is kept for the next call). */
  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    const u = 1 - this.next(); // (0, 1], so log(u) is finite
    const r = Math.sqrt(-2 * Math.log(u));
    const theta = 2 * Math.PI * this.next();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** Fisher-Yates permutation of 0..n-1. */
  permutation(n: number): Int32Array {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      const t = out[i]!;
      out[i] = out[j]!;
      out[j] = t;
    }
    return out;
  }
}

export class Rng extends RandomStream {
  /** The two key words this generator was made from; `split` derives from them. */
  readonly key0: number;
  readonly key1: number;
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** A generator for `seed` (any finite number; 1 and 1.5 differ). */
  static seeded(seed: number): Rng {
    const lo = seed >>> 0;
    const hi = Math.floor(seed / TWO_POW_32) >>> 0;
    const frac = Math.floor((seed - Math.floor(seed)) * TWO_POW_32) >>> 0;
    return new Rng(mix32(lo ^ mix32(hi + 0x9e3779b9)), mix32(frac ^ 0xbb67ae85));
  }

  /** Prefer `Rng.seeded`; this takes already-mixed key words. */
  constructor(key0: number, key1: number) {
    super();
    this.key0 = key0 >>> 0;
    this.key1 = key1 >>> 0;
    this.a = this.key0;
    this.b = this.key1;
    this.c = mix32(this.key0 ^ this.key1 ^ 0x3c6ef372);
    this.d = 1;
    // sfc32 needs a few rounds before nearby keys give unrelated streams.
    for (let i = 0; i < 12; i++) this.nextUint32();
  }

  /** An independent generator for stream `key` (an epoch, a sample index, an image id). */
  split(key: number): Rng {
    const lo = key >>> 0;
    const hi = Math.floor(key / TWO_POW_32) >>> 0;
    return new Rng(
      mix32(this.key0 ^ mix32(lo + 0x7f4a7c15)),
      mix32(this.key1 + Math.imul(mix32(lo ^ mix32(hi ^ 0x94d049bb)), 0x2545f491)),
    );
  }

  nextUint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  next(): number {
    return this.nextUint32() / TWO_POW_32;
  }
}

/** Mulberry32 (Tommy Ettinger's 32-bit-state generator): the weights' and the methods' stream. */
export class Mulberry32 extends RandomStream {
  private state: number;

  constructor(seed = 0) {
    super();
    this.state = seed >>> 0;
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / TWO_POW_32;
  }
}
