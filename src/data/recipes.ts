// The augmentation recipes of the papers, as pipeline specs.
//
// Numbers are the papers' (ImageNet, 224 px) unless the view is small: at 64 px
// or less (Fashion-MNIST, CIFAR) we follow solo-learn's CIFAR configs, which
// drop Gaussian blur (a 32 px image has no detail left to blur away), and we
// keep crops at >= 20% of the area, because an 8x8 crop of a 28x28 garment is
// mostly background. Grey sources simply skip saturation and hue.
import type { JigsawSpec, RelativeLocationSpec } from './jigsaw.js';
import type { PipelineSpec } from './pipeline.js';
import type { ColorJitterSpec, Range } from './transforms.js';
import type { PhotometricSpec, ViewSpec } from './views.js';

/** Per-channel statistics of Fashion-MNIST's training set (pixels in [0, 1]). */
export const FASHION_MNIST_STATS = { mean: [0.286], std: [0.353] };
export const IMAGENET_STATS = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

export interface RecipeOptions {
  /**
   * Side of the global views. Default 32: Fashion-MNIST's 28 px scaled up so
   * a CIFAR-stem ResNet's three stride-2 stages give 4x4 maps.
   */
  size?: number;
  /** Normalisation after augmentation; none when omitted. */
  normalize?: { mean: number[]; std: number[] } | null;
}

const SMALL = 64;
const RATIO: Range = [3 / 4, 4 / 3];

function resolve(o: RecipeOptions): { size: number; small: boolean; normalize: PhotometricSpec['normalize'] } {
  const size = o.size ?? 32;
  if (!(Number.isInteger(size) && size >= 4)) throw new Error(`recipe: view size must be an integer >= 4, got ${o.size}`);
  return { size, small: size <= SMALL, normalize: o.normalize ?? null };
}

/** Sigma range (0.1, 2.0) px at 224 px, scaled to the view size; blur is off for small views. */
function blur(size: number, small: boolean, p: number): PhotometricSpec['blur'] {
  if (small || p === 0) return null;
  const k = size / 224;
  return { p, sigma: [0.1 * k, 2.0 * k] };
}

function jitter(brightness: number, contrast: number, saturation: number, hue: number, p = 0.8): ColorJitterSpec {
  return { brightness, contrast, saturation, hue, p };
}

/** MoCo v2 (Chen et al. 2020, "Improved baselines"), also DetCo's global views. */
export function mocoV2View(o: RecipeOptions = {}): ViewSpec {
  const { size, small, normalize } = resolve(o);
  return {
    size,
    scale: [0.2, 1],
    ratio: RATIO,
    flipP: 0.5,
    jitter: jitter(0.4, 0.4, 0.4, 0.1),
    grayscaleP: 0.2,
    blur: blur(size, small, 0.5),
    solarizeP: 0,
    normalize,
  };
}

/** SimCLR (Chen et al. 2020), colour strength 1.0 (0.5 on small views, as its CIFAR setting). */
export function simclrView(o: RecipeOptions = {}): ViewSpec {
  const { size, small, normalize } = resolve(o);
  const s = small ? 0.5 : 1;
  return {
    size,
    scale: small ? [0.2, 1] : [0.08, 1],
    ratio: RATIO,
    flipP: 0.5,
    jitter: jitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s),
    grayscaleP: 0.2,
    blur: blur(size, small, 0.5),
    solarizeP: 0,
    normalize,
  };
}

/**
 * BYOL's asymmetric pair (Grill et al. 2020, table 6): blur always on view 1,
 * solarize only on view 2. Small views crop at >= 50% of the area: BYOL has
 * no negatives, only its slow target to agree with, and a 20% crop of a 28 px
 * garment asks it to match a sleeve to a whole shirt. Small views also
 * solarize view 2 with p 0.4, not 0.2: with blur off, solarize is most of
 * what keeps two grey views apart. Measurements: docs/experiments.md#recipes.
 */
export function byolViews(o: RecipeOptions = {}): [ViewSpec, ViewSpec] {
  const { size, small, normalize } = resolve(o);
  const base = {
    size,
    scale: (small ? [0.5, 1] : [0.08, 1]) as Range,
    ratio: RATIO,
    flipP: 0.5,
    jitter: jitter(0.4, 0.4, 0.2, 0.1),
    grayscaleP: 0.2,
    normalize,
  };
  return [
    { ...base, blur: blur(size, small, 1.0), solarizeP: 0 },
    { ...base, blur: blur(size, small, 0.1), solarizeP: small ? 0.4 : 0.2 },
  ];
}

export type TwoViewRecipe = 'mocov2' | 'simclr' | 'byol';

/** Outputs `view1` and `view2`. MoCo v2 and SimCLR use one spec twice; BYOL is asymmetric. */
export function twoViewPipeline(recipe: TwoViewRecipe, o: RecipeOptions = {}): PipelineSpec {
  const [a, b] =
    recipe === 'byol' ? byolViews(o) : recipe === 'simclr' ? [simclrView(o), simclrView(o)] : [mocoV2View(o), mocoV2View(o)];
  return {
    outputs: [
      { kind: 'view', name: 'view1', view: a },
      { kind: 'view', name: 'view2', view: b },
    ],
  };
}

export interface MultiCropOptions extends RecipeOptions {
  /** Small crops per sample (SwAV: 6). */
  localCount?: number;
  /** Side of the small crops (SwAV: 96 of 224). Default size * 96/224, or 16 px on small views. */
  localSize?: number;
}

