// `selfsup data`: make synthetic scenes and object images, inspect and cache data sets, and
// measure the loader. The work itself lives in src/data; this file parses
// flags and prints.
import type { Command } from 'commander';
import { loadFashionMnist, FASHION_MNIST_DIR } from '../data/fashion_mnist.js';
import { loadImageFolder } from '../data/image_folder.js';
import type { ImageSet } from '../data/image_set.js';
import { DATA_PACKAGES, missingPackages, type DataPackage } from '../data/packages.js';
import type { PipelineSpec } from '../data/pipeline.js';
import {
  detcoPipeline,
  multiCropPipeline,
  pirlPipeline,
  relativeLocationPipeline,
  rotationPipeline,
  twoViewPipeline,
} from '../data/recipes.js';
import { defaultNormalization } from '../data/dataset_config.js';
import { writeScenes } from '../data/scenes.js';
import { loadObjectImages, writeObjectImages } from '../data/objects.js';
import { SPRITE_SELECTIONS, type SpriteSelection } from '../data/object_bank.js';
import { BACKGROUND_MODES, type BackgroundMode } from '../data/backgrounds.js';
import { measureLoaderThroughput } from '../data/throughput.js';
import { finiteNumber, integer, numberRange } from '../app/flags.js';

type Stats = { mean: number[]; std: number[] } | null;

const PIPELINES: Record<string, (size: number, normalize: Stats) => PipelineSpec> = {
  mocov2: (size, normalize) => twoViewPipeline('mocov2', { size, normalize }),
  simclr: (size, normalize) => twoViewPipeline('simclr', { size, normalize }),
  byol: (size, normalize) => twoViewPipeline('byol', { size, normalize }),
  multicrop: (size, normalize) => multiCropPipeline({ size, normalize }),
  detco: (size, normalize) => detcoPipeline({ size, normalize }),
  pirl: (size, normalize) => pirlPipeline({ size, normalize }),
  rotation: (size, normalize) => rotationPipeline({ size, normalize }),
  relloc: (size, normalize) => relativeLocationPipeline({ size, normalize }),
};

async function loadDataset(spec: string, dataDir: string | undefined, size: number, limit: number): Promise<ImageSet> {
  if (spec === 'fashion-mnist') return loadFashionMnist({ dir: dataDir, limit });
  if (spec.startsWith('objects:')) return (await loadObjectImages(spec.slice('objects:'.length), 'train', { who: `--dataset ${spec}` }))!;
  return loadImageFolder(spec, { size });
}

function checkChoices(o: { backgrounds: string; sprites: string }): void {
  if (!(BACKGROUND_MODES as readonly string[]).includes(o.backgrounds)) {
    throw new Error(`--backgrounds must be one of ${BACKGROUND_MODES.join(', ')}, got '${o.backgrounds}'`);
  }
  if (!(SPRITE_SELECTIONS as readonly string[]).includes(o.sprites)) {
    throw new Error(`--sprites must be ${SPRITE_SELECTIONS.join(', ')}, got '${o.sprites}'`);
  }
  const missing = missingPackages(['tuxpaintStamps', 'openclipart']);
  if (missing.length > 0) throw new Error(`scene objects need: apt-get install ${missing.join(' ')}`);
}

/** Progress on stderr when it is a terminal: `what: done/count`. */
function progress(what: string): ((done: number, count: number) => void) | undefined {
  return process.stderr.isTTY ? (done, count) => process.stderr.write(`\r${what}: ${done}/${count}${done === count ? '\n' : ''}`) : undefined;
}

