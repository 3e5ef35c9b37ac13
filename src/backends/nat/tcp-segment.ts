/**
 * GuestSegment: the fields of one TCP segment from the guest that the state machine uses,
 * filled by tcp.ts from the wire view (src/wire/tcp.ts) into ONE object reused for every
 * segment — so the connection code reads plain numbers, never the packet view, and tests can
 * drive a connection without building frames.
 *
 * Sequence arithmetic (RFC 9293 §3.4, modulo 2^32) is here too, as small functions on
 * uint32 numbers: the wire module has the same; these are the ones the state machine inlines.
 */

export class GuestSegment {
  seq = 0;
  ack = 0;
  flags = 0;
  /** The raw 16-bit window field (unscaled). */
  window = 0;
  /** Payload: bytes [dataOffset, dataOffset + dataLength) of `data`. */
  data: Uint8Array = new Uint8Array(0);
  dataOffset = 0;
  dataLength = 0;
  /** Options (RFC 9293 §3.2, RFC 7323, RFC 2018). -1 / false when absent. */
  mss = -1;
  windowScale = -1;
  sackPermitted = false;
  hasTimestamps = false;
  tsVal = 0;
  tsEcr = 0;
  /** SACK blocks: pairs (left, right) in `sackBlocks[0 .. 2*sackCount)`. */
  sackCount = 0;
  readonly sackBlocks = new Uint32Array(8);
  /** The frame was a GSO super-frame (for stats). */
  gso = false;

  resetOptions(): void {
    this.mss = -1;
    this.windowScale = -1;
    this.sackPermitted = false;
    this.hasTimestamps = false;
    this.tsVal = 0;
    this.tsEcr = 0;
    this.sackCount = 0;
    this.gso = false;
  }
}

/** a < b in sequence space. */
export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}
export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}
export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}
export function seqGe(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}
/** b - a as a signed distance. */
export function seqDiff(b: number, a: number): number {
  return (b - a) | 0;
}
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}
