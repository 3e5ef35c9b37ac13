/**
 * A test harness for the TCP module: a stub NatContext whose GuestOutput decodes every frame the
 * module sends to the guest, and a scripted "guest" that builds real IPv4/TCP frames (with
 * checksums) and feeds them to `TcpModule.input`. The host side is real: tests run TCP servers
 * on 127.0.0.1, reached through the gateway address as the NAT maps it.
 */
import net from 'node:net';
import { plainFrame, VNET_F_NEEDS_CSUM, type Frame } from '../../src/link/frame';
import { Meter } from '../../src/meter/meter';
import { natConfig, type NatConfig } from '../../src/backends/nat/config';
import type { Family, GuestOutput, GuestPacket, NatContext, OutFrame } from '../../src/backends/nat/context';
import { TcpModule, type TcpModuleOptions } from '../../src/backends/nat/tcp';

export const FIN = 1;
export const SYN = 2;
export const RST = 4;
export const PSH = 8;
export const ACK = 16;

export function ip(text: string): Uint8Array {
  return Uint8Array.from(text.split('.').map(Number));
}

function sum16(b: Uint8Array, off: number, len: number, init = 0): number {
  let s = init;
  let i = 0;
  for (; i + 1 < len; i += 2) s += (b[off + i] << 8) | b[off + i + 1];
  if (i < len) s += b[off + i] << 8;
  return s;
}

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

function pseudo(src: Uint8Array, dst: Uint8Array, len: number): number {
  return sum16(src, 0, src.length) + sum16(dst, 0, dst.length) + 6 + len;
}

function u32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}

export interface SentSegment {
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  payload: Buffer;
  mss?: number;
  windowScale?: number;
  sackPermitted?: boolean;
  ts?: [number, number];
  sack: [number, number][];
  /** Checksum valid (full), or partial checksum correctly prepared. */
  checksumOk: boolean;
  gsoType: number;
  gsoSize: number;
  partial: boolean;
}

export function decodeSegment(buf: Uint8Array, l4: number, l4len: number, src: Uint8Array, dst: Uint8Array, frame: Frame): SentSegment {
  const b = buf;
  const hdr = (b[l4 + 12] >>> 4) * 4;
  const s: SentSegment = {
    src: [...src].join('.'),
    dst: [...dst].join('.'),
    srcPort: (b[l4] << 8) | b[l4 + 1],
    dstPort: (b[l4 + 2] << 8) | b[l4 + 3],
    seq: u32(b, l4 + 4),
    ack: u32(b, l4 + 8),
    flags: b[l4 + 13],
    window: (b[l4 + 14] << 8) | b[l4 + 15],
    payload: Buffer.from(b.subarray(l4 + hdr, l4 + l4len)),
    sack: [],
    checksumOk: false,
    gsoType: frame.gsoType,
    gsoSize: frame.gsoSize,
    partial: (frame.flags & VNET_F_NEEDS_CSUM) !== 0,
  };
  for (let p = l4 + 20; p < l4 + hdr; ) {
    const kind = b[p];
    if (kind === 0) break;
    if (kind === 1) {
      p++;
      continue;
    }
    const l = b[p + 1];
    if (kind === 2) s.mss = (b[p + 2] << 8) | b[p + 3];
    if (kind === 3) s.windowScale = b[p + 2];
    if (kind === 4) s.sackPermitted = true;
    if (kind === 8) s.ts = [u32(b, p + 2), u32(b, p + 6)];
    if (kind === 5) for (let q = p + 2; q < p + l; q += 8) s.sack.push([u32(b, q), u32(b, q + 4)]);
    p += Math.max(l, 2);
  }
  const ph = pseudo(src, dst, l4len);
  if (s.partial) {
    const field = (b[l4 + 16] << 8) | b[l4 + 17];
    s.checksumOk = field === fold(ph) && frame.csumOffset === 16;
  } else {
    s.checksumOk = fold(sum16(b, l4, l4len, ph)) === 0xffff;
  }
  return s;
}

/** GuestOutput that decodes what the module sends. */
export class StubOutput implements GuestOutput {
  maxL4Length: number;
  readonly sent: SentSegment[] = [];
  available = 1024;
  private waiters: { pred: (s: SentSegment) => boolean; resolve: (s: SentSegment) => void; from: number }[] = [];

