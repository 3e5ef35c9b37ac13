/**
 * VirtioNetDevice: the virtio-net device model (virtio 1.x §5.1) over split virtqueues in guest
 * memory, as a Port: `send(frames)` puts frames into the guest's receive queue (RX, queue 0);
 * frames the guest transmits (TX, queue 1) go to the `onReceive` handler. Transport-neutral: a
 * transport (vhost-user today) feeds it the negotiated features, queue setup, kicks, and a
 * "call" function per queue that interrupts the guest.
 *
 * Header (§5.1.6): 12 bytes (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
 * num_buffers) with VERSION_1 or MRG_RXBUF, else 10. It maps one-to-one onto Frame metadata.
 *
 * TX (§5.1.6.2): each chain = header + one Ethernet frame, possibly scattered. The frame becomes
 * one Frame whose `data` is a view of guest memory when its bytes are contiguous (one segment,
 * or adjacent segments of one region), else one metered copy into a per-batch staging arena. A
 * TSO chain stays one Frame carrying its GSO type and size. Chains are collected into a batch
 * (up to TX_BATCH frames), handed to the handler in one call, and only then returned to the guest
 * as used — the views stay valid for exactly the handler call. One used.idx publish and at most
 * one interrupt per batch. Frames using an offload the guest did not negotiate, or with
 * impossible checksum offsets, or too short/long, are dropped and counted (`guest.tx` drops);
 * their chains are still returned.
 *
 * RX (§5.1.6.3–5.1.6.4): each Frame is written with its vnet header into the next available
 * chain; with MRG_RXBUF a frame larger than one buffer continues into the next chains and
 * num_buffers in the first header says how many were used — all its used elements appear with
 * the same used.idx publish. A frame that does not fit the buffers available now waits in a
 * bounded backlog (one metered copy; a full backlog drops, counted `rx-backlog-full`) and the
 * device asks the guest for a kick; the kick drains the backlog. While frames wait, `rxBlocked`
 * is true and 'rx-unblocked' follows the drain (RxBackpressure: a tap stops reading instead of
 * letting the backlog overflow). Offloads the guest did not
 * accept are handled here: a partial checksum is completed, a GSO frame for a guest without the
 * matching GUEST_TSO/UFO/ECN feature is dropped (counted) — backends should read `offloads`
 * and not build them.
 *
 * Queue states come from the transport (SplitVirtqueue: ready/started/enabled). Started but
 * disabled (vhost-user SET_VRING_ENABLE 0) means RX drops and TX consumes and discards. A bad
 * chain breaks its queue (NEEDS_RESET): status gets DEVICE_NEEDS_RESET, 'needs-reset' is
 * emitted once (the transport signals the VMM), and nothing more happens on that queue until
 * the transport reconfigures it.
 *
 * Hot paths allocate nothing but the `data` view of each TX frame: Frame objects, batch arrays,
 * the staging arena and the header scratch are reused.
 */
import { EventEmitter } from 'node:events';
import {
  GSO_ECN,
  GSO_NONE,
  GSO_TCPV4,
  GSO_TCPV6,
  GSO_UDP,
  VNET_F_DATA_VALID,
  VNET_F_NEEDS_CSUM,
  readVnetHeader,
  resetFrame,
  type Frame,
} from '../../link/frame';
import { DISCARD, type FrameHandler, type Port } from '../../link/port';
import { FrameQueue } from '../../link/frame-queue';
import { globalMeter, observing, type Meter, type Stage } from '../../meter/meter';
import { DEVICE_DMA_RX, DEVICE_DMA_TX, GUEST_RX, GUEST_TX } from '../../meter/stages';
import { tracer } from '../../meter/trace';
import { log, logOnce } from '../../log';
import type { GuestMemory } from '../memory';
import type { DescriptorChain } from './descriptor-chain';
import {
  VIRTIO_F_ANY_LAYOUT,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_GUEST_UFO,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_HOST_UFO,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_S_LINK_UP,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET,
  bit,
  bits,
  featureNames,
  hasBit,
} from './features';
import { NO_OFFLOADS, type NetOffloads } from './net-offloads';
import { completeChecksum } from './partial-checksum';
import { SplitVirtqueue } from './split-ring';

