/**
 * DescriptorChain: one walked virtio descriptor chain, as a list of segments of guest memory
 * (virtio 1.x §2.7.5 "The Virtqueue Descriptor Table", §2.7.5.3 indirect descriptors).
 *
 * A chain is device-readable segments followed by device-writable ones (§2.7.4.2: "a driver MUST
 * place any device-writable descriptor elements after any device-readable descriptor elements").
 * Segments [0, readCount) are readable, [readCount, count) writable. A descriptor whose buffer
 * crosses from one memory region into the next becomes two segments.
 *
 * Each segment is (bytes of its region, offset in them, length): callers copy with
 * `bytes.set(src, offset)` or take `bytes.subarray(offset, offset + length)` — the chain itself
 * allocates nothing after construction; one chain object is reused for every walk of its queue.
 */

export class DescriptorChain {
  /** Head descriptor index (what goes into the used ring). */
  head = 0;
  /** Number of segments. */
  count = 0;
  /** Segments [0, readCount) are device-readable. */
  readCount = 0;
  readableBytes = 0;
  writableBytes = 0;
  /** Descriptors visited (direct + indirect). */
  descriptors = 0;
  readonly bytes: Uint8Array[];
  readonly offset: number[];
  readonly length: number[];

  constructor(readonly capacity: number) {
    const empty = new Uint8Array(0);
    this.bytes = new Array<Uint8Array>(capacity).fill(empty);
    this.offset = new Array<number>(capacity).fill(0);
    this.length = new Array<number>(capacity).fill(0);
  }

  reset(head: number): void {
    this.head = head;
    this.count = 0;
    this.readCount = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.descriptors = 0;
  }

  /** Append a segment; false when the chain is full. */
  add(bytes: Uint8Array, offset: number, length: number, writable: boolean): boolean {
    const i = this.count;
    if (i === this.capacity) return false;
    this.bytes[i] = bytes;
    this.offset[i] = offset;
    this.length[i] = length;
    this.count = i + 1;
    if (writable) this.writableBytes += length;
    else {
      this.readCount = i + 1;
      this.readableBytes += length;
    }
    return true;
  }

  /**
   * Copy `len` readable bytes starting at byte `from` of the chain's readable part into `dst` at
   * `dstOffset` (used for a scattered header or frame). Returns bytes copied. Not metered here:
   * the caller counts the copy it asked for.
   */
  gather(from: number, len: number, dst: Uint8Array, dstOffset: number): number {
    let done = 0;
    let skip = from;
    for (let i = 0; i < this.readCount && done < len; i++) {
      const segLen = this.length[i];
      if (skip >= segLen) {
        skip -= segLen;
        continue;
      }
      const take = Math.min(segLen - skip, len - done);
      const start = this.offset[i] + skip;
      const b = this.bytes[i];
      if (take <= 16) {
        for (let k = 0; k < take; k++) dst[dstOffset + done + k] = b[start + k];
      } else {
        dst.set(b.subarray(start, start + take), dstOffset + done);
      }
      done += take;
      skip = 0;
    }
    return done;
  }
}
