/**
 * QEMU's socket netdevs as Ports, so any QEMU NIC model (rtl8139, e1000, its own virtio-net)
 * can use usernet (QEMU net/stream.c, net/dgram.c, net/net.c `net_fill_rstate`; since 7.2):
 *
 *   -netdev stream  a stream socket (unix or TCP); every frame is preceded by its length as a
 *                   4-byte big-endian number; no vnet header. Either side may listen.
 *   -netdev dgram   a datagram socket (here: unix); one Ethernet frame per datagram.
 *
 * QemuStreamPort wraps one connected stream socket. Reading: non-blocking `read` into one
 * reusable buffer (FdWatcher readiness); every frame complete in what was read becomes a Frame
 * *viewing that buffer* and all of them go to the handler as one batch; a partial frame at the
 * end is moved to the front (one metered copy of its bytes) and completed by the next read. A
 * length of 0 is skipped; a length above `maxFrame` (default 65535 + 18; QEMU itself drops the
 * connection above 69632) is garbage and closes the connection with a log line. Writing: one
 * writev per frame ([length prefix, frame]) in batches through the native writeFrames; when the
 * socket is full, the rest of a partly written frame is kept (it must be finished: the stream
 * has no other framing) and later frames wait in a bounded backlog (metered copies; overflow is
 * dropped and counted), flushed on POLL_WRITABLE; while anything waits `rxBlocked` is true, and
 * 'rx-unblocked' follows the flush (RxBackpressure: a tap pauses reading instead of dropping).
 * The port's 'close' event says the peer left.
 *
 * QemuStreamServer listens (unix path or TCP address) and announces each accepted connection
 * as a 'guest' Port — by default one at a time, like one NIC cable (more are refused with a
 * log line); connectQemuStream is the client side (QEMU `server=on`).
 *
 * QemuDgramPort is bound to our path and sends to QEMU's `local.path` (or to whoever sent us
 * the first datagram); reads are batched through the native readFrames into a slab.
 *
 * States (stream port): open → closed (EOF, socket error, bad length, close()). Every fd is
 * closed on close(); nothing throws out of the event loop.
 */
import { EventEmitter } from 'node:events';
import { unlinkSync } from 'node:fs';
import { isIP } from 'node:net';
import { removeStaleSocket } from './stale-socket';
import { GSO_NONE, type Frame } from '../link/frame';
import { FrameQueue } from '../link/frame-queue';
import { DISCARD, type FrameHandler, type Port } from '../link/port';
import { log, logOnce } from '../log';
import { globalMeter, type Meter, type Stage } from '../meter/meter';
import { QEMU_DGRAM_READ, QEMU_DGRAM_WRITE, QEMU_STREAM_READ, QEMU_STREAM_WRITE } from '../meter/stages';
import {
  Errno,
  FdWatcher,
  FrameSlab,
  IPPROTO_TCP,
  POLL_READABLE,
  POLL_WRITABLE,
  TCP_NODELAY,
  getSockName,
  getSocketError,
  hasCode,
  read,
  setsockoptInt,
  tcpConnect,
  tcpListen,
  unixAccept,
  unixConnect,
  unixDgram,
  unixListen,
  unixRecvFrom,
  unixSendTo,
  write,
  writeFrames,
  type OwnedFd,
} from '../native';

export type QemuSocketAddress = { type: 'unix'; path: string } | { type: 'inet'; host: string; port: number };

/** Largest frame accepted by default: 64 KiB IP packet + Ethernet header + VLAN tag. */
export const DEFAULT_MAX_FRAME = 65535 + 18;
/** Frames per writeFrames call. */
const WRITE_BATCH = 64;

/** "unix:/path", "/path", "tcp:host:port", "host:port", "[v6]:port". */
export function parseQemuSocketAddress(s: string): QemuSocketAddress {
  if (s.startsWith('unix:')) return { type: 'unix', path: s.slice(5) };
  if (s.startsWith('/') || s.startsWith('./') || s.startsWith('@')) return { type: 'unix', path: s };
  const rest = s.startsWith('tcp:') ? s.slice(4) : s;
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(rest) ?? /^([^:]+):(\d+)$/.exec(rest);
  if (!m) throw Object.assign(new Error(`not a socket address: ${s} (unix:PATH or HOST:PORT)`), { code: 'EINVAL' });
  const port = Number(m[2]);
  if (port < 0 || port > 65535) throw Object.assign(new Error(`bad port in ${s}`), { code: 'EINVAL' });
  return { type: 'inet', host: m[1], port };
}

