/**
 * Reading and writing non-blocking fds, one buffer at a time or a batch of frames per call.
 *
 * Plain calls return a byte count, 0 for end of stream, or -1 when the fd would block (EAGAIN);
 * other errors throw (see errors.ts).
 *
 * Batched frame I/O (one read / one writev = one frame: tap fds, datagram sockets) crosses from
 * JavaScript to C once per batch and allocates nothing:
 *
 *   readFrames(fd, slab, slotSize, maxFrames, lengths, status?)
 *     frame i lands in slab[i*slotSize ...] with its length in lengths[i]; returns the count
 *     (0 when nothing was waiting). maxFrames is clamped to what slab and lengths can hold.
 *     A frame longer than slotSize is truncated by the kernel, so size slots for the largest
 *     frame (tap with TSO: vnet header + 65535 + Ethernet header).
 *   writeFrames(fd, parts, partsPerFrame, frameCount, status?)
 *     frame i is parts[i*partsPerFrame ... +partsPerFrame) — 1..8 parts, e.g. [vnetHeader,
 *     frame]; null/empty parts are skipped — sent with one writev; returns how many frames were
 *     written completely.
 *   status (Int32Array(2), optional): [0] = errno that ended the batch (0 = all done, EAGAIN =
 *     would block; a short write on a stream socket is reported as EAGAIN), [1] = bytes of the
 *     frame that was written only partly. With status the batched calls never throw for I/O
 *     errors (the caller decides, e.g. drop frame `count` and continue after it); without it
 *     they throw only if the first frame fails with something other than EAGAIN.
 *
 * Copies: the kernel copies each frame once between its buffers and the slab/parts; callers
 * account for that with `Stage.copied` (meter.ts).
 */
import { addon, type FdLike } from './binding';

/** Bytes read, 0 at end of stream, -1 if it would block. */
export function read(fd: FdLike, buf: ArrayBufferView): number {
  return addon.read(fd, buf);
}

/** Bytes written, -1 if it would block. */
export function write(fd: FdLike, buf: ArrayBufferView): number {
  return addon.write(fd, buf);
}

/** Scatter read; bytes read, 0 at end, -1 if it would block. At most 1024 buffers. */
export function readv(fd: FdLike, bufs: ArrayBufferView[]): number {
  return addon.readv(fd, bufs);
}

/** Gather write; bytes written, -1 if it would block. At most 1024 buffers. */
export function writev(fd: FdLike, bufs: ArrayBufferView[]): number {
  return addon.writev(fd, bufs);
}

export function readFrames(
  fd: FdLike,
  slab: Uint8Array,
  slotSize: number,
  maxFrames: number,
  lengths: Int32Array,
  status?: Int32Array | null,
): number {
  return addon.readFrames(fd, slab, slotSize, maxFrames, lengths, status);
}

export function writeFrames(
  fd: FdLike,
  parts: readonly (ArrayBufferView | null | undefined)[],
  partsPerFrame: number,
  frameCount: number,
  status?: Int32Array | null,
): number {
  return addon.writeFrames(fd, parts, partsPerFrame, frameCount, status);
}

/**
 * A reusable receive slab for readFrames: `capacity` slots of `slotSize` bytes, the lengths
 * array, a status array, and one preallocated full-slot view per slot (`slots[i]`), so reading
 * a batch allocates nothing. `frame(i)` makes an exact-length view (one small allocation).
 */
export class FrameSlab {
  readonly buffer: Uint8Array;
  readonly lengths: Int32Array;
  readonly status = new Int32Array(2);
  readonly slots: readonly Uint8Array[];
  /** Frames held after the last read(). */
  count = 0;

  constructor(readonly capacity: number, readonly slotSize: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('capacity must be a positive integer');
    if (!Number.isInteger(slotSize) || slotSize < 1) throw new RangeError('slotSize must be a positive integer');
    this.buffer = new Uint8Array(capacity * slotSize);
    this.lengths = new Int32Array(capacity);
    const slots: Uint8Array[] = [];
    for (let i = 0; i < capacity; i++) slots.push(this.buffer.subarray(i * slotSize, (i + 1) * slotSize));
    this.slots = slots;
  }

  /** Read up to `max` frames (default: capacity); returns the count; status[0] says why it stopped. */
  read(fd: FdLike, max = this.capacity): number {
    this.count = addon.readFrames(fd, this.buffer, this.slotSize, max, this.lengths, this.status);
    return this.count;
  }

  /** The bytes of frame i of the last read (a new view). */
  frame(i: number): Uint8Array {
    return this.slots[i].subarray(0, this.lengths[i]);
  }
}
