// The methods layer's public surface: the Method interface and its spec, the
// registry, and the methods themselves.
export { Method, defineMethod, type LossOutput, type MethodContext, type MethodRecipe, type MethodSpec, type StepContext, type TensorBatch } from './method.js';
export { checkpointMethodOptions, createMethod, methodContext, methodNames, methodSpec, parseMethodOptions, registerMethod, resolveMethodOptions } from './registry.js';
export { Supervised } from './supervised.js';
