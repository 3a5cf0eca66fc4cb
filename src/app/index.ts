// What the CLI, the benchmarks and a web UI call: training runs, evaluation
// reports, the demo. Everything below this layer is library code.
export { evaluate, reportPath, type EvaluateRequest, type Evaluation } from './evaluate.js';
export { runDemo, type DemoOptions } from './demo.js';
export { train, NonFiniteLossError, NonFiniteStateError, type TrainOptions, type TrainResult } from '../train/trainer.js';
export { parseRunConfig, type RunConfig } from '../train/config.js';
export type { EvalReport } from '../eval/protocol.js';
