// The data layer's public surface: datasets, scenes, transforms, views and
// the loader. Batches are plain NHWC Float32Arrays; the trainer wraps them.
export * from './image_set.js';
export * from './idx.js';
export * from './fashion_mnist.js';
export * from './image_folder.js';
export * from './transforms.js';
export * from './views.js';
export * from './jigsaw.js';
export * from './permutations.js';
export * from './pipeline.js';
export * from './recipes.js';
export * from './loader.js';
export * from './throughput.js';
export * from './coco.js';
export * from './object_bank.js';
export * from './backgrounds.js';
export * from './scenes.js';
export * from './packages.js';
export * from './scenes_reader.js';
export * from './dataset_config.js';
export * from './objects.js';