export const RX_QUEUE = 0;
export const TX_QUEUE = 1;

/** Frames per TX batch handed to the handler. */
const TX_BATCH = 256;
/** Chains handled per kick before yielding to the event loop (the rest go next turn). */
const TX_BUDGET = 4096;
/** Staging arena for scattered TX frames (a batch that would overflow it is delivered first). */
const TX_ARENA_BYTES = 2 << 20;
/** Largest Ethernet frame (without vnet header) accepted from the guest: 64 KiB IP + VLAN tag. */
const MAX_TX_FRAME = 65535 + 14 + 4;

/** Features offered by default: everything this model implements. */
export const DEFAULT_NET_FEATURES: bigint = bits(
  VIRTIO_F_VERSION_1,
  VIRTIO_F_ANY_LAYOUT,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_STATUS,
);

/** Features this model can honour at all (a superset of the default offer). */
const IMPLEMENTED = DEFAULT_NET_FEATURES | bits(VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_HOST_UFO, VIRTIO_NET_F_MTU);

export interface VirtioNetOptions {
  name?: string;
  memory: GuestMemory;
  meter?: Meter;
  /** Features offered (default DEFAULT_NET_FEATURES); bits this model cannot honour are removed. */
  features?: bigint;
  /** MAC in the config space ("52:54:00:12:34:56"); default 52:54:00:12:34:56. */
  mac?: string;
  /** MTU in the config space; offering it adds VIRTIO_NET_F_MTU. */
  mtu?: number;
  /** Bytes of frames kept while the guest has no RX buffers (default 1 MiB). */
  rxBacklogBytes?: number;
}

export interface VirtioNetStats {
  txFrames: number;
  txBytes: number;
  txDrops: number;
  rxFrames: number;
  rxBytes: number;
  rxDrops: number;
  rxBacklog: number;
  notifications: number;
}

const RX_OK = 0;
const RX_DROPPED = 1;
const RX_NO_BUFFERS = 2;
const RX_BROKEN = 3;

const FILL_PLAIN = -1;
const FILL_DATA = -2;

function parseMac(s: string): Uint8Array {
  const parts = s.split(':');
  const out = new Uint8Array(6);
  if (parts.length !== 6) throw new RangeError(`bad MAC address ${s}`);
  for (let i = 0; i < 6; i++) {
    const v = Number.parseInt(parts[i], 16);
    if (!Number.isInteger(v) || v < 0 || v > 255 || !/^[0-9a-fA-F]{1,2}$/.test(parts[i])) throw new RangeError(`bad MAC address ${s}`);
    out[i] = v;
  }
  return out;
}

export class VirtioNetDevice extends EventEmitter implements Port {
  readonly name: string;
  readonly memory: GuestMemory;
  /** Features offered to the driver. */
  readonly deviceFeatures: bigint;
  /** Features the driver accepted (0 until setDriverFeatures). */
  driverFeatures = 0n;
  /** virtio device status as far as this model knows it (DEVICE_NEEDS_RESET). */
  status = 0;
  /** The virtio-net config space (§5.1.4): mac, status, max_virtqueue_pairs, mtu, speed, duplex. */
  readonly config = new Uint8Array(24);
  readonly rx: SplitVirtqueue;
  readonly tx: SplitVirtqueue;
  offloads: Readonly<NetOffloads> = NO_OFFLOADS;

  private handler: FrameHandler = DISCARD;
  private readonly notifiers: Array<() => void> = [() => {}, () => {}];
  private hdrLen = 12;
  private mergeable = false;
  private closed = false;

