/**
 * SplitVirtqueue: the device side of one virtio 1.x split virtqueue (virtio 1.x §2.7) living in
 * guest memory: descriptor table, available ("driver") ring and used ("device") ring.
 *
 * Layout (all little endian; §2.7.5–§2.7.8):
 *   desc[i]  @16i:  addr u64, len u32, flags u16 (NEXT 1, WRITE 2, INDIRECT 4), next u16
 *   avail    flags u16 @0, idx u16 @2, ring[Q] u16 @4, used_event u16 @4+2Q
 *   used     flags u16 @0, idx u16 @2, ring[Q] {id u32, len u32} @4, avail_event u16 @4+8Q
 *
 * States of a queue:
 *   unconfigured ──setSize/setAddresses + map()──► ready ──start()──► started ──stop()──► ready
 *   any ──(bad descriptor, bad index)──► broken (NEEDS_RESET): nothing is processed until the
 *   transport reconfigures the queue (setAddresses/setBase/start) or resets the device.
 * `enabled` (vhost-user SET_VRING_ENABLE) is kept here but interpreted by the device model.
 *
 * Memory ordering (§2.7.13 "Supplying Buffers", §2.7.8, and the usual virtio barriers):
 *   - avail.idx is read with Atomics.load *before* the ring entries and descriptors it covers;
 *   - used entries are plain stores, then used.idx is published with a seq_cst Atomics.store on
 *     an Int32Array over the used ring header (flags|idx — both device-owned), which on x86 is a
 *     locked XCHG: a full fence between publishing used.idx and reading used_event/avail.flags;
 *   - avail_event is written with a seq_cst store before avail.idx is re-read, so a buffer added
 *     while we decided to sleep is never missed.
 *
 * Notification suppression (§2.7.7, §2.7.10): with EVENT_IDX, notify the driver iff
 * vring_need_event(used_event, new, old) = (u16)(new − used_event − 1) < (u16)(new − old); the
 * device asks for kicks by writing avail_event = the next index it will look at. Without
 * EVENT_IDX, avail.flags NO_INTERRUPT and used.flags NO_NOTIFY.
 *
 * Bad input (§2.1.1 DEVICE_NEEDS_RESET): an index moving by more than Q, a head or `next` out
 * of range, a descriptor outside guest memory, a loop (a chain longer than Q, or than its
 * indirect table), nested indirect, INDIRECT|NEXT together, a readable descriptor after a
 * writable one, or a chain longer than `maxChainBytes` breaks the queue: one log line, the
 * `onError` callback (vhost-user's err eventfd), and no exception.
 */
import type { AddressSpace, GuestMemory } from '../memory';
import { DescriptorChain } from './descriptor-chain';
import { log } from '../../log';

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;
export const VIRTQ_MAX_SIZE = 32768;

export interface RingAddresses {
  desc: number;
  avail: number;
  used: number;
  /** How the three addresses are to be translated: 'uaddr' for vhost-user, 'gpa' otherwise. */
  space: AddressSpace;
}

export interface SplitVirtqueueOptions {
  /** Largest total length of one chain's buffers (default 1 MiB); longer breaks the queue. */
  maxChainBytes?: number;
  /** Called once when the queue breaks (NEEDS_RESET). */
  onError?: (reason: string) => void;
}

const TWO32 = 4294967296;

export class SplitVirtqueue {
  size = 0;
  addresses: RingAddresses | null = null;
  /** Negotiated ring features (set by the device model). */
  eventIdx = false;
  indirect = false;
  started = false;
  enabled = false;
  /** Why the queue needs a reset, or null. */
  error: string | null = null;
  /** Next available-ring index to consume. */
  lastAvail = 0;
  /** used.idx as last published. */
  usedIdx = 0;
  /** Used entries written but not yet published. */
  usedPending = 0;
  /** The chain filled by `walk` (reused; sized for the queue). */
  chain = new DescriptorChain(0);

  private mapped = false;
  private mappedGeneration = -1;
  private descView: DataView = new DataView(new ArrayBuffer(0));
  private descBase = 0;
  private avail16: Uint16Array = new Uint16Array(0);
  private used16: Uint16Array = new Uint16Array(0);
  private used32: Uint32Array = new Uint32Array(0);
  private usedHead32: Int32Array = new Int32Array(0);
  private usedFlags = 0;
  /** avail.idx as last read (refreshed when the cached entries run out). */
  private availShadow = 0;
  private readonly maxChainBytes: number;
  private readonly onError: (reason: string) => void;

