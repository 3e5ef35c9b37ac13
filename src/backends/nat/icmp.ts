/**
 * ICMP echo through the NAT, with real replies only: the guest's echo request is sent by the
 * host's kernel and the guest gets exactly the replies (and ICMP errors) the host receives. We
 * never answer an echo for a remote host ourselves — a ping that succeeds means the path works.
 * (Echo to the gateway is relayed to the host's 127.0.0.1 like everything else addressed to the
 * gateway; the stack answers only for the DNS address, and for the gateway when hostLoopback
 * is off — those addresses are ours.)
 *
 * Two kinds of host socket (native/src/sock.c, protocols.md §7.1):
 *  - ping sockets (SOCK_DGRAM/IPPROTO_ICMP, allowed by net.ipv4.ping_group_range): one socket
 *    per (guest address, guest echo identifier) session. The kernel sets the identifier to the
 *    socket's port and delivers only this socket's replies; we put the guest's identifier back
 *    (RFC 1624 incremental checksum update) — so two guests' identical identifiers never
 *    collide. ICMP errors about our requests come through the socket's error queue
 *    (IP_RECVERR).
 *  - raw sockets (the fallback as root when ping sockets are disabled): one shared socket per
 *    family that sees every ICMP packet of the host; each session gets an identifier of its own
 *    (unique among sessions) which we write into the copy we send, and replies and errors are
 *    demultiplexed by it (an error quotes our request, identifier included: RFC 792).
 *
 * The guest's TTL minus one (our hop) goes on each request (IP_TTL cmsg), so `ping -t N` and
 * ICMP traceroute from the guest see the routers beyond the host; a Time Exceeded from router R
 * reaches the guest from R, quoting the guest's own request (RFC 5508 §4.2).
 *
 * Sessions live in a bounded FlowTable keyed (family, ICMP, guest address, identifier) and
 * expire after 60 s without a request from the guest.
 */
import type { Family, GuestPacket, OutFrame, ProtocolModule } from './context';
import { copyAddress } from './context';
import { FlowTable, type FlowNode } from './flows';
import type { GuestOutputQueue } from './guest-output';
import { finishTransportChecksum, IPV4_HLEN } from './guest-output';
import { writeQuotedIpv4Header } from './icmp-quote';
import { addressBytes, ipv4Number, NOT_REPRESENTABLE, readIpv4, writeIpv4 } from './policy';
import type { StackContext } from './stack-context';
import type { Stage } from '../../meter/meter';
import { copyBytes } from '../../meter/meter';
import { HOST_ICMP_READ, HOST_ICMP_WRITE, NAT_ICMP_RELAY_RX, NAT_ICMP_RX, NAT_ICMP_TX } from '../../meter/stages';
import { hostCapturing } from '../../meter/pcap-host';
import { log, logOnce } from '../../log';
import { checksumAdjust16, internetChecksum } from '../../wire/checksum';
import * as native from '../../native';

export const IP_PROTO_ICMP = 1;
export const IP_PROTO_ICMPV6 = 58;
const ICMP_ECHO_REPLY = 0;
const ICMP_DEST_UNREACH = 3;
const ICMP_ECHO_REQUEST = 8;
const ICMP_TIME_EXCEEDED = 11;
const ICMP_PARAM_PROBLEM = 12;
const ICMPV6_ECHO_REQUEST = 128;
const ICMPV6_ECHO_REPLY = 129;
const SESSION_IDLE_MS = 60_000;
const READ_BUDGET = 64;
const ICMP_HLEN = 8;

export class EchoSession {
  node: FlowNode<EchoSession> | null = null;
  fd: native.OwnedFd | null = null;
  /** Raw mode: the identifier our requests carry on the host side. */
  hostId = -1;
  closed = false;
  /** Where the guest's last request went (host side, 4/16 bytes) — raw replies must come from there. */
  lastHost: Uint8Array | null = null;
  /** The guest-visible destination of the last request (for error quotes). */
  readonly lastDst = new Uint8Array(16);
  lastTtl = 64;
  lastTos = 0;
  lastIpId = 0;
  /** Per-flow counters (ICMP bytes and echoes each way) for `usernet stats --flows`. */
  bytesOut = 0;
  bytesIn = 0;
  echoesOut = 0;
  echoesIn = 0;
  constructor(
    readonly family: Family,
    readonly guest: Uint8Array,
    readonly guestId: number,
  ) {}
}

