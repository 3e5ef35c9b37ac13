/**
 * TapPort: a Linux tap device as a Port — the one piece of tap I/O shared by the netns transport
 * (transports/netns-tap.ts: the namespace's kernel is the "guest") and the bridged backend
 * (backends/tap.ts: the kernel is the network the guests are bridged onto).
 *
 * Device (Documentation/networking/tuntap.rst; include/uapi/linux/if_tun.h; protocols.md §6):
 * IFF_TAP | IFF_NO_PI | IFF_VNET_HDR with TUNSETVNETHDRSZ 12, so every read and every write is
 * one Ethernet frame preceded by a 12-byte virtio_net_hdr (virtio 1.x §5.1.6; num_buffers is
 * carried and ignored). TUNSETOFFLOAD says what *we* accept on read: with TUN_F_CSUM the kernel
 * may hand us NEEDS_CSUM frames, with TSO4/TSO6 up-to-64 KiB GSO frames, with TSO_ECN GSO frames
 * with CWR set, with UFO UDP GSO frames; without them it checksums and segments before we see
 * the frame. Writing is not limited by the mask: a NEEDS_CSUM or GSO frame written with its
 * header is finished by the kernel (segmented and checksummed on its way out, or delivered
 * whole to a local socket). `setOffload` may be called at any time (a guest renegotiating).
 *
 * Reading: one FdWatcher (uv_poll, level triggered) on the non-blocking fd. On readiness a
 * FrameSlab takes up to `batch` frames in one call into C (readFrames), the batch goes to the
 * receive handler as one call, and this repeats up to `burst` times per wakeup (the event loop
 * stays fair), ending early when the tap is empty. Frames are views into the slab, valid only
 * during the handler call (frame.ts ownership rule); Frame objects are reused slot by slot and
 * a slot's view is remade only when its length changes. `pauseReading()` stops the watcher —
 * the kernel's tap queue (txqueuelen frames) is then the only buffer and the kernel drops
 * beyond it (counted by the kernel as the tap's tx_dropped), as a NIC whose ring is full; the
 * holder calls `resumeReading()` when its receiver can take frames again.
 *
 * Writing: `send(frames)` writes the batch with one writeFrames call (a writev of [vnet header,
 * frame] per frame; the headers are preallocated, the frame bytes are the caller's views — no
 * copy in usernet). Backpressure: a write that would block (EAGAIN) drops that frame and the
 * rest of the batch, counted as `tap-full`; a frame the kernel refuses (EINVAL: a vnet header it
 * does not accept, EMSGSIZE …) is dropped alone, counted by errno, and the batch goes on.
 *
 * Meter stages `<prefix>.read` and `<prefix>.write` (prefix `tap`): frames, bytes, one copy per
 * frame (the kernel's, kernel ↔ slab / caller views), time in the syscalls, drops by reason.
 * A read error other than EAGAIN (the device was removed, its namespace died) ends the port:
 * `down` resolves with the error and the port closes itself. `close()` closes the fd, which
 * removes a non-persistent device with its addresses and routes.
 *
 * States: READING ⇄ PAUSED (pauseReading/resumeReading) → CLOSED (close, or a read error).
 */
import { log, logOnce } from '../log';
import { GSO_NONE, VNET_HDR_LEN, readVnetHeader, writeVnetHeader, type Frame } from './frame';
import { DISCARD, type FrameHandler, type Port } from './port';
import { globalMeter, observing, type Meter, type Stage } from '../meter/meter';
import { tracer } from '../meter/trace';
import { tapOpen, tapSetOffload, tapSetVnetHdrSize } from '../native/tap';
import { FrameSlab, writeFrames } from '../native/io';
import { FdWatcher } from '../native/watcher';
import type { OwnedFd } from '../native/fd';
import { hasCode } from '../native/errors';
import { netnsPath } from '../native/netns';
import {
  IFF_NO_PI,
  IFF_TAP,
  IFF_VNET_HDR,
  POLL_READABLE,
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO6,
  TUN_F_TSO_ECN,
  TUN_F_UFO,
} from '../native/constants';