  constructor(
    readonly index: number,
    readonly memory: GuestMemory,
    opts: SplitVirtqueueOptions = {},
  ) {
    this.maxChainBytes = opts.maxChainBytes ?? 1 << 20;
    this.onError = opts.onError ?? (() => {});
  }

  /** Queue size Q (vhost-user SET_VRING_NUM). Returns an error string for a bad size. */
  setSize(n: number): string | null {
    if (!Number.isInteger(n) || n < 1 || n > VIRTQ_MAX_SIZE || (n & (n - 1)) !== 0) {
      return `queue size ${n} is not a power of two in 1..${VIRTQ_MAX_SIZE}`;
    }
    this.size = n;
    this.mapped = false;
    // a chain has at most Q descriptors; a few more segments for buffers crossing regions
    if (this.chain.capacity < 2 * n + 8) this.chain = new DescriptorChain(2 * n + 8);
    return null;
  }

  setAddresses(a: RingAddresses): void {
    this.addresses = a;
    this.mapped = false;
    this.error = null;
  }

  /** Next avail index to process (vhost-user SET_VRING_BASE; split ring: bits 0–15). */
  setBase(lastAvail: number): void {
    this.lastAvail = lastAvail & 0xffff;
    this.availShadow = this.lastAvail;
    this.usedPending = 0;
    this.error = null;
  }

  /** True when the rings are configured and mapped against the current memory table. */
  get ready(): boolean {
    return this.mapped && this.mappedGeneration === this.memory.generation && this.error === null;
  }

  /** True when buffers may be consumed and used entries written. */
  get live(): boolean {
    return this.started && this.ready;
  }

  /**
   * Translate the ring addresses against the current memory table and build the ring views.
   * Needed after setAddresses and after every memory table change. Returns an error or null.
   */
  map(): string | null {
    this.mapped = false;
    const a = this.addresses;
    const q = this.size;
    if (a === null || q === 0) return 'queue has no size or addresses yet';
    const mem = this.memory;
    const d = mem.find(a.space, a.desc, 16 * q);
    if (d < 0) return `descriptor table at ${a.space} 0x${a.desc.toString(16)} (${16 * q} bytes) is not inside guest memory`;
    const dOff = mem.lastOffset;
    const av = mem.find(a.space, a.avail, 6 + 2 * q);
    if (av < 0) return `available ring at ${a.space} 0x${a.avail.toString(16)} is not inside guest memory`;
    const avOff = mem.lastOffset;
    const u = mem.find(a.space, a.used, 6 + 8 * q);
    if (u < 0) return `used ring at ${a.space} 0x${a.used.toString(16)} is not inside guest memory`;
    const uOff = mem.lastOffset;
    const dr = mem.region(d);
    const ar = mem.region(av);
    const ur = mem.region(u);
    const availAt = ar.bytes.byteOffset + avOff;
    const usedAt = ur.bytes.byteOffset + uOff;
    // §2.7 alignment: descriptor table 16, available ring 2, used ring 4.
    if (availAt % 2 !== 0 || usedAt % 4 !== 0) return 'ring addresses are not aligned (avail 2, used 4)';
    this.descView = dr.view;
    this.descBase = dOff;
    this.avail16 = new Uint16Array(ar.bytes.buffer, availAt, 3 + q);
    this.used16 = new Uint16Array(ur.bytes.buffer, usedAt, 3 + 4 * q);
    this.used32 = new Uint32Array(ur.bytes.buffer, usedAt, 1 + 2 * q);
    this.usedHead32 = new Int32Array(ur.bytes.buffer, usedAt, 1);
    this.mapped = true;
    this.mappedGeneration = mem.generation;
    return null;
  }

  /** Start processing (vhost-user: kick fd set). used.idx is taken from the ring itself. */
  start(): string | null {
    if (!this.ready) {
      const err = this.map();
      if (err) return err;
    }
    this.usedIdx = Atomics.load(this.used16, 1);
    this.usedFlags = this.used16[0];
    this.usedPending = 0;
    this.availShadow = this.lastAvail;
    this.started = true;
    return null;
  }

