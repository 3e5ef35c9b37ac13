/**
 * GuestOutput: how the NAT stack builds frames towards the guest and hands them over in batches.
 *
 * Buffers: a fixed pool of slots cut from one ArrayBuffer, each big enough for a 64 KiB
 * super-frame plus Ethernet and IPv6 headers. The pool is a LIFO free list, so a light load
 * keeps reusing the same few slots (untouched pages of the big allocation never become
 * resident). Each slot owns its Frame object and caches the last `data` view it made, so a
 * steady stream of same-sized frames allocates nothing at all.
 *
 * Lifecycle of a frame: `begin` takes a slot and writes Ethernet + IP header (IPv4 header
 * checksum included: every field is known at that point) → the module writes the transport
 * header and payload at `l4Offset` and fills the transport checksum (`finishTransportChecksum`
 * does it the way the guest wants it) → `commit` queues it → `flush` hands the queue to the
 * guest port in one call; the slots return to the pool when that call returns (frames given to
 * a Port are borrowed — DESIGN.md).
 *
 * When frames are flushed:
 *  - while the stack handles a batch from the guest (`hold`/`release` around it): once, at the
 *    end of the batch;
 *  - frames produced from host-socket callbacks: by a setImmediate, so one flush per event-loop
 *    turn gathers everything that turn produced;
 *  - when the pool runs dry, `begin` flushes what is queued and tries again (the pool bounds
 *    one batch, not the traffic).
 * A handler that sends frames straight back into the stack (a loopback, a switch) is fine:
 * frames committed during a flush go to the other of two queues and are flushed right after.
 *
 * Offloads of the guest side (`checksumOffload`, `tsoOffload`): what the frontend accepts. The
 * netns tap always accepts NEEDS_CSUM and GSO frames written to it (TUNSETOFFLOAD only limits
 * what the kernel hands *us*); virtio only what the driver negotiated (VIRTIO_NET_F_GUEST_CSUM,
 * GUEST_TSO4/6). The frontend tells us with `setOffloads`.
 *
 * Backpressure (`setPressure`, link/port.ts RxBackpressure): a guest port that says, after a
 * flush, that frames now wait in its own queue (virtio's backlog, the RTL8139's FIFO) makes
 * `available` 0 until it says 'rx-unblocked' — the TCP module reads `available` before each data
 * segment, so bulk data stays in the host sockets (and their windows close) instead of being
 * copied into the device's queue; control frames, UDP and ICMP still go. `onGuestUnblocked`
 * listeners run when the port takes frames again.
 *
 * Ethernet destination: the NeighborCache maps guest IP addresses to the MACs they were seen
 * with (learned by the stack from ARP and IP frames); unknown and broadcast destinations get the
 * broadcast MAC (Linux accepts unicast IP in a link-layer broadcast, RFC 1122 §3.3.6 leaves it
 * to the receiver).
 */
import { GSO_NONE, VNET_F_NEEDS_CSUM, resetFrame, type Frame } from '../../link/frame';
import { DISCARD, type FrameHandler, type RxBackpressure } from '../../link/port';
import { copyBytes, observing, type Meter, type Stage } from '../../meter/meter';
import { NAT_OUTPUT_RX } from '../../meter/stages';
import { tracer } from '../../meter/trace';
import { log } from '../../log';
import { internetChecksum, onesSum } from '../../wire/checksum';
import type { Family, GuestOutput, OutFrame } from './context';
import { readIpv4, writeIpv4 } from './policy';

export const ETH_HLEN = 14;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_IPV6 = 0x86dd;
export const IPV4_HLEN = 20;
export const IPV6_HLEN = 40;
const IP_PROTO_UDP = 17;
const IP_PROTO_ICMP = 1;

/** Largest frame a slot holds: Ethernet + IPv6 header + a 64 KiB payload. */
export const SLOT_SIZE = 65600;
export const DEFAULT_POOL_SIZE = 256;

const BROADCAST = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
const EMPTY = new Uint8Array(0);

