// IDX, the format of the MNIST family (http://yann.lecun.com/exdb/mnist/):
// a 4-byte magic (0, 0, element type, number of dimensions), one big-endian
// uint32 per dimension, then the elements. Only unsigned bytes (type 0x08) are
// read here, which is what Fashion-MNIST ships.
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

const UBYTE = 0x08;

/**
 * Parses an IDX buffer. `file` only names the source in errors; `expectDims`
 * (the number of dimensions) rejects, say, a label file passed as images.
 */
export function parseIdx(buf: Uint8Array, file: string, expectDims?: number): IdxArray {
  if (buf.length < 4) throw new Error(`${file}: not an IDX file: only ${buf.length} bytes, the header alone needs 4`);
  if (buf[0] !== 0 || buf[1] !== 0) {
    const magic = Buffer.from(buf.subarray(0, 4)).toString('hex');
    throw new Error(`${file}: bad IDX magic 0x${magic}: the first two bytes must be zero`);
  }
  const type = buf[2]!;
  const ndim = buf[3]!;
  if (type !== UBYTE) {
    throw new Error(`${file}: IDX element type 0x${type.toString(16).padStart(2, '0')} is not supported (only 0x08, unsigned byte)`);
  }
  if (expectDims !== undefined && ndim !== expectDims) {
    throw new Error(`${file}: bad IDX magic: expected ${expectDims} dimensions, the header says ${ndim}`);
  }
  const headerBytes = 4 + 4 * ndim;
  if (buf.length < headerBytes) {
    throw new Error(`${file}: truncated IDX header: ${ndim} dimensions need ${headerBytes} bytes, the file has ${buf.length}`);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const dims: number[] = [];
  for (let i = 0; i < ndim; i++) dims.push(view.getUint32(4 + 4 * i, false));
  const expected = dims.reduce((a, b) => a * b, 1);
  const found = buf.length - headerBytes;
  if (found < expected) {
    throw new Error(`${file}: truncated: the header says ${dims.join('x')} = ${expected} bytes of data, the file has ${found}`);
  }
  if (found > expected) {
    throw new Error(`${file}: ${found - expected} bytes of trailing data after the ${dims.join('x')} elements the header declares`);
  }
  return { dims, data: buf.subarray(headerBytes) };
}

/** Reads an IDX file, gunzipping it when it starts with the gzip magic. */
export function readIdxFile(file: string, expectDims?: number): IdxArray {
  let raw: Uint8Array;
  try {
    raw = readFileSync(file);
  } catch (err) {
    throw new Error(`${file}: cannot read: ${(err as Error).message}`);
  }
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      raw = gunzipSync(raw);
    } catch (err) {
      throw new Error(`${file}: corrupt or truncated gzip data (${(err as Error).message})`);
    }
  }
  return parseIdx(raw, file, expectDims);
}