  /** Stop processing (vhost-user GET_VRING_BASE); returns the next avail index to process. */
  stop(): number {
    this.started = false;
    return this.lastAvail;
  }

  /** Back to unconfigured (device reset, connection gone). */
  reset(): void {
    this.size = 0;
    this.addresses = null;
    this.started = false;
    this.enabled = false;
    this.error = null;
    this.lastAvail = 0;
    this.usedIdx = 0;
    this.usedPending = 0;
    this.availShadow = 0;
    this.mapped = false;
    this.usedFlags = 0;
  }

  /** Put the queue into NEEDS_RESET with one log line. Always returns false. */
  fail(reason: string): false {
    if (this.error === null) {
      this.error = reason;
      log.error({ queue: this.index, reason }, `virtqueue ${this.index} needs reset: ${reason}`);
      this.onError(reason);
    }
    return false;
  }

  /** Number of chains the driver has made available and we have not consumed (acquire). */
  available(): number {
    if (!this.live) return 0;
    const idx = Atomics.load(this.avail16, 1);
    const n = (idx - this.lastAvail) & 0xffff;
    if (n > this.size) {
      this.fail(`available index moved from ${this.lastAvail} to ${idx}, more than the queue size ${this.size}`);
      return 0;
    }
    this.availShadow = idx;
    return n;
  }

  /**
   * Take the next available chain: its head index, or -1 when there is none (or the queue is
   * broken). Call `walk(head)` next.
   */
  pop(): number {
    if (!this.live) return -1;
    if (this.lastAvail === this.availShadow && this.available() === 0) return -1;
    const head = this.avail16[2 + (this.lastAvail & (this.size - 1))];
    if (head >= this.size) {
      this.fail(`available ring entry ${this.lastAvail} names descriptor ${head}, outside the queue (${this.size})`);
      return -1;
    }
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    return head;
  }

  /** Give back the last `n` chains taken with pop (not yet used): they will be popped again. */
  unpop(n: number): void {
    this.lastAvail = (this.lastAvail - n) & 0xffff;
  }

