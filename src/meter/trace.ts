/**
 * Packet traces: one packet's journey through usernet, stage by stage — the function that
 * handled it, the copies (from → to, bytes), the header fields rewritten (old → new) and the
 * time between stages — for `usernet trace` and docs/nat-code-path.md.
 *
 * Cost when nobody listens: the hot path tests one boolean, `observing.on` (meter.ts), before
 * any trace call; Stage's counting methods test the same boolean. Tracing is switched on by the
 * first subscriber (a control-socket client of `usernet trace`, or a file) and off by the last.
 *
 * How a journey is assembled (everything here runs only while tracing):
 *
 *   ingress      the port a frame enters by (a tap read, a virtio TX chain) opens a journey
 *                keyed by the Frame object and records its own hop (`ingress`);
 *   processing   whoever handles the frame next makes it current (`select`): from then on
 *                every Stage counting call (pass, copied, rewrote, dropped) lands in that
 *                journey as a hop — so a journey is exactly the stages that counted the packet;
 *   building     a frame built towards the guest (GuestOutputQueue.begin/reserve) opens a
 *                journey of its own (`open`), pushing the current one aside until `commit`
 *                parks the new one under its Frame;
 *   egress       the port a frame leaves by records its hop and finishes the journey
 *                (`egress`); a frame the NAT consumes (its payload went to a host socket, or it
 *                was answered locally) is finished by the stack (`done`).
 *
 * A finished journey becomes a TraceRecord: the guest-side headers (parsed once, from the
 * frame), the NAT's host-side view of the flow when it has one (src/backends/nat/trace-view.ts),
 * and the rewrites that view implies (source 10.0.2.15:40123 → 127.0.0.1:51012 …), attached to
 * the stage where the translation happens. Each subscriber's filter (protocol, port, address,
 * direction, path, 1-in-N sampling) decides whether it gets the record.
 *
 * Bounded: at most MAX_OPEN journeys wait for their egress (older ones are forgotten), and a
 * journey keeps at most MAX_HOPS hops.
 */
import { performance } from 'node:perf_hooks';
import type { Frame } from '../link/frame';
import { observing, type Stage, type StageObserver } from './meter';
import { stageInfo } from './stages';

export type TraceDirection = 'tx' | 'rx';
export type TracePath = 'nat' | 'bridged' | 'local' | 'link';

export interface TraceCopy {
  from: string;
  to: string;
  bytes: number;
  count: number;
}

export interface TraceRewrite {
  field: string;
  from: string;
  to: string;
  note?: string;
}

export interface TraceHop {
  stage: string;
  fn: string;
  /** ns from the journey's start to this hop, and spent until the next hop (or the end). */
  at: number;
  ns: number;
  frames: number;
  bytes: number;
  copies: TraceCopy[];
  /** Rewrite count the stage's counters recorded, and the fields named by the trace. */
  rewriteCount: number;
  rewrites: TraceRewrite[];
  drop?: string;
}

/** The guest-side headers of the traced frame. */
export interface TraceHeaders {
  ethSrc?: string;
  ethDst?: string;
  etherType?: number;
  proto?: 'tcp' | 'udp' | 'icmp' | 'arp' | 'ipv6' | 'other';
  ipProto?: number;
  src?: string;
  dst?: string;
  srcPort?: number;
  dstPort?: number;
  ttl?: number;
  ipId?: number;
  ipChecksum?: number;
  length: number;
  tcpFlags?: string;
  seq?: number;
  ack?: number;
  window?: number;
  checksum?: number;
  payload?: number;
  icmpType?: number;
  icmpId?: number;
  gso?: string;
  partialChecksum?: boolean;
}

/** What the NAT knows of a flow's host side. */
export interface HostSideView {
  /** usernet's end of the host socket, and the host peer. */
  local: string;
  remote: string;
  /** What kind of socket (e.g. 'TCP (fd, MSG_PEEK)', 'UDP', 'ping socket'). */
  socket: string;
  /** The host socket's TTL for these packets, when known. */
  ttl?: number;
}

export interface TraceRecord {
  id: number;
  dir: TraceDirection;
  path: TracePath;
  /** Wall-clock ms when the journey started. */
  time: number;
  headers: TraceHeaders;
  host?: HostSideView;
  hops: TraceHop[];
  totalNs: number;
  copies: number;
  bytesCopied: number;
  rewrites: number;
  /** delivered (left through a port), consumed (the NAT took it), dropped:<reason>. */
  verdict: string;
}