export class IcmpModule implements ProtocolModule {
  readonly flows: FlowTable<EchoSession>;
  private readonly outStage: Stage;
  private readonly inStage: Stage;
  private readonly errStage: Stage;
  private readonly hostWrite: Stage;
  private readonly hostRead: Stage;
  private readonly meta = new native.RecvMeta();
  private readonly rx = new Uint8Array(65536);
  private readonly scratch = new Uint8Array(65536);
  private readonly quote = new Uint8Array(IPV4_HLEN + 576);
  private readonly addr = new Uint8Array(16);
  /** The source address field of a packet read into `rx` (raw sockets: IP header included). */
  private readonly rxSource = this.rx.subarray(12, 16);
  /** 'ping' or 'raw' per family once known; null: not tried yet; 'none': ICMP unavailable. */
  private kind: Record<Family, 'ping' | 'raw' | 'none' | null> = { 4: null, 6: null };
  private raw: Partial<Record<Family, native.OwnedFd>> = {};
  private readonly rawSessions = new Map<number, EchoSession>();
  private nextHostId = (Math.random() * 0xffff) | 0;
  private closed = false;

  constructor(private readonly ctx: StackContext) {
    const { config, meter } = ctx;
    this.outStage = meter.stage(NAT_ICMP_TX);
    this.inStage = meter.stage(NAT_ICMP_RX);
    this.errStage = meter.stage(NAT_ICMP_RELAY_RX);
    this.hostWrite = meter.stage(HOST_ICMP_WRITE);
    this.hostRead = meter.stage(HOST_ICMP_READ);
    this.flows = new FlowTable<EchoSession>({
      name: 'icmp',
      meter,
      limit: Math.min(config.maxFlows, 4096),
      idleMs: SESSION_IDLE_MS,
      whenFull: 'evict-oldest',
      onEvict: (s) => this.closeSession(s),
    });
  }

  /** The kind of socket in use for `family` (after the first echo). */
  socketKind(family: Family): 'ping' | 'raw' | 'none' | null {
    return this.kind[family];
  }

  input(pkt: GuestPacket): void {
    const data = pkt.frame.data;
    const at = pkt.l4Offset;
    const len = pkt.l4Length;
    if (len < ICMP_HLEN) return this.drop('short');
    const type = data[at];
    const echo = pkt.family === 4 ? ICMP_ECHO_REQUEST : ICMPV6_ECHO_REQUEST;
    if (type !== echo || data[at + 1] !== 0) return this.drop(`type-${type}`); // only echo leaves the guest's network
    if (pkt.family === 4 && !pkt.checksumTrusted && internetChecksum(data, at, len) !== 0) return this.drop('bad-checksum');
    const guestId = (data[at + 4] << 8) | data[at + 5];
    this.outStage.pass(1, len);

    const node = this.flows.lookup(pkt.family, IP_PROTO_ICMP, pkt.src, guestId, null, 0);
    const s = node?.value ?? this.openSession(pkt.family, pkt.src, guestId);
    if (!s) return;
    this.flows.touch(s.node!);

    // Where it goes on the host (cached while the destination stays the same).
    const alen = pkt.family === 4 ? 4 : 16;
    let same = s.lastHost !== null;
    for (let i = 0; same && i < alen; i++) same = s.lastDst[i] === pkt.dst[i];
    if (!same) {
      for (let i = 0; i < alen; i++) s.lastDst[i] = pkt.dst[i];
      const text = this.ctx.hostAddressFor(pkt.family, pkt.dst);
      s.lastHost = text === null ? null : addressBytes(text, pkt.family);
    }
    if (!s.lastHost) {
      this.drop('refused');
      this.ctx.icmpError(pkt, ICMP_DEST_UNREACH, 13, 0);
      return;
    }
    s.lastTtl = pkt.ttl;
    s.lastTos = pkt.tos;
    s.lastIpId = pkt.family === 4 ? (data[pkt.l3Offset + 4] << 8) | data[pkt.l3Offset + 5] : 0;
    const ttl = s.lastHost[0] === 127 && pkt.family === 4 ? -1 : Math.max(1, pkt.ttl - 1);

    // translated: the source is the host socket's, the destination the host address (the gateway → loopback)
    this.outStage.rewrote(s.lastHost[0] === pkt.dst[0] && s.lastHost[3] === pkt.dst[3] ? 1 : 2);
    try {
      let n: number;
      if (s.fd) {
        // Ping socket: the kernel sets identifier and checksum; send the guest's bytes as they are.
        n = native.sendTo(s.fd, data.subarray(at, at + len), s.lastHost, 0, ttl);
      } else {
        // Raw socket: our identifier, our checksum, in a copy.
        const b = this.scratch;
        copyBytes(this.outStage, data.subarray(at, at + len), b, 0);
        b[4] = s.hostId >>> 8;
        b[5] = s.hostId & 0xff;
        if (pkt.family === 4) {
          b[2] = b[3] = 0;
          const c = internetChecksum(b, 0, len);
          b[2] = c >>> 8;
          b[3] = c & 0xff;
        }
        this.outStage.rewrote(2); // identifier, checksum
        n = native.sendTo(this.raw[pkt.family]!, b.subarray(0, len), s.lastHost, 0, ttl);
      }
      if (n < 0) this.drop('host-would-block');
      else {
        this.hostWrite.pass(1, len);
        this.hostWrite.copied(len); // → kernel
        s.bytesOut += len;
        s.echoesOut++;
        if (hostCapturing.on) hostCapturing.capture!.icmp(s.fd, true, s.lastHost, s.fd ? data.subarray(at, at + len) : this.scratch.subarray(0, len));
      }
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'error';
      if (this.outStage.dropped(`send-${code}`)) log.warn({ err: String(err) }, 'ICMP echo to host failed');
      if (code === 'ENETUNREACH') this.ctx.icmpError(pkt, ICMP_DEST_UNREACH, 0, 0);
      else if (code === 'EHOSTUNREACH') this.ctx.icmpError(pkt, ICMP_DEST_UNREACH, 1, 0);
    }
  }

