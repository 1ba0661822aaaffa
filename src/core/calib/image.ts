/**
 * PNG and JPEG decoding into height x width x channels (HWC) float32 values 0-255.
 * Grayscale files give one channel, colour files three; alpha is dropped (not blended).
 * 16-bit PNGs are scaled down to 0-255 by the decoder. The format is told by the file's magic bytes.
 * Decoders: pngjs (sync API) and jpeg-js, both pure JavaScript.
 */
import { Buffer } from "node:buffer";
import jpeg from "jpeg-js";
import pngjs from "pngjs";
import { InputError } from "../errors.js";

/** A decoded image, HWC, values 0-255. */
export interface DecodedImage {
  height: number;
  width: number;
  channels: 1 | 3;
  data: Float32Array;
}

export type ImageFormat = "png" | "jpeg";

/** The image format from the magic bytes, or undefined. */
export function imageFormat(bytes: Uint8Array): ImageFormat | undefined {
  if (bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) return "png";
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "jpeg";
  return undefined;
}

/** Decodes a PNG or JPEG file. `source` names the file in error messages. */
export function decodeImage(bytes: Uint8Array, source: string): DecodedImage {
  const format = imageFormat(bytes);
  if (format === "png") return decodePng(bytes, source);
  if (format === "jpeg") return decodeJpeg(bytes, source);
  throw new InputError(`${source} is neither a PNG nor a JPEG image (unrecognised file signature).`);
}

function decodePng(bytes: Uint8Array, source: string): DecodedImage {
  let png;
  try {
    png = pngjs.PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (e) {
    throw new InputError(`${source} is not a readable PNG image (${(e as Error).message}).`);
  }
  // pngjs always hands back RGBA 8-bit; `color` says whether the file had colour channels.
  return fromRgba(png.data, png.width, png.height, png.color ? 3 : 1);
}

function decodeJpeg(bytes: Uint8Array, source: string): DecodedImage {
  let img;
  try {
    img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 2048 });
  } catch (e) {
    throw new InputError(`${source} is not a readable JPEG image (${(e as Error).message}).`);
  }
  return fromRgba(img.data, img.width, img.height, jpegComponents(bytes) === 1 ? 1 : 3);
}

function fromRgba(rgba: Uint8Array, width: number, height: number, channels: 1 | 3): DecodedImage {
  const n = width * height;
  const data = new Float32Array(n * channels);
  if (channels === 1) {
    for (let i = 0; i < n; i++) data[i] = rgba[4 * i]!;
  } else {
    for (let i = 0; i < n; i++) {
      data[3 * i] = rgba[4 * i]!;
      data[3 * i + 1] = rgba[4 * i + 1]!;
      data[3 * i + 2] = rgba[4 * i + 2]!;
    }
  }
  return { height, width, channels, data };
}

/** The number of colour components in the JPEG's frame header (SOFn), or 0 when not found. */
function jpegComponents(bytes: Uint8Array): number {
  let i = 2;
  while (i + 4 <= bytes.length) {
    if (bytes[i] !== 0xff) return 0;
    const marker = bytes[i + 1]!;
    if (marker === 0xff) {
      i++;
      continue;
    }
    const len = (bytes[i + 2]! << 8) | bytes[i + 3]!;
    const isSof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (isSof) return i + 9 < bytes.length ? bytes[i + 9]! : 0;
    if (marker === 0xda || marker === 0xd9) return 0;
    i += 2 + len;
  }
  return 0;
}