  // TX state, reused
  private readonly txFrames: Frame[] = [];
  private readonly txBatch: Frame[] = [];
  private readonly txArena = new Uint8Array(TX_ARENA_BYTES);
  private txArenaUsed = 0;
  private txScheduled = false;
  private readonly txContinue = (): void => {
    this.txScheduled = false;
    this.processTx();
  };
  private readonly hdrScratch = new Uint8Array(12);
  private readonly rxHeader = new Uint8Array(12);

  // RX state
  private readonly rxBacklog: FrameQueue;
  /** Where num_buffers (header bytes 10, 11) of the frame being written lives. */
  private nbBytesLo: Uint8Array = new Uint8Array(0);
  private nbOffLo = 0;
  private nbBytesHi: Uint8Array = new Uint8Array(0);
  private nbOffHi = 0;
  /** Checksum to patch into the frame being written: byte position in frame data, value; -1 none. */
  private patchAt = -1;
  private patchValue = 0;

  private readonly txStage: Stage;
  private readonly rxStage: Stage;
  /** Copies into and out of guest RAM, by direction (a contiguous TX frame is not copied). */
  private readonly dmaTx: Stage;
  private readonly dmaRx: Stage;
  private notifications = 0;

  constructor(opts: VirtioNetOptions) {
    super();
    this.name = opts.name ?? 'virtio-net';
    this.memory = opts.memory;
    const meter = opts.meter ?? globalMeter;
    this.txStage = meter.stage(GUEST_TX);
    this.rxStage = meter.stage(GUEST_RX);
    this.dmaTx = meter.stage(DEVICE_DMA_TX);
    this.dmaRx = meter.stage(DEVICE_DMA_RX);
    let features = (opts.features ?? DEFAULT_NET_FEATURES) & IMPLEMENTED;
    if (opts.mtu !== undefined) features |= bit(VIRTIO_NET_F_MTU);
    else features &= ~bit(VIRTIO_NET_F_MTU);
    this.deviceFeatures = features;
    const mac = parseMac(opts.mac ?? '52:54:00:12:34:56');
    this.config.set(mac, 0);
    const cfg = new DataView(this.config.buffer);
    cfg.setUint16(6, VIRTIO_NET_S_LINK_UP, true);
    cfg.setUint16(8, 1, true); // max_virtqueue_pairs
    cfg.setUint16(10, opts.mtu ?? 1500, true);
    cfg.setUint32(12, 0xffffffff, true); // speed unknown
    this.config[16] = 0xff; // duplex unknown
    const onError = (q: number) => (reason: string) => this.queueBroken(q, reason);
    this.rx = new SplitVirtqueue(RX_QUEUE, this.memory, { onError: onError(RX_QUEUE) });
    this.tx = new SplitVirtqueue(TX_QUEUE, this.memory, { onError: onError(TX_QUEUE) });
    for (let i = 0; i < TX_BATCH; i++) this.txFrames.push(resetFrame({} as Frame, this.hdrScratch));
    this.rxBacklog = new FrameQueue(opts.rxBacklogBytes ?? 1 << 20, this.rxStage);
  }

  // ---- Port ----

  send(frames: readonly Frame[]): void {
    const n = frames.length;
    if (n === 0) return;
    const q = this.rx;
    if (this.closed || !q.live || !q.enabled) {
      for (let i = 0; i < n; i++) this.rxStage.dropped(this.closed ? 'closed' : 'rx-not-ready');
      return;
    }
    if (this.rxBacklog.length > 0) this.drainBacklog();
    let i = 0;
    if (this.rxBacklog.length === 0) {
      for (; i < n; i++) {
        const r = this.writeRx(frames[i]);
        if (r === RX_NO_BUFFERS) break;
        if (r === RX_BROKEN) {
          for (; i < n; i++) this.rxStage.dropped('rx-queue-broken');
          break;
        }
      }
    }
    if (i < n && q.error === null) {
      for (; i < n; i++) {
        if (!this.rxBacklog.push(frames[i]) && this.rxStage.dropped('rx-backlog-full')) {
          logOnce(`${this.name}.rx-backlog-full`, `${this.name}: guest is not taking frames fast enough; dropping (counted as rx-backlog-full)`);
        }
      }
      // ask for a kick when buffers arrive; if they already did, go on right away
      if (q.enableNotifications()) this.drainBacklog();
    }
    this.publishRx();
  }

