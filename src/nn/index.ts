export { Module, noGrad, type ParameterGroups, type StateDict } from './module.js';
export { fanInUniform, kaimingNormalFanOut, normal, uniform } from './init.js';
export { BatchNorm1d, BatchNorm2d, Conv2d, estimateRunningStats, Identity, Linear, MLP, relu, withRunningStatsFrozen } from './layers.js';
export type { BatchNormOptions, Conv2dOptions, MlpOptions } from './layers.js';
export { ConvNet, type ConvNetOptions } from './convnet.js';
export { ResNet, globalAvgPool, type ResNetDepth, type ResNetOptions, type ResNetStages } from './resnet.js';