  private openSession(family: Family, guest: Uint8Array, guestId: number): EchoSession | null {
    const kind = this.ensureKind(family);
    if (kind === 'none') {
      this.drop('no-icmp-socket');
      return null;
    }
    const s = new EchoSession(family, copyAddress(guest), guestId);
    if (kind === 'ping') {
      let sock: native.IcmpSocket;
      try {
        sock = native.icmpSocket(family, { netns: this.ctx.hostNetns, allowRaw: false });
      } catch (err) {
        if (this.outStage.dropped('socket-failed')) log.warn({ err: String(err) }, 'cannot open an ICMP echo socket');
        return null;
      }
      s.fd = sock.fd;
      try {
        native.setRecvErr(sock.fd, family);
        native.setRecvTtl(sock.fd, family);
      } catch {
        /* errors and TTLs are best effort */
      }
    } else {
      s.hostId = this.allocateHostId();
      if (s.hostId < 0) {
        this.drop('no-identifier');
        return null;
      }
    }
    const node = this.flows.insert(family, IP_PROTO_ICMP, guest, guestId, null, 0, s);
    if (!node) {
      s.fd?.close();
      this.drop('table-full');
      return null;
    }
    s.node = node;
    if (s.fd) {
      const fd = s.fd;
      const w = new native.FdWatcher(fd, (_ev, status) => {
        if (s.closed) return;
        if (status < 0) {
          this.readErrors(s);
          if (!s.closed) w.start(native.POLL_READABLE);
        } else this.readPing(s);
      });
      w.start(native.POLL_READABLE);
    } else {
      this.rawSessions.set(s.hostId, s);
    }
    return s;
  }

  /** Decide once per family: ping sockets, else raw (root), else none. */
  private ensureKind(family: Family): 'ping' | 'raw' | 'none' {
    const known = this.kind[family];
    if (known) return known;
    try {
      const probe = native.icmpSocket(family, { netns: this.ctx.hostNetns, allowRaw: true });
      if (probe.kind === 'ping') {
        probe.fd.close();
        this.kind[family] = 'ping';
      } else {
        this.kind[family] = 'raw';
        this.raw[family] = probe.fd;
        try {
          native.setRecvTtl(probe.fd, family);
        } catch {
          /* best effort */
        }
        const w = new native.FdWatcher(probe.fd, (_ev, status) => {
          if (status < 0) {
            // Raw sockets have no error queue here; a stray socket error: clear and go on.
            native.getSocketError(probe.fd);
            if (!this.closed) w.start(native.POLL_READABLE);
            return;
          }
          this.readRaw(family);
        });
        w.start(native.POLL_READABLE);
      }
    } catch (err) {
      this.kind[family] = 'none';
      logOnce(`nat.icmp.none.${family}`, 'no ICMP echo socket (ping_group_range excludes us and no CAP_NET_RAW): guest pings go unanswered', {
        err: String(err),
      });
    }
    log.debug({ family, kind: this.kind[family] }, 'ICMP echo socket kind');
    return this.kind[family]!;
  }

  private allocateHostId(): number {
    for (let i = 0; i < 0x10000; i++) {
      const id = (this.nextHostId = (this.nextHostId + 1) & 0xffff);
      if (!this.rawSessions.has(id)) return id;
    }
    return -1;
  }