  onReceive(handler: FrameHandler): void {
    this.handler = handler;
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.reset();
      this.handler = DISCARD;
      this.emit('close');
    }
    return Promise.resolve();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  // ---- transport side ----

  /**
   * The driver's accepted features (vhost-user SET_FEATURES, or FEATURES_OK). Bits not offered
   * are ignored with a log line. Returns an error string when the set is unusable.
   */
  setDriverFeatures(features: bigint): string | null {
    const unknown = features & ~this.deviceFeatures;
    const f = features & this.deviceFeatures;
    if (unknown !== 0n) log.warn({ device: this.name, bits: featureNames(unknown) }, 'driver accepted features that were not offered; ignored');
    this.driverFeatures = f;
    const has = (n: number): boolean => hasBit(f, n);
    this.mergeable = has(VIRTIO_NET_F_MRG_RXBUF);
    this.hdrLen = has(VIRTIO_F_VERSION_1) || this.mergeable ? 12 : 10;
    for (const q of [this.rx, this.tx]) {
      q.eventIdx = has(VIRTIO_RING_F_EVENT_IDX);
      q.indirect = has(VIRTIO_RING_F_INDIRECT_DESC);
    }
    const guestCsum = has(VIRTIO_NET_F_GUEST_CSUM);
    const hostCsum = has(VIRTIO_NET_F_CSUM);
    const mtu = has(VIRTIO_NET_F_MTU) ? new DataView(this.config.buffer).getUint16(10, true) : 1500;
    const next: NetOffloads = {
      guestCsum,
      // §5.1.3.1: GUEST_TSO4/6, GUEST_UFO, GUEST_ECN require GUEST_CSUM (and ECN a TSO)
      guestTso4: guestCsum && has(VIRTIO_NET_F_GUEST_TSO4),
      guestTso6: guestCsum && has(VIRTIO_NET_F_GUEST_TSO6),
      guestUfo: guestCsum && has(VIRTIO_NET_F_GUEST_UFO),
      guestEcn: guestCsum && has(VIRTIO_NET_F_GUEST_ECN) && (has(VIRTIO_NET_F_GUEST_TSO4) || has(VIRTIO_NET_F_GUEST_TSO6)),
      hostCsum,
      hostTso4: hostCsum && has(VIRTIO_NET_F_HOST_TSO4),
      hostTso6: hostCsum && has(VIRTIO_NET_F_HOST_TSO6),
      hostUfo: hostCsum && has(VIRTIO_NET_F_HOST_UFO),
      hostEcn: hostCsum && has(VIRTIO_NET_F_HOST_ECN),
      mergeableRx: this.mergeable,
      maxRxFrame: mtu + 14,
    };
    const changed = JSON.stringify(next) !== JSON.stringify(this.offloads);
    this.offloads = Object.freeze(next);
    log.info({ device: this.name, features: featureNames(f) }, 'virtio-net features negotiated');
    if (changed) this.emit('offloads', this.offloads);
    return null;
  }

  /** The queue with virtio index `i` (0 = RX, 1 = TX), or undefined. */
  queue(i: number): SplitVirtqueue | undefined {
    return i === RX_QUEUE ? this.rx : i === TX_QUEUE ? this.tx : undefined;
  }

  /** Install the function that interrupts the guest for queue `i` (vhost-user call fd). */
  setNotifier(i: number, notify: (() => void) | null): void {
    if (i === RX_QUEUE || i === TX_QUEUE) this.notifiers[i] = notify ?? (() => {});
  }

