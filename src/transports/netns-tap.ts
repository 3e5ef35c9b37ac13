/**
 * The netns transport (what slirp4netns and pasta do): a tap device inside a Linux network
 * namespace, opened from outside through the native addon, is a Port. The namespace's kernel
 * is the "guest": what it sends out of the tap arrives here as Frames; what usernet sends is
 * written to the tap and received by that kernel.
 *
 * Namespace: given as a name (/var/run/netns/NAME, as `ip netns add` makes), a PID
 * (/proc/PID/ns/net) or a path to a namespace handle. The addon enters it only for the
 * open + TUNSETIFF (a tap belongs to the namespace it was created in, for life).
 *
 * Device: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR with a 12-byte virtio_net_hdr (virtio 1.x layout,
 * num_buffers included and ignored) and TUNSETOFFLOAD CSUM|TSO4|TSO6|TSO_ECN, so the namespace
 * hands us 64 KiB TSO super-frames with partial checksums, exactly like a virtio-net guest with
 * GSO (Documentation/networking/tuntap.rst; include/uapi/linux/if_tun.h). Each read is one
 * frame preceded by its vnet header, parsed into the Frame's metadata (readVnetHeader); each
 * write is one frame preceded by a header written from the Frame's metadata, so GSO frames and
 * NEEDS_CSUM frames go to the kernel as they are and the kernel segments / checksums them.
 *
 * Reading: one FdWatcher (uv_poll) on the fd. On readiness, `readFrames` fills a reused slab
 * with up to `batch` frames in one call into C, and the batch goes to the receive handler as
 * one `send`; this repeats (bounded per wakeup so the event loop stays fair) until the tap is
 * empty. Frames are views into the slab, valid only during the handler call (frame.ts
 * ownership rule); Frame objects and their views are reused slot by slot (a new view is made
 * only when a slot's length changes), so a steady stream allocates nothing per frame.
 *
 * Writing: `send(frames)` writes the whole batch with one `writeFrames` call (writev per frame:
 * [header, frame]); the header buffers are preallocated. Backpressure: a tap write that would
 * block (the device's queue is full) drops that frame and the rest of the batch and counts them
 * (`tap.write` drop reason `tap-full`): the kernel's tap queue is the only buffer, as in a NIC.
 *
 * Meter stages: `tap.read` (frames, bytes, one copy per frame: kernel → slab, time in the read
 * syscalls) and `tap.write` (frames, bytes, one copy per frame: our buffer → kernel skb, time in
 * the writes, drops). A read error other than EAGAIN (the device was removed, e.g. the namespace
 * died) ends the port: `down` resolves with the error and the port closes itself.
 */
import { log, logOnce } from '../log';
import { readVnetHeader, writeVnetHeader, GSO_NONE, VNET_HDR_LEN, type Frame } from '../link/frame';
import { DISCARD, type FrameHandler, type Port } from '../link/port';
import { globalMeter, type Meter, type Stage } from '../meter/meter';
import { tapOpen, tapSetOffload, tapSetVnetHdrSize } from '../native/tap';
import { readFrames, writeFrames } from '../native/io';
import { FdWatcher } from '../native/watcher';
import type { OwnedFd } from '../native/fd';
import { netnsPath } from '../native/netns';
import { IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, POLL_READABLE, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN } from '../native/constants';

/** Largest frame we accept from the tap: a 64 KiB IP packet + Ethernet header, rounded up. */
const MAX_FRAME = 65536 + 14 + 64;
const SLOT_SIZE = VNET_HDR_LEN + MAX_FRAME;
const EAGAIN = 11;
const EMPTY = new Uint8Array(0);

export interface NetnsTapOptions {
  /** Namespace: a name, a PID, or a path (see resolveNetns). */
  netns: string;
  /** Interface name inside the namespace. Default `tap0`. */
  ifName?: string;
  /** Frames read per call into C. Default 64. */
  batch?: number;
  /** Read batches per readiness callback before yielding to the event loop. Default 8. */
  burst?: number;
  /** Ask for TSO/checksum offloads. Default true. */
  offloads?: boolean;
  meter?: Meter;
}

