// Seeds of the methods' per-step random draws.

/** A seed for step `step`'s random draws: a resumed run draws the very same ones. */
export function stepSeed(seed: number, step: number): number {
  return (Math.imul(seed + 1, 0x9e3779b1) + step) >>> 0;
}