/** Fold a 32-bit one's-complement accumulator to 16 bits (not complemented). */
export function fold16(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/**
 * Guest addresses → MACs, learned from the guest's own frames. Bounded (a guest spraying
 * source addresses cannot grow it past `limit`); the last hit is cached since one guest is the
 * common case.
 */
export class NeighborCache {
  private readonly v4 = new Map<number, Uint8Array>();
  private readonly v6: { addr: Uint8Array; mac: Uint8Array }[] = [];
  private lastIp = -1;
  private lastMac: Uint8Array = BROADCAST;

  /** Called when an IPv4 address is learned for the first time (frames may be waiting for it). */
  onLearn4: ((ip: number) => void) | null = null;

  constructor(readonly limit = 1024) {}

  /** Remember that `ip` (IPv4 number) lives at `mac`. Allocates only for a new address. */
  learn4(ip: number, mac: Uint8Array): void {
    const known = this.v4.get(ip | 0);
    if (known) {
      for (let i = 0; i < 6; i++) known[i] = mac[i];
      return;
    }
    if (this.v4.size >= this.limit) return;
    this.v4.set(ip | 0, Uint8Array.prototype.slice.call(mac, 0, 6) as Uint8Array);
    this.onLearn4?.(ip);
  }

  lookup4(ip: number): Uint8Array | undefined {
    if (ip === this.lastIp) return this.lastMac;
    const mac = this.v4.get(ip | 0);
    if (mac) {
      this.lastIp = ip;
      this.lastMac = mac;
    }
    return mac;
  }

  forget4(ip: number): void {
    this.v4.delete(ip | 0);
    if (ip === this.lastIp) this.lastIp = -1;
  }

  learn6(addr: Uint8Array, mac: Uint8Array): void {
    const known = this.lookup6(addr);
    if (known) {
      for (let i = 0; i < 6; i++) known[i] = mac[i];
      return;
    }
    if (this.v6.length >= 64) this.v6.shift();
    this.v6.push({ addr: Uint8Array.prototype.slice.call(addr, 0, 16) as Uint8Array, mac: Uint8Array.prototype.slice.call(mac, 0, 6) as Uint8Array });
  }

  lookup6(addr: Uint8Array): Uint8Array | undefined {
    outer: for (const e of this.v6) {
      for (let i = 0; i < 16; i++) if (e.addr[i] !== addr[i]) continue outer;
      return e.mac;
    }
    return undefined;
  }

  /** Known IPv4 guests (for ARP: addresses not to answer for). */
  has4(ip: number): boolean {
    return this.v4.has(ip | 0);
  }

  get size(): number {
    return this.v4.size + this.v6.length;
  }
}

class OutSlot implements OutFrame {
  l4Offset = 0;
  /** IPv4 destination whose MAC is not known yet (-1: resolved or not IPv4 unicast). */
  unresolved = -1;
  /** When it started waiting for ARP (ms). */
  waitingSince = 0;
  readonly frame: Frame;
  private view: Uint8Array = EMPTY;
  private tail: Uint8Array = EMPTY;
  private tailAt = -1;

  constructor(readonly buf: Uint8Array) {
    this.frame = resetFrame({} as Frame, EMPTY);
  }

  /** Point the frame at the first `len` bytes (reusing the last view when the length matches). */
  setLength(len: number): void {
    if (this.view.length !== len) this.view = this.buf.subarray(0, len);
    resetFrame(this.frame, this.view);
  }

  /** The buffer from `offset` to its end, as a cached view (to receive straight into it). */
  from(offset: number): Uint8Array {
    if (this.tailAt !== offset) {
      this.tail = this.buf.subarray(offset);
      this.tailAt = offset;
    }
    return this.tail;
  }
}

export interface GuestOutputOptions {
  meter: Meter;
  /** The gateway's MAC: the source of every frame we send. */
  gatewayMac: Uint8Array;
  /** The gateway's IPv4 address (the sender of our ARP requests); 0 = none. */
  gatewayIp?: number;
  /** Is this IPv4 address one to resolve with ARP (a guest's unicast address)? Default: all. */
  resolvable?: (ip: number) => boolean;
  mtu: number;
  checksumOffload?: boolean;
  tsoOffload?: boolean;
  /** Number of preallocated frame buffers (each SLOT_SIZE bytes of address space). */
  poolSize?: number;
}

export class GuestOutputQueue implements GuestOutput {
  readonly neighbors = new NeighborCache();
  readonly gatewayMac: Uint8Array;
  mtu: number;
  checksumOffload: boolean;
  tsoOffload: boolean;

  private readonly slots: OutSlot[] = [];
  private readonly free: OutSlot[] = [];
  private pending: Frame[] = [];
  private pendingSlots: OutSlot[] = [];
  private spare: Frame[] = [];
  private spareSlots: OutSlot[] = [];
  private handler: FrameHandler = DISCARD;
  private pressure: RxBackpressure | null = null;
  private guestFull = false;
  private readonly unblockedListeners: Array<() => void> = [];
  private readonly onUnblocked = (): void => {
    if (!this.guestFull) return;
    this.guestFull = false;
    for (let i = 0; i < this.unblockedListeners.length; i++) this.unblockedListeners[i]();
  };
  private holdDepth = 0;
  private flushing = false;
  private scheduled = false;
  private ipId = 1;
  private readonly stage: Stage;
  private readonly gatewayIp: number;
  private readonly resolvable: (ip: number) => boolean;
  /** Frames waiting for an ARP reply (RFC 1122 §2.3.2.2: keep at least one per destination). */
  private readonly unresolved: OutSlot[] = [];
  private readonly arpSentAt = new Map<number, number>();
  private arpTimer: NodeJS.Timeout | null = null;
  private readonly runScheduled = (): void => {
    this.scheduled = false;
    this.flush();
  };

  constructor(opts: GuestOutputOptions) {
    this.gatewayMac = Uint8Array.prototype.slice.call(opts.gatewayMac, 0, 6) as Uint8Array;
    this.mtu = opts.mtu;
    this.checksumOffload = opts.checksumOffload ?? false;
    this.tsoOffload = opts.tsoOffload ?? false;
    this.stage = opts.meter.stage(NAT_OUTPUT_RX);
    this.gatewayIp = opts.gatewayIp ?? 0;
    this.resolvable = opts.resolvable ?? (() => true);
    this.neighbors.onLearn4 = (ip) => this.resolved(ip);
    const n = Math.max(4, opts.poolSize ?? DEFAULT_POOL_SIZE);
    const arena = new ArrayBuffer(n * SLOT_SIZE);
    for (let i = 0; i < n; i++) {
      const slot = new OutSlot(new Uint8Array(arena, i * SLOT_SIZE, SLOT_SIZE));
      this.slots.push(slot);
    }
    for (let i = n - 1; i >= 0; i--) this.free.push(this.slots[i]);
  }

  /** The frontend's offloads (virtio: what the driver negotiated; netns tap: both). */
  setOffloads(checksum: boolean, tso: boolean): void {
    this.checksumOffload = checksum;
    this.tsoOffload = tso;
  }

  /** Where flushed frames go (the NatStack's receive handler). */
  onDeliver(handler: FrameHandler): void {
    this.handler = handler;
  }

  get maxL4Length(): number {
    return this.tsoOffload ? 65535 - IPV4_HLEN : this.mtu - IPV4_HLEN;
  }

  get available(): number {
    return this.guestFull ? 0 : this.free.length;
  }

  /** Follow a guest port's RxBackpressure (null: none). */
  setPressure(p: RxBackpressure | null): void {
    this.pressure?.off('rx-unblocked', this.onUnblocked);
    this.pressure = p;
    p?.on('rx-unblocked', this.onUnblocked);
    if (p === null || !p.rxBlocked) this.onUnblocked();
  }

  /** The guest port said it is full and has not said otherwise since. */
  get guestBlocked(): boolean {
    return this.guestFull;
  }

  onGuestUnblocked(listener: () => void): void {
    this.unblockedListeners.push(listener);
  }

  get poolSize(): number {
    return this.slots.length;
  }

  /** Frames queued and not yet flushed. */
  get queued(): number {
    return this.pending.length;
  }

  begin(family: Family, src: Uint8Array, dst: Uint8Array, protocol: number, ttl: number, l4Length: number): OutFrame | null {
    return this.beginTo(null, family, src, dst, protocol, ttl, l4Length);
  }

  /** Like `begin`, to an explicit Ethernet destination (DHCP replies to a client's chaddr). */
  beginTo(
    mac: Uint8Array | null,
    family: Family,
    src: Uint8Array,
    dst: Uint8Array,
    protocol: number,
    ttl: number,
    l4Length: number,
    tos = 0,
  ): OutFrame | null {
    if (!this.fits(family, l4Length)) return null;
    const slot = this.take();
    if (!slot) return null;
    this.writeHeaders(slot, mac, family, src, dst, protocol, ttl, l4Length, tos);
    return slot;
  }

  /**
   * A slot whose headers are written later (`finish`): for data received from a host socket
   * straight into the frame (`receiveView`), before its length and source are known.
   */
  reserve(family: Family): OutFrame | null {
    const slot = this.take();
    if (!slot) return null;
    slot.l4Offset = ETH_HLEN + (family === 4 ? IPV4_HLEN : IPV6_HLEN);
    return slot;
  }

  /** The slot's buffer from `offset` (≥ its l4Offset) to its end. No allocation once warm. */
  receiveView(o: OutFrame, offset: number): Uint8Array {
    return (o as OutSlot).from(offset);
  }

  /** Write the headers of a `reserve`d frame. False (the slot is freed) when it cannot be sent. */
  finish(
    o: OutFrame,
    mac: Uint8Array | null,
    family: Family,
    src: Uint8Array,
    dst: Uint8Array,
    protocol: number,
    ttl: number,
    l4Length: number,
    tos = 0,
  ): boolean {
    if (!this.fits(family, l4Length)) {
      this.abort(o);
      return false;
    }
    this.writeHeaders(o as OutSlot, mac, family, src, dst, protocol, ttl, l4Length, tos);
    return true;
  }

  private fits(family: Family, l4Length: number): boolean {
    const l3Len = family === 4 ? IPV4_HLEN : IPV6_HLEN;
    if (l4Length < 0 || (family === 4 ? l3Len + l4Length : l4Length) > 65535) {
      this.stage.dropped('too-long');
      return false;
    }
    return true;
  }

  private writeHeaders(
    slot: OutSlot,
    mac: Uint8Array | null,
    family: Family,
    src: Uint8Array,
    dst: Uint8Array,
    protocol: number,
    ttl: number,
    l4Length: number,
    tos: number,
  ): void {
    const l3Len = family === 4 ? IPV4_HLEN : IPV6_HLEN;
    const b = slot.buf;
    slot.unresolved = -1;
    if (!mac) {
      mac = this.destinationMac(family, dst);
      if (mac === null) {
        slot.unresolved = readIpv4(dst);
        mac = BROADCAST; // placeholder until ARP answers
      }
    }
    this.writeEthernet(b, mac, family === 4 ? ETHERTYPE_IPV4 : ETHERTYPE_IPV6);
    const o = ETH_HLEN;
    if (family === 4) {
      const total = IPV4_HLEN + l4Length;
      const id = this.ipId;
      this.ipId = (id + 1) & 0xffff;
      b[o] = 0x45;
      b[o + 1] = tos;
      b[o + 2] = total >>> 8;
      b[o + 3] = total & 0xff;
      b[o + 4] = id >>> 8;
      b[o + 5] = id & 0xff;
      b[o + 6] = 0x40; // DF: we do our own segmentation/fragmentation (RFC 1191)
      b[o + 7] = 0;
      b[o + 8] = ttl;
      b[o + 9] = protocol;
      b[o + 10] = 0;
      b[o + 11] = 0;
      for (let i = 0; i < 4; i++) {
        b[o + 12 + i] = src[i];
        b[o + 16 + i] = dst[i];
      }
      const c = internetChecksum(b, o, IPV4_HLEN);
      b[o + 10] = c >>> 8;
      b[o + 11] = c & 0xff;
    } else {
      b[o] = 0x60 | (tos >>> 4);
      b[o + 1] = (tos & 0x0f) << 4;
      b[o + 2] = 0;
      b[o + 3] = 0;
      b[o + 4] = l4Length >>> 8;
      b[o + 5] = l4Length & 0xff;
      b[o + 6] = protocol;
      b[o + 7] = ttl;
      for (let i = 0; i < 16; i++) {
        b[o + 8 + i] = src[i];
        b[o + 24 + i] = dst[i];
      }
    }
    slot.l4Offset = o + l3Len;
    slot.setLength(o + l3Len + l4Length);
    if (observing.on) tracer.pass(this.stage, 1, o + l3Len + l4Length); // the header build, in this frame's journey
  }

  /** A raw Ethernet frame (ARP): header written, payload of `length` bytes at `l4Offset` (14). */
  beginEthernet(dstMac: Uint8Array, etherType: number, length: number): OutFrame | null {
    if (length < 0 || ETH_HLEN + length > SLOT_SIZE) return null;
    const slot = this.take();
    if (!slot) return null;
    this.writeEthernet(slot.buf, dstMac, etherType);
    slot.l4Offset = ETH_HLEN;
    slot.setLength(ETH_HLEN + length);
    return slot;
  }

  commit(o: OutFrame): void {
    const slot = o as OutSlot;
    if (observing.on) tracer.commitBuild(slot.frame);
    if (slot.unresolved >= 0) {
      const mac = this.neighbors.lookup4(slot.unresolved);
      if (mac) {
        for (let i = 0; i < 6; i++) slot.buf[i] = mac[i];
        slot.unresolved = -1;
      } else {
        return this.park(slot);
      }
    }
    this.enqueue(slot);
  }

  private enqueue(slot: OutSlot): void {
    this.pending.push(slot.frame);
    this.pendingSlots.push(slot);
    if (this.holdDepth === 0 && !this.flushing && !this.scheduled) {
      this.scheduled = true;
      setImmediate(this.runScheduled);
    }
  }

  abort(o: OutFrame): void {
    if (observing.on) tracer.abortBuild((o as OutSlot).frame);
    this.free.push(o as OutSlot);
  }

  /** Defer flushing until the matching `release` (the stack brackets each input batch). */
  hold(): void {
    this.holdDepth++;
  }

  release(): void {
    if (this.holdDepth > 0) this.holdDepth--;
    if (this.holdDepth === 0) this.flush();
  }

  flush(): void {
    if (this.flushing) return; // the running flush picks up what was committed meanwhile
    this.flushing = true;
    try {
      while (this.pending.length > 0) {
        const frames = this.pending;
        const slots = this.pendingSlots;
        this.pending = this.spare;
        this.pendingSlots = this.spareSlots;
        let bytes = 0;
        for (let i = 0; i < frames.length; i++) bytes += frames[i].data.length;
        const tracing = observing.on;
        if (tracing) {
          tracer.hold(); // a batch: its counts belong to no one frame
          for (let i = 0; i < frames.length; i++) tracer.hopFor(frames[i], this.stage);
        }
        this.stage.pass(frames.length, bytes);
        try {
          this.handler(frames);
        } catch (err) {
          // A receiver must not throw; if one does, the frames are lost, the stack goes on.
          if (this.stage.dropped('handler-threw')) log.error({ err }, 'guest port handler threw; frames dropped');
        }
        if (this.pressure !== null && this.pressure.rxBlocked) this.guestFull = true;
        if (tracing) {
          // journeys a frontend did not finish itself (no egress trace calls) end here
          for (let i = 0; i < frames.length; i++) tracer.handedOff(frames[i]);
          tracer.unhold();
        }
        for (let i = slots.length - 1; i >= 0; i--) this.free.push(slots[i]);
        frames.length = 0;
        slots.length = 0;
        this.spare = frames;
        this.spareSlots = slots;
      }
    } finally {
      this.flushing = false;
    }
  }

  /**
   * Send an IPv4 packet whose transport part (`head` then `body`) exceeds the MTU as
   * fragments (RFC 791 §3.2; each fragment's data a multiple of 8 bytes). Used for UDP replies
   * larger than the guest's MTU. Transport checksum must already be in `head`. Returns false
   * when the pool could not take every fragment (then none is sent).
   */
  sendFragmented4(src: Uint8Array, dst: Uint8Array, protocol: number, ttl: number, head: Uint8Array, body: Uint8Array, copyStage: Stage): boolean {
    const total = head.length + body.length;
    const per = Math.max(8, ((this.mtu - IPV4_HLEN) >>> 3) << 3);
    const count = Math.ceil(total / per);
    if (count > this.free.length) this.flushIfIdle();
    if (count > this.free.length || IPV4_HLEN + total > 65535) {
      this.stage.dropped('fragments-no-room');
      return false;
    }
    const id = this.ipId;
    this.ipId = (id + 1) & 0xffff;
    for (let off = 0; off < total; off += per) {
      const len = Math.min(per, total - off);
      const o = this.begin(4, src, dst, protocol, ttl, len) as OutSlot;
      const b = o.buf;
      const l3 = ETH_HLEN;
      b[l3 + 4] = id >>> 8;
      b[l3 + 5] = id & 0xff;
      const fragWord = (off >>> 3) | (off + len < total ? 0x2000 : 0);
      b[l3 + 6] = fragWord >>> 8;
      b[l3 + 7] = fragWord & 0xff;
      b[l3 + 10] = 0;
      b[l3 + 11] = 0;
      const c = internetChecksum(b, l3, IPV4_HLEN);
      b[l3 + 10] = c >>> 8;
      b[l3 + 11] = c & 0xff;
      // Copy the slice [off, off+len) of head ++ body.
      let at = o.l4Offset;
      let from = off;
      const end = off + len;
      if (from < head.length) {
        const n = Math.min(head.length, end) - from;
        copyBytes(copyStage, head.subarray(from, from + n), b, at);
        at += n;
        from += n;
      }
      if (from < end) copyBytes(copyStage, body.subarray(from - head.length, end - head.length), b, at);
      this.commit(o);
    }
    return true;
  }

  private take(): OutSlot | null {
    let slot = this.free.pop();
    if (!slot) {
      this.flushIfIdle();
      slot = this.free.pop();
      if (!slot) {
        this.stage.dropped('pool-exhausted');
        return null;
      }
    }
    if (observing.on) tracer.openBuild(slot.frame); // a journey of its own until commit/abort
    return slot;
  }

  /** Flush now to recycle buffers, unless a flush is already running (then nothing returns yet). */
  private flushIfIdle(): void {
    if (!this.flushing && this.pending.length > 0) this.flush();
  }

  /** The MAC for `dst`; null for an IPv4 unicast address not resolved yet. */
  private destinationMac(family: Family, dst: Uint8Array): Uint8Array | null {
    if (family === 4) {
      const ip = readIpv4(dst);
      const mac = this.neighbors.lookup4(ip);
      if (mac) return mac;
      if (ip === 0xffffffff || ip >>> 28 === 0xe || !this.resolvable(ip)) return BROADCAST;
      return null;
    }
    if (dst[0] === 0xff) {
      // RFC 2464 §7: 33:33 + the low 32 bits of the multicast address.
      const m = MULTICAST6;
      m[2] = dst[12];
      m[3] = dst[13];
      m[4] = dst[14];
      m[5] = dst[15];
      return m;
    }
    return this.neighbors.lookup6(dst) ?? BROADCAST;
  }

  /**
   * Keep a frame whose destination MAC is unknown until ARP answers (a guest whose TCP would
   * drop a unicast segment in a link-layer broadcast — RFC 1122 §3.3.6 lets it). At most
   * MAX_UNRESOLVED frames wait, each at most UNRESOLVED_MS; the oldest goes first when full.
   */
  private park(slot: OutSlot): void {
    const now = Date.now();
    slot.waitingSince = now;
    if (this.unresolved.length >= MAX_UNRESOLVED) {
      this.free.push(this.unresolved.shift()!);
      this.stage.dropped('unresolved-overflow');
    }
    this.unresolved.push(slot);
    const last = this.arpSentAt.get(slot.unresolved);
    if (last === undefined || now - last >= ARP_RETRY_MS) {
      this.arpSentAt.set(slot.unresolved, now);
      this.arpRequest(slot.unresolved);
    }
    if (!this.arpTimer) {
      this.arpTimer = setInterval(() => this.expireUnresolved(), ARP_RETRY_MS);
      this.arpTimer.unref();
    }
  }

  private arpRequest(ip: number): void {
    const o = this.beginEthernet(BROADCAST, ETHERTYPE_ARP, 28);
    if (!o) return;
    const b = o.buf;
    const at = o.l4Offset;
    b.fill(0, at, at + 28);
    b[at + 1] = 1; // Ethernet
    b[at + 2] = 0x08; // IPv4
    b[at + 4] = 6;
    b[at + 5] = 4;
    b[at + 7] = 1; // request (RFC 826)
    for (let i = 0; i < 6; i++) b[at + 8 + i] = this.gatewayMac[i];
    writeIpv4(b, at + 14, this.gatewayIp);
    writeIpv4(b, at + 24, ip);
    if (observing.on) tracer.commitBuild(o.frame);
    this.enqueue(o as OutSlot);
  }

  /** `ip` was learned: send what waited for it. */
  private resolved(ip: number): void {
    this.arpSentAt.delete(ip);
    if (this.unresolved.length === 0) return;
    const mac = this.neighbors.lookup4(ip);
    if (!mac) return;
    let kept = 0;
    for (let i = 0; i < this.unresolved.length; i++) {
      const slot = this.unresolved[i];
      if (slot.unresolved === ip) {
        for (let k = 0; k < 6; k++) slot.buf[k] = mac[k];
        slot.unresolved = -1;
        this.enqueue(slot);
      } else {
        this.unresolved[kept++] = slot;
      }
    }
    this.unresolved.length = kept;
  }

  private expireUnresolved(): void {
    const now = Date.now();
    let kept = 0;
    for (let i = 0; i < this.unresolved.length; i++) {
      const slot = this.unresolved[i];
      if (now - slot.waitingSince >= UNRESOLVED_MS) {
        this.free.push(slot);
        this.stage.dropped('unresolved-timeout');
      } else {
        this.unresolved[kept++] = slot;
        const last = this.arpSentAt.get(slot.unresolved) ?? 0;
        if (now - last >= ARP_RETRY_MS) {
          this.arpSentAt.set(slot.unresolved, now);
          this.arpRequest(slot.unresolved);
        }
      }
    }
    this.unresolved.length = kept;
    if (kept === 0) {
      this.arpSentAt.clear();
      if (this.arpTimer) clearInterval(this.arpTimer);
      this.arpTimer = null;
    }
  }

  /** Stop timers and give back parked frames (the stack is closing). */
  close(): void {
    if (this.arpTimer) clearInterval(this.arpTimer);
    this.arpTimer = null;
    for (const slot of this.unresolved) this.free.push(slot);
    this.unresolved.length = 0;
  }

  private writeEthernet(b: Uint8Array, dstMac: Uint8Array, etherType: number): void {
    const g = this.gatewayMac;
    for (let i = 0; i < 6; i++) {
      b[i] = dstMac[i];
      b[6 + i] = g[i];
    }
    b[12] = etherType >>> 8;
    b[13] = etherType & 0xff;
  }
}

const MULTICAST6 = new Uint8Array([0x33, 0x33, 0, 0, 0, 0]);
const MAX_UNRESOLVED = 64;
const UNRESOLVED_MS = 3000;
const ARP_RETRY_MS = 1000;

/**
 * Fill the transport checksum of a frame from `begin`, the way the guest wants it: with
 * checksum offload, the pseudo-header sum goes in the field and the frame is marked
 * VNET_F_NEEDS_CSUM (the guest — or the kernel behind a tap — finishes it); otherwise the full
 * checksum is computed here. `field` is the checksum's offset in the transport header (TCP 16,
 * UDP 6, ICMP 2). ICMPv4 has no pseudo-header and is always computed (its packets are small).
 */
export function finishTransportChecksum(out: GuestOutput, o: OutFrame, field: number): void {
  const b = o.buf;
  const l4 = o.l4Offset;
  const len = o.frame.data.length - l4;
  const v4 = b[ETH_HLEN] >>> 4 === 4;
  const protocol = v4 ? b[ETH_HLEN + 9] : b[ETH_HLEN + 6];
  b[l4 + field] = 0;
  b[l4 + field + 1] = 0;
  // Pseudo-header (RFC 768 / RFC 793 / RFC 8200 §8.1): the addresses straight from the IP
  // header we wrote, plus protocol and transport length.
  let pseudo = 0;
  if (!v4) pseudo = onesSum(b, ETH_HLEN + 8, 32) + protocol + (len >>> 16) + (len & 0xffff);
  else if (protocol !== IP_PROTO_ICMP) pseudo = onesSum(b, ETH_HLEN + 12, 8) + protocol + len;
  if (out.checksumOffload && !(v4 && protocol === IP_PROTO_ICMP)) {
    const p = fold16(pseudo);
    b[l4 + field] = p >>> 8;
    b[l4 + field + 1] = p & 0xff;
    const f = o.frame;
    f.flags |= VNET_F_NEEDS_CSUM;
    f.csumStart = l4;
    f.csumOffset = field;
    if (f.gsoType === GSO_NONE) f.hdrLen = 0;
    return;
  }
  let c = internetChecksum(b, l4, len, pseudo);
  if (c === 0 && protocol === IP_PROTO_UDP) c = 0xffff; // RFC 768: 0 means "no checksum"
  b[l4 + field] = c >>> 8;
  b[l4 + field + 1] = c & 0xff;
}
