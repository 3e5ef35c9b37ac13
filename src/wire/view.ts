/**
 * The shape every packet view in src/wire shares (after smoltcp's `Packet<T>`): a zero-copy,
 * re-pointable window on a Uint8Array. A hot path keeps ONE view per stage and re-points it per
 * packet with `wrap` (no allocation); `check()` then validates every length the accessors rely
 * on, after which every accessor is in bounds. Accessors read and write the buffer directly,
 * big endian (network order), and return numbers — only the few accessors documented as views
 * return `subarray`s (which allocate a small view object, never copy bytes).
 *
 * Offsets reported by views (`payloadOffset`, option offsets) are ABSOLUTE indexes into
 * `buffer`, so layers chain as `ip.wrap(eth.buffer, eth.payloadOffset, eth.payloadLength)`.
 * The wrapped span is `byteLength` (not `length`: `UdpDatagram.length` is UDP's length field).
 *
 * Reprs (after smoltcp's `XRepr`) are small plain classes: `new XRepr({...fields})`,
 * `XRepr.parse(view, out?)` (runs `check()`, returns a WireError or the Repr; with `out`, its
 * byte-array fields are overwritten in place) and `emit(view)`.
 *
 * Also here: the byte-order helpers the views are built from, and the Repr constructor helper.
 */
import { copyBytes, globalMeter, type Stage } from '../meter/meter';
import { WIRE_EMIT } from '../meter/stages';
import type { WireError } from './error';

const EMPTY = new Uint8Array(0);

export abstract class WireView {
  /** The bytes this view looks at (shared, never copied). */
  buffer: Uint8Array = EMPTY;
  /** Where the packet starts in `buffer`. */
  offset = 0;
  /** How many bytes of `buffer` (from `offset`) belong to this packet or may be used by it. */
  byteLength = 0;

  /** Point the view at `length` bytes of `buffer` from `offset`. No validation: call `check()`. */
  wrap(buffer: Uint8Array, offset = 0, length = buffer.length - offset): this {
    this.buffer = buffer;
    this.offset = offset;
    this.byteLength = length;
    return this;
  }

  /** Validate what the accessors rely on; null when the view is safe to read. */
  abstract check(): WireError | null;

  /** True when [offset, offset + length) lies inside `buffer`. */
  protected inBuffer(): boolean {
    return this.offset >= 0 && this.byteLength >= 0 && this.offset + this.byteLength <= this.buffer.length;
  }
}

export function get16(b: Uint8Array, i: number): number {
  return (b[i] << 8) | b[i + 1];
}

export function put16(b: Uint8Array, i: number, v: number): void {
  b[i] = v >>> 8;
  b[i + 1] = v;
}

export function get32(b: Uint8Array, i: number): number {
  return ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
}

export function put32(b: Uint8Array, i: number, v: number): void {
  b[i] = v >>> 24;
  b[i + 1] = v >>> 16;
  b[i + 2] = v >>> 8;
  b[i + 3] = v;
}

/** Copy `n` header bytes (addresses, MACs) without allocating; not packet payload, not metered. */
export function copyField(src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number, n: number): void {
  for (let i = 0; i < n; i++) dst[dstOff + i] = src[srcOff + i];
}

export function fieldEquals(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[aOff + i] !== b[bOff + i]) return false;
  return true;
}

/** The data fields of a Repr class (methods and getters left out), for `new XRepr({...})`. */
export type FieldsOf<T> = {
  [K in keyof T as T[K] extends (...args: never[]) => unknown ? never : K]: T[K];
};

/** Assign the own data fields present in `init` (getters on the prototype are skipped). */
export function assignFields<T extends object>(target: T, init: Partial<FieldsOf<T>> | undefined): void {
  if (!init) return;
  for (const key of Object.keys(init)) {
    if (Object.prototype.hasOwnProperty.call(target, key)) {
      (target as Record<string, unknown>)[key] = (init as Record<string, unknown>)[key];
    }
  }
}

/** Where Repr emitters count the payload bytes they copy when the caller names no stage. */
export const WIRE_EMIT_STAGE: Stage = globalMeter.stage(WIRE_EMIT);

/**
 * Put `data` at `dst[dstOff..]`, counted in the meter, unless it is already there (a Repr parsed
 * from and emitted into the same buffer, as NAT rewrites do).
 */
export function placePayload(data: Uint8Array, dst: Uint8Array, dstOff: number, stage: Stage | undefined): void {
  if (data.length === 0) return;
  if (data.buffer === dst.buffer && data.byteOffset === dst.byteOffset + dstOff) return;
  copyBytes(stage ?? WIRE_EMIT_STAGE, data, dst, dstOff);
}

/** Emitting past the end of a buffer is a caller bug (a typed array would silently drop it). */
export function needRoom(view: WireView, bytes: number, what: string): void {
  if (!(view.offset >= 0 && view.offset + bytes <= view.buffer.length && bytes <= view.byteLength)) {
    throw new RangeError(`${what}: emit needs ${bytes} bytes, the view has ${view.byteLength}`);
  }
}