  constructor(
    public mtu = 1500,
    public checksumOffload = false,
    public tsoOffload = false,
  ) {
    this.maxL4Length = tsoOffload ? 65535 - 20 : mtu - 20;
  }

  begin(family: Family, src: Uint8Array, dst: Uint8Array, protocol: number, ttl: number, l4Length: number): OutFrame | null {
    const ipLen = family === 4 ? 20 : 40;
    const buf = new Uint8Array(14 + ipLen + l4Length);
    buf[12] = 0x08;
    buf[14] = 0x45;
    buf[14 + 8] = ttl;
    buf[14 + 9] = protocol;
    buf.set(src, 14 + 12);
    buf.set(dst, 14 + 16);
    return { buf, l4Offset: 14 + ipLen, frame: plainFrame(buf) };
  }

  commit(o: OutFrame): void {
    const src = o.buf.slice(26, 30);
    const dst = o.buf.slice(30, 34);
    const s = decodeSegment(o.buf, o.l4Offset, o.buf.length - o.l4Offset, src, dst, o.frame);
    this.sent.push(s);
    const idx = this.sent.length - 1;
    this.waiters = this.waiters.filter((w) => {
      if (idx >= w.from && w.pred(s)) {
        w.resolve(s);
        return false;
      }
      return true;
    });
  }

  abort(): void {}
  flush(): void {}

  /** The first segment (from index `from`) matching `pred`, waiting for it if needed. */
  waitFor(pred: (s: SentSegment) => boolean, from = 0, timeoutMs = 10_000): Promise<SentSegment> {
    for (let i = from; i < this.sent.length; i++) if (pred(this.sent[i])) return Promise.resolve(this.sent[i]);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error('timed out waiting for a segment to the guest'));
      }, timeoutMs);
      const done = (s: SentSegment): void => {
        clearTimeout(timer);
        resolve(s);
      };
      this.waiters.push({ pred, resolve: done, from });
    });
  }
}

export interface IcmpErrorRecord {
  type: number;
  code: number;
  from?: Uint8Array;
  quotedSrcPort: number;
  quotedDstPort: number;
}

export class StubContext implements NatContext {
  readonly config: NatConfig;
  readonly meter = new Meter();
  readonly icmpErrors: IcmpErrorRecord[] = [];

  constructor(readonly out: StubOutput, config: Partial<Parameters<typeof natConfig>[0]> = {}) {
    this.config = natConfig(config);
  }

  hostAddressFor(family: Family, dst: Uint8Array): string | null {
    if (family !== 4) return null;
    const t = [...dst].join('.');
    if (t === this.config.gateway) return '127.0.0.1';
    if (t.startsWith('10.0.2.')) return null;
    return t;
  }

  icmpError(pkt: GuestPacket, type: number, code: number, _info: number, from?: Uint8Array): void {
    const b = pkt.frame.data;
    const t = pkt.l4Offset;
    this.icmpErrors.push({ type, code, from, quotedSrcPort: (b[t] << 8) | b[t + 1], quotedDstPort: (b[t + 2] << 8) | b[t + 3] });
  }
}

export interface SegmentSpec {
  flags: number;
  seq: number;
  ack?: number;
  window?: number;
  payload?: Uint8Array | string;
  mss?: number;
  windowScale?: number;
  sackPermitted?: boolean;
  ts?: [number, number];
  sack?: [number, number][];
  badChecksum?: boolean;
  /** Raw option bytes instead of the above (for malformed options). */
  rawOptions?: number[];
  gso?: boolean;
  trusted?: boolean;
}