  /* ------------------------------------------------------------------ replies */

  /** Ping socket: replies arrive as ICMP header + data, straight into a guest frame. */
  private readPing(s: EchoSession): void {
    const out = this.ctx.out;
    const meta = this.meta;
    for (let i = 0; i < READ_BUDGET && !s.closed; i++) {
      const o = out.reserve(s.family);
      if (!o) return void this.inStage.dropped('no-buffer');
      let n: number;
      try {
        n = native.recvFrom(s.fd!, out.receiveView(o, o.l4Offset), meta);
      } catch {
        out.abort(o);
        this.readErrors(s);
        continue;
      }
      if (n < 0) return out.abort(o);
      this.hostRead.pass(1, n);
      this.hostRead.copied(n); // kernel → guest frame
      if (hostCapturing.on && n >= ICMP_HLEN) hostCapturing.capture!.icmp(s.fd, false, meta.addressBytes, out.receiveView(o, o.l4Offset).subarray(0, n));
      const reply = s.family === 4 ? ICMP_ECHO_REPLY : ICMPV6_ECHO_REPLY;
      const b = o.buf;
      const at = o.l4Offset;
      if (n < ICMP_HLEN || meta.truncated || b[at] !== reply) {
        out.abort(o);
        this.inStage.dropped('not-an-echo-reply');
        continue;
      }
      if (!this.deliverReply(out, o, s, meta.addressBytes, meta.ttl, n)) continue;
    }
  }

  /** Put the guest's identifier back, address the frame and queue it. */
  private deliverReply(out: GuestOutputQueue, o: OutFrame, s: EchoSession, from: Uint8Array, ttl: number, n: number): boolean {
    const src = this.ctx.policy.guestSource(s.family, from);
    if (!src) {
      out.abort(o);
      this.inStage.dropped('source-not-representable');
      return false;
    }
    const b = o.buf;
    const at = o.l4Offset;
    const oldId = (b[at + 4] << 8) | b[at + 5];
    b[at + 4] = s.guestId >>> 8;
    b[at + 5] = s.guestId & 0xff;
    if (s.family === 4) {
      const c = checksumAdjust16((b[at + 2] << 8) | b[at + 3], oldId, s.guestId);
      b[at + 2] = c >>> 8;
      b[at + 3] = c & 0xff;
    }
    if (!out.finish(o, null, s.family, src, s.guest, s.family === 4 ? IP_PROTO_ICMP : IP_PROTO_ICMPV6, ttl > 1 ? ttl - 1 : 64, n)) {
      return false;
    }
    if (s.family === 6) {
      // ICMPv6 checksum covers a pseudo-header with the addresses the guest sees.
      b[at + 2] = b[at + 3] = 0;
      finishTransportChecksum(out, o, 2);
    }
    this.inStage.pass(1, n);
    s.bytesIn += n;
    s.echoesIn++;
    // identifier and checksum restored in place; the source as the guest knows it, the destination the guest
    this.inStage.rewrote(2 + (src[0] === from[0] && src[3] === from[3] ? 1 : 2));
    out.commit(o);
    return true;
  }

  /** Raw socket (IPv4: IP header included): echo replies and errors, by our identifier. */
  private readRaw(family: Family): void {
    const fd = this.raw[family];
    if (!fd || family !== 4) return;
    const out = this.ctx.out;
    const b = this.rx;
    const meta = this.meta;
    for (let i = 0; i < READ_BUDGET; i++) {
      let n: number;
      try {
        n = native.recvFrom(fd, b, meta);
      } catch {
        continue;
      }
      if (n < 0) return;
      if (n < IPV4_HLEN + ICMP_HLEN || b[0] >>> 4 !== 4) continue;
      const ihl = (b[0] & 0x0f) * 4;
      const at = ihl;
      if (n < at + ICMP_HLEN || b[9] !== IP_PROTO_ICMP) continue;
      const type = b[at];
      if (type === ICMP_ECHO_REPLY) {
        const s = this.rawSessions.get((b[at + 4] << 8) | b[at + 5]);
        if (!s || s.closed || !s.lastHost) continue;
        // Only the host we pinged may answer this session.
        if (readIpv4(b, 12) !== readIpv4(s.lastHost)) continue;
        this.hostRead.pass(1, n);
        this.hostRead.copied(n); // kernel → read buffer
        const len = n - at;
        const o = out.reserve(4);
        if (!o) {
          this.inStage.dropped('no-buffer');
          continue;
        }
        copyBytes(this.inStage, b.subarray(at, n), o.buf, o.l4Offset);
        this.deliverReply(out, o, s, this.rxSource, b[8], len);
      } else if (type === ICMP_DEST_UNREACH || type === ICMP_TIME_EXCEEDED || type === ICMP_PARAM_PROBLEM) {
        // The quoted packet: our echo request (IP header + at least 8 bytes of ICMP).
        const q = at + ICMP_HLEN;
        if (n < q + IPV4_HLEN || b[q + 9] !== IP_PROTO_ICMP) continue;
        const qihl = (b[q] & 0x0f) * 4;
        const qi = q + qihl;
        if (n < qi + ICMP_HLEN || b[qi] !== ICMP_ECHO_REQUEST) continue;
        const s = this.rawSessions.get((b[qi + 4] << 8) | b[qi + 5]);
        if (!s || s.closed) continue;
        const info = type === ICMP_DEST_UNREACH ? (b[at + 6] << 8) | b[at + 7] : type === ICMP_PARAM_PROBLEM ? b[at + 4] : 0;
        this.sendError(s, type, b[at + 1], info, readIpv4(b, 12), readIpv4(b, q + 16), b.subarray(qi, Math.min(n, qi + 512)));
      }
    }
  }

