/**
 * The TCP module of the NAT stack: TCP by re-termination.
 *
 * Theory of operation. The guest's TCP connections end here: every guest connection is a
 * TcpConnection (tcp-connection.ts) — a guest-facing TCP endpoint — joined to one host socket
 * (tcp-host.ts) that this module opens with a non-blocking connect when the guest's SYN
 * arrives. The SYN is answered only once the host connect succeeded (so the guest sees the
 * host peer's answer, not ours): refused → RST, unreachable or timed out → the ICMP error the
 * network would have sent (RFC 1122 §4.2.3.9, via NatContext.icmpError). Port forwarding
 * (forward.ts) goes the other way: a connection accepted on the host becomes a SYN from the
 * gateway to the guest.
 *
 * This file does the per-segment plumbing: validate the segment (length, checksum unless the
 * frontend vouched for it, option syntax — counted and dropped, never thrown), copy its fields
 * into one reused GuestSegment, find the connection in the bounded flow table (flows.ts:
 * allocation-free lookup by the 5-tuple as the guest sees it), and either hand the segment over,
 * start a connection (a SYN), or answer as a closed port would (RFC 9293 §3.10.7.1: RST).
 *
 * Limits (issue: bad or hostile guests cannot grow the process without bound): the flow table
 * (`config.maxFlows`, least recently used evicted with a RST both ways), the half-open set
 * (`config.maxHalfOpen` connections waiting for their host connect or for the guest's final
 * ACK; further SYNs are dropped and the guest retransmits), the out-of-order queue and the
 * host-socket rings per connection.
 *
 * ACKs towards the guest are coalesced: a connection that took data asks for an ACK, and all
 * such ACKs go out in one microtask after the input batch (one ACK per connection per batch,
 * even for a batch of 64 KiB super-frames). Out-of-order segments, window probes and
 * challenge ACKs are answered at once.
 *
 * Timers: one TimerWheel for every connection (tcp-timers.ts), no per-segment closures.
 *
 * Host sockets (tcp-host.ts): the connect goes through the native addon (the guest's SYN TTL
 * on the host SYN, IP_RECVERR so an ICMP error that aborts it comes back to the guest from the
 * router that sent it); the data phase runs either on a Node socket with two bounded rings
 * (tcp-host-node.ts, the default: kernel → ring → frame, frame → ring → kernel) or on the raw
 * fd with no buffer of ours (tcp-host-fd.ts: MSG_PEEK at an offset straight into the frame,
 * send straight from the guest's frame — one copy each way; opt-in, see `hostSockets`).
 */