export interface NetnsHandle {
  /** The path the addon opens: /var/run/netns/NAME, /proc/PID/ns/net, or as given. */
  path: string;
  /** The name, when given by name (for /etc/netns/NAME). */
  name?: string;
}

/** `NAME` | `PID` | `/path/to/ns` → the namespace handle path. */
export function resolveNetns(spec: string): NetnsHandle {
  const path = netnsPath(spec);
  if (path === null) throw Object.assign(new Error('--netns: empty namespace'), { code: 'EINVAL' });
  if (/^\d+$/.test(spec) || spec.includes('/')) return { path };
  if (!/^[A-Za-z0-9_.-]+$/.test(spec) || spec === '.' || spec === '..') {
    throw Object.assign(new Error(`--netns: "${spec}" is not a namespace name, PID or path`), { code: 'EINVAL' });
  }
  return { path, name: spec };
}

export class NetnsTapPort implements Port {
  readonly name: string;
  /** The interface name the kernel gave the tap. */
  readonly ifName: string;
  readonly netns: NetnsHandle;
  /** Resolves (never rejects) when the device stopped working or the port was closed. */
  readonly down: Promise<Error | null>;

  private handler: FrameHandler = DISCARD;
  private readonly fd: OwnedFd;
  private readonly watcher: FdWatcher;
  private readonly readStage: Stage;
  private readonly writeStage: Stage;
  private readonly batch: number;
  private readonly burst: number;

  private readonly slab: Uint8Array;
  private readonly lengths: Int32Array;
  private readonly readStatus = new Int32Array(2);
  private readonly rxFrames: Frame[];
  private readonly rxBatch: Frame[] = [];

  private headers: Uint8Array[] = [];
  private parts: (Uint8Array | null)[] = [];
  private readonly writeStatus = new Int32Array(2);

  private closed = false;
  private resolveDown: (e: Error | null) => void = () => {};

  private constructor(fd: OwnedFd, ifName: string, netns: NetnsHandle, opts: NetnsTapOptions) {
    this.fd = fd;
    this.ifName = ifName;
    this.netns = netns;
    this.name = `netns:${netns.name ?? netns.path}:${ifName}`;
    const meter = opts.meter ?? globalMeter;
    this.readStage = meter.stage('tap.read');
    this.writeStage = meter.stage('tap.write');
    this.batch = Math.max(1, Math.min(opts.batch ?? 64, 1024));
    this.burst = Math.max(1, opts.burst ?? 8);
    this.slab = new Uint8Array(this.batch * SLOT_SIZE);
    this.lengths = new Int32Array(this.batch);
    this.rxFrames = [];
    for (let i = 0; i < this.batch; i++) {
      this.rxFrames.push({ data: EMPTY, flags: 0, gsoType: GSO_NONE, gsoSize: 0, hdrLen: 0, csumStart: 0, csumOffset: 0 });
    }
    this.growWriteBuffers(64);
    this.down = new Promise((resolve) => (this.resolveDown = resolve));
    this.watcher = new FdWatcher(fd, (events: number, status: number) => this.onReadable(events, status));
    this.watcher.start(POLL_READABLE);
  }

  /** Open (create) the tap inside the namespace and start reading. */
  static open(opts: NetnsTapOptions): NetnsTapPort {
    const netns = resolveNetns(opts.netns);
    const ifName = opts.ifName ?? 'tap0';
    if (ifName.length > 15) throw Object.assign(new Error(`--tap-name: "${ifName}" is longer than 15 characters`), { code: 'EINVAL' });
    const { fd, name } = tapOpen(ifName, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, netns.path);
    try {
      tapSetVnetHdrSize(fd, VNET_HDR_LEN);
      if (opts.offloads !== false) {
        const want = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        try {
          tapSetOffload(fd, want | TUN_F_TSO_ECN);
        } catch {
          tapSetOffload(fd, want);
        }
      }
      return new NetnsTapPort(fd, name, netns, opts);
    } catch (err) {
      fd.close();
      throw err;
    }
  }