export interface TraceFilter {
  proto?: 'tcp' | 'udp' | 'icmp' | 'arp';
  /** Matches either port, on the guest side or the host side. */
  port?: number;
  /** Matches either address, on the guest side or the host side. */
  address?: string;
  dir?: TraceDirection;
  path?: TracePath;
  /** Keep one matching journey in `sample`. Default 1 (all). */
  sample?: number;
  /** Leave out journeys with no payload (pure ACKs, …). */
  payloadOnly?: boolean;
}

/** The NAT's answer to "where does this flow go on the host?" (backends/nat/trace-view.ts). */
export interface NatTraceView {
  hostSide(h: TraceHeaders, dir: TraceDirection): HostSideView | null;
}

interface Journey {
  id: number;
  dir: TraceDirection | null;
  frame: Frame;
  start: number;
  time: number;
  hops: TraceHop[];
  headers: TraceHeaders | null;
  verdict: string;
}

interface Subscriber {
  filter: TraceFilter;
  seen: number;
  emit: (r: TraceRecord) => void;
}

const MAX_OPEN = 2048;
const MAX_HOPS = 64;

export class Tracer implements StageObserver {
  /** Set by the NAT's integration so records can show the host side of a flow. */
  natView: NatTraceView | null = null;
  private readonly subscribers = new Set<Subscriber>();
  private readonly open = new Map<Frame, Journey>();
  private current: Journey | null = null;
  private readonly stack: (Journey | null)[] = [];
  private nextId = 1;

