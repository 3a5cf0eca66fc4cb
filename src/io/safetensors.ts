// The safetensors format (huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON { name: { dtype, shape, data_offsets },
// "__metadata__": { string: string } }, then the tensors' raw little-endian
// bytes, offsets relative to the end of the header. Our writer pads the header
// with spaces to a multiple of 8, as the reference writer does, and sorts
// tensors by name so equal contents give equal files.
//
// Integrity: a `sha256` metadata entry, when present, is the SHA-256 of a
// canonical form of the header (every entry but itself) followed by the data,
// so a flipped byte anywhere in a tensor or in the metadata is caught.
import { createHash } from 'node:crypto';

export type SafeDtype = 'F32' | 'I32' | 'U8';
export type SafeArray = Float32Array | Int32Array | Uint8Array;

export interface RawTensor {
  dtype: SafeDtype;
  shape: number[];
  data: SafeArray;
}

export interface Safetensors {
  tensors: Record<string, RawTensor>;
  metadata: Record<string, string>;
}

const BYTES: Record<SafeDtype, number> = { F32: 4, I32: 4, U8: 1 };
const CHECKSUM_KEY = 'sha256';
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

interface HeaderEntry {
  dtype: SafeDtype;
  shape: number[];
  data_offsets: [number, number];
}

export function dtypeOf(data: SafeArray): SafeDtype {
  if (data instanceof Float32Array) return 'F32';
  if (data instanceof Int32Array) return 'I32';
  return 'U8';
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The bytes of `data` in little-endian order (a view when the host is little-endian). */
function littleEndianBytes(data: SafeArray): Uint8Array {
  const view = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (LITTLE_ENDIAN || data.BYTES_PER_ELEMENT === 1) return view;
  const out = new Uint8Array(view.length);
  for (let i = 0; i < view.length; i += 4) for (let b = 0; b < 4; b++) out[i + b] = view[i + 3 - b]!;
  return out;
}

function canonicalHeader(entries: Record<string, HeaderEntry>, metadata: Record<string, string>): string {
  const tensors = Object.keys(entries)
    .sort()
    .map((k) => [k, entries[k]!.dtype, entries[k]!.shape, entries[k]!.data_offsets]);
  const meta = Object.keys(metadata)
    .filter((k) => k !== CHECKSUM_KEY)
    .sort()
    .map((k) => [k, metadata[k]]);
  return JSON.stringify([tensors, meta]);
}

function checksum(entries: Record<string, HeaderEntry>, metadata: Record<string, string>, data: Uint8Array[]): string {
  const h = createHash('sha256').update(canonicalHeader(entries, metadata));
  for (const chunk of data) h.update(chunk);
  return h.digest('hex');
}

/**
 * Encodes tensors and string metadata as safetensors chunks (header, then each
 * tensor's bytes), ready for a file write. With `withChecksum` the metadata
 * gains a `sha256` entry.
 */
export function encodeSafetensors(
  tensors: Record<string, RawTensor>,
  metadata: Record<string, string> = {},
  { withChecksum = true } = {},
): Uint8Array[] {
  const entries: Record<string, HeaderEntry> = {};
  const data: Uint8Array[] = [];
  let offset = 0;
  for (const name of Object.keys(tensors).sort()) {
    if (name === '__metadata__') throw new Error('safetensors: a tensor cannot be named __metadata__');
    const t = tensors[name]!;
    if (t.data.length !== numel(t.shape)) {
      throw new Error(`safetensors: tensor '${name}' has ${t.data.length} values but shape [${t.shape}]`);
    }
    if (dtypeOf(t.data) !== t.dtype) throw new Error(`safetensors: tensor '${name}' is ${dtypeOf(t.data)} data labelled ${t.dtype}`);
    const bytes = littleEndianBytes(t.data);
    entries[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes.length] };
    data.push(bytes);
    offset += bytes.length;
  }
  const meta = { ...metadata };
  if (withChecksum) meta[CHECKSUM_KEY] = checksum(entries, meta, data);
  let json = JSON.stringify({ __metadata__: meta, ...entries });
  const headerBytes = Buffer.byteLength(json);
  json += ' '.repeat((8 - (headerBytes % 8)) % 8);
  const header = Buffer.from(json);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(header.length), true);
  return [prefix, header, ...data];
}