  /** Start queue `i` and look at what the guest already posted. Returns an error or null. */
  startQueue(i: number): string | null {
    const q = this.queue(i);
    if (!q) return `no queue ${i}`;
    const err = q.start();
    if (err) return err;
    this.status &= ~VIRTIO_STATUS_DEVICE_NEEDS_RESET;
    this.kick(i);
    return null;
  }

  /** Stop queue `i`; returns the next avail index (vhost-user GET_VRING_BASE). */
  stopQueue(i: number): number {
    const q = this.queue(i);
    if (!q) return 0;
    if (i === RX_QUEUE) this.publishRx();
    return q.stop();
  }

  /** The guest notified queue `i` (kick fd readable). */
  kick(i: number): void {
    if (this.closed) return;
    if (i === TX_QUEUE) this.processTx();
    else if (i === RX_QUEUE) {
      if (this.rxBacklog.length > 0) {
        this.drainBacklog();
        this.publishRx();
      }
      if (this.rxBacklog.length === 0) this.rx.disableNotifications();
    }
  }

  /** Back to the initial state: queues unconfigured, backlog dropped, features kept offered. */
  reset(): void {
    for (const q of [this.rx, this.tx]) q.reset();
    const pending = this.rxBacklog.length;
    for (let i = 0; i < pending; i++) this.rxStage.dropped('reset');
    this.rxBacklog.clear();
    if (pending > 0) this.emit('rx-unblocked');
    this.status = 0;
  }

  /** Link state in the config space (VIRTIO_NET_S_LINK_UP). */
  setLinkUp(up: boolean): void {
    const cfg = new DataView(this.config.buffer);
    cfg.setUint16(6, (cfg.getUint16(6, true) & ~VIRTIO_NET_S_LINK_UP) | (up ? VIRTIO_NET_S_LINK_UP : 0), true);
    this.emit('config');
  }

  stats(): VirtioNetStats {
    return {
      txFrames: this.txStage.frames,
      txBytes: this.txStage.bytes,
      txDrops: this.txStage.drops,
      rxFrames: this.rxStage.frames,
      rxBytes: this.rxStage.bytes,
      rxDrops: this.rxStage.drops,
      rxBacklog: this.rxBacklog.length,
      notifications: this.notifications,
    };
  }

  // ---- TX: guest → handler ----

  private processTx(): void {
    const q = this.tx;
    if (this.txScheduled) return;
    let handled = 0;
    for (;;) {
      const head = q.pop();
      if (head < 0) {
        this.flushTx();
        if (q.error !== null || !q.enableNotifications()) return;
        continue;
      }
      if (!q.walk(head)) {
        this.flushTx();
        return;
      }
      if (q.enabled) this.takeTxChain(q.chain);
      else this.txStage.dropped('tx-queue-disabled');
      q.pushUsed(head, 0);
      if (this.txBatch.length === TX_BATCH) this.flushTx();
      if (++handled >= TX_BUDGET) {
        this.flushTx();
        this.txScheduled = true;
        setImmediate(this.txContinue);
        return;
      }
    }
  }