/** Build a guest frame (Ethernet + IPv4 + TCP) and hand it to the module. */
export function buildGuestPacket(src: Uint8Array, srcPort: number, dst: Uint8Array, dstPort: number, spec: SegmentSpec, ttl = 64): GuestPacket {
  const opts: number[] = [];
  if (spec.rawOptions) opts.push(...spec.rawOptions);
  else {
    if (spec.mss !== undefined) opts.push(2, 4, spec.mss >>> 8, spec.mss & 0xff);
    if (spec.sackPermitted) opts.push(1, 1, 4, 2);
    if (spec.ts) {
      opts.push(1, 1, 8, 10);
      for (const v of spec.ts) opts.push(v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
    }
    if (spec.windowScale !== undefined) opts.push(1, 3, 3, spec.windowScale);
    if (spec.sack && spec.sack.length) {
      opts.push(1, 1, 5, 2 + 8 * spec.sack.length);
      for (const [l, r] of spec.sack) for (const v of [l >>> 0, r >>> 0]) opts.push(v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
    }
  }
  while (opts.length % 4) opts.push(0);
  const payload = typeof spec.payload === 'string' ? Buffer.from(spec.payload) : spec.payload ?? new Uint8Array(0);
  const hdr = 20 + opts.length;
  const l4len = hdr + payload.length;
  const buf = new Uint8Array(14 + 20 + l4len);
  buf[12] = 0x08;
  const o = 14;
  buf[o] = 0x45;
  buf[o + 2] = (20 + l4len) >>> 8;
  buf[o + 3] = (20 + l4len) & 0xff;
  buf[o + 8] = ttl;
  buf[o + 9] = 6;
  buf.set(src, o + 12);
  buf.set(dst, o + 16);
  const t = 34;
  buf[t] = srcPort >>> 8;
  buf[t + 1] = srcPort & 0xff;
  buf[t + 2] = dstPort >>> 8;
  buf[t + 3] = dstPort & 0xff;
  const put32 = (at: number, v: number): void => {
    buf[at] = v >>> 24;
    buf[at + 1] = (v >>> 16) & 0xff;
    buf[at + 2] = (v >>> 8) & 0xff;
    buf[at + 3] = v & 0xff;
  };
  put32(t + 4, spec.seq >>> 0);
  put32(t + 8, (spec.ack ?? 0) >>> 0);
  buf[t + 12] = (hdr / 4) << 4;
  buf[t + 13] = spec.flags;
  const w = spec.window ?? 65535;
  buf[t + 14] = w >>> 8;
  buf[t + 15] = w & 0xff;
  buf.set(opts, t + 20);
  buf.set(payload, t + hdr);
  const c = ~fold(sum16(buf, t, l4len, pseudo(src, dst, l4len))) & 0xffff;
  const cs = spec.badChecksum ? c ^ 0x5a5a : c;
  buf[t + 16] = cs >>> 8;
  buf[t + 17] = cs & 0xff;
  const frame = plainFrame(buf);
  if (spec.gso) {
    frame.gsoType = 1;
    frame.gsoSize = 1448;
  }
  return {
    family: 4,
    src: buf.subarray(o + 12, o + 16),
    dst: buf.subarray(o + 16, o + 20),
    protocol: 6,
    ttl,
    dontFragment: true,
    tos: 0,
    frame,
    l3Offset: o,
    l4Offset: t,
    l4Length: l4len,
    checksumTrusted: spec.trusted ?? false,
  };
}

export interface Harness {
  out: StubOutput;
  ctx: StubContext;
  tcp: TcpModule;
  close(): Promise<void>;
}

export function makeHarness(opts: TcpModuleOptions & { mtu?: number; csum?: boolean; tso?: boolean; config?: Record<string, unknown> } = {}): Harness {
  const out = new StubOutput(opts.mtu ?? 1500, opts.csum ?? false, opts.tso ?? false);
  const ctx = new StubContext(out, opts.config ?? {});
  const tcp = new TcpModule(ctx, { rtoMinMs: 50, rtoInitialMs: 200, ...opts });
  return { out, ctx, tcp, close: () => tcp.close() };
}

/**
 * One scripted guest connection: keeps its own sequence numbers so tests read like the
 * exchange they check.
 */
export class GuestConn {
  readonly src: Uint8Array;
  readonly dst: Uint8Array;
  nxt: number;
  /** What the guest acknowledges (the module's sequence numbers). */
  rcv = 0;
  serverIss = 0;
  tsVal = 1000;
  window = 65535;
  windowScale: number | undefined = 7;
  mark = 0;

  constructor(
    readonly h: Harness,
    readonly srcPort: number,
    readonly dstPort: number,
    readonly iss = 100_000,
    src = '10.0.2.15',
    dst = '10.0.2.2',
  ) {
    this.src = ip(src);
    this.dst = ip(dst);
    this.nxt = iss;
  }

  /** Send a segment (defaults: ACK with our rcv, window, timestamps). */
  send(spec: Partial<SegmentSpec> & { flags: number }): void {
    const full: SegmentSpec = {
      seq: this.nxt,
      ack: this.rcv,
      window: this.window,
      ts: [this.tsVal++, 1],
      ...spec,
    };
    this.h.tcp.input(buildGuestPacket(this.src, this.srcPort, this.dst, this.dstPort, full));
  }

  /** Segments to this guest connection sent after `mark` (see `markNow`). */
  sentToUs(from = 0): SentSegment[] {
    return this.h.out.sent.slice(from).filter((s) => s.dstPort === this.srcPort && s.srcPort === this.dstPort);
  }

  markNow(): number {
    this.mark = this.h.out.sent.length;
    return this.mark;
  }

  waitFor(pred: (s: SentSegment) => boolean, from = this.mark, timeoutMs = 10_000): Promise<SentSegment> {
    return this.h.out.waitFor((s) => s.dstPort === this.srcPort && s.srcPort === this.dstPort && pred(s), from, timeoutMs);
  }

  /** SYN → SYN-ACK → ACK. Returns the SYN-ACK. */
  async connect(extra: Partial<SegmentSpec> = {}): Promise<SentSegment> {
    this.markNow();
    this.send({ flags: SYN, seq: this.iss, ack: 0, mss: 1460, sackPermitted: true, windowScale: this.windowScale, ...extra });
    const synAck = await this.waitFor((s) => (s.flags & (SYN | ACK)) === (SYN | ACK));
    this.serverIss = synAck.seq;
    this.nxt = (this.iss + 1) >>> 0;
    this.rcv = (synAck.seq + 1) >>> 0;
    this.send({ flags: ACK });
    return synAck;
  }

  /** Send data at our next sequence number. */
  data(payload: Uint8Array | string, flags = ACK | PSH): void {
    const p = typeof payload === 'string' ? Buffer.from(payload) : payload;
    this.send({ flags, payload: p });
    this.nxt = (this.nxt + p.length) >>> 0;
  }

  /** Collect in-order payload sent to us (seq from `rcv`), ACKing as we go when `ack`. */
  async receive(bytes: number, ackEach = true, timeoutMs = 10_000): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let got = 0;
    let scan = 0;
    const deadline = Date.now() + timeoutMs;
    while (got < bytes) {
      const segs = this.sentToUs();
      let progressed = false;
      for (; scan < segs.length; scan++) {
        const s = segs[scan];
        if (s.payload.length === 0) continue;
        const off = (this.rcv - s.seq) | 0;
        if (off < 0 || off >= s.payload.length) continue;
        const part = s.payload.subarray(off);
        chunks.push(part);
        got += part.length;
        this.rcv = (this.rcv + part.length) >>> 0;
        progressed = true;
      }
      if (progressed && ackEach) this.send({ flags: ACK });
      if (got >= bytes) break;
      if (Date.now() > deadline) throw new Error(`received ${got} of ${bytes} bytes`);
      await new Promise((r) => setTimeout(r, 2));
      scan = 0;
    }
    return Buffer.concat(chunks);
  }
}

/** A TCP server on 127.0.0.1 that records connections. */
export class TestServer {
  readonly server: net.Server;
  readonly sockets: net.Socket[] = [];
  readonly received: Buffer[][] = [];
  port = 0;
  private waiters: ((s: net.Socket) => void)[] = [];

  constructor(onConnection?: (s: net.Socket, index: number) => void, allowHalfOpen = true) {
    this.server = net.createServer({ allowHalfOpen }, (s) => {
      const i = this.sockets.length;
      this.sockets.push(s);
      this.received.push([]);
      s.on('data', (d) => this.received[i].push(d));
      s.on('error', () => {});
      onConnection?.(s, i);
      if (this.waiters.length && i === this.sockets.length - 1) this.waiters.shift()!(s);
    });
  }

  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  private handedOut = 0;

  /** The next accepted connection not yet returned by this method. */
  nextConnection(): Promise<net.Socket> {
    const i = this.handedOut++;
    if (i < this.sockets.length) return Promise.resolve(this.sockets[i]);
    return new Promise((r) => this.waiters.push(r));
  }

  data(i = 0): Buffer {
    return Buffer.concat(this.received[i] ?? []);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

export async function until(cond: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** A free port on 127.0.0.1 that nobody listens on (for "connection refused"). */
export async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