import { GSO_NONE } from '../../link/frame';
import type { Stage } from '../../meter/meter';
import { HOST_TCP_READ, HOST_TCP_WRITE, NAT_TCP_RX, NAT_TCP_TX } from '../../meter/stages';
import { onesSum } from '../../wire/checksum';
import { parseIpv4 } from '../../wire/address';
import type { GuestPacket, NatContext, ProtocolModule } from './context';
import { FlowTable, type FlowNode } from './flows';
import type { HostSocket, HostSocketEvents, HostSocketFactory } from './tcp-host';
import type { NodeHostSocketOptions } from './tcp-host-node';
import { hostSocketFactory } from './tcp-host-native';
import { fdHostSocketFactory, fdHostSocketsAvailable } from './tcp-host-fd';
import { TcpConnection, TcpFlowStats, TcpState, type TcpShared, type TcpTimings } from './tcp-connection';
import { addressSum, IPPROTO_TCP, TcpEmitter, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from './tcp-output';
import { GuestSegment, seqAdd } from './tcp-segment';
import { monotonicMs, TimerWheel, type Clock } from './tcp-timers';

export const DEFAULT_TCP_TIMINGS: TcpTimings = {
  connectTimeoutMs: 60_000,
  timeWaitMs: 2_000,
  idleTimeoutMs: 7_440_000, // RFC 5382 REQ-5: at least 2 h 4 min
  rtoInitialMs: 1_000, // RFC 6298 §2.1
  rtoMinMs: 200,
  rtoMaxMs: 60_000,
  maxRetransmits: 12,
  maxSynRetransmits: 5,
  reassemblyBytes: 256 * 1024,
  hostKeepAliveMs: 0,
  maxWindow: 4 * 1024 * 1024,
};

export interface TcpModuleOptions extends Partial<TcpTimings> {
  /**
   * How host sockets are made (default: the addon's connect with the guest's TTL and the ICMP
   * error queue, then a Node socket; plain Node when the addon is not built).
   */
  hosts?: HostSocketFactory;
  /** Open host sockets inside this network namespace (default: ours). */
  hostNetns?: string | null;
  /**
   * Which host-socket implementation (default 'node', or env USERNET_TCP_HOST):
   *  'node'  net.Socket with bounded rings (tcp-host-node.ts): two copies host → guest, two
   *          guest → host; the one measured in the benchmarks;
   *  'fd'    native fd, MSG_PEEK with SO_PEEK_OFF, no buffers of our own (tcp-host-fd.ts):
   *          one copy each way and less CPU per byte; passes every test, but measured a little
   *          slower than 'node' in iperf3 on the shared 2-core machine, so it is opt-in for
   *          now. Falls back to 'node' when the addon or the kernel (Linux < 6.9) lacks it.
   */
  hostSockets?: 'fd' | 'node';
  /** Wrap the host-socket factory (the meter's --pcap-host capture, meter/pcap-host.ts). */
  wrapHosts?: (hosts: HostSocketFactory) => HostSocketFactory;
  /** Sizes for the Node adapter's rings. */
  rxInitial?: number;
  rxMax?: number;
  txCapacity?: number;
  /** Clock (ms) for timers: tests may inject one. */
  now?: Clock;
}

/** Summary row of one connection (for `usernet stats` and tests). */
export type TcpConnectionInfo = ReturnType<TcpConnection['describe']>;

const TCP_MIN_HEADER = 20;

export class TcpModule implements ProtocolModule, TcpShared {
  readonly wheel: TimerWheel;
  readonly emitter: TcpEmitter;
  readonly stage: Stage;
  readonly outStage: Stage;
  readonly timings: TcpTimings;
  readonly hosts: HostSocketFactory;
  readonly nodeOptions: NodeHostSocketOptions;
  /** What `hosts` makes (for logs, stats and the port forwarder). */
  readonly hostSocketKind: 'fd' | 'node';
  private readonly flows: FlowTable<TcpConnection>;
  private halfOpenCount = 0;
  private readonly seg = new GuestSegment();
  private readonly ackQueue: TcpConnection[] = [];
  private ackScheduled = false;
  private readonly outputQueue: TcpConnection[] = [];
  private outputScheduled = false;
  private readonly gateway4: number;
  private readonly dns4: number;
  private closing = false;
  private readonly closedTotals = new TcpFlowStats();
  private closedCount = 0;
  /** Next source port tried for port-forwarded connections. */
  private forwardPortCursor = 49152;
  /**
   * The host address and port of the port forward leading to a guest port (forward.ts sets
   * it): a guest connection from that port leaves from there, so a peer connecting to the
   * forward at the same moment meets it (TCP simultaneous open, RFC 5382 REQ-2).
   */
  listenerFor: ((guest: Uint8Array, guestPort: number) => { address: string; port: number } | null) | null = null;

  constructor(readonly ctx: NatContext, opts: TcpModuleOptions = {}) {
    const t: TcpTimings = { ...DEFAULT_TCP_TIMINGS };
    for (const k of Object.keys(DEFAULT_TCP_TIMINGS) as (keyof TcpTimings)[]) {
      const v = opts[k];
      if (typeof v === 'number') t[k] = v;
    }
    this.timings = t;
    this.stage = ctx.meter.stage(NAT_TCP_TX);
    this.outStage = ctx.meter.stage(NAT_TCP_RX);
    this.wheel = new TimerWheel(opts.now ?? monotonicMs);
    this.emitter = new TcpEmitter(ctx.out, this.outStage, (a) => this.translated(a));
    ctx.out.onGuestUnblocked?.(() => {
      if (!this.outputScheduled && this.outputQueue.length > 0) this.retryOutput();
    });
    this.nodeOptions = {
      readStage: ctx.meter.stage(HOST_TCP_READ),
      writeStage: ctx.meter.stage(HOST_TCP_WRITE),
      rxInitial: opts.rxInitial,
      rxMax: opts.rxMax,
      txCapacity: opts.txCapacity,
    };
    // The stack's context names the namespace its host sockets live in (tests, sandboxes).
    const stackNetns = (ctx as NatContext & { hostNetns?: string | null }).hostNetns ?? null;
    const netns = opts.hostNetns ?? stackNetns;
    const kind = opts.hostSockets ?? (process.env.USERNET_TCP_HOST as 'fd' | 'node' | undefined) ?? 'node';
    const useFd = kind === 'fd' && fdHostSocketsAvailable();
    this.hostSocketKind = useFd ? 'fd' : 'node';
    const hosts = opts.hosts ?? (useFd ? fdHostSocketFactory(this.nodeOptions, netns) : hostSocketFactory(this.nodeOptions, netns));
    this.hosts = opts.wrapHosts ? opts.wrapHosts(hosts) : hosts;
    this.flows = new FlowTable<TcpConnection>({
      name: 'tcp',
      meter: ctx.meter,
      limit: ctx.config.maxFlows,
      whenFull: 'evict-oldest',
      onEvict: (c, reason) => {
        if (reason !== 'closed') c.abort(`evicted-${reason}`);
      },
    });
    this.gateway4 = parseIpv4(ctx.config.gateway);
    this.dns4 = parseIpv4(ctx.config.dns);
  }

  get size(): number {
    return this.flows.size;
  }

  /** Is `addr` (a guest-side remote address) one the host side reaches under another address? */
  private translated(addr: Uint8Array): boolean {
    if (addr.length !== 4) return false;
    const a = readU32(addr);
    return a === this.gateway4 || a === this.dns4;
  }

  get halfOpen(): number {
    return this.halfOpenCount;
  }

  // ---------------------------------------------------------------------------------------
  // Guest input
  // ---------------------------------------------------------------------------------------

  input(pkt: GuestPacket): void {
    if (this.closing) return;
    const stage = this.stage;
    const len = pkt.l4Length;
    stage.pass(1, len);
    const b = pkt.frame.data;
    const t = pkt.l4Offset;
    if (len < TCP_MIN_HEADER || t + len > b.length) {
      this.drop('truncated');
      return;
    }
    const hdr = (b[t + 12] >>> 4) * 4;
    if (hdr < TCP_MIN_HEADER || hdr > len) {
      this.drop('bad-header-length');
      return;
    }
    if (!pkt.checksumTrusted) {
      const sum = onesSum(b, t, len, addressSum(pkt.src, pkt.dst) + len);
      if (fold16(sum) !== 0xffff) {
        this.drop('bad-checksum');
        return;
      }
    }
    const s = this.seg;
    s.resetOptions();
    if (hdr > TCP_MIN_HEADER && !parseOptions(b, t + TCP_MIN_HEADER, hdr - TCP_MIN_HEADER, s)) {
      this.drop('bad-option');
      return;
    }
    const srcPort = (b[t] << 8) | b[t + 1];
    const dstPort = (b[t + 2] << 8) | b[t + 3];
    s.seq = ((b[t + 4] << 24) | (b[t + 5] << 16) | (b[t + 6] << 8) | b[t + 7]) >>> 0;
    s.ack = ((b[t + 8] << 24) | (b[t + 9] << 16) | (b[t + 10] << 8) | b[t + 11]) >>> 0;
    s.flags = b[t + 13];
    s.window = (b[t + 14] << 8) | b[t + 15];
    s.data = b;
    s.dataOffset = t + hdr;
    s.dataLength = len - hdr;
    s.gso = pkt.frame.gsoType !== GSO_NONE;
    if (srcPort === 0 || dstPort === 0) {
      this.drop('port-zero');
      return;
    }

    const node = this.flows.lookup(pkt.family, IPPROTO_TCP, pkt.src, srcPort, pkt.dst, dstPort);
    if (node) {
      // payload crossing: the guest's address and port ⇄ the host socket's (and the gateway ⇄ loopback)
      if (s.dataLength > 0) stage.rewrote(this.translated(pkt.dst) ? 3 : 2);
      this.flows.touch(node);
      if (node.value.segmentArrives(s)) return;
      // A SYN reopening a TIME_WAIT tuple: the old connection is gone, start a new one.
    }
    const f = s.flags;
    if ((f & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN) {
      this.newConnection(pkt, srcPort, dstPort);
      return;
    }
    if (f & TCP_RST) {
      this.drop('rst-no-flow');
      return;
    }
    // A closed port's answer (RFC 9293 §3.10.7.1).
    if (f & TCP_ACK) this.emitter.bare(pkt.family, pkt.dst, dstPort, pkt.src, srcPort, s.ack, 0, TCP_RST);
    else {
      const segLen = s.dataLength + (f & TCP_SYN ? 1 : 0) + (f & TCP_FIN ? 1 : 0);
      this.emitter.bare(pkt.family, pkt.dst, dstPort, pkt.src, srcPort, 0, seqAdd(s.seq, segLen), TCP_RST | TCP_ACK);
    }
    this.drop('no-flow');
  }

  private newConnection(pkt: GuestPacket, srcPort: number, dstPort: number): void {
    if (this.halfOpenCount >= this.ctx.config.maxHalfOpen) {
      this.drop('half-open-full');
      return;
    }
    const hostAddress = this.ctx.hostAddressFor(pkt.family, pkt.dst);
    if (hostAddress === null) {
      this.refuse(pkt, srcPort, dstPort);
      return;
    }
    const c = TcpConnection.fromGuestSyn(this, pkt, this.seg, srcPort, dstPort, hostAddress, this.bindFor(pkt.src, srcPort, hostAddress));
    c.halfOpen = true;
    this.halfOpenCount++;
    const node = this.flows.insert(pkt.family, IPPROTO_TCP, pkt.src, srcPort, pkt.dst, dstPort, c);
    if (!node) {
      c.destroy('table-full', true);
      return;
    }
    c.node = node;
  }

  /** Where a guest connection from `guest:port` to `hostAddress` binds on the host, or null. */
  private bindFor(guest: Uint8Array, port: number, hostAddress: string): { address: string; port: number } | null {
    const l = this.listenerFor?.(guest, port) ?? null;
    if (!l || l.port === 0) return null;
    // A forward on a loopback address cannot be the source of a connection elsewhere.
    if (l.address.startsWith('127.') && !hostAddress.startsWith('127.')) return null;
    return l;
  }

  /** A destination the policy refuses: RST from our own addresses, ICMP for the rest. */
  private refuse(pkt: GuestPacket, srcPort: number, dstPort: number): void {
    const d = pkt.dst;
    const ours =
      pkt.family === 4 && (readU32(d) === this.gateway4 || readU32(d) === this.dns4);
    if (ours) {
      this.emitter.bare(pkt.family, pkt.dst, dstPort, pkt.src, srcPort, 0, seqAdd(this.seg.seq, 1), TCP_RST | TCP_ACK);
      this.drop('refused-port');
    } else {
      // Administratively prohibited (RFC 1812 §5.2.7.1; ICMPv6 destination unreachable code 1).
      if (pkt.family === 4) this.ctx.icmpError(pkt, 3, 13, 0);
      else this.ctx.icmpError(pkt, 1, 1, 0);
      this.drop('refused-destination');
    }
  }

  private drop(reason: string): void {
    this.stage.dropped(reason);
  }

  // ---------------------------------------------------------------------------------------
  // Port forwarding (forward.ts): host-accepted connections towards the guest
  // ---------------------------------------------------------------------------------------

  /**
   * Open a connection to `guestAddr:guestPort` from `fromAddr` (the gateway) for a host
   * socket already accepted. `makeHost` wraps that socket once the connection exists. Returns
   * null when no source port is free or the table refuses (the caller closes the socket).
   */
  openToGuest(
    family: 4 | 6,
    guestAddr: Uint8Array,
    guestPort: number,
    fromAddr: Uint8Array,
    preferredPort: number,
    makeHost: (events: HostSocketEvents) => HostSocket,
  ): TcpConnection | null {
    if (this.closing) return null;
    const port = this.pickSourcePort(family, guestAddr, guestPort, fromAddr, preferredPort);
    if (port < 0) {
      this.drop('forward-no-port');
      return null;
    }
    const c = TcpConnection.toGuest(this, family, guestAddr, guestPort, fromAddr, port, makeHost);
    const node = this.flows.insert(family, IPPROTO_TCP, guestAddr, guestPort, fromAddr, port, c);
    if (!node) {
      c.destroy('table-full', true);
      return null;
    }
    c.node = node;
    return c;
  }

  private pickSourcePort(family: 4 | 6, guest: Uint8Array, guestPort: number, from: Uint8Array, preferred: number): number {
    if (preferred >= 1024 && !this.flows.lookup(family, IPPROTO_TCP, guest, guestPort, from, preferred)) return preferred;
    for (let i = 0; i < 16384; i++) {
      const p = this.forwardPortCursor;
      this.forwardPortCursor = p >= 65535 ? 49152 : p + 1;
      if (!this.flows.lookup(family, IPPROTO_TCP, guest, guestPort, from, p)) return p;
    }
    return -1;
  }

  // ---------------------------------------------------------------------------------------
  // TcpShared: services for connections
  // ---------------------------------------------------------------------------------------

  ackLater(c: TcpConnection): void {
    this.ackQueue.push(c);
    if (!this.ackScheduled) {
      this.ackScheduled = true;
      queueMicrotask(this.flushAcks);
    }
  }

  private readonly flushAcks = (): void => {
    this.ackScheduled = false;
    const q = this.ackQueue;
    for (let i = 0; i < q.length; i++) q[i].flushAck();
    q.length = 0;
  };

  outputLater(c: TcpConnection): void {
    if (this.outputQueue.includes(c)) return;
    this.outputQueue.push(c);
    // a full guest port: wait for it to say so (onGuestUnblocked), not for the next turn
    if (!this.outputScheduled && !this.ctx.out.guestBlocked) {
      this.outputScheduled = true;
      setImmediate(this.retryOutput);
    }
  }

  private readonly retryOutput = (): void => {
    this.outputScheduled = false;
    const q = this.outputQueue.splice(0);
    for (const c of q) if (c.state !== TcpState.Closed) c.output();
  };

  halfOpenDone(c: TcpConnection): void {
    if (!c.halfOpen) return;
    c.halfOpen = false;
    this.halfOpenCount--;
  }

  closed(c: TcpConnection): void {
    addStats(this.closedTotals, c.stats);
    this.closedCount++;
    const node = c.node as FlowNode<TcpConnection> | null;
    if (node && node.live) this.flows.remove(node);
    c.node = null;
  }

  // ---------------------------------------------------------------------------------------

  /** Every live connection (not for hot paths). */
  *connections(): IterableIterator<TcpConnection> {
    yield* this.flows.values();
  }

  /**
   * Counters of every connection this module had, live and closed, summed (for `usernet
   * stats` and the meter's per-flow view), with how many connections closed so far.
   */
  totals(): TcpFlowStats & { connectionsClosed: number; connectionsLive: number } {
    const sum = new TcpFlowStats();
    addStats(sum, this.closedTotals);
    for (const c of this.flows.values()) addStats(sum, c.stats);
    return Object.assign(sum, { connectionsClosed: this.closedCount, connectionsLive: this.flows.size });
  }

  describe(): TcpConnectionInfo[] {
    return [...this.flows.values()].map((c) => c.describe());
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    for (const c of [...this.flows.values()]) c.abort('shutdown');
    this.flows.close();
    this.wheel.close();
    this.ackQueue.length = 0;
    this.outputQueue.length = 0;
  }
}

/** The factory the stack plugs in: `tcp: (ctx) => createTcpModule(ctx)`. */
export function createTcpModule(ctx: NatContext, opts: TcpModuleOptions = {}): TcpModule {
  return new TcpModule(ctx, opts);
}

function addStats(into: TcpFlowStats, from: TcpFlowStats): void {
  const a = into as unknown as Record<string, number>;
  const b = from as unknown as Record<string, number>;
  for (const k of Object.keys(b)) a[k] = (a[k] ?? 0) + b[k];
}

function fold16(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

function readU32(a: Uint8Array): number {
  return ((a[0] << 24) | (a[1] << 16) | (a[2] << 8) | a[3]) >>> 0;
}

/**
 * TCP options (RFC 9293 §3.2; MSS, RFC 7323 window scale and timestamps, RFC 2018 SACK) into
 * `s`. False on a malformed list (a length byte < 2 or running past the header, or a known
 * option with the wrong length). Unknown options are skipped.
 */
export function parseOptions(b: Uint8Array, off: number, len: number, s: GuestSegment): boolean {
  const end = off + len;
  let p = off;
  while (p < end) {
    const kind = b[p];
    if (kind === 0) break; // end of option list
    if (kind === 1) {
      p++;
      continue;
    }
    if (p + 1 >= end) return false;
    const l = b[p + 1];
    if (l < 2 || p + l > end) return false;
    switch (kind) {
      case 2:
        if (l !== 4) return false;
        s.mss = (b[p + 2] << 8) | b[p + 3];
        break;
      case 3:
        if (l !== 3) return false;
        s.windowScale = b[p + 2];
        break;
      case 4:
        if (l !== 2) return false;
        s.sackPermitted = true;
        break;
      case 5: {
        if (l < 10 || (l - 2) % 8 !== 0) return false;
        const n = Math.min((l - 2) / 8, 4);
        for (let i = 0; i < n; i++) {
          const q = p + 2 + 8 * i;
          s.sackBlocks[2 * i] = ((b[q] << 24) | (b[q + 1] << 16) | (b[q + 2] << 8) | b[q + 3]) >>> 0;
          s.sackBlocks[2 * i + 1] = ((b[q + 4] << 24) | (b[q + 5] << 16) | (b[q + 6] << 8) | b[q + 7]) >>> 0;
        }
        s.sackCount = n;
        break;
      }
      case 8:
        if (l !== 10) return false;
        s.hasTimestamps = true;
        s.tsVal = ((b[p + 2] << 24) | (b[p + 3] << 16) | (b[p + 4] << 8) | b[p + 5]) >>> 0;
        s.tsEcr = ((b[p + 6] << 24) | (b[p + 7] << 16) | (b[p + 8] << 8) | b[p + 9]) >>> 0;
        break;
      default:
        break;
    }
    p += l;
  }
  return true;
}