  /** Turn the walked chain into a Frame in the batch (or a counted drop). */
  private takeTxChain(c: DescriptorChain): void {
    const hdr = this.hdrLen;
    const total = c.readableBytes;
    const len = total - hdr;
    if (len < 14) {
      this.txDrop('tx-runt', `${this.name}: guest sent a chain of ${total} bytes, shorter than a header and an Ethernet header`);
      return;
    }
    if (len > MAX_TX_FRAME) {
      this.txDrop('tx-oversize', `${this.name}: guest sent a ${len}-byte frame, more than ${MAX_TX_FRAME}`);
      return;
    }
    if (observing.on) tracer.enter(this.txFrames[this.txBatch.length]); // DMA and guest.tx count into its journey
    // where the frame starts: segment s, offset `skip` in it
    let s = 0;
    let skip = hdr;
    while (s < c.readCount && skip >= c.length[s]) skip -= c.length[s++];
    // is [frame start, end) one contiguous run of one region's bytes?
    const bytes = c.bytes[s];
    const start = c.offset[s] + skip;
    let end = start + (c.length[s] - skip);
    for (let k = s + 1; k < c.readCount && end - start < len; k++) {
      if (c.bytes[k] !== bytes || c.offset[k] !== end) break;
      end += c.length[k];
    }
    let data: Uint8Array;
    if (end - start >= len) data = bytes.subarray(start, start + len);
    else {
      if (this.txArenaUsed + len > this.txArena.length) this.flushTx();
      const at = this.txArenaUsed;
      c.gather(hdr, len, this.txArena, at);
      this.dmaTx.copied(len);
      this.txArenaUsed = at + len;
      data = this.txArena.subarray(at, at + len);
    }
    const f = this.txFrames[this.txBatch.length];
    f.data = data;
    if (c.length[0] >= hdr) readVnetHeader(c.bytes[0], c.offset[0], f);
    else {
      c.gather(0, hdr, this.hdrScratch, 0);
      readVnetHeader(this.hdrScratch, 0, f);
    }
    // offloads the guest may only use when negotiated (§5.1.6.2.1)
    const o = this.offloads;
    if ((f.flags & VNET_F_NEEDS_CSUM) !== 0) {
      if (f.csumStart + f.csumOffset + 2 > len) {
        this.txDrop('tx-bad-csum-offsets', `${this.name}: guest frame has csum_start ${f.csumStart} + csum_offset ${f.csumOffset} beyond its ${len} bytes`);
        return;
      }
    }
    f.flags &= VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID;
    if (f.gsoType !== GSO_NONE) {
      const type = f.gsoType & ~GSO_ECN;
      const ok =
        (type === GSO_TCPV4 ? o.hostTso4 : type === GSO_TCPV6 ? o.hostTso6 : type === GSO_UDP ? o.hostUfo : false) &&
        ((f.gsoType & GSO_ECN) === 0 || o.hostEcn) &&
        f.gsoSize > 0 &&
        (f.flags & VNET_F_NEEDS_CSUM) !== 0;
      if (!ok) {
        this.txDrop('tx-gso-not-negotiated', `${this.name}: guest sent GSO type ${f.gsoType} (size ${f.gsoSize}) it did not negotiate`);
        return;
      }
    }
    this.txStage.pass(1, len);
    if (observing.on) tracer.park();
    this.txBatch.push(f);
  }

  /** Hand the batch to the handler, then return the chains to the guest and notify once. */
  private flushTx(): void {
    const batch = this.txBatch;
    if (batch.length > 0) {
      try {
        this.handler(batch);
      } catch (err) {
        logOnce(`${this.name}.tx-handler`, `${this.name}: the frame handler threw; frames dropped`, { err: String(err) });
      }
      batch.length = 0;
    }
    this.txArenaUsed = 0;
    if (this.tx.publish()) this.notify(TX_QUEUE);
  }

  private txDrop(reason: string, message: string): void {
    if (this.txStage.dropped(reason)) logOnce(`${this.name}.${reason}`, message);
    if (observing.on) tracer.done();
  }

  // ---- RX: frames → guest ----

  /** Move backlogged frames into the guest's buffers; wait for a kick when they run out. */
  private drainBacklog(): void {
    const b = this.rxBacklog;
    for (;;) {
      let done = 0;
      while (done < b.length) {
        const r = this.writeRx(b.at(done));
        if (r === RX_NO_BUFFERS) break;
        done++;
        if (r === RX_BROKEN) {
          for (let i = done; i < b.length; i++) this.rxStage.dropped('rx-queue-broken');
          done = b.length;
        }
      }
      b.shift(done);
      if (done > 0 && b.length === 0) this.emit('rx-unblocked');
      // keep going only if the guest added buffers since we last looked
      if (b.length === 0 || this.rx.error !== null || !this.rx.enableNotifications()) return;
    }
  }

