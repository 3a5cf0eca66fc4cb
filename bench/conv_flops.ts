// The FLOPs of a profiled convolution kernel call, for the engine benchmark's
// GFLOP/s per convolution direction.

const CONV_DIRECTIONS = { Conv2D: 'forward', FusedConv2D: 'forward', Conv2DBackpropInput: 'backward data', Conv2DBackpropFilter: 'backward weights' } as const;
export type ConvDirection = (typeof CONV_DIRECTIONS)[keyof typeof CONV_DIRECTIONS];

/** Which convolution direction a tfjs kernel computes, or undefined for other kernels. */
export function convDirection(kernel: string): ConvDirection | undefined {
  return Object.hasOwn(CONV_DIRECTIONS, kernel) ? CONV_DIRECTIONS[kernel as keyof typeof CONV_DIRECTIONS] : undefined;
}

/**
 * Multiply-adds x 2 of one convolution kernel call, from its shapes: the
 * output-sized operand (forward's output, the gradients' dy) times the filter's
 * kh*kw*Cin. Undefined for other kernels and depthwise filters.
 */
export function convFlops(kernel: string, inputShapes: Array<number[] | undefined>, outputShapes: Array<number[] | undefined>): number | undefined {
  const direction = convDirection(kernel);
  if (!direction) return undefined;
  // Conv2D/FusedConv2D: {x, filter} -> y; BackpropInput: {dy, filter} -> dx; BackpropFilter: {x, dy} -> dfilter.
  const [y, filter] =
    direction === 'forward' ? [outputShapes[0], inputShapes[1]] : direction === 'backward data' ? [inputShapes[0], inputShapes[1]] : [inputShapes[1], outputShapes[0]];
  if (y?.length !== 4 || filter?.length !== 4 || filter[3] !== y[3]) return undefined;
  return 2 * y.reduce((a, b) => a * b, 1) * filter[0]! * filter[1]! * filter[2]!;
}
