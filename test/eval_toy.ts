// Toy feature sets shared by the evaluation tests.
import { randomArray, rng } from './helpers.js';

/**
 * `perClass` points per class (labels cycle 0..classes-1) around random
 * centres fixed by `centreSeed`, plus noise of scale `noise` from `noiseSeed`.
 */
export function clusters(classes: number, perClass: number, dim: number, noise: number, centreSeed: number, noiseSeed: number) {
  const r = rng(noiseSeed);
  const centres = randomArray(classes * dim, centreSeed);
  const features = new Float32Array(classes * perClass * dim);
  const labels = new Int32Array(classes * perClass);
  for (let i = 0; i < classes * perClass; i++) {
    const c = i % classes;
    labels[i] = c;
    for (let j = 0; j < dim; j++) features[i * dim + j] = centres[c * dim + j]! + noise * (r() + r() + r() - 1.5);
  }
  return { features, labels };
}

export function randomLabels(n: number, classes: number, seed: number): Int32Array {
  const r = rng(seed);
  return Int32Array.from({ length: n }, () => Math.floor(r() * classes));
}