  /** Frames wait for guest buffers (RxBackpressure, backends/tap.ts): a tap may stop reading. */
  get rxBlocked(): boolean {
    return this.rxBacklog.length > 0;
  }

  private publishRx(): void {
    if (this.rx.publish()) this.notify(RX_QUEUE);
  }

  /** Write one frame into the guest's RX buffers. */
  private writeRx(f: Frame): number {
    const q = this.rx;
    const o = this.offloads;
    const data = f.data;
    const len = data.length;
    let flags = f.flags;
    const gsoType = f.gsoType;
    this.patchAt = -1;
    if (gsoType !== GSO_NONE) {
      const type = gsoType & ~GSO_ECN;
      const ok =
        (type === GSO_TCPV4 ? o.guestTso4 : type === GSO_TCPV6 ? o.guestTso6 : type === GSO_UDP ? o.guestUfo : false) &&
        ((gsoType & GSO_ECN) === 0 || o.guestEcn);
      if (!ok) return this.rxDrop('rx-gso-not-negotiated', `${this.name}: backend sent a GSO frame (type ${gsoType}) the guest cannot take; dropped`);
    }
    if ((flags & VNET_F_NEEDS_CSUM) !== 0) {
      if (f.csumStart + f.csumOffset + 2 > len) return this.rxDrop('rx-bad-csum-offsets', `${this.name}: backend frame with checksum offsets beyond its end; dropped`);
      if (!o.guestCsum) {
        if (gsoType !== GSO_NONE) return this.rxDrop('rx-gso-not-negotiated', `${this.name}: GSO frame for a guest without GUEST_CSUM`);
        this.patchValue = completeChecksum(data, f.csumStart, f.csumOffset);
        this.patchAt = f.csumStart + f.csumOffset;
        flags &= ~VNET_F_NEEDS_CSUM;
      }
    }
    if (!o.guestCsum) flags &= ~VNET_F_DATA_VALID;
    flags &= VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID;
    const hdr = this.hdrLen;
    const h = this.rxHeader;
    h[0] = flags;
    h[1] = gsoType;
    h[2] = f.hdrLen & 0xff;
    h[3] = f.hdrLen >>> 8;
    h[4] = f.gsoSize & 0xff;
    h[5] = f.gsoSize >>> 8;
    h[6] = f.csumStart & 0xff;
    h[7] = f.csumStart >>> 8;
    h[8] = f.csumOffset & 0xff;
    h[9] = f.csumOffset >>> 8;
    h[10] = 1;
    h[11] = 0;
    if (gsoType === GSO_NONE) {
      h[2] = h[3] = h[4] = h[5] = 0;
      if ((flags & VNET_F_NEEDS_CSUM) === 0) h[6] = h[7] = h[8] = h[9] = 0;
    }

    if (!this.mergeable) {
      const head = q.pop();
      if (head < 0) return q.error === null ? RX_NO_BUFFERS : RX_BROKEN;
      if (!q.walk(head)) return RX_BROKEN;
      const c = q.chain;
      if (c.readCount > 0) {
        q.fail(`receive chain ${head} has device-readable descriptors`);
        return RX_BROKEN;
      }
      if (c.writableBytes < hdr + len) {
        q.unpop(1);
        return this.rxDrop('rx-buffer-too-small', `${this.name}: a ${len}-byte frame does not fit the guest's ${c.writableBytes}-byte receive buffer; dropped`);
      }
      this.fill(c, 0, h, 0, hdr, FILL_PLAIN);
      this.fill(c, hdr, data, 0, len, FILL_DATA);
      q.pushUsed(head, hdr + len);
    } else {
      let written = 0; // frame bytes written so far
      let chains = 0;
      while (chains === 0 || written < len) {
        const head = q.pop();
        if (head < 0) {
          q.unpop(chains);
          q.unpushUsed(chains);
          return q.error === null ? RX_NO_BUFFERS : RX_BROKEN;
        }
        if (!q.walk(head)) return RX_BROKEN;
        const c = q.chain;
        if (c.readCount > 0) {
          q.fail(`receive chain ${head} has device-readable descriptors`);
          return RX_BROKEN;
        }
        let at = 0;
        if (chains === 0) {
          if (c.writableBytes < hdr) {
            q.fail(`receive buffer ${head} (${c.writableBytes} bytes) cannot hold the ${hdr}-byte header`);
            return RX_BROKEN;
          }
          this.fill(c, 0, h, 0, hdr, 10); // remember where num_buffers lands
          at = hdr;
        }
        const take = Math.min(len - written, c.writableBytes - at);
        if (take > 0) this.fill(c, at, data, written, take, FILL_DATA);
        else if (chains > 0) {
          q.fail(`receive buffer ${head} is empty`);
          return RX_BROKEN;
        }
        written += take;
        chains++;
        q.pushUsed(head, at + take);
      }
      this.nbBytesLo[this.nbOffLo] = chains & 0xff;
      this.nbBytesHi[this.nbOffHi] = chains >>> 8;
    }
    this.dmaRx.copied(len);
    this.rxStage.pass(1, len);
    if (observing.on) {
      tracer.hopFor(f, this.dmaRx, len);
      tracer.egress(f, this.rxStage, 0);
    }
    return RX_OK;
  }