/** Largest frame we accept from the tap: a 64 KiB IP packet + Ethernet/VLAN header, rounded up. */
export const TAP_MAX_FRAME = 65536 + 14 + 4 + 60;
const SLOT_SIZE = VNET_HDR_LEN + TAP_MAX_FRAME;
const EAGAIN = 11;
const EMPTY = new Uint8Array(0);

/** Every offload a tap reader can accept that usernet's Frames can describe. */
export const TAP_ALL_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO;

/**
 * TUNSETOFFLOAD with `mask`, falling back bit by bit (UFO, then TSO_ECN) when the kernel refuses
 * one (EINVAL: unknown to this kernel). TSO bits without TUN_F_CSUM mean nothing to the kernel,
 * so they are cleared. Returns the mask in effect.
 */
export function setTapOffload(fd: OwnedFd, mask: number): number {
  let want = mask & TAP_ALL_OFFLOADS;
  if ((want & TUN_F_CSUM) === 0) want = 0;
  if ((want & (TUN_F_TSO4 | TUN_F_TSO6)) === 0) want &= ~TUN_F_TSO_ECN;
  for (const drop of [0, TUN_F_UFO, TUN_F_TSO_ECN]) {
    want &= ~drop;
    try {
      tapSetOffload(fd, want);
      return want;
    } catch (err) {
      if (!hasCode(err, 'EINVAL')) throw err;
    }
  }
  tapSetOffload(fd, want & (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6));
  return want & (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6);
}

export interface TapDeviceSpec {
  /** Interface name (at most 15 bytes); '' lets the kernel choose (tap0, tap1 …). */
  ifName: string;
  /** Create the device inside this namespace: a name (ip netns), a PID or a path. */
  netns?: string | number | null;
  /** TUNSETOFFLOAD mask to start with (TUN_F_*). */
  offload: number;
}

export interface OpenedTap {
  fd: OwnedFd;
  ifName: string;
  offload: number;
}

/**
 * Create (or attach to a persistent) tap with a 12-byte vnet header and the offload mask; on any
 * failure nothing stays open and the error (with `code`) is thrown.
 */
export function openTapDevice(spec: TapDeviceSpec): OpenedTap {
  if (Buffer.byteLength(spec.ifName) > 15) {
    throw Object.assign(new Error(`tap name "${spec.ifName}" is longer than 15 bytes`), { code: 'EINVAL' });
  }
  const { fd, name } = tapOpen(spec.ifName, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, netnsPath(spec.netns));
  try {
    tapSetVnetHdrSize(fd, VNET_HDR_LEN);
    const offload = setTapOffload(fd, spec.offload);
    return { fd, ifName: name, offload };
  } catch (err) {
    fd.close();
    throw err;
  }
}

export interface TapPortOptions {
  /** Port name (logs, stats). */
  name: string;
  /** Frames read per call into C. Default 64 (at most 1024). */
  batch?: number;
  /** Read batches per readiness callback before yielding to the event loop. Default 8. */
  burst?: number;
  meter?: Meter;
  /** Meter stage prefix: `<prefix>.read`, `<prefix>.write`. Default `tap`. */
  stagePrefix?: string;
}

export class TapPort implements Port {
  readonly name: string;
  /** The interface name the kernel gave the tap. */
  readonly ifName: string;
  /** Resolves (never rejects) when the device stopped working or the port was closed. */
  readonly down: Promise<Error | null>;

  protected handler: FrameHandler = DISCARD;
  protected readonly fd: OwnedFd;
  protected readonly readStage: Stage;
  protected readonly writeStage: Stage;
  private offloadMask: number;
  private readonly watcher: FdWatcher;
  private readonly batch: number;
  private readonly burst: number;

  private readonly slab: FrameSlab;
  private readonly rxFrames: Frame[] = [];
  private readonly rxBatch: Frame[] = [];

