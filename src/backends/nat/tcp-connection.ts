/**
 * TcpConnection: one re-terminated TCP connection — the guest-facing TCP endpoint (a full
 * RFC 9293 state machine with RFC 7323, 2018, 5681, 6298 and 5961 behaviour) glued to one host
 * socket (tcp-host.ts). usernet is the guest's peer on the virtual link and the host peer's
 * peer on the real network; bytes pass from one side to the other without a buffer of our own
 * beyond what the host-socket adapter needs.
 *
 * States (RFC 9293 §3.3.2 names, guest side):
 *
 *   guest's SYN ──► CONNECTING ──host connect ok──► SYN_RECEIVED ──guest ACK──► ESTABLISHED
 *                   (no answer yet; the guest's      (SYN-ACK sent,
 *                    SYN retransmissions are          retransmitted on RTO)
 *                    absorbed; refused → RST,
 *                    unreachable → ICMP error)
 *   port forward ─► SYN_SENT ──guest SYN-ACK──► ESTABLISHED   (host socket already accepted)
 *
 *   ESTABLISHED ──guest FIN──► CLOSE_WAIT ──host EOF, all sent──► LAST_ACK ──ACK──► closed
 *   ESTABLISHED ──host EOF, all sent, FIN──► FIN_WAIT_1 ──ACK──► FIN_WAIT_2 ──guest FIN──► TIME_WAIT
 *                                            FIN_WAIT_1 ──guest FIN──► CLOSING ──ACK──► TIME_WAIT
 *
 * Half-close is held open as long as either side sends: after the guest's FIN the host socket
 * is shut down for writing only (the host may keep sending; CLOSE_WAIT carries its data), and
 * after the host's FIN the guest may keep sending in FIN_WAIT_2. TIME_WAIT is short
 * (`timeWaitMs`), answers a retransmitted FIN with an ACK, and is the first thing evicted when
 * the table is full.
 *
 * Guest → host: an in-order segment is offered to the host socket; only what it took advances
 * RCV.NXT and is acknowledged (ACKs are coalesced: one per connection per input batch). The
 * window we advertise is the host socket's free write space (never shrinking the right edge
 * already advertised, RFC 9293 §3.8.6.2.2), scaled by our window-scale shift. Segments beyond
 * RCV.NXT go to the bounded out-of-order queue (tcp-reassembly.ts) and are reported with SACK;
 * an out-of-order segment is answered at once with a duplicate ACK (RFC 5681 §4.2).
 *
 * Host → guest: bytes stay in the host socket (or its adapter's ring) until the guest ACKs
 * them; segments are built by peeking at offset SEQ − (first unconsumed byte). Sending is
 * limited by min(guest window, cwnd) (RFC 5681 slow start / congestion avoidance towards the
 * guest), with NewReno fast retransmit/recovery on three duplicate ACKs (RFC 5681 §3.2,
 * RFC 6582) skipping ranges the guest reported with SACK, and an RTO per RFC 6298 (minimum
 * `rtoMinMs`, default 200 ms as Linux, since the virtual link's RTT is sub-millisecond; binary
 * backoff; go-back-N from SND.UNA after a timeout). A zero window from the guest starts the
 * persist timer: probes are ACKs with SEQ = SND.UNA − 1 (as Linux sends them), which the guest
 * must answer with its current window. RTT comes from timestamps (RFC 7323 §4) or, without
 * them, from one timed segment at a time (Karn's rule).
 *
 * Keep-alives (RFC 9293 §3.8.4; issue 8: honoured in both directions): a guest probe (SEQ =
 * RCV.NXT − 1, at most one byte) is answered with an ACK here, and it tells us the guest wants a
 * dead peer noticed — so the host socket gets SO_KEEPALIVE with the guest's idle time as seen
 * (time since the connection's last activity when the probe came; only the idle time shows:
 * answered probes never retry, so the guest's interval and count are invisible) and a tenth of
 * it (1–75 s) between `HOST_KEEPALIVE_PROBES` probes. When the host kernel's probes go
 * unanswered the socket fails (ETIMEDOUT) and the guest gets a RST, so its next probe or read
 * fails as it would against the real peer. Keep-alives of the host peer are the host kernel's
 * to answer. Every probe counts as activity for the idle timeout (RFC 5382 REQ-5: at least
 * 2 h 4 min, `idleTimeoutMs`), as do data and ACKs in both directions.
 *
 * Bad segments (RFC 9293 §3.10.7.4, RFC 5961): outside the window → ACK and drop (this also
 * answers keep-alive probes); RST in the window but not at RCV.NXT → challenge ACK; SYN in a
 * synchronized state → challenge ACK; ACK of data never sent → ACK and drop; ACK older than
 * SND.UNA − MAX.SND.WND (RFC 5961 §5.2) → challenge ACK and drop. Everything is
 * counted (per flow in `stats`, per reason in the meter stage); nothing throws.
 */
import { plainFrame } from '../../link/frame';
import { copyBytes, type Stage } from '../../meter/meter';
import { log } from '../../log';
import { copyAddress, type Family, type GuestPacket, type NatContext } from './context';
import type { HostConnectError, HostConnectOptions, HostSocket, HostSocketEvents, HostSocketFactory } from './tcp-host';
import { addressSum, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TS_BLOCK_LEN, type TcpEmitter, type TcpEndpoint } from './tcp-output';
import { Reassembly, type ReadyPiece } from './tcp-reassembly';
import { GuestSegment, seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt } from './tcp-segment';
import type { TimerEntry, TimerWheel } from './tcp-timers';

export enum TcpState {
  Connecting = 'CONNECTING',
  SynSent = 'SYN_SENT',
  SynReceived = 'SYN_RECEIVED',
  Established = 'ESTABLISHED',
  CloseWait = 'CLOSE_WAIT',
  LastAck = 'LAST_ACK',
  FinWait1 = 'FIN_WAIT_1',
  FinWait2 = 'FIN_WAIT_2',
  Closing = 'CLOSING',
  TimeWait = 'TIME_WAIT',
  Closed = 'CLOSED',
}

/** Per-connection counters (the meter's per-flow view). */
export class TcpFlowStats {
  /** Payload bytes the host socket took from the guest / sent to the guest the first time. */
  bytesFromGuest = 0;
  bytesToGuest = 0;
  segmentsFromGuest = 0;
  segmentsToGuest = 0;
  /** Super-frames (TSO) from the guest, each written to the host as one write. */
  gsoFromGuest = 0;
  /** Segments (and bytes) sent again: after RTO, fast retransmit, or go-back-N. */
  retransmits = 0;
  retransmittedBytes = 0;
  fastRetransmits = 0;
  timeouts = 0;
  /** Times the guest's window stopped us with data waiting (and zero-window probes sent). */
  windowStalls = 0;
  zeroWindowProbes = 0;
  /** Times the host socket took less than the guest offered. */
  hostStalls = 0;
  outOfOrder = 0;
  dupAcksReceived = 0;
  /** Segments of this flow dropped (out of window, bad ACK, no room, …). */
  dropped = 0;
  challengeAcks = 0;
}

export interface TcpTimings {
  connectTimeoutMs: number;
  timeWaitMs: number;
  idleTimeoutMs: number;
  rtoInitialMs: number;
  rtoMinMs: number;
  rtoMaxMs: number;
  /** Retransmissions of one segment before the connection is given up. */
  maxRetransmits: number;
  /** Retransmissions of our SYN / SYN-ACK before giving up. */
  maxSynRetransmits: number;
  /** Out-of-order queue bytes per connection. */
  reassemblyBytes: number;
  /** SO_KEEPALIVE idle time for host sockets (0 = off). */
  hostKeepAliveMs: number;
  /** Most the advertised window can be (sets the window-scale shift). */
  maxWindow: number;
}