export function formatQemuSocketAddress(a: QemuSocketAddress): string {
  return a.type === 'unix' ? `unix:${a.path}` : isIP(a.host) === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/**
 * The QEMU arguments for a NIC on a usernet stream/dgram socket. `usernetListens`: usernet is
 * the server and QEMU connects (server=off). `model`: rtl8139, e1000, virtio-net-pci …
 */
export function qemuStreamArgs(a: QemuSocketAddress, opts: { id?: string; model?: string; mac?: string; usernetListens?: boolean } = {}): string[] {
  const id = opts.id ?? 'usernet0';
  const addr = a.type === 'unix' ? `addr.type=unix,addr.path=${a.path}` : `addr.type=inet,addr.host=${a.host},addr.port=${a.port}`;
  const server = opts.usernetListens === false ? 'on' : 'off';
  return ['-netdev', `stream,id=${id},server=${server},${addr}`, '-device', `${opts.model ?? 'virtio-net-pci'},netdev=${id}${opts.mac ? `,mac=${opts.mac}` : ''}`];
}

export function qemuDgramArgs(usernetPath: string, qemuPath: string, opts: { id?: string; model?: string; mac?: string } = {}): string[] {
  const id = opts.id ?? 'usernet0';
  return [
    '-netdev',
    `dgram,id=${id},local.type=unix,local.path=${qemuPath},remote.type=unix,remote.path=${usernetPath}`,
    '-device',
    `${opts.model ?? 'virtio-net-pci'},netdev=${id}${opts.mac ? `,mac=${opts.mac}` : ''}`,
  ];
}

export interface QemuStreamOptions {
  name?: string;
  meter?: Meter;
  /** Largest frame accepted or sent (default DEFAULT_MAX_FRAME). */
  maxFrame?: number;
  /** Bytes of frames kept while the socket is full (default 1 MiB). */
  backlogBytes?: number;
}

function blankFrame(): Frame {
  return { data: new Uint8Array(0), flags: 0, gsoType: GSO_NONE, gsoSize: 0, hdrLen: 0, csumStart: 0, csumOffset: 0 };
}

/** One connected `-netdev stream` socket as a Port. Events: 'close' (reason). */
export class QemuStreamPort extends EventEmitter implements Port {
  readonly name: string;
  private handler: FrameHandler = DISCARD;
  private readonly watcher: FdWatcher;
  private closed = false;
  private readonly maxFrame: number;
  // reading
  private readonly rbuf: Uint8Array;
  private filled = 0;
  private readonly frames: Frame[] = [];
  private readonly batch: Frame[] = [];
  // writing
  private readonly prefixes: Uint8Array;
  private readonly prefixViews: Uint8Array[] = [];
  private readonly parts: Array<Uint8Array | null> = [];
  private readonly status = new Int32Array(2);
  /** The unwritten tail of a partly written frame (prefix included). */
  private readonly pending: Uint8Array;
  private pendingStart = 0;
  private pendingEnd = 0;
  private readonly backlog: FrameQueue;
  private readonly backlogBatch: Frame[] = [];
  private watching = POLL_READABLE;
  private readonly inStage: Stage;
  private readonly outStage: Stage;

  constructor(
    private readonly fd: OwnedFd,
    opts: QemuStreamOptions = {},
  ) {
    super();
    this.name = opts.name ?? `qemu-stream#${fd.fd}`;
    const meter = opts.meter ?? globalMeter;
    this.inStage = meter.stage(QEMU_STREAM_READ);
    this.outStage = meter.stage(QEMU_STREAM_WRITE);
    this.maxFrame = opts.maxFrame ?? DEFAULT_MAX_FRAME;
    // room for several frames per read, and always for one whole frame after a partial one
    this.rbuf = new Uint8Array(Math.max(256 << 10, 2 * (this.maxFrame + 4)));
    this.pending = new Uint8Array(this.maxFrame + 4);
    this.prefixes = new Uint8Array(4 * WRITE_BATCH);
    for (let i = 0; i < WRITE_BATCH; i++) this.prefixViews.push(this.prefixes.subarray(4 * i, 4 * i + 4));
    this.backlog = new FrameQueue(opts.backlogBytes ?? 1 << 20, this.outStage);
    this.watcher = new FdWatcher(fd, (events, status) => this.onReady(events, status));
    this.watcher.start(POLL_READABLE);
  }

  send(frames: readonly Frame[]): void {
    const n = frames.length;
    if (n === 0) return;
    if (this.closed) {
      for (let i = 0; i < n; i++) this.outStage.dropped('closed');
      return;
    }
    let ok = true;
    for (let i = 0; i < n; i++) if (!this.valid(frames[i])) ok = false;
    const list = ok ? frames : frames.filter((f) => f.data.length > 0 && f.data.length <= this.maxFrame); // rare path
    let i = 0;
    if (this.pendingEnd === this.pendingStart && this.backlog.length === 0) i = this.writeBatch(list, 0);
    for (; i < list.length && !this.closed; i++) this.enqueue(list[i]);
  }

  onReceive(handler: FrameHandler): void {
    this.handler = handler;
  }

  close(): Promise<void> {
    this.shutdown('closed');
    return Promise.resolve();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private shutdown(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher.close();
    this.fd.close();
    const queued = this.backlog.length;
    for (let i = 0; i < queued; i++) this.outStage.dropped('closed');
    this.backlog.clear();
    this.handler = DISCARD;
    log.info({ port: this.name, reason }, `${this.name}: connection closed (${reason})`);
    this.emit('close', reason);
  }

  private onReady(events: number, status: number): void {
    if (this.closed) return;
    if (status < 0) {
      this.shutdown(`socket error ${status}`);
      return;
    }
    if ((events & POLL_WRITABLE) !== 0) this.flushWrites();
    if ((events & POLL_READABLE) !== 0 && !this.closed) this.readAll();
  }

  // ---- reading ----

  private readAll(): void {
    for (let round = 0; round < 16 && !this.closed; round++) {
      let n: number;
      try {
        n = read(this.fd, this.rbuf.subarray(this.filled));
      } catch (err) {
        this.shutdown(`read failed: ${(err as Error).message}`);
        return;
      }
      if (n < 0) return;
      if (n === 0) {
        this.shutdown(this.filled > 0 ? 'short read: the peer closed in the middle of a frame' : 'peer closed');
        return;
      }
      this.inStage.copied(n);
      this.filled += n;
      if (!this.parse()) return;
    }
  }

  /** Deliver every complete frame in the buffer as one batch; keep the partial rest. */
  private parse(): boolean {
    const buf = this.rbuf;
    const end = this.filled;
    let at = 0;
    let count = 0;
    let bytes = 0;
    while (end - at >= 4) {
      const len = ((buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]) >>> 0;
      if (len > this.maxFrame) {
        logOnce(`${this.name}.oversize`, `${this.name}: peer announced a ${len}-byte frame (limit ${this.maxFrame}); closing`);
        this.inStage.dropped('oversize');
        this.deliver(count, bytes);
        this.shutdown(`bad input: frame length ${len}`);
        return false;
      }
      if (end - at - 4 < len) break;
      if (len === 0) {
        at += 4;
        continue;
      }
      if (count === this.frames.length) this.frames.push(blankFrame());
      const f = this.frames[count++];
      f.data = buf.subarray(at + 4, at + 4 + len);
      bytes += len;
      at += 4 + len;
    }
    this.deliver(count, bytes);
    if (this.closed) return false;
    if (at > 0 && at < end) {
      buf.copyWithin(0, at, end); // the partial frame moves to the front
      this.inStage.copied(end - at);
    }
    this.filled = end - at;
    return true;
  }

  private deliver(count: number, bytes: number): void {
    if (count === 0) return;
    const batch = this.batch;
    for (let i = 0; i < count; i++) batch[i] = this.frames[i];
    batch.length = count;
    this.inStage.pass(count, bytes);
    try {
      this.handler(batch);
    } catch (err) {
      logOnce(`${this.name}.handler`, `${this.name}: the frame handler threw`, { err: String(err) });
    }
    batch.length = 0;
  }

  // ---- writing ----

  /**
   * Write frames[from..] (all valid: 1..maxFrame bytes) until the socket is full; returns the
   * index of the first frame not taken. A frame written only in part is taken: its tail goes to
   * `pending`.
   */
  private writeBatch(frames: readonly Frame[], from: number): number {
    const n = frames.length;
    const parts = this.parts;
    let i = from;
    while (i < n && !this.closed) {
      const k = Math.min(WRITE_BATCH, n - i);
      parts.length = 2 * k;
      for (let j = 0; j < k; j++) {
        const data = frames[i + j].data;
        const len = data.length;
        const p = this.prefixViews[j];
        p[0] = len >>> 24;
        p[1] = (len >>> 16) & 0xff;
        p[2] = (len >>> 8) & 0xff;
        p[3] = len & 0xff;
        parts[2 * j] = p;
        parts[2 * j + 1] = data;
      }
      const done = writeFrames(this.fd, parts as Uint8Array[], 2, k, this.status);
      let bytes = 0;
      for (let j = 0; j < done; j++) {
        const len = frames[i + j].data.length;
        bytes += len;
        this.outStage.copied(len);
      }
      this.outStage.pass(done, bytes);
      i += done;
      if (done < k) {
        const err = this.status[0];
        if (err !== Errno.EAGAIN) {
          this.shutdown(`write failed: errno ${err}`);
          return n;
        }
        if (this.status[1] > 0) this.keepRest(frames[i++], this.status[1]);
        this.wantWritable();
        return i;
      }
    }
    return i;
  }

  /** False (and counted) for a frame the stream cannot carry. */
  private valid(f: Frame): boolean {
    const len = f.data.length;
    if (len > 0 && len <= this.maxFrame) return true;
    if (this.outStage.dropped(len === 0 ? 'empty' : 'oversize')) {
      logOnce(`${this.name}.out-${len === 0 ? 'empty' : 'oversize'}`, `${this.name}: cannot send a ${len}-byte frame (limit ${this.maxFrame}); dropped`);
    }
    return false;
  }

  /** Keep the unwritten tail of a frame whose first `written` bytes (prefix included) went out. */
  private keepRest(f: Frame, written: number): void {
    const len = f.data.length;
    const total = 4 + len;
    const p = this.pending;
    p[0] = len >>> 24;
    p[1] = (len >>> 16) & 0xff;
    p[2] = (len >>> 8) & 0xff;
    p[3] = len & 0xff;
    p.set(f.data, 4);
    this.outStage.copied(len);
    this.outStage.pass(1, len);
    this.pendingStart = written;
    this.pendingEnd = total;
  }

  private enqueue(f: Frame): void {
    if (!this.backlog.push(f) && this.outStage.dropped('backlog-full')) {
      logOnce(`${this.name}.backlog-full`, `${this.name}: peer is not reading fast enough; dropping frames (counted as backlog-full)`);
    }
    this.wantWritable();
  }

  private wantWritable(): void {
    if (this.watching !== (POLL_READABLE | POLL_WRITABLE) && !this.closed) {
      this.watching = POLL_READABLE | POLL_WRITABLE;
      this.watcher.start(this.watching);
    }
  }

  private flushWrites(): void {
    if (this.pendingEnd > this.pendingStart) {
      let n: number;
      try {
        n = write(this.fd, this.pending.subarray(this.pendingStart, this.pendingEnd));
      } catch (err) {
        this.shutdown(`write failed: ${(err as Error).message}`);
        return;
      }
      if (n < 0) return;
      this.pendingStart += n;
      if (this.pendingStart < this.pendingEnd) return;
      this.pendingStart = this.pendingEnd = 0;
    }
    const b = this.backlog;
    while (b.length > 0 && !this.closed) {
      const n = Math.min(b.length, WRITE_BATCH);
      const batch = this.backlogBatch;
      batch.length = n;
      for (let i = 0; i < n; i++) batch[i] = b.at(i);
      const done = this.writeBatch(batch, 0);
      // a partly written frame was copied to `pending`; it counts as taken
      b.shift(done);
      batch.length = 0;
      if (done < n || this.pendingEnd > this.pendingStart) return;
    }
    if (!this.closed && this.pendingEnd === this.pendingStart && b.length === 0) {
      this.watching = POLL_READABLE;
      this.watcher.start(POLL_READABLE);
      this.emit('rx-unblocked');
    }
  }

  /** Frames wait for QEMU to read (RxBackpressure, backends/tap.ts): a tap may stop reading. */
  get rxBlocked(): boolean {
    return this.backlog.length > 0 || this.pendingEnd > this.pendingStart;
  }
}

export interface QemuStreamServerOptions extends QemuStreamOptions {
  address: QemuSocketAddress;
  /** Connections served at once (default 1: one NIC cable). */
  maxConnections?: number;
}

/**
 * Listens for QEMU (`-netdev stream,server=off,...`). Events: 'guest' (port: QemuStreamPort)
 * for each accepted connection; the port emits 'close' when QEMU goes away.
 */
export class QemuStreamServer extends EventEmitter {
  /** Where it listens (a TCP port 0 is replaced by the port bound). */
  address: QemuSocketAddress;
  readonly ports = new Set<QemuStreamPort>();
  private listenFd: OwnedFd | null = null;
  private watcher: FdWatcher | null = null;
  private serial = 0;
  private closed = false;

  constructor(private readonly opts: QemuStreamServerOptions) {
    super();
    this.address = opts.address;
  }

  async listen(): Promise<this> {
    if (this.listenFd) return this;
    const a = this.address;
    if (a.type === 'unix') {
      removeStaleSocket(a.path);
      this.listenFd = unixListen(a.path, { backlog: 8 });
    } else {
      this.listenFd = tcpListen(a.host, a.port, { backlog: 8 });
      const bound = getSockName(this.listenFd);
      if (bound && bound.family !== 'unix') this.address = { type: 'inet', host: a.host, port: bound.port }; // port 0 → the real one
    }
    this.watcher = new FdWatcher(this.listenFd, () => this.acceptAll());
    this.watcher.start(POLL_READABLE);
    log.info({ address: formatQemuSocketAddress(a) }, `qemu-stream: listening on ${formatQemuSocketAddress(a)}`);
    return this;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    this.listenFd?.close();
    this.listenFd = null;
    for (const p of [...this.ports]) await p.close();
    if (this.address.type === 'unix' && !this.address.path.startsWith('@')) {
      try {
        unlinkSync(this.address.path);
      } catch {
        /* gone */
      }
    }
  }

  private acceptAll(): void {
    for (;;) {
      let fd: OwnedFd | null;
      try {
        fd = this.listenFd ? unixAccept(this.listenFd) : null; // accept4 on any socket family
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'qemu-stream: accept failed');
        return;
      }
      if (!fd) return;
      if (this.ports.size >= (this.opts.maxConnections ?? 1)) {
        log.warn({ address: formatQemuSocketAddress(this.address) }, 'qemu-stream: refusing a connection (already serving the maximum)');
        fd.close();
        continue;
      }
      if (this.address.type === 'inet') setNoDelay(fd);
      const label = `qemu-stream:${formatQemuSocketAddress(this.address)}#${++this.serial}`;
      const port = new QemuStreamPort(fd, { ...this.opts, name: label });
      this.ports.add(port);
      port.once('close', () => this.ports.delete(port));
      log.info({ port: label }, `${label}: QEMU connected`);
      this.emit('guest', port);
    }
  }
}

export async function listenQemuStream(opts: QemuStreamServerOptions): Promise<QemuStreamServer> {
  return new QemuStreamServer(opts).listen();
}

/** Connect to a QEMU that listens (`-netdev stream,server=on,...`). */
export async function connectQemuStream(address: QemuSocketAddress, opts: QemuStreamOptions = {}): Promise<QemuStreamPort> {
  const name = opts.name ?? `qemu-stream:${formatQemuSocketAddress(address)}`;
  if (address.type === 'unix') return new QemuStreamPort(unixConnect(address.path), { ...opts, name });
  const fd = tcpConnect(address.host, address.port);
  await new Promise<void>((resolve, reject) => {
    const w = new FdWatcher(fd, (_events, status) => {
      w.close();
      const err = status < 0 ? -status : getSocketError(fd);
      if (err === 0) resolve();
      else {
        fd.close();
        reject(Object.assign(new Error(`connect to ${formatQemuSocketAddress(address)} failed (errno ${err})`), { errno: err }));
      }
    });
    w.start(POLL_WRITABLE);
  });
  setNoDelay(fd);
  return new QemuStreamPort(fd, { ...opts, name });
}

function setNoDelay(fd: OwnedFd): void {
  try {
    setsockoptInt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
  } catch {
    /* not TCP after all */
  }
}

export interface QemuDgramOptions {
  /** Our socket path (QEMU's `remote.path`). */
  path: string;
  /** QEMU's socket path (its `local.path`); default: learnt from the first datagram. */
  peer?: string;
  name?: string;
  meter?: Meter;
  maxFrame?: number;
  /** Datagrams read per readiness event (default 64). */
  batch?: number;
}

/** `-netdev dgram` over unix datagram sockets, as a Port. */
export class QemuDgramPort extends EventEmitter implements Port {
  readonly name: string;
  peer: string | null;
  private handler: FrameHandler = DISCARD;
  private readonly fd: OwnedFd;
  private readonly watcher: FdWatcher;
  private readonly slab: FrameSlab;
  private readonly frames: Frame[] = [];
  private readonly batch: Frame[] = [];
  private closed = false;
  private readonly maxFrame: number;
  private readonly inStage: Stage;
  private readonly outStage: Stage;

  constructor(private readonly opts: QemuDgramOptions) {
    super();
    this.name = opts.name ?? `qemu-dgram:${opts.path}`;
    this.peer = opts.peer ?? null;
    const meter = opts.meter ?? globalMeter;
    this.inStage = meter.stage(QEMU_DGRAM_READ);
    this.outStage = meter.stage(QEMU_DGRAM_WRITE);
    this.maxFrame = opts.maxFrame ?? DEFAULT_MAX_FRAME;
    removeStaleSocket(opts.path, true);
    this.fd = unixDgram({ bind: opts.path });
    const n = opts.batch ?? 64;
    this.slab = new FrameSlab(n, this.maxFrame + 1);
    for (let i = 0; i < n; i++) this.frames.push(blankFrame());
    this.watcher = new FdWatcher(this.fd, (_e, status) => this.onReadable(status));
    this.watcher.start(POLL_READABLE);
  }

  send(frames: readonly Frame[]): void {
    const n = frames.length;
    if (this.closed || this.peer === null) {
      for (let i = 0; i < n; i++) this.outStage.dropped(this.closed ? 'closed' : 'no-peer-yet');
      return;
    }
    for (let i = 0; i < n; i++) {
      const data = frames[i].data;
      let sent: number;
      try {
        sent = unixSendTo(this.fd, data, this.peer);
      } catch (err) {
        if (this.outStage.dropped(hasCode(err, 'ECONNREFUSED') || hasCode(err, 'ENOENT') ? 'peer-gone' : 'send-error')) {
          logOnce(`${this.name}.send`, `${this.name}: sending to ${this.peer} failed: ${(err as Error).message}`);
        }
        continue;
      }
      if (sent < 0) {
        this.outStage.dropped('socket-full');
        continue;
      }
      this.outStage.copied(sent);
      this.outStage.pass(1, sent);
    }
  }

  onReceive(handler: FrameHandler): void {
    this.handler = handler;
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.watcher.close();
      this.fd.close();
      try {
        unlinkSync(this.opts.path);
      } catch {
        /* gone */
      }
      this.handler = DISCARD;
      this.emit('close', 'closed');
    }
    return Promise.resolve();
  }

  private onReadable(status: number): void {
    if (this.closed) return;
    if (status < 0) {
      logOnce(`${this.name}.poll`, `${this.name}: socket error ${status}`);
      this.watcher.start(POLL_READABLE);
      return;
    }
    if (this.peer === null) {
      // learn QEMU's path from one datagram, deliver it, then read in batches
      const got = unixRecvFrom(this.fd, this.slab.slots[0]);
      if (got === null) return;
      if (got.path) {
        this.peer = got.path;
        log.info({ port: this.name, peer: got.path }, `${this.name}: peer is ${got.path}`);
      }
      this.slab.lengths[0] = got.bytes;
      this.slab.count = 1;
      this.deliver(1);
      return;
    }
    for (let round = 0; round < 4 && !this.closed; round++) {
      const n = this.slab.read(this.fd);
      if (n === 0) return;
      this.deliver(n);
      if (n < this.slab.capacity) return;
    }
  }

  private deliver(n: number): void {
    const batch = this.batch;
    let count = 0;
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      const len = this.slab.lengths[i];
      this.inStage.copied(len);
      if (len > this.maxFrame || len <= 0) {
        this.inStage.dropped(len <= 0 ? 'empty' : 'oversize');
        continue;
      }
      const f = this.frames[i];
      f.data = this.slab.slots[i].subarray(0, len);
      batch[count++] = f;
      bytes += len;
    }
    batch.length = count;
    if (count === 0) return;
    this.inStage.pass(count, bytes);
    try {
      this.handler(batch);
    } catch (err) {
      logOnce(`${this.name}.handler`, `${this.name}: the frame handler threw`, { err: String(err) });
    }
    batch.length = 0;
  }
}

export function openQemuDgram(opts: QemuDgramOptions): QemuDgramPort {
  return new QemuDgramPort(opts);
}