  private headers: Uint8Array[] = [];
  private parts: (Uint8Array | null)[] = [];
  private readonly writeStatus = new Int32Array(2);

  private paused = false;
  private closed = false;
  private resolveDown: (e: Error | null) => void = () => {};

  constructor(tap: OpenedTap, opts: TapPortOptions) {
    this.fd = tap.fd;
    this.ifName = tap.ifName;
    this.offloadMask = tap.offload;
    this.name = opts.name;
    const meter = opts.meter ?? globalMeter;
    const prefix = opts.stagePrefix ?? 'tap';
    this.readStage = meter.stage(`${prefix}.read`);
    this.writeStage = meter.stage(`${prefix}.write`);
    this.batch = Math.max(1, Math.min(opts.batch ?? 64, 1024));
    this.burst = Math.max(1, opts.burst ?? 8);
    this.slab = new FrameSlab(this.batch, SLOT_SIZE);
    for (let i = 0; i < this.batch; i++) {
      this.rxFrames.push({ data: EMPTY, flags: 0, gsoType: GSO_NONE, gsoSize: 0, hdrLen: 0, csumStart: 0, csumOffset: 0 });
    }
    this.growWriteBuffers(64);
    this.down = new Promise((resolve) => (this.resolveDown = resolve));
    this.watcher = new FdWatcher(this.fd, (events: number, status: number) => this.onReadable(events, status));
    this.watcher.start(POLL_READABLE);
  }

  /** The TUNSETOFFLOAD mask in effect (TUN_F_*). */
  get offload(): number {
    return this.offloadMask;
  }

  /** Change what the kernel may hand us (TUN_F_*); returns the mask in effect. */
  setOffload(mask: number): number {
    if (this.closed) return this.offloadMask;
    this.offloadMask = setTapOffload(this.fd, mask);
    return this.offloadMask;
  }