/** What connections get from the module. */
export interface TcpShared {
  readonly ctx: NatContext;
  readonly wheel: TimerWheel;
  readonly emitter: TcpEmitter;
  /** `nat.tcp`: segments in, drops by reason. */
  readonly stage: Stage;
  readonly timings: TcpTimings;
  readonly hosts: HostSocketFactory;
  /** Queue a coalesced ACK for the end of this batch. */
  ackLater(c: TcpConnection): void;
  /** Retry output when frames are available again. */
  outputLater(c: TcpConnection): void;
  /** The connection left the half-open set (connected or gone). */
  halfOpenDone(c: TcpConnection): void;
  /** The connection is closed: take it out of the table. */
  closed(c: TcpConnection): void;
}

const INITIAL_CWND_SEGMENTS = 10; // RFC 6928
/** Host keep-alive probes before the host socket gives up (Linux's tcp_keepalive_probes). */
export const HOST_KEEPALIVE_PROBES = 9;
/** Most bytes of the guest's SYN kept for quoting in an ICMP error (IP header + TCP header). */
const SYN_COPY_MAX = 120;
const EMPTY = new Uint8Array(0);
const MAX_SACKED = 8;

let isnCounter = 0;
/** An initial sequence number: random per connection (RFC 6528 spirit; no clock needed here). */
function newIss(): number {
  isnCounter = (isnCounter + 0x9e3779b1) >>> 0;
  return ((Math.random() * 0x100000000) ^ isnCounter) >>> 0;
}

export class TcpConnection implements TimerEntry, HostSocketEvents, TcpEndpoint {
  // ---- identity ----
  readonly guestAddr: Uint8Array;
  readonly remoteAddr: Uint8Array;
  readonly addrSum: number;
  state: TcpState;
  host: HostSocket | null = null;
  readonly stats = new TcpFlowStats();
  /** Module bookkeeping: counted in the half-open set. */
  halfOpen = false;
  /** Module bookkeeping: the flow-table node (opaque here). */
  node: unknown = null;

  // ---- receive side (guest → us) ----
  irs = 0;
  rcvNxt = 0;
  /** Right edge of the window last advertised (RCV.NXT + RCV.WND at that time). */
  private rcvAdvEdge = 0;
  /** Our window-scale shift (0 when the guest did not offer scaling). */
  private rcvWscale = 0;
  private maxRcvWnd = 65535;
  /** RCV.NXT as carried by the last segment we sent (to skip redundant ACKs). */
  private ackedRcvNxt = 0;
  private ackQueued = false;
  private ooo: Reassembly | null = null;
  private readonly piece: ReadyPiece = { buf: EMPTY, offset: 0, length: 0 };
  private guestFin = false;
  /** Sequence number of a guest FIN seen beyond RCV.NXT, waiting for the bytes before it. */
  private guestFinAt = -1;

  // ---- send side (us → guest) ----
  iss = 0;
  sndUna = 0;
  sndNxt = 0;
  /** Highest sequence number sent (SND.NXT moves back below it after a timeout). */
  sndMax = 0;
  /** The guest's window in bytes (scaled), and the largest it ever was (RFC 5961 §5.2). */
  sndWnd = 0;
  private maxSndWnd = 0;
  private sndWl1 = 0;
  private sndWl2 = 0;
  private sndWscale = 0;
  /** Sequence number of the first byte the host side still holds (peek offset 0). */
  private consumedSeq = 0;
  /** Payload bytes per segment towards the guest (its MSS minus our option bytes). */
  mss = 536;
  private hostEof = false;
  /** Sequence number our FIN takes (valid once hostEof). */
  private hostFinSeq = 0;
  private finSent = false;
  private finAcked = false;
  private readLimit = -1;
  /** Ranges the guest SACKed above SND.UNA. */
  private readonly sacked = new Uint32Array(2 * MAX_SACKED);
  private sackedCount = 0;

  // ---- options ----
  tsOk = false;
  tsRecent = 0;
  sackOk = false;
  private tsOffset = 0;
  private guestMssOption = 536;
  private guestWscale = -1;

  // ---- congestion control and RTT (RFC 5681, 6582, 6298) ----
  private cwnd = 0;
  private ssthresh = 0x7fffffff;
  private dupAcks = 0;
  private inRecovery = false;
  private recover = 0;
  private srtt = -1;
  private rttvar = 0;
  rto: number;
  private retries = 0;
  /** Karn timing of one segment when there are no timestamps. */
  private rttSeq = -1;
  private rttStart = 0;

  // ---- timers ----
  timerDue = 0;
  timerNext: TimerEntry | null = null;
  timerPrev: TimerEntry | null = null;
  timerLinked = false;
  timerSlot = 0;
  private rtxAt = 0;
  private persistAt = 0;
  private persistBackoff = 0;
  private closeAt = 0;
  private lastActivity = 0;
  /** lastActivity before the segment being processed (the idle time a keep-alive probe ends). */
  private previousActivity = 0;
  private stalled = false;
  /** Host SO_KEEPALIVE idle (s) applied after the guest's probes; 0 = not applied. */
  hostKeepAliveS = 0;
  /** How the host connect was asked for (kept while connecting, to retry without a bind). */
  private connectOpts: HostConnectOptions | null = null;

  /** A copy of the guest's SYN (IP + TCP header) to quote in ICMP errors. */
  private synCopy: Uint8Array | null = null;
  private synL3 = 0;
  private synL4 = 0;
  private synL4Len = 0;
  private synTtl = 64;

  private constructor(
    private readonly shared: TcpShared,
    readonly family: Family,
    guestAddr: Uint8Array,
    readonly guestPort: number,
    remoteAddr: Uint8Array,
    readonly remotePort: number,
    state: TcpState,
  ) {
    this.guestAddr = copyAddress(guestAddr);
    this.remoteAddr = copyAddress(remoteAddr);
    this.addrSum = addressSum(this.remoteAddr, this.guestAddr);
    this.state = state;
    this.rto = shared.timings.rtoInitialMs;
    this.tsOffset = (Math.random() * 0x100000000) >>> 0;
    this.iss = newIss();
    this.sndUna = this.sndNxt = this.sndMax = this.iss;
    this.consumedSeq = seqAdd(this.iss, 1);
    this.lastActivity = shared.wheel.now();
  }

  /** True once closed (a getter, so checks after calls that may close are not narrowed away). */
  get gone(): boolean {
    return this.state === TcpState.Closed;
  }

  // =====================================================================================
  // Opening
  // =====================================================================================

  /**
   * The guest's SYN for a new flow: remember it, start the host connect. Nothing is sent to the
   * guest until the connect finishes.
   */
  static fromGuestSyn(
    shared: TcpShared,
    pkt: GuestPacket,
    seg: GuestSegment,
    srcPort: number,
    dstPort: number,
    hostAddress: string,
    bindTo: { address: string; port: number } | null = null,
  ): TcpConnection {
    const c = new TcpConnection(shared, pkt.family, pkt.src, srcPort, pkt.dst, dstPort, TcpState.Connecting);
    c.acceptSynOptions(seg);
    c.irs = seg.seq;
    c.rcvNxt = c.ackedRcvNxt = seqAdd(seg.seq, 1);
    c.rcvAdvEdge = c.rcvNxt;
    c.keepSyn(pkt, shared.stage);
    c.closeAt = shared.wheel.now() + shared.timings.connectTimeoutMs;
    c.rearm();
    const opts: HostConnectOptions = {
      family: pkt.family,
      host: hostAddress,
      port: dstPort,
      ttl: pkt.ttl > 1 ? pkt.ttl - 1 : undefined,
      keepAliveMs: shared.timings.hostKeepAliveMs || undefined,
      // from a forwarded guest port: the forward's host port (simultaneous open, RFC 5382
      // REQ-2); a privileged guest source port (an NFS client's) is kept when it can be
      localAddress: bindTo?.address,
      localPort: bindTo ? bindTo.port : srcPort < 1024 ? srcPort : undefined,
      sharePort: bindTo !== null || undefined,
    };
    c.connectOpts = opts;
    try {
      try {
        c.host = shared.hosts.connect(opts, c);
      } catch (err) {
        if (opts.localPort === undefined) throw err;
        c.unbind((err as NodeJS.ErrnoException).code ?? 'EIO');
        c.host = shared.hosts.connect(opts, c);
      }
    } catch (err) {
      // A synchronous failure (bad address, EMFILE): report it like a failed connect, later.
      const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
      queueMicrotask(() => c.hostConnectFailed({ code }));
    }
    return c;
  }

