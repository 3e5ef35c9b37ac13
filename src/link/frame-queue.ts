/**
 * FrameQueue: a bounded FIFO of *owned* copies of Frames, for the few places that must keep a
 * frame past the call that lent it (a rate limiter's backlog, a loopback's next-tick delivery, a
 * fault injector's held-back frame). Frames handed to a Port are borrowed (see frame.ts); keeping
 * one means copying it, and that copy is metered here.
 *
 * Storage is one arena of `capacityBytes` used as a ring: each frame's bytes are contiguous, a
 * frame that does not fit at the end of the arena starts again at offset 0 (the tail "wraps"),
 * and space is reclaimed from the head as frames leave in FIFO order. Frame objects are pooled
 * in a growable ring of slots, so a steady stream allocates nothing but the `data` view of each
 * copied frame.
 *
 *   not wrapped:  [ free | head …… tail | free ]     room = end gap, or the gap before head (wrap)
 *   wrapped:      [ …… tail | free | head …… ]        room = head - tail
 *
 * Reading: `at(i)` for i < length gives the i-th oldest frame; after the frames have been handed
 * on (and the handler returned), `shift(n)` releases them. A push during a hand-on never
 * overwrites frames not yet shifted, so a handler may safely feed the same queue.
 */
import { GSO_NONE, type Frame } from './frame';
import { copyBytes, type Stage } from '../meter/meter';

/** Copy the offload metadata (not the bytes) of `src` to `dst`. */
export function copyFrameMeta(dst: Frame, src: Frame): void {
  dst.flags = src.flags;
  dst.gsoType = src.gsoType;
  dst.gsoSize = src.gsoSize;
  dst.hdrLen = src.hdrLen;
  dst.csumStart = src.csumStart;
  dst.csumOffset = src.csumOffset;
}

const EMPTY = new Uint8Array(0);

function blankFrame(): Frame {
  return { data: EMPTY, flags: 0, gsoType: GSO_NONE, gsoSize: 0, hdrLen: 0, csumStart: 0, csumOffset: 0 };
}

export class FrameQueue {
  private readonly arena: Uint8Array;
  private slots: Frame[] = [];
  private first = 0;
  private count = 0;
  private queuedBytes = 0;
  /** Arena offset of the oldest frame, and of the first free byte after the newest one. */
  private head = 0;
  private tail = 0;
  private wrapped = false;

  constructor(
    readonly capacityBytes: number,
    private readonly stage: Stage,
  ) {
    this.arena = new Uint8Array(Math.max(0, Math.floor(capacityBytes)));
  }

  /** Number of frames queued. */
  get length(): number {
    return this.count;
  }

  /** Bytes of frame data queued. */
  get bytes(): number {
    return this.queuedBytes;
  }

  /**
   * Copy `frame` (bytes through the meter, and its offload metadata) to the back of the queue.
   * Returns false, copying nothing, when the arena has no contiguous room for it.
   */
  push(frame: Frame): boolean {
    const len = frame.data.length;
    const at = this.reserve(len);
    if (at < 0) return false;
    copyBytes(this.stage, frame.data, this.arena, at);
    const slot = this.nextSlot();
    slot.data = this.arena.subarray(at, at + len);
    copyFrameMeta(slot, frame);
    return true;
  }

  /** The i-th oldest queued frame (0 = the head). Valid until it is shifted out. */
  at(i: number): Frame {
    return this.slots[(this.first + i) % this.slots.length];
  }

  /** Release the `n` oldest frames. */
  shift(n: number): void {
    if (n > this.count) n = this.count;
    const size = this.slots.length;
    for (let i = 0; i < n; i++) {
      const slot = this.slots[this.first];
      this.queuedBytes -= slot.data.length;
      slot.data = EMPTY;
      this.first = (this.first + 1) % size;
    }
    this.count -= n;
    if (this.count === 0) {
      this.first = 0;
      this.head = this.tail = 0;
      this.wrapped = false;
      return;
    }
    const next = this.slots[this.first].data.byteOffset - this.arena.byteOffset;
    if (next < this.head) this.wrapped = false; // the head has followed the tail round
    this.head = next;
  }

  /** Drop everything queued. */
  clear(): void {
    this.shift(this.count);
  }

  /** Arena offset with `len` contiguous free bytes, claimed; -1 when there is none. */
  private reserve(len: number): number {
    if (len > this.arena.length) return -1;
    if (this.count === 0) {
      this.head = this.tail = 0;
      this.wrapped = false;
    }
    let at: number;
    if (!this.wrapped) {
      if (this.arena.length - this.tail >= len) at = this.tail;
      else if (this.head >= len) {
        at = 0;
        this.wrapped = true;
      } else return -1;
    } else if (this.head - this.tail >= len) at = this.tail;
    else return -1;
    this.tail = at + len;
    this.queuedBytes += len;
    return at;
  }

  /** The slot after the newest frame, growing the slot ring (re-linearised) when it is full. */
  private nextSlot(): Frame {
    let size = this.slots.length;
    if (this.count === size) {
      const grown: Frame[] = new Array(size === 0 ? 16 : size * 2);
      for (let i = 0; i < this.count; i++) grown[i] = this.slots[(this.first + i) % size];
      for (let i = this.count; i < grown.length; i++) grown[i] = blankFrame();
      this.slots = grown;
      this.first = 0;
      size = grown.length;
    }
    const slot = this.slots[(this.first + this.count) % size];
    this.count++;
    return slot;
  }
}