  get readingPaused(): boolean {
    return this.paused;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Stop reading: frames wait in (and beyond its length are dropped by) the kernel's tap queue. */
  pauseReading(): void {
    if (this.closed || this.paused) return;
    this.paused = true;
    this.watcher.stop();
  }

  /** Read again (level triggered: whatever waits in the kernel queue comes next turn). */
  resumeReading(): void {
    if (this.closed || !this.paused) return;
    this.paused = false;
    this.watcher.start(POLL_READABLE);
  }

  onReceive(handler: FrameHandler): void {
    this.handler = handler;
  }

  private onReadable(_events: number, status: number): void {
    if (this.closed || this.paused) return;
    // POLLERR (libuv stopped the watcher): watch again; the read below says what is wrong
    if (status < 0) this.watcher.start(POLL_READABLE);
    const stage = this.readStage;
    const slab = this.slab;
    const frames = this.rxFrames;
    const batchOut = this.rxBatch;
    for (let round = 0; round < this.burst; round++) {
      const t0 = stage.start();
      const n = slab.read(this.fd, this.batch);
      stage.stop(t0);
      let bytes = 0;
      batchOut.length = 0;
      for (let i = 0; i < n; i++) {
        const len = slab.lengths[i] - VNET_HDR_LEN;
        if (len < 14) {
          if (stage.dropped('runt')) logOnce(`${this.name}.read.runt`, `${this.name}: frame shorter than an Ethernet header`, { len });
          continue;
        }
        const slot = slab.slots[i];
        const f = frames[i];
        if (f.data.length !== len || f.data.buffer !== slot.buffer || f.data.byteOffset !== slot.byteOffset + VNET_HDR_LEN) {
          f.data = slot.subarray(VNET_HDR_LEN, VNET_HDR_LEN + len);
        }
        readVnetHeader(slot, 0, f);
        batchOut.push(f);
        bytes += len;
        if (observing.on) tracer.ingress(f, stage, len);
      }
      if (batchOut.length > 0) {
        stage.pass(batchOut.length, bytes);
        stage.copiedMany(batchOut.length, bytes); // the kernel's copy, tap queue → slab
        try {
          this.handler(batchOut);
        } catch (err) {
          if (stage.dropped('handler-threw')) log.error({ port: this.name, err: (err as Error).message, stack: (err as Error).stack }, 'tap: receive handler threw');
        }
        batchOut.length = 0;
      }
      if (this.closed) return;
      const errno = slab.status[0];
      if (errno !== 0 && errno !== EAGAIN) {
        this.fail(Object.assign(new Error(`tap ${this.ifName}: read failed (errno ${errno})`), { code: 'EIO', errno }));
        return;
      }
      if (n < this.batch || this.paused) return; // drained, or the receiver asked us to hold off
    }
  }

  send(frames: readonly Frame[]): void {
    const n = frames.length;
    if (n === 0) return;
    const stage = this.writeStage;
    if (this.closed) {
      for (let i = 0; i < n; i++) stage.dropped('closed');
      return;
    }
    if (n > this.headers.length) this.growWriteBuffers(n);
    const parts = this.parts;
    const headers = this.headers;
    for (let i = 0; i < n; i++) {
      const f = frames[i];
      const h = headers[i];
      writeVnetHeader(f, h, 0); // num_buffers (bytes 10-11) stays 0
      parts[2 * i] = h;
      parts[2 * i + 1] = f.data;
    }
    const tracing = observing.on;
    if (tracing) tracer.hold(); // the batch's counts below belong to no one frame's journey
    const t0 = stage.start();
    let from = 0;
    while (from < n) {
      let done: number;
      try {
        done = writeFrames(this.fd, from === 0 ? parts : parts.slice(2 * from, 2 * n), 2, n - from, this.writeStatus);
      } catch (err) {
        done = 0;
        this.writeStatus[0] = -1;
        logOnce(`${this.name}.write-error`, `${this.name}: tap write failed`, { err: (err as Error).message });
      }
      let written = 0;
      for (let i = from; i < from + done; i++) written += frames[i].data.length;
      stage.pass(done, written);
      stage.copiedMany(done, written); // the kernel's copy, frame → tap
      if (tracing) for (let i = from; i < from + done; i++) tracer.egress(frames[i], stage, frames[i].data.length);
      from += done;
      if (from >= n) break;
      const errno = this.writeStatus[0];
      if (errno === EAGAIN) {
        // the device cannot take more now: the rest of the batch is dropped, as by a full NIC
        for (; from < n; from++) stage.dropped('tap-full');
        break;
      }
      // this one frame was refused (bad vnet header, too long, device down …): drop it, go on
      const reason = errno === -1 ? 'write-error' : `errno-${errno}`;
      if (stage.dropped(reason)) logOnce(`${this.name}.write.${reason}`, `${this.name}: the kernel refused a frame; dropped`, { errno, len: frames[from].data.length, gsoType: frames[from].gsoType });
      from++;
    }
    stage.stop(t0);
    if (tracing) tracer.unhold();
    for (let i = 0; i < 2 * n; i++) parts[i] = null; // do not keep borrowed frames alive
  }

  private growWriteBuffers(n: number): void {
    let size = Math.max(this.headers.length, 16);
    while (size < n) size *= 2;
    const slab = new Uint8Array(size * VNET_HDR_LEN);
    this.headers = [];
    for (let i = 0; i < size; i++) this.headers.push(slab.subarray(i * VNET_HDR_LEN, (i + 1) * VNET_HDR_LEN));
    this.parts = new Array<Uint8Array | null>(size * 2).fill(null);
  }

  protected fail(err: Error): void {
    log.warn({ port: this.name, err: err.message }, 'tap device failed; closing the port');
    void this.close(err);
  }

  /** Stop reading, close the tap fd (a non-persistent device vanishes with it). Idempotent. */
  async close(reason: Error | null = null): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watcher.close();
    this.fd.close();
    this.handler = DISCARD;
    this.resolveDown(reason);
  }
}
