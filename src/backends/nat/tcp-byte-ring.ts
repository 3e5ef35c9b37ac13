/**
 * ByteRing: a bounded FIFO of stream bytes in one array, addressed by absolute stream positions.
 *
 * `head` is the position of the oldest byte kept (consumed up to there), `tail` the position just
 * past the newest; both only grow (JS numbers are exact up to 2^53, i.e. 8 PiB per connection).
 * A position p lives at index p mod capacity. Writers ask for the contiguous free region at the
 * tail (`writable`), fill it (a copy, or a `read` by the kernel) and `commit`; readers copy out
 * from any position in [head, tail) (`copyOut`) and `consume` from the head.
 *
 * Used by the Node host-socket adapter (tcp-host-node.ts) for the bytes read from the host and
 * not yet acknowledged by the guest (kept for retransmission), and for guest bytes accepted but
 * not yet written by Node to the kernel.
 */
import { copyBytes, type Stage } from '../../meter/meter';

export interface Region {
  offset: number;
  length: number;
}

export class ByteRing {
  buf: Uint8Array;
  head = 0;
  tail = 0;

  constructor(capacity: number) {
    this.buf = new Uint8Array(capacity);
  }

  get capacity(): number {
    return this.buf.length;
  }

  get length(): number {
    return this.tail - this.head;
  }

  get free(): number {
    return this.buf.length - (this.tail - this.head);
  }

  /** The contiguous free region at the tail (length 0 when full). Reuses `out`. */
  writable(out: Region): Region {
    const cap = this.buf.length;
    const idx = this.tail % cap;
    out.offset = idx;
    out.length = Math.min(this.free, cap - idx);
    return out;
  }

  /** `n` bytes were written at the tail region. */
  commit(n: number): void {
    this.tail += n;
  }

  /** Copy `src[off, off+len)` in at the tail (as far as it fits). Returns bytes taken. */
  append(src: Uint8Array, off: number, len: number, stage: Stage): number {
    const cap = this.buf.length;
    const n = Math.min(len, this.free);
    if (n <= 0) return 0;
    const idx = this.tail % cap;
    const first = Math.min(n, cap - idx);
    copyBytes(stage, src.subarray(off, off + first), this.buf, idx);
    if (first < n) copyBytes(stage, src.subarray(off + first, off + n), this.buf, 0);
    this.tail += n;
    return n;
  }

  /** Copy up to `len` bytes starting `offset` bytes past the head into `dst` at `dstOff`. */
  copyOut(offset: number, dst: Uint8Array, dstOff: number, len: number, stage: Stage): number {
    const cap = this.buf.length;
    const n = Math.min(len, this.length - offset);
    if (n <= 0) return 0;
    const idx = (this.head + offset) % cap;
    const first = Math.min(n, cap - idx);
    dst.set(this.buf.subarray(idx, idx + first), dstOff);
    if (first < n) dst.set(this.buf.subarray(0, n - first), dstOff + first);
    stage.copied(n);
    return n;
  }

  /** The contiguous readable piece `offset` bytes past the head (up to the wrap). */
  readable(offset: number, out: Region): Region {
    const cap = this.buf.length;
    const n = this.length - offset;
    if (n <= 0) {
      out.offset = 0;
      out.length = 0;
      return out;
    }
    const idx = (this.head + offset) % cap;
    out.offset = idx;
    out.length = Math.min(n, cap - idx);
    return out;
  }

  consume(n: number): void {
    this.head += Math.min(n, this.length);
  }

  /** Move the content into a bigger array (the copy is counted). Positions do not change. */
  grow(capacity: number, stage: Stage): void {
    if (capacity <= this.buf.length) return;
    const next = new Uint8Array(capacity);
    const len = this.length;
    const old = this.buf;
    const oldCap = old.length;
    // Place every byte at its position mod the new capacity.
    for (let done = 0; done < len; ) {
      const p = this.head + done;
      const from = p % oldCap;
      const to = p % capacity;
      const n = Math.min(len - done, oldCap - from, capacity - to);
      next.set(old.subarray(from, from + n), to);
      done += n;
    }
    if (len > 0) stage.copied(len);
    this.buf = next;
  }
}