  /** The connect could not bind the port it wanted: log it and go on from an ephemeral one. */
  private unbind(code: string): void {
    const o = this.connectOpts;
    if (!o) return;
    if (o.sharePort) log.info({ port: o.localPort, code }, "tcp: cannot connect from the port forward's host port; using an ephemeral one");
    else log.info({ port: o.localPort, code }, "tcp: cannot keep the guest's privileged source port on the host; using an ephemeral one");
    o.localAddress = undefined;
    o.localPort = undefined;
    o.sharePort = undefined;
  }

  /**
   * A connection accepted on the host (port forwarding): open it towards the guest with our
   * SYN from `remoteAddr:remotePort` (the gateway) to `guestAddr:guestPort`.
   */
  static toGuest(
    shared: TcpShared,
    family: Family,
    guestAddr: Uint8Array,
    guestPort: number,
    remoteAddr: Uint8Array,
    remotePort: number,
    makeHost: (events: HostSocketEvents) => HostSocket,
  ): TcpConnection {
    const c = new TcpConnection(shared, family, guestAddr, guestPort, remoteAddr, remotePort, TcpState.SynSent);
    c.host = makeHost(c);
    c.setupOurScale();
    c.sendSyn();
    c.rtxAt = shared.wheel.now() + c.rto;
    c.rearm();
    return c;
  }

  private acceptSynOptions(seg: GuestSegment): void {
    this.guestMssOption = seg.mss > 0 ? seg.mss : 536; // RFC 9293 §3.7.1: default 536
    this.guestWscale = seg.windowScale >= 0 ? Math.min(seg.windowScale, 14) : -1; // RFC 7323 §2.3
    this.sackOk = seg.sackPermitted;
    this.tsOk = seg.hasTimestamps;
    if (this.tsOk) this.tsRecent = seg.tsVal;
    this.sndWscale = this.guestWscale >= 0 ? this.guestWscale : 0;
    this.computeMss();
  }

  private computeMss(): void {
    const ipHeader = this.family === 4 ? 20 : 40;
    const linkMss = this.shared.emitter.mtu - ipHeader - 20;
    this.mss = Math.max(64, Math.min(this.guestMssOption, linkMss) - (this.tsOk ? TS_BLOCK_LEN : 0));
    this.cwnd = INITIAL_CWND_SEGMENTS * this.mss;
  }

  /** Choose our window-scale shift from the largest window we may advertise. */
  private setupOurScale(): void {
    const cap = Math.max(65535, Math.min(this.shared.timings.maxWindow, this.host ? this.host.writeCapacity : 65535));
    let shift = 0;
    while (shift < 14 && 65535 * 2 ** shift < cap) shift++;
    this.rcvWscale = shift;
    this.maxRcvWnd = Math.min(cap, 65535 * 2 ** shift);
  }

  private ourMss(): number {
    return this.shared.emitter.mtu - (this.family === 4 ? 40 : 60);
  }

  private keepSyn(pkt: GuestPacket, stage: Stage): void {
    const l3 = pkt.l3Offset;
    const end = Math.min(pkt.l4Offset + pkt.l4Length, pkt.l4Offset + 60, l3 + SYN_COPY_MAX);
    const copy = new Uint8Array(end - l3);
    copyBytes(stage, pkt.frame.data.subarray(l3, end), copy, 0);
    this.synCopy = copy;
    this.synL3 = 0;
    this.synL4 = pkt.l4Offset - l3;
    this.synL4Len = end - pkt.l4Offset;
    this.synTtl = pkt.ttl;
  }

  private sendSynAck(): void {
    this.shared.emitter.syn(this, TCP_SYN | TCP_ACK, this.iss, {
      mss: this.ourMss(),
      sackPermitted: this.sackOk,
      timestamps: this.tsOk,
      windowScale: this.guestWscale >= 0 ? this.rcvWscale : -1,
    });
    this.stats.segmentsToGuest++;
    this.ackedRcvNxt = this.rcvNxt;
  }

  private sendSyn(): void {
    this.shared.emitter.syn(this, TCP_SYN, this.iss, {
      mss: this.ourMss(),
      sackPermitted: true,
      timestamps: true,
      windowScale: this.rcvWscale,
    });
    this.stats.segmentsToGuest++;
    if (seqLe(this.sndMax, this.iss)) this.sndNxt = this.sndMax = seqAdd(this.iss, 1);
  }

  // =====================================================================================
  // Host events
  // =====================================================================================

  hostConnected(): void {
    if (this.state !== TcpState.Connecting) return;
    this.connectOpts = null;
    this.state = TcpState.SynReceived;
    this.closeAt = 0;
    this.setupOurScale();
    if (this.guestWscale < 0) {
      // No scaling (RFC 7323 §2.2: both must offer it): windows stay under 64 KiB.
      this.rcvWscale = 0;
      this.maxRcvWnd = 65535;
    }
    this.sndNxt = this.sndMax = seqAdd(this.iss, 1);
    this.sendSynAck();
    this.rtxAt = this.shared.wheel.now() + this.rto;
    this.rearm();
  }

  hostConnectFailed(err: HostConnectError): void {
    if (this.state !== TcpState.Connecting) return;
    const o = this.connectOpts;
    if (o && o.localPort !== undefined && (err.code === 'EADDRINUSE' || err.code === 'EADDRNOTAVAIL' || err.code === 'EACCES' || err.code === 'EINVAL')) {
      // The bind failed (reported late by adapters that bind asynchronously): once more, unbound.
      this.unbind(err.code);
      try {
        this.host = this.shared.hosts.connect(o, this);
        return;
      } catch (e) {
        err = { code: (e as NodeJS.ErrnoException).code ?? 'EIO' };
      }
    }
    this.connectOpts = null;
    this.shared.halfOpenDone(this);
    const e = this.shared.emitter;
    if (err.code === 'ECONNREFUSED' || err.code === 'ECONNRESET') {
      // RFC 9293 §3.10.7.1: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
      e.bare(this.family, this.remoteAddr, this.remotePort, this.guestAddr, this.guestPort, 0, this.rcvNxt, TCP_RST | TCP_ACK);
      this.shared.stage.dropped('connect-refused');
    } else {
      this.sendUnreachable(err);
    }
    this.destroy('connect-failed', false);
  }

  /** Answer the guest's SYN with an ICMP error, as the network would (RFC 1122 §4.2.3.9). */
  private sendUnreachable(err: HostConnectError): void {
    if (!this.synCopy) return;
    let type = 3;
    let code = 1; // host unreachable
    if (err.icmpType !== undefined) {
      type = err.icmpType;
      code = err.icmpCode ?? 0;
    } else if (err.code === 'ENETUNREACH') code = 0;
    else if (err.code === 'EACCES' || err.code === 'EPERM') code = 13; // administratively prohibited
    if (this.family === 6 && err.icmpType === undefined) {
      // ICMPv6 destination unreachable: 0 no route, 1 prohibited, 3 address unreachable.
      type = 1;
      code = err.code === 'ENETUNREACH' ? 0 : err.code === 'EACCES' || err.code === 'EPERM' ? 1 : 3;
    }
    this.shared.stage.dropped(`connect-${err.code.toLowerCase()}`);
    this.shared.ctx.icmpError(this.synPacket(), type, code, 0, err.offender);
  }

  /** The kept SYN as a GuestPacket (for icmpError). */
  private synPacket(): GuestPacket {
    const data = this.synCopy ?? EMPTY;
    const alen = this.family === 4 ? 4 : 16;
    const srcAt = this.family === 4 ? 12 : 8;
    return {
      family: this.family,
      src: data.subarray(srcAt, srcAt + alen),
      dst: data.subarray(srcAt + alen, srcAt + 2 * alen),
      protocol: 6,
      ttl: this.synTtl,
      dontFragment: true,
      tos: 0,
      frame: plainFrame(data),
      l3Offset: this.synL3,
      l4Offset: this.synL4,
      l4Length: this.synL4Len,
      checksumTrusted: true,
    };
  }

