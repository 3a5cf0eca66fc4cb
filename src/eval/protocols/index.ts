// The protocol registry. A new protocol is one file in this folder plus its
// entry here; `selfsup eval <name>` appears for it.
import type { Protocol } from '../protocol.js';
import { attentionProtocol } from './attention.js';
import { knnProtocol } from './knn.js';
import { linearProtocol } from './linear.js';
import { retrievalProtocol } from './retrieval.js';
import { similarityProtocol } from './similarity.js';
import { svmProtocol } from './svm.js';
import { umapProtocol } from './umap.js';

const registry = new Map<string, Protocol>([knnProtocol, linearProtocol, retrievalProtocol, svmProtocol, attentionProtocol, similarityProtocol, umapProtocol].map((p) => [p.name, p as Protocol]));

/** Adds (or replaces) a protocol; for plug-ins and tests. */
export function registerProtocol(protocol: Protocol): void {
  registry.set(protocol.name, protocol);
}

export function protocolNames(): string[] {
  return [...registry.keys()];
}

export function getProtocol(name: string): Protocol {
  const p = registry.get(name);
  if (!p) throw new Error(`protocol: unknown protocol '${name}'; choose one of ${protocolNames().join(', ')}`);
  return p;
}
