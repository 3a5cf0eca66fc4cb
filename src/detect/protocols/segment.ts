// Semantic segmentation transfer (DetCo Table 7, right: Cityscapes mIoU):
// the backbone fine-tuned with a semantic-FPN head on the scenes' per-pixel
// class maps, scored by mIoU on the val scenes (eval/semseg.ts).
import { InterruptedError } from '../../core/interrupted.js';
import * as tf from '../../core/tf.js';
import { defineProtocol, type EvalReport } from '../../eval/protocol.js';
import { ConfusionMatrix } from '../../eval/semseg.js';
import type { DetectionSet } from '../data.js';
import { finetune } from '../finetune.js';
import { SemanticFPN } from '../semantic.js';
import { backboneInput, dataSummary, finetuneIo, finetuneSettings, loadTransferData, preciseBatchNorm, sceneTask, testBatches, TransferOptions } from '../transfer.js';

/** Semantic map values (COCO category ids, 0 = background) -> class indices 0..K (0 = background). */
function classLookup(set: DetectionSet): Int32Array {
  const lookup = new Int32Array(256).fill(-1);
  lookup[0] = 0;
  set.categoryIds.forEach((id, k) => {
    if (id < 1 || id > 255) throw new Error(`segment: category id ${id} cannot appear in an 8-bit semantic mask`);
    lookup[id] = k + 1;
  });
  return lookup;
}

function toClasses(semantic: Uint8Array, lookup: Int32Array, what: string): Int32Array {
  const out = new Int32Array(semantic.length);
  for (let i = 0; i < semantic.length; i++) {
    const c = lookup[semantic[i]!]!;
    if (c < 0) throw new Error(`${what}: semantic mask value ${semantic[i]} is no category id of the annotations`);
    out[i] = c;
  }
  return out;
}

export const segmentProtocol = defineProtocol({
  name: 'segment',
  description: 'fine-tune a semantic-FPN head on the scenes, every head fresh; mIoU on the val scenes',
  options: TransferOptions,
  input: 'backbone',
  async run(input, o, log) {
    if (input.kind !== 'backbone') throw new Error('segment: needs a backbone');
    const { loaded } = input;
    const data = await loadTransferData(o, 'segment');
    const features = backboneInput(loaded.data.channels);
    const lookup = classLookup(data.train);
    const classes = data.train.numClasses + 1;
    const model = new SemanticFPN(loaded.backbone, classes, 2 * loaded.config.model.width, o.seed);
    try {
      log(`segment: semantic FPN on ${data.train.count} train scenes (${classes} classes with background), ${o.iters} iterations of ${o.batchSize}`);
      const task = sceneTask(model, data.train, o, features, (images, batch) => ({ ce: model.loss(images, toClasses(batch.semantic, lookup, o.scenes)) }));
      const fit = await finetune(task, finetuneSettings(o), finetuneIo(loaded, input.workDir, o, 'segment', log));
      if (fit.stopped) throw new InterruptedError(`segment: stopped (${fit.stopped}) at iteration ${fit.iterations} of ${o.iters}, state saved; run the same command again to resume`, fit.stopped);
      preciseBatchNorm(model, data.train, o, features, (images) => void model.pyramid(images));
      const confusion = new ConfusionMatrix(classes);
      const restore = model.saveModes();
      model.eval();
      try {
        const { val } = data;
        for (const batch of testBatches(val, o.batchSize, features)) {
          const pred = tf.tidy(() => tf.argMax(model.forward(features.toTensor(batch, val.height, val.width)), 3).dataSync() as Int32Array);
          confusion.add(pred, toClasses(batch.semantic, lookup, o.scenes));
        }
      } finally {
        restore();
      }
      const s = confusion.scores();
      const names = ['background', ...data.train.categoryNames];
      return {
        metrics: { mIoU: s.mIoU, fwIoU: s.fwIoU, mACC: s.mACC, pACC: s.pACC, ...(fit.imagesPerSec === null ? {} : { imagesPerSec: fit.imagesPerSec }), finalLoss: fit.lossCurve.at(-1)?.loss ?? Number.NaN },
        details: { perClassIoU: Object.fromEntries(names.map((n, k) => [n, s.perClass[k]])), lossCurve: fit.lossCurve, iterations: fit.iterations, resumedAt: fit.resumedAt },
        data: dataSummary(o, data),
      };
    } finally {
      model.disposeHeads();
    }
  },
  format(report: EvalReport) {
    const { metrics: m, data, options: o } = report;
    return (
      `semantic FPN fine-tuned ${o.iters} iterations on ${data.trainImages} scenes, tested on ${data.testImages} (${report.checkpoint.randomInit ? 'random init' : report.checkpoint.method})\n` +
      `  mIoU   fwIoU    mACC    pACC\n` +
      `${[m.mIoU, m.fwIoU, m.mACC, m.pACC].map((v) => v!.toFixed(2).padStart(6)).join('  ')}\n`
    );
  },
});