export function registerDataCommand(program: Command): void {
  const data = program.command('data').description('Data sets, synthetic scenes and the loader');

  data
    .command('scenes')
    .description('Generate synthetic detection/segmentation scenes (COCO JSON, semantic masks, train/val)')
    .requiredOption('--out <dir>', 'output folder')
    .option('--count <n>', 'number of images', integer, 1000)
    .option('--size <px>', 'image side', integer, 128)
    .option('--seed <n>', 'random seed', integer, 0)
    .option('--val-fraction <f>', 'fraction of images in val', finiteNumber, 0.2)
    .option('--objects <a-b>', 'objects per image', numberRange, [1, 4] as [number, number])
    .option('--scale <a-b>', "object's longer side over image side", numberRange, [0.2, 0.6] as [number, number])
    .option('--max-occlusion <f>', 'largest fraction of an object later objects may cover', finiteNumber, 0.5)
    .option('--backgrounds <mode>', 'photos | procedural | mixed | plain (one uniform colour)', 'mixed')
    .option('--background-dir <dir>', 'background photos', DATA_PACKAGES.gnomeBackgrounds.path)
    .option('--sprites <half>', "which half of each class's clip art: transfer (unseen by `data objects`) | pretrain | all", 'transfer')
    .action(async (o) => {
      checkChoices(o);
      const t0 = performance.now();
      const summary = await writeScenes(o.out, {
        count: o.count,
        size: o.size,
        seed: o.seed,
        valFraction: o.valFraction,
        minObjects: o.objects[0],
        maxObjects: o.objects[1],
        scaleRange: o.scale,
        maxOcclusion: o.maxOcclusion,
        backgrounds: o.backgrounds as BackgroundMode,
        backgroundDir: o.backgroundDir,
        sprites: o.sprites as SpriteSelection,
        onProgress: progress('scenes'),
      });
      const s = ((performance.now() - t0) / 1000).toFixed(1);
      process.stdout.write(`${summary.train} train + ${summary.val} val images, ${summary.objects} objects, in ${o.out} (${s} s)\n`);
    });

  data
    .command('objects')
    .description('Generate object-centric images (one centred clip-art sprite, labelled by class): the ImageNet analog to pretrain on')
    .requiredOption('--out <dir>', 'output folder: train/<class>/, val/<class>/, objects.json')
    .option('--count <n>', 'number of images', integer, 20000)
    .option('--size <px>', 'image side', integer, 64)
    .option('--seed <n>', 'random seed', integer, 0)
    .option('--val-fraction <f>', 'fraction of images in val', finiteNumber, 0.1)
    .option('--sprites <half>', "which half of each class's clip art: pretrain (unseen by `data scenes`) | transfer | all", 'pretrain')
    .option('--scale <a-b>', "sprite's longer side over image side", numberRange, [0.5, 0.9] as [number, number])
    .option('--max-offset <f>', "largest offset of the sprite's centre from the image centre, over the image side", finiteNumber, 0.1)
    .option('--backgrounds <mode>', 'photos | procedural | mixed | plain (one uniform colour)', 'mixed')
    .option('--background-dir <dir>', 'background photos', DATA_PACKAGES.gnomeBackgrounds.path)
    .option('--overwrite', 'replace a folder that holds another objects set')
    .addHelpText('after', '\nPretrain on it with: selfsup pretrain --dataset objects:DIR --size 64 --stem imagenet ...')
    .action(async (o) => {
      checkChoices(o);
      const t0 = performance.now();
      const summary = await writeObjectImages(o.out, {
        count: o.count,
        size: o.size,
        seed: o.seed,
        valFraction: o.valFraction,
        sprites: o.sprites as SpriteSelection,
        scaleRange: o.scale,
        maxOffset: o.maxOffset,
        backgrounds: o.backgrounds as BackgroundMode,
        backgroundDir: o.backgroundDir,
        overwrite: Boolean(o.overwrite),
        onProgress: progress('objects'),
      });
      const s = ((performance.now() - t0) / 1000).toFixed(1);
      if (summary.reused) {
        process.stdout.write(`${o.out} already holds these ${summary.train} train + ${summary.val} val images (objects.json); nothing written\n`);
      } else {
        process.stdout.write(`${summary.train} train + ${summary.val} val images of ${summary.manifest.classes.length} classes in ${o.out} (${s} s)\n`);
      }
    });

  data
    .command('info')
    .description('Which data packages are installed, and what Fashion-MNIST holds')
    .option('--data <dir>', 'Fashion-MNIST folder', FASHION_MNIST_DIR)
    .action((o) => {
      for (const [name, p] of Object.entries(DATA_PACKAGES)) {
        const ok = missingPackages([name as DataPackage]).length === 0;
        process.stdout.write(`${p.debian.padEnd(26)} ${ok ? 'found' : 'MISSING'}  ${p.path}\n`);
      }
      for (const split of ['train', 'test'] as const) {
        const set = loadFashionMnist({ dir: o.data, split });
        process.stdout.write(`fashion-mnist ${split}: ${set.count} images ${set.height}x${set.width}\n`);
      }
    });

  data
    .command('cache <dir>')
    .description('Decode an image folder once at a working size and cache it')
    .option('--size <px>', 'working side', integer, 64)
    .option('--channels <n>', '1 or 3', integer, 3)
    .option('--cache-dir <dir>', 'where the cache goes')
    .action(async (dir: string, o) => {
      if (o.channels !== 1 && o.channels !== 3) throw new Error(`--channels must be 1 or 3, got ${o.channels}`);
      const set = await loadImageFolder(dir, { size: o.size, channels: o.channels, cacheDir: o.cacheDir });
      const classes = set.classNames ? `${set.classNames.length} classes` : 'unlabeled';
      const { found, skipped } = set.summary;
      const reasons = Object.entries(skipped).map(([reason, n]) => `${n} ${reason}`);
      process.stdout.write(`${set.count} images (${classes}), ${set.cachedCount} from cache; ${found} files found, ${set.count} used, ${reasons.length ? reasons.join(', ') : 'none'} skipped\n`);
    });

  data
    .command('throughput')
    .description('Loader throughput in views/s (a jigsaw set of 9 patches counts 9 views)')
    .option('--dataset <name|dir>', "'fashion-mnist', an image folder, or objects:DIR", 'fashion-mnist')
    .option('--data <dir>', 'Fashion-MNIST folder')
    .option('--pipeline <name>', Object.keys(PIPELINES).join(' | '), 'mocov2')
    .option('--size <px>', 'view side', integer, 32)
    .option('--workers <list>', 'comma-separated worker counts', (v: string) => v.split(',').map(integer), [0, 1, 2])
    .option('--batch-size <n>', 'batch size', integer, 256)
    .option('--batches <n>', 'batches timed per setting', integer, 20)
    .option('--limit <n>', 'images loaded', integer, 20000)
    .action(async (o) => {
      const make = PIPELINES[o.pipeline];
      if (!make) throw new Error(`--pipeline must be one of ${Object.keys(PIPELINES).join(', ')}, got '${o.pipeline}'`);
      const dataset = await loadDataset(o.dataset, o.data, o.size, o.limit);
      const pipeline = make(o.size, defaultNormalization(dataset.channels));
      for (const workers of o.workers as number[]) {
        const r = await measureLoaderThroughput({ dataset, pipeline, batchSize: o.batchSize, workers, batches: o.batches });
        process.stdout.write(
          `${o.pipeline} workers=${workers}: ${Math.round(r.viewsPerSecond)} views/s, ${Math.round(r.samplesPerSecond)} samples/s ` +
            `(${r.viewsPerSample} views/sample, batch ${r.batchSize})\n`,
        );
      }
    });
}
