/**
 * Reassembly: the out-of-order queue of one connection's guest→host byte stream.
 *
 * A segment that arrives beyond RCV.NXT (an earlier one was lost on the virtual link, or the
 * guest's ring reordered) cannot be written to the host socket yet: a byte stream has no holes.
 * RFC 9293 §3.10.7.4 lets a receiver keep such segments for later delivery; we do, so the guest
 * only retransmits the hole, and we tell it which ranges we hold with SACK blocks (RFC 2018 §4:
 * the first block is the one holding the most recently received segment).
 *
 * Storage: one byte array of `capacity` bytes (a power of two), indexed by sequence number
 * modulo capacity. Every byte kept lies in [RCV.NXT, RCV.NXT + capacity), so positions never
 * collide. The array is allocated on the first out-of-order segment and released when the queue
 * empties: a connection on a clean link never owns one. Kept bytes are a copy of the guest's
 * frame (frames are borrowed), counted in the meter.
 *
 * Ranges: at most MAX_RANGES disjoint [start, end) intervals of sequence numbers, sorted, merged
 * on insert. A segment that would need more ranges is dropped (counted by the caller) — the
 * guest retransmits it. All arithmetic is relative to RCV.NXT, modulo 2^32 (RFC 9293 §3.4).
 */
import { copyBytes, type Stage } from '../../meter/meter';

export const MAX_RANGES = 8;

export type InsertResult = 'queued' | 'duplicate' | 'no-room';

export class Reassembly {
  private buf: Uint8Array | null = null;
  private readonly mask: number;
  /** Range bounds, absolute sequence numbers. */
  private readonly starts = new Uint32Array(MAX_RANGES);
  private readonly ends = new Uint32Array(MAX_RANGES);
  private count = 0;
  /** The range touched by the latest insert (first SACK block), or -1. */
  private latest = -1;

  constructor(readonly capacity: number) {
    let n = 4096;
    while (n < capacity) n <<= 1;
    this.capacity = n;
    this.mask = n - 1;
  }

  get empty(): boolean {
    return this.count === 0;
  }

  get ranges(): number {
    return this.count;
  }

  /** Bytes held (for stats and tests). */
  get bytes(): number {
    let n = 0;
    for (let i = 0; i < this.count; i++) n += (this.ends[i] - this.starts[i]) >>> 0;
    return n;
  }

  /**
   * Keep `len` bytes of `src` at `off`, which carry sequence numbers [seq, seq + len), given the
   * current RCV.NXT. Bytes before RCV.NXT or beyond the storage window are cut off.
   */
  insert(rcvNxt: number, seq: number, src: Uint8Array, off: number, len: number, stage: Stage): InsertResult {
    let rel = (seq - rcvNxt) | 0;
    if (rel < 0) {
      off -= rel;
      len += rel;
      rel = 0;
    }
    if (rel + len > this.capacity) len = this.capacity - rel;
    if (len <= 0) return 'no-room';
    const start = (rcvNxt + rel) >>> 0;
    const end = (start + len) >>> 0;

    // Where does [rel, rel+len) go among the sorted ranges?
    let i = 0;
    while (i < this.count && this.relEnd(i, rcvNxt) < rel) i++;
    // Ranges i..j-1 overlap or touch the new one.
    let j = i;
    while (j < this.count && this.relStart(j, rcvNxt) <= rel + len) j++;
    if (j === i + 1 && this.relStart(i, rcvNxt) <= rel && this.relEnd(i, rcvNxt) >= rel + len) {
      this.latest = i;
      return 'duplicate';
    }
    if (j === i && this.count === MAX_RANGES) return 'no-room';

    this.store(start, src, off, len, stage);
    let newStart = start;
    let newEnd = end;
    if (j > i) {
      if (this.relStart(i, rcvNxt) < rel) newStart = this.starts[i];
      if (this.relEnd(j - 1, rcvNxt) > rel + len) newEnd = this.ends[j - 1];
      // Collapse ranges i..j-1 into slot i.
      const removed = j - i - 1;
      for (let k = i + 1; k + removed < this.count; k++) {
        this.starts[k] = this.starts[k + removed];
        this.ends[k] = this.ends[k + removed];
      }
      this.count -= removed;
    } else {
      for (let k = this.count; k > i; k--) {
        this.starts[k] = this.starts[k - 1];
        this.ends[k] = this.ends[k - 1];
      }
      this.count++;
    }
    this.starts[i] = newStart;
    this.ends[i] = newEnd;
    this.latest = i;
    return 'queued';
  }

  /** Bytes ready at RCV.NXT (the first range starts there). */
  readyAt(rcvNxt: number): number {
    if (this.count === 0 || this.starts[0] !== rcvNxt >>> 0) return 0;
    return (this.ends[0] - this.starts[0]) >>> 0;
  }

  /**
   * Where the ready bytes at RCV.NXT sit: `{buf, offset, length}` of the first contiguous piece
   * (the storage wraps, so a second call after `advance` may return the rest). Reuses `out`.
   */
  readyPiece(rcvNxt: number, out: ReadyPiece): boolean {
    const ready = this.readyAt(rcvNxt);
    if (ready === 0 || !this.buf) return false;
    const pos = rcvNxt & this.mask;
    out.buf = this.buf;
    out.offset = pos;
    out.length = Math.min(ready, this.capacity - pos);
    return true;
  }

  /** RCV.NXT moved to `rcvNxt`: forget everything before it. */
  advance(rcvNxt: number): void {
    let drop = 0;
    while (drop < this.count && ((this.ends[drop] - rcvNxt) | 0) <= 0) drop++;
    if (drop > 0) {
      for (let k = 0; k + drop < this.count; k++) {
        this.starts[k] = this.starts[k + drop];
        this.ends[k] = this.ends[k + drop];
      }
      this.count -= drop;
      this.latest = this.latest >= drop ? this.latest - drop : -1;
    }
    if (this.count > 0 && ((this.starts[0] - rcvNxt) | 0) < 0) this.starts[0] = rcvNxt >>> 0;
    if (this.count === 0) this.clear();
  }

  /**
   * SACK blocks to report (RFC 2018 §4): the most recently changed range first, then the others
   * in order, at most `max`. Writes pairs into `out` (left edge, right edge); returns the count.
   */
  sackBlocks(out: Uint32Array, max: number): number {
    let n = 0;
    if (this.latest >= 0 && this.latest < this.count && n < max) {
      out[0] = this.starts[this.latest];
      out[1] = this.ends[this.latest];
      n = 1;
    }
    for (let i = 0; i < this.count && n < max; i++) {
      if (i === this.latest) continue;
      out[2 * n] = this.starts[i];
      out[2 * n + 1] = this.ends[i];
      n++;
    }
    return n;
  }

  clear(): void {
    this.count = 0;
    this.latest = -1;
    this.buf = null;
  }

  private relStart(i: number, rcvNxt: number): number {
    return (this.starts[i] - rcvNxt) | 0;
  }

  private relEnd(i: number, rcvNxt: number): number {
    return (this.ends[i] - rcvNxt) | 0;
  }

  private store(start: number, src: Uint8Array, off: number, len: number, stage: Stage): void {
    if (!this.buf) this.buf = new Uint8Array(this.capacity);
    const pos = start & this.mask;
    const first = Math.min(len, this.capacity - pos);
    copyBytes(stage, src.subarray(off, off + first), this.buf, pos);
    if (first < len) copyBytes(stage, src.subarray(off + first, off + len), this.buf, 0);
  }
}

export interface ReadyPiece {
  buf: Uint8Array;
  offset: number;
  length: number;
}
