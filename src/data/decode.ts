// Image decoding through sharp (libvips): everything here returns raw HWC
// bytes. Errors name the file, since the caller usually has thousands.
import sharp from 'sharp';

export type Fit = 'cover' | 'contain' | 'fill';

export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: number;
}

/**
 * Decodes `file` resized to exactly width x height with `channels` channels
 * (1 grey, 3 RGB). Alpha is flattened onto white, as clip-art expects;
 * animated GIFs give their first frame; truncated files are errors.
 */
export async function decodeResized(
  file: string,
  width: number,
  height: number,
  channels: 1 | 3,
  fit: Fit = 'cover',
): Promise<RawImage> {
  let img = sharp(file, { failOn: 'truncated' })
    .rotate() // honour EXIF orientation, as the photo was meant to be seen
    .flatten({ background: '#ffffff' })
    .resize(width, height, { fit, background: '#000000' });
  img = channels === 1 ? img.greyscale() : img.toColourspace('srgb');
  const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
  if (info.width !== width || info.height !== height) {
    throw new Error(`${file}: decoded to ${info.width}x${info.height}, expected ${width}x${height}`);
  }
  return { data: toChannels(data, info.channels, channels, file), width, height, channels };
}

/**
 * Converts to `want` channels (1 or 3): grey is replicated to RGB, RGB goes to
 * luma, a trailing alpha channel (already flattened away) is dropped.
 */
function toChannels(data: Uint8Array, have: number, want: number, file: string): Uint8Array {
  if (have === want) return data;
  if (have < 1 || have > 4) throw new Error(`${file}: cannot convert ${have} channels to ${want}`);
  const pixels = data.length / have;
  const out = new Uint8Array(pixels * want);
  const colour = have >= 3;
  for (let p = 0; p < pixels; p++) {
    const s = p * have;
    if (want === 1) {
      out[p] = colour ? Math.round(0.299 * data[s]! + 0.587 * data[s + 1]! + 0.114 * data[s + 2]!) : data[s]!;
    } else {
      for (let c = 0; c < 3; c++) out[p * 3 + c] = data[colour ? s + c : s]!;
    }
  }
  return out;
}

/**
 * Decodes `file` as RGBA, shrunk (never enlarged) so its longer side is at
 * most `maxSide`. Used for clip-art objects whose alpha is their mask.
 */
export async function decodeRgba(file: string, maxSide: number): Promise<RawImage> {
  const { data, info } = await sharp(file, { failOn: 'truncated' })
    .resize(maxSide, maxSide, { fit: 'inside', withoutEnlargement: true })
    .toColourspace('srgb')
    .ensureAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 4) throw new Error(`${file}: expected RGBA after decoding, got ${info.channels} channels`);
  return { data, width: info.width, height: info.height, channels: 4 };
}

/** Decodes `file` as RGB with its shorter side resized to `shortSide` (backgrounds). */
export async function decodeRgbShortSide(file: string, shortSide: number): Promise<RawImage> {
  const { data, info } = await sharp(file, { failOn: 'truncated' })
    .resize(shortSide, shortSide, { fit: 'outside' })
    .flatten({ background: '#808080' })
    .toColourspace('srgb')
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data: toChannels(data, info.channels, 3, file), width: info.width, height: info.height, channels: 3 };
}
