// `selfsup coco-eval GT.json RESULTS.json`: COCO AP/AR of a standard results
// file against a COCO ground-truth file, with pycocotools' semantics
// (src/eval/coco_eval.ts). Prints the summary lines as pycocotools does, or
// with --json one object of the named numbers and the per-category AP.
import { readFileSync } from 'node:fs';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { checkGroundTruth, evaluateCoco, formatCocoSummary, IOU_TYPES, loadResults, type IouType } from '../eval/coco_eval.js';

interface CocoEvalFlags {
  iouType: IouType;
  kptSigmas?: number[];
  json?: boolean;
}

function readJson(path: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the ${what} file ${path}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
  }
}

function sigmaList(value: string): number[] {
  const sigmas = value.split(',').map((s) => (s.trim() === '' ? NaN : Number(s)));
  if (!sigmas.every((s) => Number.isFinite(s) && s > 0)) throw new InvalidArgumentError('expected comma-separated positive numbers');
  return sigmas;
}

export function registerCocoEvalCommand(program: Command): void {
  program
    .command('coco-eval')
    .description('COCO AP and AR of a results file against a COCO ground-truth file (pycocotools COCOeval semantics)')
    .argument('<gt>', 'ground truth: a COCO dataset JSON file (images, annotations, categories)')
    .argument('<results>', 'results: a JSON array of {image_id, category_id, score, bbox | segmentation | keypoints}')
    .addOption(new Option('--iou-type <type>', 'what to compare: boxes, RLE masks or keypoints (OKS)').choices([...IOU_TYPES]).makeOptionMandatory())
    .option('--kpt-sigmas <list>', "per-keypoint OKS sigmas, comma-separated (default: COCO's 17 person keypoints)", sigmaList)
    .option('--json', 'print one JSON object: the summary numbers by name and perCategory')
    .addHelpText(
      'after',
      `
Examples:
  $ selfsup coco-eval scenes/val.json detections.json --iou-type bbox
  $ selfsup coco-eval scenes/val.json masks.json --iou-type segm --json`,
    )
    .action((gtPath: string, resultsPath: string, flags: CocoEvalFlags) => {
      const gt = checkGroundTruth(readJson(gtPath, 'ground-truth'), gtPath, flags.iouType);
      const results = loadResults(gt, readJson(resultsPath, 'results'), flags.iouType, resultsPath);
      const summary = evaluateCoco(gt, results, { iouType: flags.iouType, kptSigmas: flags.kptSigmas, gtSource: gtPath });
      process.stdout.write(
        flags.json ? `${JSON.stringify({ ...summary.named, perCategory: summary.perCategory })}\n` : `${formatCocoSummary(summary)}\n`,
      );
    });
}
