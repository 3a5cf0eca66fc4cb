// Every evaluation protocol: eval's feature protocols (kNN, linear) and the
// transfer protocols of detect/, which fine-tune with the trainer's parts and
// so sit above train. The CLI's `eval` subcommands come from this list.
import { segmentProtocol } from '../detect/protocols/segment.js';
import { detectProtocol } from '../detect/protocols/detect.js';
import type { Protocol } from '../eval/protocol.js';
import { getProtocol as getRegistered, protocolNames as registeredNames, registerProtocol } from '../eval/protocols/index.js';

for (const p of [detectProtocol, segmentProtocol]) registerProtocol(p as unknown as Protocol);

export const protocolNames = registeredNames;
export const getProtocol = getRegistered;