  /** The guest probed an idle connection: mirror its keep-alive on the host socket. */
  private guestProbes(): void {
    const idleS = Math.max(1, Math.round((this.lastActivity - this.previousActivity) / 1000));
    if (idleS === this.hostKeepAliveS || !this.host || !this.host.keepAlive) return;
    const intervalS = Math.max(1, Math.min(75, Math.round(idleS / 10)));
    if (this.host.keepAlive(idleS, intervalS, HOST_KEEPALIVE_PROBES)) this.hostKeepAliveS = idleS;
  }

  hostReadable(): void {
    this.lastActivity = this.shared.wheel.now();
    if (this.synchronized()) this.output();
  }

  hostWritable(): void {
    if (this.gone) return;
    this.drainReassembly();
    // Window update when the window we advertised is less than half of what we could.
    if (this.canReceive()) {
      const now = Math.min(this.host ? this.host.writeSpace : 0, this.maxRcvWnd);
      const advertised = Math.max(0, seqDiff(this.rcvAdvEdge, this.rcvNxt));
      if (advertised * 2 < now && now - advertised >= Math.min(this.mss, this.maxRcvWnd / 4)) this.queueAck();
    }
  }

  hostEnd(): void {
    if (this.hostEof || this.state === TcpState.Closed) return;
    this.hostEof = true;
    this.hostFinSeq = seqAdd(this.consumedSeq, this.host ? this.host.buffered : 0);
    if (this.synchronized()) this.output();
  }

  hostError(code: string): void {
    if (this.gone) return;
    this.shared.stage.dropped(`host-${code.toLowerCase()}`);
    if (this.state === TcpState.TimeWait) {
      this.destroy('host-error', false);
      return;
    }
    // The host side reset: tell the guest the same (RST with SEQ=SND.NXT).
    if (this.state !== TcpState.Connecting) this.sendRst();
    this.destroy('host-error', false);
  }

  // =====================================================================================
  // Guest segments
  // =====================================================================================

  /** One segment from the guest for this connection. Returns false when the segment asks for a
   *  new connection on this tuple (a SYN after TIME_WAIT): the module then starts one. */
  segmentArrives(s: GuestSegment): boolean {
    this.stats.segmentsFromGuest++;
    this.previousActivity = this.lastActivity;
    this.lastActivity = this.shared.wheel.now();
    switch (this.state) {
      case TcpState.Connecting:
        this.inConnecting(s);
        return true;
      case TcpState.SynSent:
        this.inSynSent(s);
        return true;
      case TcpState.TimeWait:
        return this.inTimeWait(s);
      case TcpState.Closed:
        return true;
      default:
        this.inSynchronized(s);
        return true;
    }
  }