function fail(source: string, what: string): never {
  throw new Error(`${source}: ${what}`);
}

/**
 * Decodes a safetensors file's bytes. Every inconsistency (short file, bad
 * header, offsets outside the data, a checksum that does not match) is an
 * error that starts with `source` and says what is wrong.
 */
export function decodeSafetensors(bytes: Uint8Array, source = 'safetensors'): Safetensors {
  if (bytes.length < 8) fail(source, `truncated: ${bytes.length} bytes, not even the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (8 + headerLength > bytes.length) {
    fail(source, `truncated: the header says ${headerLength} header bytes, the file has ${bytes.length - 8} after the length`);
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + headerLength)).toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    fail(source, `not a safetensors file: its header is not JSON (${(err as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail(source, 'not a safetensors file: the header is not an object');
  const data = bytes.subarray(8 + headerLength);
  const metadataRaw = (header.__metadata__ ?? {}) as Record<string, unknown>;
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadataRaw)) {
    if (typeof v !== 'string') fail(source, `metadata '${k}' is not a string`);
    metadata[k] = v;
  }
  const entries: Record<string, HeaderEntry> = {};
  let end = 0;
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const e = raw as HeaderEntry;
    if (!e || !(e.dtype in BYTES)) fail(source, `tensor '${name}' has unsupported dtype ${JSON.stringify(e?.dtype)} (this reader knows F32, I32, U8)`);
    const okShape = Array.isArray(e.shape) && e.shape.every((d) => Number.isInteger(d) && d >= 0);
    const okOffsets = Array.isArray(e.data_offsets) && e.data_offsets.length === 2 && e.data_offsets.every((d) => Number.isInteger(d) && d >= 0);
    if (!okShape || !okOffsets) fail(source, `tensor '${name}' has a malformed shape or data_offsets`);
    const [begin, stop] = e.data_offsets;
    if (stop - begin !== numel(e.shape) * BYTES[e.dtype]) {
      fail(source, `tensor '${name}': data_offsets [${begin}, ${stop}] do not fit shape [${e.shape}] of ${e.dtype}`);
    }
    if (stop > data.length) {
      fail(source, `truncated: tensor '${name}' ends at byte ${stop} of the data, the file holds ${data.length} data bytes`);
    }
    entries[name] = e;
    end = Math.max(end, stop);
  }
  if (end !== data.length) fail(source, `${data.length - end} unexpected bytes after the last tensor`);
  const expected = metadata[CHECKSUM_KEY];
  if (expected !== undefined) {
    // Hash in name order, the order the writer used.
    const ordered = Object.keys(entries)
      .sort()
      .map((k) => data.subarray(entries[k]!.data_offsets[0], entries[k]!.data_offsets[1]));
    const actual = checksum(entries, metadata, ordered);
    if (actual !== expected) fail(source, `checksum mismatch: the file is corrupt (sha256 ${actual.slice(0, 12)}..., recorded ${expected.slice(0, 12)}...)`);
  }
  const tensors: Record<string, RawTensor> = {};
  for (const [name, e] of Object.entries(entries)) {
    // A copy: Buffer's slice() is a view, and the values need their own aligned buffer.
    const le = new Uint8Array(data.subarray(e.data_offsets[0], e.data_offsets[1])).buffer;
    let values: SafeArray;
    if (e.dtype === 'U8') values = new Uint8Array(le);
    else {
      if (!LITTLE_ENDIAN) {
        const b = new Uint8Array(le);
        for (let i = 0; i < b.length; i += 4) [b[i], b[i + 1], b[i + 2], b[i + 3]] = [b[i + 3]!, b[i + 2]!, b[i + 1]!, b[i]!];
      }
      values = e.dtype === 'F32' ? new Float32Array(le) : new Int32Array(le);
    }
    tensors[name] = { dtype: e.dtype, shape: e.shape, data: values };
  }
  return { tensors, metadata };
}
