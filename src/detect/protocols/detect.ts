// Detection and instance segmentation transfer, the seed's main protocol
// (DetCo Tables 3, 4, 10-12): the backbone fine-tuned inside a Mask R-CNN
// with an FPN on the scenes' training split, every head fresh, then box and
// mask AP on the val split by COCO's rules (eval/coco_eval.ts).
import { z } from 'zod';
import { InterruptedError } from '../../core/interrupted.js';
import { encodeRle } from '../../data/coco.js';
import { evaluateCoco, type CocoResult } from '../../eval/coco_eval.js';
import { defineProtocol, type EvalReport } from '../../eval/protocol.js';
import type { DetectionSet } from '../data.js';
import { finetune } from '../finetune.js';
import { defaultMaskRcnnSettings, MaskRCNN, ROI_BATCH_PER_IMAGE } from '../mask_rcnn.js';
import { pasteMasks } from '../masks.js';
import {
  backboneInput,
  dataSummary,
  finetuneIo,
  finetuneSettings,
  loadTransferData,
  percent,
  preciseBatchNorm,
  sceneTask,
  testBatches,
  TransferOptions,
} from '../transfer.js';

export const DetectOptions = TransferOptions.extend({
  roiBatchPerImage: z
    .number()
    .int()
    .positive()
    .default(ROI_BATCH_PER_IMAGE)
    .describe('RoIs sampled per image for the box and mask heads, up to 25% foreground (detectron2: 512 on COCO)'),
}).strict();
export type DetectOptions = z.infer<typeof DetectOptions>;

/** The detector's COCO results on `set`: boxes as [x, y, w, h] and masks pasted at 0.5, as RLE. */
export function predictCoco(model: MaskRCNN, set: DetectionSet, input: ReturnType<typeof backboneInput>, batchSize: number): { bbox: CocoResult[]; segm: CocoResult[] } {
  const bbox: CocoResult[] = [];
  const segm: CocoResult[] = [];
  const restore = model.saveModes();
  model.eval();
  try {
    for (const batch of testBatches(set, batchSize, input)) {
      const images = input.toTensor(batch, set.height, set.width);
      const detections = model.predict(images);
      images.dispose();
      detections.forEach((d, b) => {
        const image_id = set.split.coco.images[batch.indices[b]!]!.id;
        const masks = pasteMasks(d.masks, d.maskSize, d.boxes, set.height, set.width);
        d.scores.forEach((score, k) => {
          const [x0, y0, x1, y1] = d.boxes.subarray(k * 4, k * 4 + 4);
          const category_id = set.categoryIds[d.classes[k]!]!;
          bbox.push({ image_id, category_id, score, bbox: [x0!, y0!, x1! - x0!, y1! - y0!] });
          segm.push({ image_id, category_id, score, segmentation: encodeRle(masks[k]!, set.height, set.width) });
        });
      });
    }
  } finally {
    restore();
  }
  return { bbox, segm };
}

export const detectProtocol = defineProtocol({
  name: 'detect',
  description: 'fine-tune a Mask R-CNN (FPN) on scenes, every head fresh; box and mask AP on the val scenes (COCO rules)',
  options: DetectOptions,
  input: 'backbone',
  async run(input, o, log) {
    if (input.kind !== 'backbone') throw new Error('detect: needs a backbone');
    const { loaded } = input;
    const data = await loadTransferData(o, 'detect');
    const features = backboneInput(loaded.data.channels);
    const settings = defaultMaskRcnnSettings(data.train.numClasses, loaded.config.model.width, o.seed);
    settings.roi.batchPerImage = o.roiBatchPerImage;
    const model = new MaskRCNN(loaded.backbone, settings);
    try {
      log(`detect: Mask R-CNN FPN on ${data.train.count} train scenes (${data.train.numClasses} classes), ${o.iters} iterations of ${o.batchSize}`);
      const task = sceneTask(model, data.train, o, features, (images, batch, rng) => model.losses(images, batch.targets, rng));
      const fit = await finetune(task, finetuneSettings(o), finetuneIo(loaded, input.workDir, o, 'detect', log));
      if (fit.stopped) throw new InterruptedError(`detect: stopped (${fit.stopped}) at iteration ${fit.iterations} of ${o.iters}, state saved; run the same command again to resume`, fit.stopped);
      preciseBatchNorm(model, data.train, o, features, (images) => void model.pyramid(images));
      log(`detect: fine-tuned at ${fit.imagesPerSec?.toFixed(1) ?? '(resumed at the end)'} img/s; predicting ${data.val.count} val scenes`);
      const results = predictCoco(model, data.val, features, o.batchSize);
      const box = evaluateCoco(data.val.split.coco, results.bbox, { iouType: 'bbox' });
      const mask = evaluateCoco(data.val.split.coco, results.segm, { iouType: 'segm' });
      // Categories pooled (pycocotools' useCats=0): how well boxes are found, whatever their class.
      const agnostic = evaluateCoco(data.val.split.coco, results.bbox, { iouType: 'bbox', useCats: false }).named;
      const b = box.named;
      const m = mask.named;
      return {
        metrics: {
          AP: percent(b.AP!), AP50: percent(b.AP50!), AP75: percent(b.AP75!), APs: percent(b.APs!), APm: percent(b.APm!), APl: percent(b.APl!),
          APmask: percent(m.AP!), APmask50: percent(m.AP50!), APmask75: percent(m.AP75!),
          APagnostic: percent(agnostic.AP!), AP50agnostic: percent(agnostic.AP50!),
          ...(fit.imagesPerSec === null ? {} : { imagesPerSec: fit.imagesPerSec }),
          finalLoss: fit.lossCurve.at(-1)?.loss ?? Number.NaN,
        },
        details: {
          bbox: box.named,
          segm: mask.named,
          perCategory: box.perCategory.map((c, k) => ({ ...c, maskAp: mask.perCategory[k]?.ap })),
          detections: results.bbox.length,
          lossCurve: fit.lossCurve,
          iterations: fit.iterations,
          resumedAt: fit.resumedAt,
        },
        data: dataSummary(o, data),
      };
    } finally {
      model.disposeHeads();
    }
  },
  format(report: EvalReport) {
    const { metrics: m, data, options: o } = report;
    const f = (v: number | undefined) => (v === undefined || v < 0 ? '   n/a' : v.toFixed(2).padStart(6));
    return (
      `Mask R-CNN FPN fine-tuned ${o.iters} iterations on ${data.trainImages} scenes, tested on ${data.testImages} (${report.checkpoint.randomInit ? 'random init' : report.checkpoint.method})\n` +
      `        AP    AP50    AP75     APs     APm\n` +
      `box  ${f(m.AP)}  ${f(m.AP50)}  ${f(m.AP75)}  ${f(m.APs)}  ${f(m.APm)}\n` +
      `mask ${f(m.APmask)}  ${f(m.APmask50)}  ${f(m.APmask75)}\n` +
      `any class ${f(m.APagnostic)}  ${f(m.AP50agnostic)}  (box AP with categories pooled)\n`
    );
  },
});
