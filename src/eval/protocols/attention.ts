// Attention maps (DetCo, Fig. 5): for a few images, the chosen stage's
// activation energy, upsampled, normalised per image, coloured with viridis
// and blended over the image; one PNG grid per call, a row per image, the
// image first, then a column per checkpoint (--checkpoint, then each of
// --compare). On a scene folder also the share of the energy that falls on the
// objects' masks against the share of the image they cover.
import { existsSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { z } from 'zod';
import { loadSceneSplit } from '../../data/scenes_reader.js';
import { loadTestSplit, loadTrainingSet } from '../../data/dataset_config.js';
import { loadBackbone, resolveCheckpointPath, type LoadedBackbone } from '../../io/backbone.js';
import {
  attentionEnergy,
  blendOverlay,
  checkStage,
  composeGrid,
  maskEnergyShare,
  networkInput,
  normalizePerImage,
  toRgbBytes,
  unionMask,
  UPSAMPLING,
  writePng,
} from '../attention.js';
import { FEATURE_STAGES, prepareBatch } from '../features.js';
import { defineProtocol, type EvalReport } from '../protocol.js';

/** A list of checkpoints: an array, or one comma-separated string (what the CLI flag gives). */
const CheckpointList = z.preprocess(
  (v) => (typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter((s) => s !== '') : v),
  z.array(z.string().min(1)).min(1),
);

export const AttentionOptions = z
  .object({
    images: z.number().int().min(1).max(64).default(8).describe('images shown, one row each'),
    stage: z
      .enum(FEATURE_STAGES)
      .default('res4')
      .describe('the stage whose activation energy (mean over channels of the squared activation) is mapped'),
    scenes: z
      .string()
      .min(1)
      .optional()
      .describe("a scene folder (`selfsup data scenes --out DIR`): its val scenes, and the energy share on the objects (default: the run's test images)"),
    measure: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('scenes: how many val scenes the energy share is averaged over (default --images); the grid still shows the first --images'),
    compare: CheckpointList.optional().describe('more checkpoints or run folders, comma-separated: one more column each, after --checkpoint'),
    alpha: z.number().min(0).max(1).default(0.5).describe('opacity of the coloured map over the image'),
    scale: z.number().int().min(1).max(16).default(1).describe('enlarge the PNG grid this many times (nearest neighbour)'),
  })
  .strict();
export type AttentionOptions = z.infer<typeof AttentionOptions>;

/** The images shown, in [0, 1], and on scenes the union of each one's object masks. */
interface AttentionImages {
  name: string;
  count: number;
  height: number;
  width: number;
  channels: number;
  /** count * height * width * channels values in [0, 1]. */
  pixels: Float32Array;
  masks: Uint8Array[] | null;
}

async function sceneImages(dir: string, n: number): Promise<AttentionImages> {
  const annotations = join(dir, 'annotations', 'instances_val.json');
  if (!existsSync(annotations)) {
    throw new Error(`attention: --scenes ${dir} has no annotations (${annotations} is missing); make one with \`selfsup data scenes --out DIR\``);
  }
  const split = await loadSceneSplit(dir, 'val', { limit: n });
  const { height, width, count } = split.images;
  const pixels = new Float32Array(count * height * width * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = split.images.images[i]! / 255;
  const masks = split.annotations.map((anns) => unionMask(anns, height, width));
  return { name: `scenes ${dir} (val)`, count, height, width, channels: 3, pixels, masks };
}

/** The first images of the run's test split (its training images where the data set has none), at the working size as evaluation sees them. */
async function runImages(loaded: LoadedBackbone, n: number): Promise<AttentionImages> {
  const dataset = loaded.config.dataset;
  const test = await loadTestSplit(dataset, n);
  const set = test ?? (await loadTrainingSet({ ...dataset, limit: n }));
  const count = Math.min(n, set.count);
  if (count === 0) throw new Error(`attention: the run's data set ${dataset.name} has no images`);
  const size = dataset.size;
  const pixels = new Float32Array(count * size * size * set.channels);
  prepareBatch(set, 0, count, size, 'resize', null, pixels);
  return { name: `${dataset.name} ${test ? 'test' : 'train (no test split)'}`, count, height: size, width: size, channels: set.channels, pixels, masks: null };
}

/** Energy maps of many images, a batch at a time, so a few hundred scenes fit in memory. */
async function batchedEnergy(backbone: LoadedBackbone['backbone'], x: Float32Array, shape: [number, number, number, number], stage: string) {
  const [n, height, width, channels] = shape;
  const per = height * width * channels;
  const energy = new Float32Array(n * height * width);
  let mapSize: [number, number] = [0, 0];
  for (let start = 0; start < n; start += ENERGY_BATCH) {
    const m = Math.min(ENERGY_BATCH, n - start);
    const part = await attentionEnergy(backbone, x.subarray(start * per, (start + m) * per), [m, height, width, channels], stage);
    energy.set(part.energy, start * height * width);
    mapSize = part.mapSize;
  }
  return { energy, mapSize };
}
const ENERGY_BATCH = 32;

interface Column {
  checkpoint: string;
  method: string;
  arch: string;
  /** The stage map's spatial size before upsampling. */
  mapSize: [number, number];
  /** Per image, percent; null without masks or for an all-zero map. */
  energyShare: Array<number | null>;
  meanEnergyShare?: number;
  meanAreaShare?: number;
  concentration?: number;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

export const attentionProtocol = defineProtocol({
  name: 'attention',
  description: "attention maps (DetCo Fig. 5): a stage's activation energy over N images as a PNG grid, a column per checkpoint; on scenes, the energy share on the objects",
  options: AttentionOptions,
  input: 'backbone',
  async run(input, o, log) {
    if (input.kind !== 'backbone') throw new Error('attention: needs a backbone');
    const stage = checkStage(o.stage);
    const { loaded } = input;
    const compared: LoadedBackbone[] = [];
    try {
      for (const path of o.compare ?? []) {
        const other = loadBackbone(resolveCheckpointPath(path, '--compare'));
        compared.push(other);
        if (other.data.channels !== loaded.data.channels) {
          throw new Error(
            `attention: --compare ${path}: its backbone takes ${other.data.channels}-channel images, --checkpoint's takes ${loaded.data.channels}`,
          );
        }
      }
      if (o.measure !== undefined && !o.scenes) throw new Error('attention: --measure needs --scenes (the energy share is measured on the scenes\' object masks)');
      const images = o.scenes ? await sceneImages(o.scenes, Math.max(o.images, o.measure ?? 0)) : await runImages(loaded, o.images);
      const { count, height, width, channels } = images;
      const shownRows = Math.min(count, o.images);
      const pixels = height * width;
      log(`attention: ${stage} energy of ${count} images (${images.name}), ${1 + compared.length} checkpoint(s)`);

      const shown = toRgbBytes(images.pixels.subarray(0, shownRows * pixels * channels), pixels, channels);
      const cells: Uint8Array[][] = Array.from({ length: shownRows }, (_, r) => [shown.slice(r * pixels * 3, (r + 1) * pixels * 3)]);
      const columns: Column[] = [];
      for (const model of [loaded, ...compared]) {
        const inChannels = model.data.channels;
        const x = networkInput(images.pixels, pixels, channels, inChannels);
        const { energy, mapSize } = await batchedEnergy(model.backbone, x, [count, height, width, inChannels], stage);
        const unit = normalizePerImage(energy.subarray(0, shownRows * pixels), pixels);
        for (let r = 0; r < shownRows; r++) {
          cells[r]!.push(blendOverlay(cells[r]![0]!, unit.subarray(r * pixels, (r + 1) * pixels), o.alpha));
        }
        const column: Column = {
          checkpoint: model.checkpoint.path,
          method: model.checkpoint.randomInit ? `${model.checkpoint.method} (random init)` : model.checkpoint.method,
          arch: model.checkpoint.arch,
          mapSize,
          energyShare: [],
        };
        if (images.masks) {
          const energyShares: number[] = [];
          const areaShares: number[] = [];
          images.masks.forEach((mask, r) => {
            const s = maskEnergyShare(energy.subarray(r * pixels, (r + 1) * pixels), mask);
            const counted = s.areaShare > 0 && Number.isFinite(s.energyShare);
            column.energyShare.push(counted ? 100 * s.energyShare : null);
            if (counted) {
              energyShares.push(s.energyShare);
              areaShares.push(s.areaShare);
            }
          });
          if (energyShares.length > 0) {
            column.meanEnergyShare = 100 * mean(energyShares);
            column.meanAreaShare = 100 * mean(areaShares);
            column.concentration = mean(energyShares) / mean(areaShares);
          }
        }
        columns.push(column);
      }

      const artifacts: Record<string, string> = {};
      if (input.workDir) {
        const file = join(input.workDir, 'attention.png');
        await writePng(file, composeGrid(cells, height, width), o.scale);
        // The report is <workDir>.json, so paths relative to it start from the work folder's parent.
        artifacts.grid = relative(dirname(input.workDir), file);
        log(`attention: grid ${file}`);
      } else log('attention: no report folder (not saving), so the grid is not written');

      const metrics: Record<string, number> = { images: count };
      columns.forEach((c, k) => {
        if (c.meanEnergyShare === undefined) return;
        const prefix = k === 0 ? '' : `compare${k}`;
        const key = (name: string) => (prefix ? `${prefix}${name[0]!.toUpperCase()}${name.slice(1)}` : name);
        metrics[key('energyShare')] = c.meanEnergyShare;
        metrics[key('areaShare')] = c.meanAreaShare!;
        metrics[key('concentration')] = c.concentration!;
      });
      return {
        metrics,
        details: {
          stage,
          upsampling: UPSAMPLING,
          colormap: 'viridis, each map scaled to [0, 1] by its own minimum and maximum',
          alpha: o.alpha,
          grid: { rows: shownRows, columns: 1 + columns.length, cell: [height, width], scale: o.scale, firstColumn: 'the image' },
          columns,
        },
        artifacts,
        data: { name: images.name, trainImages: 0, testImages: count, stage },
      };
    } finally {
      for (const c of compared) c.backbone.dispose();
    }
  },
  format(report: EvalReport) {
    const { metrics: m, data, details } = report;
    const columns = (details?.columns ?? []) as Column[];
    const grid = report.artifacts.grid ? `grid: ${report.artifacts.grid}` : 'grid not written';
    let out = `Attention maps, ${data.stage} energy of ${m.images} images (${data.name}); ${grid}\n`;
    if (columns.some((c) => c.meanEnergyShare !== undefined)) {
      const width = Math.max(...columns.map((c) => c.method.length), 10);
      out += `${'checkpoint'.padEnd(width)}  energy on objects %  area %  ratio\n`;
      for (const c of columns) {
        if (c.meanEnergyShare === undefined) continue;
        out += `${c.method.padEnd(width)}  ${c.meanEnergyShare.toFixed(2).padStart(19)}  ${c.meanAreaShare!.toFixed(2).padStart(6)}  ${c.concentration!.toFixed(2).padStart(5)}\n`;
      }
    }
    return out;
  },
});