  /** Ping socket: the error queue (IP_RECVERR) holds ICMP errors about our requests. */
  private readErrors(s: EchoSession): void {
    for (let i = 0; i < 64 && s.fd && !s.closed; i++) {
      let e: native.ErrorQueueEntry | null;
      try {
        e = native.readErrorQueue(s.fd, this.rx);
      } catch {
        return;
      }
      if (!e) return;
      if (s.family !== 4 || e.origin !== native.SO_EE_ORIGIN_ICMP || !e.destination) {
        this.errStage.dropped('not-translated');
        continue;
      }
      const offender = e.offender ? ipv4Number(e.offender) : NaN;
      this.sendError(s, e.type, e.code, e.info, offender, ipv4Number(e.destination.address), this.rx.subarray(0, Math.min(e.bytes, 512)));
    }
  }

  /**
   * Send the guest the ICMP error a router (`offender`, host view) sent about the session's
   * request to `dstHost`, quoting the guest's own request: its addresses, TTL, identifier and
   * checksum as the guest had them, and the echo data the router quoted (RFC 5508 §4.2).
   */
  private sendError(s: EchoSession, type: number, code: number, info: number, offender: number, dstHost: number, echo: Uint8Array): void {
    const policy = this.ctx.policy;
    if (echo.length < ICMP_HLEN) return void this.errStage.dropped('short-quote');
    const dst = policy.guestSource4(dstHost);
    if (dst === NOT_REPRESENTABLE) return void this.errStage.dropped('destination-not-representable');
    let from = Number.isNaN(offender) ? NOT_REPRESENTABLE : policy.guestSource4(offender);
    if (from === NOT_REPRESENTABLE) from = dst;
    const q = this.quote;
    const len = Math.min(echo.length, q.length - IPV4_HLEN);
    const total = IPV4_HLEN + len;
    writeQuotedIpv4Header(q, IP_PROTO_ICMP, total, s.lastTos, s.lastIpId, false, s.lastTtl, s.guest, dst);
    copyBytes(this.errStage, echo.subarray(0, len), q, IPV4_HLEN);
    const hostId = (q[IPV4_HLEN + 4] << 8) | q[IPV4_HLEN + 5];
    q[IPV4_HLEN + 4] = s.guestId >>> 8;
    q[IPV4_HLEN + 5] = s.guestId & 0xff;
    const ck = checksumAdjust16((q[IPV4_HLEN + 2] << 8) | q[IPV4_HLEN + 3], hostId, s.guestId);
    q[IPV4_HLEN + 2] = ck >>> 8;
    q[IPV4_HLEN + 3] = ck & 0xff;
    this.errStage.pass(1, total);
    const f = this.addr;
    writeIpv4(f, 0, from);
    this.ctx.icmpErrorQuote(4, s.guest, f.subarray(0, 4), type, code, info, q.subarray(0, total));
  }

  private closeSession(s: EchoSession): void {
    if (s.closed) return;
    s.closed = true;
    if (s.node?.live) this.flows.remove(s.node);
    s.fd?.close();
    if (s.hostId >= 0 && this.rawSessions.get(s.hostId) === s) this.rawSessions.delete(s.hostId);
  }

  private drop(reason: string): void {
    if (this.outStage.dropped(reason)) logOnce(`nat.icmp.${reason}`, `ICMP from the guest dropped: ${reason}`);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.flows.close();
    for (const fd of Object.values(this.raw)) fd?.close();
    this.raw = {};
    this.rawSessions.clear();
  }
}