  onReceive(handler: FrameHandler): void {
    this.handler = handler;
  }

  private onReadable(_events: number, status: number): void {
    if (this.closed) return;
    if (status < 0) {
      // POLLERR on a tap: the device is gone or broken; a read tells us which
      this.watcher.start(POLL_READABLE);
    }
    const stage = this.readStage;
    const frames = this.rxFrames;
    const batchOut = this.rxBatch;
    for (let round = 0; round < this.burst; round++) {
      const t0 = stage.start();
      const n = readFrames(this.fd, this.slab, SLOT_SIZE, this.batch, this.lengths, this.readStatus);
      stage.stop(t0);
      let bytes = 0;
      batchOut.length = 0;
      for (let i = 0; i < n; i++) {
        const len = this.lengths[i] - VNET_HDR_LEN;
        if (len < 14) {
          if (stage.dropped('runt')) logOnce('tap.read.runt', 'tap: frame shorter than an Ethernet header', { len });
          continue;
        }
        const off = i * SLOT_SIZE;
        const f = frames[i];
        if (f.data.length !== len || f.data.byteOffset !== this.slab.byteOffset + off + VNET_HDR_LEN) {
          f.data = this.slab.subarray(off + VNET_HDR_LEN, off + VNET_HDR_LEN + len);
        }
        readVnetHeader(this.slab, off, f);
        batchOut.push(f);
        bytes += len;
      }
      if (batchOut.length > 0) {
        stage.frames += batchOut.length;
        stage.bytes += bytes;
        stage.copies += batchOut.length;
        stage.bytesCopied += bytes;
        try {
          this.handler(batchOut);
        } catch (err) {
          if (stage.dropped('handler-threw')) log.error({ err: (err as Error).message, stack: (err as Error).stack }, 'tap: receive handler threw');
        }
        batchOut.length = 0;
      }
      const errno = this.readStatus[0];
      if (errno !== 0 && errno !== EAGAIN) {
        this.fail(Object.assign(new Error(`tap ${this.ifName}: read failed (errno ${errno})`), { code: 'EIO', errno }));
        return;
      }
      if (n < this.batch) return; // drained
    }
  }

  send(frames: readonly Frame[]): void {
    if (this.closed || frames.length === 0) return;
    const n = frames.length;
    if (n > this.headers.length) this.growWriteBuffers(n);
    const parts = this.parts;
    const headers = this.headers;
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      const f = frames[i];
      const h = headers[i];
      writeVnetHeader(f, h, 0); // num_buffers (bytes 10-11) stays 0
      parts[2 * i] = h;
      parts[2 * i + 1] = f.data;
      bytes += f.data.length;
    }
    const stage = this.writeStage;
    const t0 = stage.start();
    let done: number;
    try {
      done = writeFrames(this.fd, parts, 2, n, this.writeStatus);
    } catch (err) {
      done = 0;
      this.writeStatus[0] = -1;
      if (stage.dropped('write-error')) log.warn({ err: (err as Error).message }, 'tap: write failed');
    }
    stage.stop(t0);
    let written = bytes;
    if (done < n) {
      written = 0;
      for (let i = 0; i < done; i++) written += frames[i].data.length;
      const errno = this.writeStatus[0];
      const reason = errno === EAGAIN ? 'tap-full' : errno === -1 ? 'write-error' : `errno-${errno}`;
      for (let i = done; i < n; i++) {
        if (stage.dropped(reason) && reason !== 'tap-full') logOnce(`tap.write.${reason}`, 'tap: write failed, frames dropped', { errno });
      }
    }
    stage.frames += done;
    stage.bytes += written;
    stage.copies += done;
    stage.bytesCopied += written;
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

  private fail(err: Error): void {
    log.warn({ err: err.message }, 'tap device failed; closing the netns port');
    void this.close(err);
  }

  /** Stop reading, close the tap fd (the device and its addresses/routes vanish with it). */
  async close(reason: Error | null = null): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watcher.close();
    this.fd.close();
    this.handler = DISCARD;
    this.resolveDown(reason);
  }
}