  /**
   * Write src[from, from+len) into the writable chain `c` starting at chain byte `at`.
   * `mark` ≥ 0 records where src bytes `mark` and `mark+1` land (num_buffers of a header);
   * FILL_DATA applies the pending checksum patch (positions in frame data); FILL_PLAIN neither.
   */
  private fill(c: DescriptorChain, at: number, src: Uint8Array, from: number, len: number, mark: number): void {
    let s = 0;
    while (s < c.count && at >= c.length[s]) at -= c.length[s++];
    let done = 0;
    const patch = mark === FILL_DATA ? this.patchAt : -1;
    while (done < len && s < c.count) {
      const room = c.length[s] - at;
      const take = room < len - done ? room : len - done;
      const dst = c.bytes[s];
      const dOff = c.offset[s] + at;
      const sOff = from + done;
      if (sOff === 0 && take === src.length) dst.set(src, dOff);
      else if (take <= 16) for (let k = 0; k < take; k++) dst[dOff + k] = src[sOff + k];
      else dst.set(src.subarray(sOff, sOff + take), dOff);
      if (mark >= 0) {
        if (mark >= sOff && mark < sOff + take) {
          this.nbBytesLo = dst;
          this.nbOffLo = dOff + (mark - sOff);
        }
        if (mark + 1 >= sOff && mark + 1 < sOff + take) {
          this.nbBytesHi = dst;
          this.nbOffHi = dOff + (mark + 1 - sOff);
        }
      } else if (patch >= 0) {
        if (patch >= sOff && patch < sOff + take) dst[dOff + (patch - sOff)] = this.patchValue >>> 8;
        if (patch + 1 >= sOff && patch + 1 < sOff + take) dst[dOff + (patch + 1 - sOff)] = this.patchValue & 0xff;
      }
      done += take;
      at = 0;
      s++;
    }
  }

  private rxDrop(reason: string, message: string): number {
    if (this.rxStage.dropped(reason)) logOnce(`${this.name}.${reason}`, message);
    return RX_DROPPED;
  }

  private notify(i: number): void {
    this.notifications++;
    try {
      this.notifiers[i]();
    } catch (err) {
      logOnce(`${this.name}.notify`, `${this.name}: notifying the guest failed`, { err: String(err) });
    }
  }

  private queueBroken(i: number, reason: string): void {
    this.status |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
    this.emit('needs-reset', i, reason);
  }
}