  get on(): boolean {
    return observing.on;
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /** Receive every finished journey matching `filter` until the returned function is called. */
  subscribe(filter: TraceFilter, emit: (r: TraceRecord) => void): () => void {
    const s: Subscriber = { filter, seen: 0, emit };
    this.subscribers.add(s);
    this.update();
    return () => {
      this.subscribers.delete(s);
      this.update();
    };
  }

  private update(): void {
    const on = this.subscribers.size > 0;
    if (on) observing.observer = this;
    observing.on = on;
    if (!on) {
      this.open.clear();
      this.current = null;
      this.stack.length = 0;
    }
  }

  // ---- called by ports and the stack (always behind `if (observing.on)`) ----------------

  /** A frame entered usernet through `stage` (one frame, `copied` bytes copied on the way). */
  ingress(frame: Frame, stage: Stage, copied: number): void {
    const j = this.newJourney(frame);
    this.addHop(j, stage, 1, frame.data.length, copied > 0 ? 1 : 0, copied);
  }

  /** Start a journey for `frame` and make it current (a device model that counts as it goes). */
  enter(frame: Frame): void {
    this.current = this.newJourney(frame);
  }

  /** Leave the current journey waiting (under its frame) for whoever handles the frame next. */
  park(): void {
    this.current = null;
  }

  /** Make `frame`'s journey current (a new one if the frame has none). */
  select(frame: Frame): void {
    this.current = this.open.get(frame) ?? this.newJourney(frame);
  }

  /** Record a hop for `frame` without changing the current journey (batch stages, per frame). */
  hopFor(frame: Frame, stage: Stage, copied = 0): void {
    const j = this.open.get(frame);
    if (j) this.addHop(j, stage, 1, frame.data.length, copied > 0 ? 1 : 0, copied);
  }

  /** The frame left usernet through `stage`: its journey is complete. */
  egress(frame: Frame, stage: Stage, copied: number): void {
    const j = this.open.get(frame);
    if (!j) return;
    this.addHop(j, stage, 1, frame.data.length, copied > 0 ? 1 : 0, copied);
    if (j.verdict === '') j.verdict = 'delivered';
    this.finish(j);
  }

  /**
   * The frame was handed to a port that reports no egress of its own (a device model without
   * trace calls): its journey ends here, as far as usernet can follow it.
   */
  handedOff(frame: Frame): void {
    const j = this.open.get(frame);
    if (!j) return;
    if (j.verdict === '') j.verdict = 'delivered';
    this.finish(j);
  }

  /** The current journey ends here (the NAT consumed the frame). */
  done(): void {
    const j = this.current;
    this.current = null;
    if (!j || !this.open.has(j.frame) || this.open.get(j.frame) !== j) return;
    if (j.verdict === '') j.verdict = 'consumed';
    this.finish(j);
  }

  /** A frame is being built towards the guest: a journey of its own, the current one set aside. */
  openBuild(frame: Frame): void {
    this.stack.push(this.current);
    const j = this.newJourney(frame);
    j.dir = 'rx';
    this.current = j;
  }

  /** The built frame is queued: its journey waits under it for the egress; back to the previous. */
  commitBuild(frame: Frame): void {
    const j = this.open.get(frame);
    if (j && j.headers === null) j.headers = parseHeaders(frame);
    this.current = this.stack.length > 0 ? (this.stack.pop() ?? null) : null;
  }

  /** The frame being built was abandoned. */
  abortBuild(frame: Frame): void {
    const j = this.open.get(frame);
    if (j && j === this.current) this.open.delete(frame);
    this.current = this.stack.length > 0 ? (this.stack.pop() ?? null) : null;
  }

  /** Set the current journey aside (a batch is handed on: its counts belong to no one frame). */
  hold(): void {
    this.stack.push(this.current);
    this.current = null;
  }

  /** Back to the journey set aside by `hold`. */
  unhold(): void {
    this.current = this.stack.length > 0 ? (this.stack.pop() ?? null) : null;
  }

  // ---- StageObserver: the counting methods of every Stage --------------------------------

  pass(stage: Stage, frames: number, bytes: number): void {
    const j = this.current;
    if (j) this.addHop(j, stage, frames, bytes, 0, 0);
  }

  copied(stage: Stage, copies: number, bytes: number): void {
    const j = this.current;
    if (j) this.addHop(j, stage, 0, 0, copies, bytes);
  }

  rewrote(stage: Stage, n: number): void {
    const j = this.current;
    if (!j) return;
    const h = this.hopOf(j, stage);
    if (h) h.rewriteCount += n;
  }

  dropped(stage: Stage, reason: string): void {
    const j = this.current;
    if (!j) return;
    const h = this.hopOf(j, stage);
    if (h) h.drop = reason;
    j.verdict = `dropped:${reason}`;
  }

  // ---- internals --------------------------------------------------------------------------

  private newJourney(frame: Frame): Journey {
    if (this.open.size >= MAX_OPEN) {
      const oldest = this.open.keys().next().value;
      if (oldest) this.open.delete(oldest);
    }
    const j: Journey = { id: 0, dir: null, frame, start: performance.now(), time: Date.now(), hops: [], headers: null, verdict: '' };
    this.open.delete(frame);
    this.open.set(frame, j);
    return j;
  }

  /** The hop for `stage`: the last one if it is that stage, else a new one. */
  private hopOf(j: Journey, stage: Stage): TraceHop | null {
    const last = j.hops[j.hops.length - 1];
    if (last && last.stage === stage.name) return last;
    if (j.hops.length >= MAX_HOPS) return null;
    const info = stageInfo(stage.name);
    if (j.dir === null && info && (info.dir === 'tx' || info.dir === 'rx')) j.dir = info.dir;
    const hop: TraceHop = {
      stage: stage.name,
      fn: info?.fn ?? '',
      at: Math.round((performance.now() - j.start) * 1e6),
      ns: 0,
      frames: 0,
      bytes: 0,
      copies: [],
      rewriteCount: 0,
      rewrites: [],
    };
    j.hops.push(hop);
    return hop;
  }

  private addHop(j: Journey, stage: Stage, frames: number, bytes: number, copies: number, copied: number): void {
    const h = this.hopOf(j, stage);
    if (!h) return;
    if (frames > 0 && h.frames === 0) {
      h.frames = frames;
      h.bytes = bytes;
    }
    if (copies > 0) {
      const info = stageInfo(stage.name);
      const c = h.copies[0];
      if (c) {
        c.count += copies;
        c.bytes += copied;
      } else h.copies.push({ from: info?.copy?.from ?? '?', to: info?.copy?.to ?? '?', bytes: copied, count: copies });
    }
  }

  private finish(j: Journey): void {
    this.open.delete(j.frame);
    if (j === this.current) this.current = null;
    if (this.subscribers.size === 0 || j.hops.length === 0) return;
    const end = performance.now();
    const headers = j.headers ?? parseHeaders(j.frame);
    const hops = j.hops;
    for (let i = 0; i < hops.length; i++) {
      const next = i + 1 < hops.length ? hops[i + 1].at : Math.round((end - j.start) * 1e6);
      hops[i].ns = Math.max(0, next - hops[i].at);
    }
    const dir: TraceDirection = j.dir ?? 'tx';
    const path = pathOf(hops);
    let host: HostSideView | undefined;
    if (path === 'nat' && this.natView && (headers.proto === 'tcp' || headers.proto === 'udp' || headers.proto === 'icmp')) {
      host = this.natView.hostSide(headers, dir) ?? undefined;
    }
    const record: TraceRecord = {
      id: 0,
      dir,
      path,
      time: j.time,
      headers,
      host,
      hops,
      totalNs: Math.round((end - j.start) * 1e6),
      copies: 0,
      bytesCopied: 0,
      rewrites: 0,
      verdict: j.verdict || 'delivered',
    };
    describeRewrites(record);
    for (const h of hops) {
      for (const c of h.copies) {
        record.copies += c.count;
        record.bytesCopied += c.bytes;
      }
      record.rewrites += h.rewriteCount; // the ledger's count; the named rewrites explain them
    }
    let numbered = false;
    for (const s of this.subscribers) {
      if (!matches(s.filter, record)) continue;
      if (s.filter.sample && s.filter.sample > 1 && s.seen++ % s.filter.sample !== 0) continue;
      if (!numbered) {
        record.id = this.nextId++;
        numbered = true;
      }
      try {
        s.emit(record);
      } catch {
        /* a subscriber's failure is its own */
      }
    }
  }
}

/** The process-wide tracer (the ports and the stack report to it). */
export const tracer = new Tracer();

function pathOf(hops: TraceHop[]): TracePath {
  let nat = false;
  let tap = false;
  let hostSock = false;
  for (const h of hops) {
    if (h.stage.startsWith('host.')) hostSock = true;
    else if (h.stage.startsWith('nat.')) nat = true;
    else if (h.stage.startsWith('tap.')) tap = true;
  }
  if (hostSock) return 'nat';
  if (tap) return 'bridged';
  if (nat) {
    const translated = hops.some((h) => /^nat\.(tcp|udp|icmp)\.(tx|rx)$/.test(h.stage));
    return translated ? 'nat' : 'local';
  }
  return 'link';
}

function matches(f: TraceFilter, r: TraceRecord): boolean {
  const h = r.headers;
  if (f.dir && f.dir !== r.dir) return false;
  if (f.path && f.path !== r.path) return false;
  if (f.proto && f.proto !== h.proto) return false;
  if (f.payloadOnly && !(h.payload && h.payload > 0)) return false;
  if (f.port !== undefined) {
    const ports = [h.srcPort, h.dstPort, portOf(r.host?.local), portOf(r.host?.remote)];
    if (!ports.includes(f.port)) return false;
  }
  if (f.address) {
    const addrs = [h.src, h.dst, addrOf(r.host?.local), addrOf(r.host?.remote)];
    if (!addrs.includes(f.address)) return false;
  }
  return true;
}

function portOf(ep: string | undefined): number | undefined {
  if (!ep) return undefined;
  const i = ep.lastIndexOf(':');
  return i < 0 ? undefined : Number(ep.slice(i + 1));
}

function addrOf(ep: string | undefined): string | undefined {
  if (!ep) return undefined;
  const i = ep.lastIndexOf(':');
  return i < 0 ? ep : ep.slice(0, i);
}

const hex = (n: number, w = 4): string => '0x' + n.toString(16).padStart(w, '0');
const mac = (b: Uint8Array, o: number): string => Array.from(b.subarray(o, o + 6), (x) => x.toString(16).padStart(2, '0')).join(':');
const ip4 = (b: Uint8Array, o: number): string => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
const u16 = (b: Uint8Array, o: number): number => (b[o] << 8) | b[o + 1];
const u32 = (b: Uint8Array, o: number): number => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;

const TCP_FLAG_NAMES: [number, string][] = [
  [0x02, 'SYN'],
  [0x10, 'ACK'],
  [0x08, 'PSH'],
  [0x01, 'FIN'],
  [0x04, 'RST'],
  [0x20, 'URG'],
  [0x40, 'ECE'],
  [0x80, 'CWR'],
];

/** The guest-side headers of an Ethernet frame (never throws on short or odd frames). */
export function parseHeaders(frame: Frame): TraceHeaders {
  const b = frame.data;
  const h: TraceHeaders = { length: b.length };
  if (frame.gsoType !== 0) h.gso = `type ${frame.gsoType}, segments of ${frame.gsoSize} B`;
  if (frame.flags & 1) h.partialChecksum = true;
  if (b.length < 14) return h;
  h.ethDst = mac(b, 0);
  h.ethSrc = mac(b, 6);
  h.etherType = u16(b, 12);
  if (h.etherType === 0x0806) {
    h.proto = 'arp';
    if (b.length >= 42) {
      h.src = ip4(b, 28);
      h.dst = ip4(b, 38);
    }
    return h;
  }
  if (h.etherType === 0x86dd) {
    h.proto = 'ipv6';
    return h;
  }
  if (h.etherType !== 0x0800 || b.length < 34) {
    h.proto = 'other';
    return h;
  }
  const ihl = (b[14] & 0x0f) * 4;
  const total = u16(b, 16);
  h.ipId = u16(b, 18);
  h.ttl = b[22];
  h.ipProto = b[23];
  h.ipChecksum = u16(b, 24);
  h.src = ip4(b, 26);
  h.dst = ip4(b, 30);
  const l4 = 14 + ihl;
  const l4len = Math.max(0, Math.min(total, b.length - 14) - ihl);
  if (h.ipProto === 6 && l4len >= 20 && l4 + 20 <= b.length) {
    h.proto = 'tcp';
    h.srcPort = u16(b, l4);
    h.dstPort = u16(b, l4 + 2);
    h.seq = u32(b, l4 + 4);
    h.ack = u32(b, l4 + 8);
    const flags = b[l4 + 13];
    h.tcpFlags = TCP_FLAG_NAMES.filter(([bit]) => flags & bit).map(([, n]) => n).join(' ');
    h.window = u16(b, l4 + 14);
    h.checksum = u16(b, l4 + 16);
    h.payload = Math.max(0, l4len - (b[l4 + 12] >>> 4) * 4);
  } else if (h.ipProto === 17 && l4len >= 8 && l4 + 8 <= b.length) {
    h.proto = 'udp';
    h.srcPort = u16(b, l4);
    h.dstPort = u16(b, l4 + 2);
    h.checksum = u16(b, l4 + 6);
    h.payload = Math.max(0, l4len - 8);
  } else if (h.ipProto === 1 && l4len >= 8 && l4 + 8 <= b.length) {
    h.proto = 'icmp';
    h.icmpType = b[l4];
    h.icmpId = u16(b, l4 + 4);
    h.checksum = u16(b, l4 + 2);
    h.payload = Math.max(0, l4len - 8);
  } else h.proto = 'other';
  return h;
}

function findLast<T>(a: T[], f: (x: T) => boolean): T | undefined {
  for (let i = a.length - 1; i >= 0; i--) if (f(a[i])) return a[i];
  return undefined;
}

const ep = (a: string | undefined, p: number | undefined): string => (p === undefined ? `${a ?? '?'}` : `${a ?? '?'}:${p}`);

/**
 * Name the rewrites a record implies. NAT: the translation between the guest's view of the flow
 * and the host socket's, attached to the stage where it happens (the host socket write for
 * guest → host; the header build for host → guest); bridged: none, said explicitly.
 */
function describeRewrites(r: TraceRecord): void {
  const h = r.headers;
  const find = (re: RegExp): TraceHop | undefined => r.hops.find((x) => re.test(x.stage));
  if (r.path === 'bridged') return;
  if (r.path !== 'nat' || !r.host) {
    // header build towards the guest without a host view (local answers): the generic fields
    if (r.dir === 'rx' && h.ttl !== undefined) {
      const out = find(/^nat\.output\.rx$/);
      out?.rewrites.push({ field: 'IPv4 header', from: '—', to: `built: TTL ${h.ttl}, id ${h.ipId}, checksum ${hex(h.ipChecksum ?? 0)}` });
    }
    return;
  }
  const host = r.host;
  const proto = h.proto ?? '';
  const guestEp = r.dir === 'tx' ? ep(h.src, h.srcPort) : ep(h.dst, h.dstPort);
  const peerEp = r.dir === 'tx' ? ep(h.dst, h.dstPort) : ep(h.src, h.srcPort);
  const list: TraceRewrite[] = [];
  if (r.dir === 'tx') {
    if (guestEp !== host.local) list.push({ field: 'source', from: guestEp, to: host.local, note: `the host socket's own address and port (${host.socket})` });
    if (peerEp !== host.remote) list.push({ field: 'destination', from: peerEp, to: host.remote, note: peerEp.startsWith('10.0.2.2') ? 'the gateway is the host loopback' : undefined });
    if (proto === 'tcp') {
      list.push({ field: 'sequence/ack', from: `${h.seq}/${h.ack}`, to: "the host kernel's own sequence space", note: 're-terminated: the two connections number their bytes independently' });
      list.push({ field: 'TCP checksum', from: `${hex(h.checksum ?? 0)}${h.partialChecksum ? ' (partial, NEEDS_CSUM)' : ''}`, to: 'computed by the host kernel for its header' });
    } else if (proto === 'icmp') {
      list.push({ field: 'ICMP identifier', from: String(h.icmpId), to: host.socket.includes('ping') ? 'chosen by the kernel (ping socket)' : 'usernet’s raw-socket identifier' });
    }
    if (h.ttl !== undefined) list.push({ field: 'TTL', from: String(h.ttl), to: host.ttl !== undefined ? String(host.ttl) : 'the host socket’s', note: 'a hop: the guest’s TTL − 1 beyond the host, the default towards loopback' });
    if (!find(/^host\./) && proto === 'tcp') {
      // nothing crossed: the segment ends in usernet's TCP (handshake, ACK, window update)
      const tcpHop = findLast(r.hops, (x) => x.stage === 'nat.tcp.tx');
      tcpHop?.rewrites.push({ field: 'segment', from: h.tcpFlags ?? '', to: 'absorbed', note: 'no payload for the host: the guest’s TCP talks to usernet, not to the host peer' });
      return;
    }
    // on the protocol stage that counted the translation (else the host write)
    const at = findLast(r.hops, (x) => /^nat\.(tcp|udp|icmp)\.tx$/.test(x.stage) && x.rewriteCount > 0) ?? find(/^host\.(tcp|udp|icmp)\.write$/) ?? find(/^nat\.(tcp|udp|icmp)\.tx$/);
    if (at) at.rewrites.push(...list);
  } else {
    if (host.remote !== peerEp) list.push({ field: 'source', from: host.remote, to: peerEp, note: 'the host peer as the guest knows it' });
    if (host.local !== guestEp) list.push({ field: 'destination', from: host.local, to: guestEp, note: "the guest's end of the flow" });
    if (proto === 'tcp') list.push({ field: 'sequence/ack', from: "the host kernel's", to: `${h.seq}/${h.ack}`, note: "usernet's own numbering towards the guest" });
    if (proto === 'icmp') list.push({ field: 'ICMP identifier', from: 'the host socket’s', to: String(h.icmpId), note: 'restored, checksum adjusted (RFC 1624)' });
    const at = findLast(r.hops, (x) => /^nat\.(tcp|udp|icmp)\.rx$/.test(x.stage)) ?? find(/^nat\.output\.rx$/);
    at?.rewrites.push(...list);
    const out = find(/^nat\.output\.rx$/);
    const fields = [`TTL ${h.ttl}`, `IP id ${h.ipId}`, `header checksum ${hex(h.ipChecksum ?? 0)}`];
    out?.rewrites.push({ field: 'Ethernet + IPv4 header', from: '—', to: `built: ${h.ethSrc} → ${h.ethDst}, ${fields.join(', ')}` });
    if (proto === 'tcp' || proto === 'udp') {
      const tHop = find(/^nat\.(tcp|udp)\.rx$/);
      tHop?.rewrites.push({
        field: `${proto.toUpperCase()} checksum`,
        from: '—',
        to: h.partialChecksum ? `${hex(h.checksum ?? 0)} = pseudo-header sum (NEEDS_CSUM: the guest's side finishes it)` : `${hex(h.checksum ?? 0)} (computed)`,
      });
    }
  }
}