  /** Walk the chain at `head` into `this.chain`. False (queue broken) on any bad descriptor. */
  walk(head: number): boolean {
    const c = this.chain;
    c.reset(head);
    const q = this.size;
    const dv = this.descView;
    const base = this.descBase;
    let i = head;
    for (let budget = q; ; ) {
      if (budget-- === 0) return this.fail(`descriptor chain from head ${head} is longer than the queue size ${q} (a loop)`);
      const at = base + 16 * i;
      const addr = dv.getUint32(at, true) + dv.getUint32(at + 4, true) * TWO32;
      const len = dv.getUint32(at + 8, true);
      const flags = dv.getUint16(at + 12, true);
      c.descriptors++;
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        if (!this.indirect) return this.fail(`descriptor ${i} is INDIRECT but INDIRECT_DESC was not negotiated`);
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0) return this.fail(`descriptor ${i} has both INDIRECT and NEXT`);
        return this.walkIndirect(addr, len);
      }
      if (!this.addSegment(addr, len, (flags & VIRTQ_DESC_F_WRITE) !== 0)) return false;
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return true;
      const next = dv.getUint16(at + 14, true);
      if (next >= q) return this.fail(`descriptor ${i} chains to ${next}, outside the queue (${q})`);
      i = next;
    }
  }

  /** Write a used element for `head` with `len` bytes written (visible at the next publish). */
  pushUsed(head: number, len: number): void {
    if (this.size === 0) return; // reset under our feet (a handler closed the device)
    const slot = (this.usedIdx + this.usedPending) & (this.size - 1);
    this.used32[1 + 2 * slot] = head;
    this.used32[2 + 2 * slot] = len;
    this.usedPending++;
  }

  /** Forget the last `n` used elements written since the last publish. */
  unpushUsed(n: number): void {
    this.usedPending -= Math.min(n, this.usedPending);
  }

  /**
   * Publish every pending used element (one used.idx store) and say whether the driver wants a
   * notification for them (§2.7.10 / EVENT_IDX).
   */
  publish(): boolean {
    const n = this.usedPending;
    if (n === 0 || !this.ready) return false;
    const old = this.usedIdx;
    const now = (old + n) & 0xffff;
    this.usedIdx = now;
    this.usedPending = 0;
    // seq_cst store of flags|idx: the entries above become visible first, and it is a full fence
    // before the loads of used_event / avail.flags below (little endian: idx is the high half).
    Atomics.store(this.usedHead32, 0, this.usedFlags | (now << 16));
    if (this.eventIdx) {
      const event = Atomics.load(this.avail16, 2 + this.size);
      return ((now - event - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return (Atomics.load(this.avail16, 0) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Ask the driver to kick when it adds the next buffer (avail_event = the avail.idx we last
   * saw, as Linux vhost does — not last_avail, which a receiver short of buffers may lag), then
   * re-read avail.idx after a full fence so a buffer added meanwhile is not missed. Returns true
   * when avail.idx moved since we last read it: the caller should look again instead of sleeping.
   */
  enableNotifications(): boolean {
    if (!this.live) return false;
    const seen = this.availShadow;
    if (this.eventIdx) Atomics.store(this.used16, 2 + 4 * this.size, seen);
    else {
      this.usedFlags = 0;
      Atomics.store(this.used16, 0, 0); // seq_cst: the fence matters even when nothing changes
    }
    this.available();
    return this.error === null && this.availShadow !== seen;
  }

  /** Tell the driver kicks are not needed (only possible without EVENT_IDX; with it, we simply
   *  leave avail_event behind so the driver's index has already passed it). */
  disableNotifications(): void {
    if (!this.live || this.eventIdx || this.usedFlags !== 0) return;
    this.usedFlags = VIRTQ_USED_F_NO_NOTIFY;
    Atomics.store(this.used16, 0, VIRTQ_USED_F_NO_NOTIFY);
  }

  private walkIndirect(addr: number, len: number): boolean {
    const c = this.chain;
    if (len === 0 || len % 16 !== 0) return this.fail(`indirect table length ${len} is not a non-zero multiple of 16`);
    const n = len / 16;
    if (n > this.size) return this.fail(`indirect table of ${n} descriptors is longer than the queue size ${this.size}`);
    const mem = this.memory;
    const r = mem.find('gpa', addr, len);
    if (r < 0) return this.fail(`indirect table at gpa 0x${addr.toString(16)} (${len} bytes) is not inside one memory region`);
    const dv = mem.region(r).view;
    const base = mem.lastOffset;
    let i = 0;
    for (let budget = n; ; ) {
      if (budget-- === 0) return this.fail(`indirect chain at gpa 0x${addr.toString(16)} is longer than its table (a loop)`);
      const at = base + 16 * i;
      const a = dv.getUint32(at, true) + dv.getUint32(at + 4, true) * TWO32;
      const l = dv.getUint32(at + 8, true);
      const flags = dv.getUint16(at + 12, true);
      c.descriptors++;
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) return this.fail('nested indirect descriptor');
      if (!this.addSegment(a, l, (flags & VIRTQ_DESC_F_WRITE) !== 0)) return false;
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return true;
      const next = dv.getUint16(at + 14, true);
      if (next >= n) return this.fail(`indirect descriptor ${i} chains to ${next}, outside its table (${n})`);
      i = next;
    }
  }

  private addSegment(gpa: number, len: number, writable: boolean): boolean {
    const c = this.chain;
    if (!writable && c.count > c.readCount) return this.fail(`chain ${c.head}: a device-readable descriptor follows a writable one`);
    if (c.readableBytes + c.writableBytes + len > this.maxChainBytes) {
      return this.fail(`chain ${c.head} is longer than ${this.maxChainBytes} bytes`);
    }
    const mem = this.memory;
    while (len > 0) {
      const r = mem.find('gpa', gpa, 0);
      if (r < 0) return this.fail(`chain ${c.head}: buffer at gpa 0x${gpa.toString(16)} (${len} bytes) is outside guest memory`);
      const region = mem.region(r);
      const off = mem.lastOffset;
      const part = Math.min(len, region.size - off);
      if (!c.add(region.bytes, off, part, writable)) return this.fail(`chain ${c.head} has too many segments`);
      gpa += part;
      len -= part;
    }
    return true;
  }
}