/** SwAV multi-crop (Caron et al. 2020): outputs `global` (2 per sample) and `local` (N per sample). */
export function multiCropPipeline(o: MultiCropOptions = {}): PipelineSpec {
  const { size, small } = resolve(o);
  const localSize = o.localSize ?? (small ? 16 : Math.round((size * 96) / 224));
  const base = simclrView(o);
  return {
    outputs: [
      { kind: 'view', name: 'global', count: 2, view: { ...base, scale: [0.14, 1] } },
      { kind: 'view', name: 'local', count: o.localCount ?? 6, view: { ...base, size: localSize, scale: [0.05, 0.14] } },
    ],
  };
}

export interface JigsawOptions extends RecipeOptions {
  /** Side of each patch. Default: 64 of 224 (PIRL), at least 16 px. */
  patchSize?: number;
  /** Shuffle the patches and return the permutation (PIRL concatenates in random order). Default true. */
  shuffle?: boolean;
}

function patchPhotometric(normalize: PhotometricSpec['normalize']): PhotometricSpec {
  return { jitter: jitter(0.4, 0.4, 0.4, 0.1), grayscaleP: 0.2, blur: null, solarizeP: 0, normalize };
}

/** PIRL's jigsaw set: a crop of 60-100% of the image, 3x3 cells, 75% sub-crops. */
export function jigsawSpec(o: JigsawOptions = {}): JigsawSpec {
  const { size, normalize } = resolve(o);
  return {
    scale: [0.6, 1],
    ratio: RATIO,
    grid: 3,
    cellFraction: 0.75,
    patchSize: o.patchSize ?? Math.max(16, Math.round((size * 64) / 224)),
    photometric: patchPhotometric(normalize),
    shuffle: o.shuffle ?? true,
  };
}

/**
 * DetCo (Xie et al. 2021): two MoCo v2 global views (`view1`, `view2`) and a
 * jigsaw set for each (`jigsaw1`, `jigsaw2`), for the global-global,
 * local-local and cross global-local contrasts.
 */
export function detcoPipeline(o: JigsawOptions = {}): PipelineSpec {
  return {
    outputs: [
      { kind: 'view', name: 'view1', view: mocoV2View(o) },
      { kind: 'view', name: 'view2', view: mocoV2View(o) },
      { kind: 'jigsaw', name: 'jigsaw1', jigsaw: jigsawSpec(o) },
      { kind: 'jigsaw', name: 'jigsaw2', jigsaw: jigsawSpec(o) },
    ],
  };
}

/** PIRL: one image view (`view`) and one jigsaw set (`jigsaw`). */
export function pirlPipeline(o: JigsawOptions = {}): PipelineSpec {
  return {
    outputs: [
      { kind: 'view', name: 'view', view: mocoV2View(o) },
      { kind: 'jigsaw', name: 'jigsaw', jigsaw: jigsawSpec(o) },
    ],
  };
}

/** DeepCluster (Caron et al. 2018): a random resized crop and a flip, no colour changes (its Sobel filter discards colour). */
export function deepClusterView(o: RecipeOptions = {}): ViewSpec {
  const { size, small, normalize } = resolve(o);
  return { size, scale: small ? [0.2, 1] : [0.08, 1], ratio: RATIO, flipP: 0.5, jitter: null, grayscaleP: 0, blur: null, solarizeP: 0, normalize };
}

/** RotNet (Gidaris et al. 2018): a mildly cropped, flipped view in all four rotations (`rotation`). */
export function rotationPipeline(o: RecipeOptions & { all?: boolean } = {}): PipelineSpec {
  const { size, normalize } = resolve(o);
  const view: ViewSpec = {
    size,
    scale: [0.6, 1],
    ratio: [1, 1],
    flipP: 0.5,
    jitter: null,
    grayscaleP: 0,
    blur: null,
    solarizeP: 0,
    normalize,
  };
  return { outputs: [{ kind: 'rotation', name: 'rotation', rotation: { view, all: o.all ?? true } }] };
}

/** Relative patch location (Doersch et al. 2015): centre/neighbour pairs (`relloc`). */
export function relativeLocationPipeline(o: JigsawOptions & { colorDrop?: boolean; allNeighbours?: boolean } = {}): PipelineSpec {
  const { normalize } = resolve(o);
  const { shuffle: _unused, ...grid } = jigsawSpec(o);
  void _unused;
  // Doersch et al.: 96 px patches with 48 px gaps, so sub-crops are 2/3 of a cell.
  // Greyscale on 20% hides the chromatic aberration shortcut they describe;
  // `colorDrop` (theirs) hides it on every RGB patch.
  const spec: RelativeLocationSpec = {
    ...grid,
    cellFraction: 2 / 3,
    photometric: { jitter: null, grayscaleP: 0.2, blur: null, solarizeP: 0, normalize },
    ...(o.colorDrop ? { colorDrop: true } : {}),
    ...(o.allNeighbours ? { allNeighbours: true } : {}),
  };
  return { outputs: [{ kind: 'relative-location', name: 'relloc', relativeLocation: spec }] };
}

/**
 * The jigsaw puzzle (Noroozi & Favaro 2016): 3x3 tiles (`jigsaw`) in the
 * order of one of `permutations`, its index in aux `jigsaw.label`. Tiles are
 * 64 px sub-crops of 75 px cells in the paper: a gap of 11 px on average and
 * up to 11 px of jitter inside each cell.
 */
export function jigsawPuzzlePipeline(o: JigsawOptions & { permutations: number[][] }): PipelineSpec {
  const jigsaw: JigsawSpec = { ...jigsawSpec(o), cellFraction: 64 / 75, shuffle: true, permutations: o.permutations };
  return { outputs: [{ kind: 'jigsaw', name: 'jigsaw', jigsaw }] };
}