  private inConnecting(s: GuestSegment): void {
    if (s.flags & TCP_RST) {
      if (s.seq === this.rcvNxt) {
        this.shared.halfOpenDone(this);
        this.destroy('guest-rst', true);
      } else this.drop('bad-rst');
      return;
    }
    if ((s.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN) {
      if (s.seq === this.irs) {
        this.shared.stage.dropped('syn-retransmit-absorbed');
      } else {
        // The guest restarted the connect with a new ISN (a reused port): follow it.
        this.acceptSynOptions(s);
        this.irs = s.seq;
        this.rcvNxt = this.ackedRcvNxt = this.rcvAdvEdge = seqAdd(s.seq, 1);
      }
      return;
    }
    this.drop('not-yet-connected');
  }

  private inSynSent(s: GuestSegment): void {
    const f = s.flags;
    if (f & TCP_ACK && s.ack !== seqAdd(this.iss, 1)) {
      if (!(f & TCP_RST)) this.shared.emitter.bare(this.family, this.remoteAddr, this.remotePort, this.guestAddr, this.guestPort, s.ack, 0, TCP_RST);
      this.drop('bad-ack');
      return;
    }
    if (f & TCP_RST) {
      if (f & TCP_ACK) {
        // The guest refused the forwarded connection.
        this.shared.stage.dropped('guest-refused');
        this.destroy('guest-rst', true);
      } else this.drop('bad-rst');
      return;
    }
    if (!(f & TCP_SYN)) {
      this.drop('no-syn');
      return;
    }
    this.acceptSynOptions(s);
    if (this.guestWscale < 0) {
      this.rcvWscale = 0;
      this.maxRcvWnd = 65535;
    }
    this.irs = s.seq;
    this.rcvNxt = seqAdd(s.seq, 1);
    this.rcvAdvEdge = this.rcvNxt;
    if (f & TCP_ACK) {
      this.sndUna = seqAdd(this.iss, 1);
      this.sndWnd = s.window; // never scaled in a SYN (RFC 7323 §2.2)
      this.sndWl1 = s.seq;
      this.sndWl2 = s.ack;
      this.rtxAt = 0;
      this.retries = 0;
      this.state = TcpState.Established;
      this.sendAck();
      this.updateReadLimit();
      this.output();
    } else {
      // Simultaneous open (RFC 9293 §3.5, figure 8): answer with SYN-ACK.
      this.state = TcpState.SynReceived;
      this.sendSynAck();
    }
    this.rearm();
  }

  private inTimeWait(s: GuestSegment): boolean {
    if (s.flags & TCP_RST) {
      this.destroy('time-wait-rst', false);
      return true;
    }
    if (s.flags & TCP_SYN && !(s.flags & TCP_ACK) && seqGt(s.seq, this.rcvNxt)) {
      // RFC 9293 §3.10.7.4 / RFC 6191: a new incarnation may take over a TIME_WAIT tuple.
      this.destroy('time-wait-reuse', false);
      return false;
    }
    if (s.flags & TCP_FIN) {
      // A retransmitted FIN: our ACK was lost. ACK again and restart the 2MSL wait.
      this.sendAck();
      this.closeAt = this.shared.wheel.now() + this.shared.timings.timeWaitMs;
      this.rearm();
      return true;
    }
    this.sendAck();
    return true;
  }

  private inSynchronized(s: GuestSegment): void {
    const f = s.flags;
    // SYN_RECEIVED: a retransmitted SYN means our SYN-ACK was lost.
    if (this.state === TcpState.SynReceived && (f & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN) {
      if (s.seq === this.irs) {
        this.sendSynAck();
        this.shared.stage.dropped('syn-retransmit');
      } else this.drop('syn-new-isn');
      return;
    }

    // 1. Sequence number acceptable? (RFC 9293 §3.10.7.4, first check)
    if (!this.acceptable(s)) {
      if (!(f & TCP_RST)) this.sendAck();
      if (s.dataLength <= 1 && s.seq === seqAdd(this.rcvNxt, -1)) {
        this.shared.stage.dropped('keepalive-answered');
        this.guestProbes();
      } else this.drop('out-of-window');
      return;
    }

    // Timestamps: remember the guest's clock for echoing (RFC 7323 §4.3).
    if (this.tsOk && s.hasTimestamps && seqLe(s.seq, this.ackedRcvNxt) && seqGe(s.tsVal, this.tsRecent)) this.tsRecent = s.tsVal;

    // 2. RST (RFC 5961 §3.2).
    if (f & TCP_RST) {
      if (s.seq === this.rcvNxt) {
        this.destroy('guest-rst', true);
      } else {
        this.challengeAck();
        this.drop('rst-not-exact');
      }
      return;
    }

    // 4. SYN in a synchronized state (RFC 5961 §4.2).
    if (f & TCP_SYN) {
      this.challengeAck();
      this.drop('syn-in-window');
      return;
    }

    // 5. ACK.
    if (!(f & TCP_ACK)) {
      this.drop('no-ack');
      return;
    }
    if (this.state === TcpState.SynReceived) {
      if (seqGt(s.ack, this.sndUna) && seqLe(s.ack, this.sndMax)) {
        this.state = TcpState.Established;
        this.shared.halfOpenDone(this);
        this.sndUna = seqAdd(this.iss, 1);
        this.sndWnd = s.window * 2 ** this.sndWscale;
        this.sndWl1 = s.seq;
        this.sndWl2 = s.ack;
        this.rtxAt = 0;
        this.retries = 0;
        this.rto = Math.max(this.shared.timings.rtoMinMs, Math.min(this.rto, this.shared.timings.rtoInitialMs));
        if (this.tsOk && s.hasTimestamps && s.tsEcr !== 0) this.rttSample(this.tsNowRaw() - s.tsEcr);
        this.updateReadLimit();
      } else {
        // RFC 9293 §3.10.7.4: <SEQ=SEG.ACK><CTL=RST>
        this.shared.emitter.bare(this.family, this.remoteAddr, this.remotePort, this.guestAddr, this.guestPort, s.ack, 0, TCP_RST);
        this.drop('bad-ack');
        return;
      }
    }
    if (!this.processAck(s)) return;
    if (this.gone) return;

    // 7. Data.
    if (s.dataLength > 0) this.processData(s);

    // 8. FIN.
    if (f & TCP_FIN) {
      const finSeq = seqAdd(s.seq, s.dataLength);
      if (finSeq === this.rcvNxt) this.guestFinArrives();
      else if (seqGt(finSeq, this.rcvNxt) && !this.guestFin) this.guestFinAt = finSeq;
    }
    if (!this.gone) this.output();
  }

  /** RFC 9293 §3.10.7.4 acceptability test, against the window we advertised. */
  private acceptable(s: GuestSegment): boolean {
    const segLen = s.dataLength + (s.flags & TCP_SYN ? 1 : 0) + (s.flags & TCP_FIN ? 1 : 0);
    const wnd = Math.max(0, seqDiff(this.rcvAdvEdge, this.rcvNxt));
    const startIn = seqGe(s.seq, this.rcvNxt) && seqLt(s.seq, seqAdd(this.rcvNxt, wnd));
    if (segLen === 0) return wnd === 0 ? s.seq === this.rcvNxt : startIn;
    if (wnd === 0) return false;
    const last = seqAdd(s.seq, segLen - 1);
    return startIn || (seqGe(last, this.rcvNxt) && seqLt(last, seqAdd(this.rcvNxt, wnd)));
  }

  /** ACK processing for synchronized states; false when the segment must be dropped. */
  private processAck(s: GuestSegment): boolean {
    if (seqGt(s.ack, this.sndMax)) {
      // ACK of something not yet sent (RFC 9293): ACK and drop.
      this.sendAck();
      this.drop('ack-unsent');
      return false;
    }
    // RFC 5961 §5.2: an ACK older than SND.UNA − MAX.SND.WND is a blind injection attempt.
    if (seqLt(s.ack, seqAdd(this.sndUna, -Math.max(this.maxSndWnd, 65535)))) {
      this.challengeAck();
      this.drop('ack-too-old');
      return false;
    }
    const wndScaled = s.window * 2 ** this.sndWscale;
    if (wndScaled > this.maxSndWnd) this.maxSndWnd = wndScaled;
    if (seqGt(s.ack, this.sndUna)) {
      this.newAck(s);
    } else if (
      s.ack === this.sndUna &&
      s.dataLength === 0 &&
      !(s.flags & TCP_FIN) &&
      wndScaled === this.sndWnd &&
      this.sndMax !== this.sndUna
    ) {
      this.duplicateAck(s);
    }
    // Window update (RFC 9293 §3.10.7.4, SND.WL1/WL2 rule).
    if (seqLt(this.sndWl1, s.seq) || (this.sndWl1 === s.seq && seqLe(this.sndWl2, s.ack))) {
      const opened = wndScaled > this.sndWnd;
      this.sndWnd = wndScaled;
      this.sndWl1 = s.seq;
      this.sndWl2 = s.ack;
      if (wndScaled > 0 && this.persistAt !== 0) {
        this.persistAt = 0;
        this.persistBackoff = 0;
      }
      if (opened) this.stalled = false;
      this.updateReadLimit();
    }
    if (s.sackCount > 0 && this.sackOk) this.recordSack(s);
    return true;
  }

  private newAck(s: GuestSegment): void {
    const ack = s.ack;
    const acked = seqDiff(ack, this.sndUna);
    // Host bytes the guest now holds: consume them (the FIN is not a byte of the stream).
    let dataEnd = ack;
    if (this.finSent && seqGt(dataEnd, this.hostFinSeq)) {
      dataEnd = this.hostFinSeq;
      this.finAcked = true;
    }
    const consumed = seqDiff(dataEnd, this.consumedSeq);
    if (consumed > 0) {
      this.host?.consume(consumed);
      this.consumedSeq = dataEnd;
    }
    // RTT sample (RFC 6298 §3 / RFC 7323 §4.1), Karn's rule without timestamps.
    if (this.tsOk && s.hasTimestamps && s.tsEcr !== 0) this.rttSample((this.tsNowRaw() - s.tsEcr) >>> 0);
    else if (this.rttSeq >= 0 && seqGe(ack, this.rttSeq)) {
      this.rttSample(this.shared.wheel.now() - this.rttStart);
      this.rttSeq = -1;
    }
    this.sndUna = ack;
    if (seqLt(this.sndNxt, this.sndUna)) this.sndNxt = this.sndUna;
    this.retries = 0;
    this.pruneSacked();

    // Congestion control (RFC 5681 §3.1, RFC 6582 §3.2).
    const mss = this.mss;
    if (this.inRecovery) {
      if (seqGe(ack, this.recover)) {
        this.inRecovery = false;
        this.cwnd = Math.max(Math.min(this.ssthresh, this.flight() + mss), mss);
      } else {
        // Partial ACK: retransmit the next hole, deflate by what was acked.
        this.retransmitOne(this.sndUna);
        this.cwnd = Math.max(this.cwnd - acked + mss, mss);
      }
    } else if (this.cwnd < this.ssthresh) {
      this.cwnd += Math.min(acked, mss);
    } else {
      this.cwnd += Math.max(1, Math.floor((mss * mss) / this.cwnd));
    }
    this.dupAcks = 0;

    // RTO (RFC 6298 §5.2/5.3): off when all is acked, else restarted.
    if (this.sndUna === this.sndMax) this.rtxAt = 0;
    else this.rtxAt = this.shared.wheel.now() + this.rto;

    if (this.finAcked) this.ourFinAcked();
    this.rearm();
  }

  private duplicateAck(s: GuestSegment): void {
    this.stats.dupAcksReceived++;
    this.dupAcks++;
    if (s.sackCount > 0 && this.sackOk) this.recordSack(s);
    if (this.dupAcks === 3 && !this.inRecovery) {
      // Fast retransmit (RFC 5681 §3.2) — not for duplicates of a window already recovered
      // by a timeout (RFC 6582 §3.2 step 2: the ACK must cover `recover`).
      if (this.recoverValid && seqLe(s.ack, this.recover)) return;
      this.ssthresh = Math.max(Math.floor(this.flight() / 2), 2 * this.mss);
      this.recover = this.sndMax;
      this.recoverValid = true;
      this.inRecovery = true;
      this.stats.fastRetransmits++;
      this.retransmitOne(this.sndUna);
      this.cwnd = this.ssthresh + 3 * this.mss;
    } else if (this.inRecovery) {
      this.cwnd += this.mss;
      // With SACK information there may be a further hole to fill (below the highest SACKed
      // byte only: above it, data may simply still be in flight).
      if (this.sackedCount > 0) {
        const hole = this.nextHole(this.lastRetransmitEnd);
        if (seqLt(hole, this.highestSacked())) this.retransmitOne(hole);
      }
    }
  }

  private recoverValid = false;
  private lastRetransmitEnd = 0;

  /** Retransmit one segment (≤ MSS) at `seq`, skipping SACKed data. */
  private retransmitOne(seq: number): void {
    seq = this.skipSacked(seq);
    if (!seqLt(seq, this.sndMax)) return;
    const dataEnd = this.hostEof ? this.hostFinSeq : seqAdd(this.consumedSeq, this.host ? this.host.buffered : 0);
    let len = Math.min(this.mss, Math.max(0, seqDiff(dataEnd, seq)), seqDiff(this.nextSackedStart(seq), seq));
    let flags = TCP_ACK;
    if (len <= 0) {
      if (this.finSent && seq === this.hostFinSeq) {
        flags |= TCP_FIN;
        len = 0;
      } else return;
    } else if (this.finSent && seqAdd(seq, len) === this.hostFinSeq && seqGt(this.nextSackedStart(seq), this.hostFinSeq)) {
      flags |= TCP_FIN;
    }
    if (!this.shared.emitter.segment(this, flags | (len > 0 ? TCP_PSH : 0), seq, len, seqDiff(seq, this.consumedSeq), this.mss, false)) return;
    this.stats.segmentsToGuest++;
    this.stats.retransmits++;
    this.stats.retransmittedBytes += len;
    this.lastRetransmitEnd = seqAdd(seq, len + (flags & TCP_FIN ? 1 : 0));
    this.rttSeq = -1; // Karn: never time a retransmitted segment
    if (this.rtxAt === 0) {
      this.rtxAt = this.shared.wheel.now() + this.rto;
      this.rearm();
    }
  }

  private processData(s: GuestSegment): void {
    if (this.guestFin || !this.canReceive()) {
      this.drop('data-after-fin');
      return;
    }
    let seq = s.seq;
    let off = s.dataOffset;
    let len = s.dataLength;
    if (s.gso) this.stats.gsoFromGuest++;
    // Trim what we already have (RFC 9293 §3.10.7.4: keep only the part in the window).
    const before = seqDiff(this.rcvNxt, seq);
    if (before > 0) {
      seq = this.rcvNxt;
      off += before;
      len -= before;
    }
    const wnd = Math.max(0, seqDiff(this.rcvAdvEdge, seq));
    if (len > wnd) len = Math.max(wnd, 0);
    if (len <= 0) return;

    if (seq === this.rcvNxt) {
      const host = this.host;
      const taken = host ? host.write(s.data, off, len) : 0;
      if (taken > 0) {
        this.rcvNxt = seqAdd(this.rcvNxt, taken);
        this.stats.bytesFromGuest += taken;
      }
      if (taken < len) {
        this.stats.hostStalls++;
        // Keep the rest out of order-style (not acknowledged) so a drain can deliver it
        // before the guest retransmits.
        this.queueOutOfOrder(seqAdd(seq, taken), s.data, off + taken, len - taken, false);
      }
      if (this.ooo && !this.ooo.empty) this.drainReassembly();
      this.queueAck();
    } else {
      // Beyond RCV.NXT: a hole before it. Keep it and answer with a duplicate ACK at once.
      this.stats.outOfOrder++;
      this.queueOutOfOrder(seq, s.data, off, len, true);
      this.sendAck();
    }
  }

  private queueOutOfOrder(seq: number, data: Uint8Array, off: number, len: number, counted: boolean): void {
    if (!this.ooo) this.ooo = new Reassembly(Math.min(this.shared.timings.reassemblyBytes, this.maxRcvWnd));
    const r = this.ooo.insert(this.rcvNxt, seq, data, off, len, this.shared.stage);
    if (r === 'no-room' && counted) this.drop('ooo-no-room');
  }

  /** Write queued bytes that are now in order. */
  private drainReassembly(): void {
    const q = this.ooo;
    const host = this.host;
    if (!q || q.empty || !host) return;
    let moved = false;
    while (q.readyPiece(this.rcvNxt, this.piece)) {
      const taken = host.write(this.piece.buf, this.piece.offset, this.piece.length);
      if (taken <= 0) break;
      this.rcvNxt = seqAdd(this.rcvNxt, taken);
      this.stats.bytesFromGuest += taken;
      q.advance(this.rcvNxt);
      moved = true;
      if (taken < this.piece.length) break;
    }
    // Drop anything that fell behind RCV.NXT.
    q.advance(this.rcvNxt);
    if (moved) {
      if (this.guestFinAt >= 0 && this.guestFinAt === this.rcvNxt) this.guestFinArrives();
      this.queueAck();
    }
  }

  private guestFinArrives(): void {
    if (this.guestFin) return;
    this.guestFin = true;
    this.guestFinAt = -1;
    this.rcvNxt = seqAdd(this.rcvNxt, 1);
    this.host?.shutdownWrite();
    switch (this.state) {
      case TcpState.SynReceived:
      case TcpState.Established:
        this.state = TcpState.CloseWait;
        break;
      case TcpState.FinWait1:
        this.state = this.finAcked ? TcpState.TimeWait : TcpState.Closing;
        break;
      case TcpState.FinWait2:
        this.state = TcpState.TimeWait;
        break;
      default:
        break;
    }
    this.sendAck();
    if (this.state === TcpState.TimeWait) this.enterTimeWait();
  }

  private ourFinAcked(): void {
    switch (this.state) {
      case TcpState.FinWait1:
        this.state = TcpState.FinWait2;
        break;
      case TcpState.Closing:
        this.state = TcpState.TimeWait;
        this.enterTimeWait();
        break;
      case TcpState.LastAck:
        this.destroy('closed', false);
        break;
      default:
        break;
    }
  }

  private enterTimeWait(): void {
    this.rtxAt = 0;
    this.persistAt = 0;
    this.closeAt = this.shared.wheel.now() + this.shared.timings.timeWaitMs;
    this.releaseHost(false);
    this.ooo = null;
    this.rearm();
  }

  // =====================================================================================
  // Sending to the guest
  // =====================================================================================

  private synchronized(): boolean {
    return this.state !== TcpState.Connecting && this.state !== TcpState.SynSent && this.state !== TcpState.SynReceived && this.state !== TcpState.Closed;
  }

  private canReceive(): boolean {
    return this.state === TcpState.Established || this.state === TcpState.FinWait1 || this.state === TcpState.FinWait2 || this.state === TcpState.SynReceived;
  }

  private flight(): number {
    return seqDiff(this.sndMax, this.sndUna);
  }

  /** Send whatever the windows allow: new data, go-back-N retransmissions, our FIN. */
  output(): void {
    if (!this.synchronized() || this.state === TcpState.TimeWait) return;
    const e = this.shared.emitter;
    const host = this.host;
    const hdr = 20 + (this.tsOk ? TS_BLOCK_LEN : 0);
    const maxPayload = e.maxPayload(hdr, this.mss);
    for (;;) {
      if (e.available <= 0) {
        this.shared.outputLater(this);
        break;
      }
      if (seqLt(this.sndNxt, this.sndMax)) this.sndNxt = this.skipSacked(this.sndNxt);
      const dataEnd = this.hostEof ? this.hostFinSeq : seqAdd(this.consumedSeq, host ? host.buffered : 0);
      const ready = seqDiff(dataEnd, this.sndNxt);
      if (ready > 0) {
        const usable = seqDiff(seqAdd(this.sndUna, Math.min(this.sndWnd, this.cwnd)), this.sndNxt);
        if (usable <= 0) {
          this.windowFull();
          break;
        }
        let len = Math.min(ready, usable, maxPayload);
        if (seqLt(this.sndNxt, this.sndMax)) len = Math.min(len, seqDiff(this.nextSackedStart(this.sndNxt), this.sndNxt));
        // Sender silly-window avoidance (RFC 9293 §3.8.6.2.1): no runt while more waits and
        // an ACK is due to open the window.
        if (len < this.mss && len < ready && this.sndNxt !== this.sndUna) break;
        const end = seqAdd(this.sndNxt, len);
        const fin = this.hostEof && end === this.hostFinSeq;
        let flags = TCP_ACK;
        if (end === dataEnd) flags |= TCP_PSH;
        if (fin) flags |= TCP_FIN;
        const retransmit = seqLt(this.sndNxt, this.sndMax);
        if (!e.segment(this, flags, this.sndNxt, len, seqDiff(this.sndNxt, this.consumedSeq), this.mss, false)) {
          if (e.available <= 0) this.shared.outputLater(this);
          break;
        }
        this.stats.segmentsToGuest++;
        if (retransmit) {
          this.stats.retransmits++;
          this.stats.retransmittedBytes += len;
        } else {
          this.stats.bytesToGuest += len;
          if (!this.tsOk && this.rttSeq < 0) {
            this.rttSeq = end;
            this.rttStart = this.shared.wheel.now();
          }
        }
        this.sndNxt = seqAdd(end, fin ? 1 : 0);
        if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
        if (fin) this.ourFinSent();
        this.armRto();
        continue;
      }
      if (this.hostEof && this.sndNxt === this.hostFinSeq && !this.finAcked) {
        if (!e.segment(this, TCP_ACK | TCP_FIN, this.sndNxt, 0, 0, this.mss, false)) break;
        this.stats.segmentsToGuest++;
        if (this.finSent) this.stats.retransmits++;
        this.sndNxt = seqAdd(this.sndNxt, 1);
        if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
        this.ourFinSent();
        this.armRto();
      }
      break;
    }
  }

  private ourFinSent(): void {
    this.finSent = true;
    if (this.state === TcpState.Established) this.state = TcpState.FinWait1;
    else if (this.state === TcpState.CloseWait) this.state = TcpState.LastAck;
  }

  /** The guest's window (or cwnd) is full with data waiting. */
  private windowFull(): void {
    if (this.sndWnd === 0 || seqDiff(seqAdd(this.sndUna, this.sndWnd), this.sndNxt) <= 0) {
      if (!this.stalled) {
        this.stalled = true;
        this.stats.windowStalls++;
      }
      // Nothing in flight to elicit an ACK: the persist timer probes (RFC 9293 §3.8.6.1).
      if (this.sndMax === this.sndUna && this.persistAt === 0) {
        this.persistAt = this.shared.wheel.now() + this.persistInterval();
        this.rearm();
      }
    }
  }

  private persistInterval(): number {
    const t = this.shared.timings;
    return Math.min(t.rtoMaxMs, Math.max(this.rto, t.rtoMinMs) * 2 ** this.persistBackoff);
  }

  private armRto(): void {
    if (this.rtxAt === 0) {
      this.rtxAt = this.shared.wheel.now() + this.rto;
      this.rearm();
    }
  }

  private sendAck(): void {
    if (this.gone) return;
    this.ackQueued = false;
    const withSack = this.sackOk && this.ooo !== null && !this.ooo.empty;
    if (this.shared.emitter.segment(this, TCP_ACK, this.sndNxt, 0, 0, this.mss, withSack)) this.stats.segmentsToGuest++;
  }

  private challengeAck(): void {
    this.stats.challengeAcks++;
    this.sendAck();
  }

  private sendRst(): void {
    this.shared.emitter.bare(this.family, this.remoteAddr, this.remotePort, this.guestAddr, this.guestPort, this.sndNxt, this.rcvNxt, TCP_RST | TCP_ACK);
    this.stats.segmentsToGuest++;
  }

  private queueAck(): void {
    if (this.ackQueued) return;
    this.ackQueued = true;
    this.shared.ackLater(this);
  }

  /** The module's end-of-batch flush: send the coalesced ACK if one is still due. */
  flushAck(): void {
    if (!this.ackQueued) return;
    this.ackQueued = false;
    if (this.gone) return;
    // A data segment sent meanwhile carried the same ACK: nothing to add, unless the window
    // grew enough to be worth telling.
    if (this.ackedRcvNxt === this.rcvNxt) {
      const now = Math.min(this.host ? this.host.writeSpace : 0, this.maxRcvWnd);
      const advertised = Math.max(0, seqDiff(this.rcvAdvEdge, this.rcvNxt));
      if (!(advertised * 2 < now)) return;
    }
    this.sendAck();
  }

  private updateReadLimit(): void {
    const limit = Math.max(this.sndWnd, this.mss);
    if (limit !== this.readLimit && this.host) {
      this.readLimit = limit;
      this.host.setReadLimit(limit);
    }
  }

  // ---- TcpEndpoint (for the emitter) ----

  private tsNowRaw(): number {
    return (Math.floor(this.shared.wheel.now()) + this.tsOffset) >>> 0;
  }

  tsNow(): number {
    return this.tsNowRaw();
  }

  windowField(syn: boolean): number {
    this.ackedRcvNxt = this.rcvNxt;
    let space = this.host ? Math.min(this.host.writeSpace, this.maxRcvWnd) : 0;
    if (!this.canReceive() || this.guestFin) space = Math.max(0, seqDiff(this.rcvAdvEdge, this.rcvNxt));
    if (syn) {
      const w = Math.min(space, 65535);
      this.rcvAdvEdge = seqAdd(this.rcvNxt, w);
      return w;
    }
    let field = Math.floor(space / 2 ** this.rcvWscale);
    let edge = seqAdd(this.rcvNxt, field * 2 ** this.rcvWscale);
    if (seqLt(edge, this.rcvAdvEdge)) {
      // Never move the right edge back (RFC 9293 §3.8.6.2.2). Rounding up to the scale unit
      // may move it forward a little: record what the guest will really see.
      field = Math.ceil(seqDiff(this.rcvAdvEdge, this.rcvNxt) / 2 ** this.rcvWscale);
    }
    if (field > 0xffff) field = 0xffff;
    edge = seqAdd(this.rcvNxt, field * 2 ** this.rcvWscale);
    this.rcvAdvEdge = edge;
    return field;
  }

  sackBlocks(out: Uint32Array, max: number): number {
    return this.ooo ? this.ooo.sackBlocks(out, max) : 0;
  }

  peekPayload(offset: number, dst: Uint8Array, dstOff: number, len: number): number {
    return this.host ? this.host.peek(offset, dst, dstOff, len) : 0;
  }

  // ---- SACK scoreboard (RFC 2018 §5, sender side) ----

  private recordSack(s: GuestSegment): void {
    for (let i = 0; i < s.sackCount; i++) {
      const l = s.sackBlocks[2 * i];
      const r = s.sackBlocks[2 * i + 1];
      // Ignore blocks outside (SND.UNA, SND.MAX] or inverted (RFC 2018 §8, D-SACK below UNA).
      if (!seqLt(l, r) || !seqGt(r, this.sndUna) || seqGt(r, this.sndMax)) continue;
      this.addSacked(seqLt(l, this.sndUna) ? this.sndUna : l, r);
    }
  }

  private addSacked(l: number, r: number): void {
    const a = this.sacked;
    let n = this.sackedCount;
    // Merge with overlapping/touching ranges.
    for (let i = 0; i < n; ) {
      const il = a[2 * i];
      const ir = a[2 * i + 1];
      if (seqLe(il, r) && seqGe(ir, l)) {
        if (seqLt(il, l)) l = il;
        if (seqGt(ir, r)) r = ir;
        a[2 * i] = a[2 * (n - 1)];
        a[2 * i + 1] = a[2 * (n - 1) + 1];
        n--;
      } else i++;
    }
    if (n === MAX_SACKED) {
      // Forget the highest range (the least useful for retransmission decisions).
      let hi = 0;
      for (let i = 1; i < n; i++) if (seqGt(a[2 * i], a[2 * hi])) hi = i;
      a[2 * hi] = a[2 * (n - 1)];
      a[2 * hi + 1] = a[2 * (n - 1) + 1];
      n--;
    }
    a[2 * n] = l;
    a[2 * n + 1] = r;
    this.sackedCount = n + 1;
  }

  private pruneSacked(): void {
    const a = this.sacked;
    let n = this.sackedCount;
    for (let i = 0; i < n; ) {
      if (seqLe(a[2 * i + 1], this.sndUna)) {
        a[2 * i] = a[2 * (n - 1)];
        a[2 * i + 1] = a[2 * (n - 1) + 1];
        n--;
      } else {
        if (seqLt(a[2 * i], this.sndUna)) a[2 * i] = this.sndUna;
        i++;
      }
    }
    this.sackedCount = n;
  }

  /** `seq`, or the end of the SACKed range containing it (repeatedly). */
  private skipSacked(seq: number): number {
    for (let moved = true; moved; ) {
      moved = false;
      for (let i = 0; i < this.sackedCount; i++) {
        if (seqGe(seq, this.sacked[2 * i]) && seqLt(seq, this.sacked[2 * i + 1])) {
          seq = this.sacked[2 * i + 1];
          moved = true;
        }
      }
    }
    return seq;
  }

  /** Start of the first SACKed range above `seq`, or SND.MAX. */
  private nextSackedStart(seq: number): number {
    let best = this.sndMax;
    for (let i = 0; i < this.sackedCount; i++) {
      const l = this.sacked[2 * i];
      if (seqGt(l, seq) && seqLt(l, best)) best = l;
    }
    return best;
  }

  private highestSacked(): number {
    let hi = this.sndUna;
    for (let i = 0; i < this.sackedCount; i++) if (seqGt(this.sacked[2 * i + 1], hi)) hi = this.sacked[2 * i + 1];
    return hi;
  }

  /** The first un-SACKed sequence number at or after `seq` (and ≥ SND.UNA). */
  private nextHole(seq: number): number {
    if (seqLt(seq, this.sndUna)) seq = this.sndUna;
    return this.skipSacked(seq);
  }

  // ---- RTT / RTO (RFC 6298 §2) ----

  private rttSample(r: number): void {
    if (!(r >= 0) || r > 600_000) return;
    const t = this.shared.timings;
    if (this.srtt < 0) {
      this.srtt = r;
      this.rttvar = r / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    this.rto = Math.min(t.rtoMaxMs, Math.max(t.rtoMinMs, this.srtt + Math.max(10, 4 * this.rttvar)));
  }

  // =====================================================================================
  // Timers
  // =====================================================================================

  onTimer(now: number): void {
    if (this.gone) return;
    if (this.rtxAt !== 0 && now >= this.rtxAt) {
      this.rtxAt = 0;
      this.retransmitTimeout(now);
      if (this.gone) return;
    }
    if (this.persistAt !== 0 && now >= this.persistAt) {
      this.persistAt = 0;
      this.persistTimeout(now);
    }
    if (this.closeAt !== 0 && now >= this.closeAt) {
      this.closeAt = 0;
      this.closeTimeout();
      if (this.gone) return;
    }
    this.rearm();
  }

  /** Link into the wheel for the earliest deadline (idle checks included). */
  private rearm(): void {
    if (this.gone) return;
    let next = Infinity;
    if (this.rtxAt !== 0) next = this.rtxAt;
    if (this.persistAt !== 0 && this.persistAt < next) next = this.persistAt;
    if (this.closeAt !== 0 && this.closeAt < next) next = this.closeAt;
    const idle = this.shared.timings.idleTimeoutMs;
    if (idle > 0 && this.synchronized() && this.state !== TcpState.TimeWait) {
      const idleAt = this.lastActivity + idle;
      if (idleAt < next) next = idleAt;
      if (this.shared.wheel.now() >= idleAt) {
        this.shared.stage.dropped('idle-timeout');
        this.sendRst();
        this.destroy('idle', true);
        return;
      }
    }
    if (next !== Infinity) this.shared.wheel.armBy(this, next);
  }

  private retransmitTimeout(now: number): void {
    const t = this.shared.timings;
    this.retries++;
    this.stats.timeouts++;
    this.rto = Math.min(t.rtoMaxMs, this.rto * 2);
    if (this.state === TcpState.SynReceived || this.state === TcpState.SynSent) {
      if (this.retries > t.maxSynRetransmits) {
        this.shared.stage.dropped('handshake-timeout');
        if (this.state === TcpState.SynReceived) this.sendRst();
        this.destroy('handshake-timeout', true);
        return;
      }
      if (this.state === TcpState.SynReceived) this.sendSynAck();
      else this.sendSyn();
      this.stats.retransmits++;
      this.rtxAt = now + this.rto;
      return;
    }
    if (this.sndUna === this.sndMax) return;
    if (this.sndWnd === 0) {
      // The guest closed its window with data of ours in flight: nothing can be resent until
      // it opens, and a closed window never kills a connection (RFC 9293 §3.8.6.1) — probe.
      this.retries--;
      this.stats.timeouts--;
      this.persistTimeout(now);
      this.rtxAt = now + this.rto;
      return;
    }
    if (this.retries > t.maxRetransmits) {
      this.shared.stage.dropped('retransmit-limit');
      this.sendRst();
      this.destroy('retransmit-limit', true);
      return;
    }
    // RFC 5681 §3.1 eq. 4, and go back to SND.UNA (RFC 6298 §5.4).
    this.ssthresh = Math.max(Math.floor(this.flight() / 2), 2 * this.mss);
    this.cwnd = this.mss;
    this.inRecovery = false;
    this.recoverValid = true;
    this.recover = this.sndMax;
    this.dupAcks = 0;
    this.rttSeq = -1;
    // The guest may have dropped what it SACKed (RFC 2018 §8): resend everything.
    this.sackedCount = 0;
    this.sndNxt = this.sndUna;
    this.rtxAt = now + this.rto;
    this.output();
    if (this.sndNxt === this.sndUna && this.rtxAt === 0) this.rtxAt = now + this.rto;
  }

  private persistTimeout(now: number): void {
    if (this.sndWnd > 0 || !this.synchronized()) {
      this.persistBackoff = 0;
      this.output();
      return;
    }
    const dataEnd = this.hostEof ? this.hostFinSeq : seqAdd(this.consumedSeq, this.host ? this.host.buffered : 0);
    const waiting = seqDiff(dataEnd, this.sndNxt) > 0 || (this.hostEof && !this.finSent) || this.sndMax !== this.sndUna;
    if (!waiting) return;
    // Zero-window probe: an ACK one byte below SND.UNA (outside the guest's window), which
    // the guest must answer with an ACK carrying its current window.
    if (this.shared.emitter.segment(this, TCP_ACK, seqAdd(this.sndUna, -1), 0, 0, this.mss, false)) {
      this.stats.zeroWindowProbes++;
      this.stats.segmentsToGuest++;
    }
    this.persistBackoff = Math.min(this.persistBackoff + 1, 16);
    this.persistAt = now + this.persistInterval();
  }

  private closeTimeout(): void {
    switch (this.state) {
      case TcpState.Connecting:
        // The host connect took too long: the destination is unreachable for the guest.
        this.shared.halfOpenDone(this);
        this.host?.close();
        this.host = null;
        this.sendUnreachable({ code: 'ETIMEDOUT' });
        this.destroy('connect-timeout', false);
        break;
      case TcpState.TimeWait:
        this.destroy('time-wait-done', false);
        break;
      default:
        break;
    }
  }

  // =====================================================================================
  // Teardown
  // =====================================================================================

  private drop(reason: string): void {
    this.stats.dropped++;
    this.shared.stage.dropped(reason);
  }

  /** Close the host side: reset, or a quiet close after both directions finished. */
  private releaseHost(reset: boolean): void {
    const h = this.host;
    if (!h) return;
    this.host = null;
    if (reset) h.reset();
    else h.close();
  }

  /**
   * Leave the table. `resetHost`: abort the host socket with RST (guest reset or gave up);
   * otherwise close it (it was finished, or failed by itself).
   */
  destroy(reason: string, resetHost: boolean): void {
    if (this.gone) return;
    if (this.halfOpen) this.shared.halfOpenDone(this);
    log.debug({ reason, state: this.state, port: this.guestPort, remotePort: this.remotePort }, 'tcp connection closed');
    this.state = TcpState.Closed;
    this.rtxAt = this.persistAt = this.closeAt = 0;
    this.shared.wheel.cancel(this);
    this.releaseHost(resetHost);
    this.ooo = null;
    this.synCopy = null;
    this.shared.closed(this);
  }

  /** Abort from the module (shutdown, eviction): RST to the guest, reset the host socket. */
  abort(reason: string): void {
    if (this.gone) return;
    if (this.state !== TcpState.Connecting && this.state !== TcpState.TimeWait && this.state !== TcpState.SynSent) this.sendRst();
    this.destroy(reason, true);
  }

  /** For logs and `usernet stats`. */
  describe(): Record<string, unknown> {
    return {
      state: this.state,
      guestPort: this.guestPort,
      remotePort: this.remotePort,
      sndUna: this.sndUna,
      sndNxt: this.sndNxt,
      sndWnd: this.sndWnd,
      cwnd: this.cwnd,
      rcvNxt: this.rcvNxt,
      rto: this.rto,
      hostKeepAliveS: this.hostKeepAliveS,
      ...this.stats,
    };
  }
}
