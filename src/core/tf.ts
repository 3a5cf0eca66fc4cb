// The one place selfsup imports tfjs from. tfjs-core alone registers no
// gradients in Node, and its ESM gradient files cannot be deep-imported there;
// the umbrella package registers all of them against the same core instance.
import '@tensorflow/tfjs';
export * from '@tensorflow/tfjs-core';
