// Heads named for the papers that defined them. Both are MLPs (src/nn) with
// the papers' layer counts and BN placement; L2 normalisation is left to the
// loss side, since BYOL's predictor output and MoCo's embedding are both
// normalised there.
import { Mulberry32 } from '../../core/random.js';
import { MLP } from '../../nn/layers.js';

export interface ProjectionHeadOptions {
  /**
   * Linear layers: 1 = MoCo v1's linear projection (hiddenDim unused), 2 =
   * MoCo v2's / SimCLR's MLP (Linear -> [BN] -> ReLU -> Linear), 3 = SimCLR v2.
   */
  layers?: number;
  /** BN after each hidden Linear (SimCLR). MoCo v2 has none. */
  batchNorm?: boolean;
  /** BN after the last Linear too (SimCLR v2, SimSiam). */
  lastBatchNorm?: boolean;
  rng?: Mulberry32;
}

/** The projector g(·) of MoCo v1/v2 (He et al. 2020; Chen et al. 2020b) and SimCLR: [N, inDim] -> [N, outDim]. */
export class ProjectionHead extends MLP {
  constructor(inDim: number, hiddenDim: number, outDim: number, { layers = 2, batchNorm = false, lastBatchNorm = false, rng }: ProjectionHeadOptions = {}) {
    if (!(Number.isInteger(layers) && layers >= 1)) throw new Error(`ProjectionHead: layers must be an integer >= 1, got ${layers}`);
    super([inDim, ...Array<number>(layers - 1).fill(hiddenDim), outDim], { batchNorm, lastBatchNorm, rng });
  }
}

/** BYOL's predictor q_θ (Grill et al. 2020, section 3.3): Linear -> BN -> ReLU -> Linear. */
export class PredictionHead extends MLP {
  constructor(inDim: number, hiddenDim: number, outDim: number, { rng }: { rng?: Mulberry32 } = {}) {
    super([inDim, hiddenDim, outDim], { batchNorm: true, rng });
  }
}
