/**
 * UDP through the NAT: one host socket per guest source address and port.
 *
 * Mapping (RFC 4787 REQ-1, endpoint-independent): the first datagram from guest (A, p) opens a
 * UDP socket on the host (any address, a port the kernel picks) and every later datagram from
 * (A, p) leaves through it, whatever its destination — so a peer sees the same host port for
 * all of them, which is what STUN/ICE and game protocols expect.
 *
 * Filtering (RFC 4787 §5, `config.udpFiltering`): which host-side senders may reach the guest
 * through a mapping. address-dependent (default, REQ-8's recommendation for security):
 * addresses the guest has sent to; address-and-port-dependent: those address+port pairs;
 * endpoint-independent: anyone. Port forwards accept anyone.
 *
 * Lifetime: `config.udpTimeout` seconds without outbound traffic (REQ-5: at least 2 min; REQ-6:
 * refreshed by outbound traffic — inbound does not refresh, so a chatty peer cannot keep a
 * mapping open). The table (flows.ts) is bounded by `config.maxFlows`; at the limit the least
 * recently used mapping is closed.
 *
 * Datagrams: guest → host are sent with `sendto` straight from the guest's frame (the kernel
 * copies once), with the guest's TTL minus one for this hop (RFC 1812 §5.3.1; the stack
 * answers TTL ≤ 1 itself), so UDP traceroute from the guest sees every hop beyond the host;
 * the guest's DF bit becomes the socket's IP_MTU_DISCOVER mode (DO / DONT, set only when it
 * changes), so a DF probe meets the path MTU as frag-needed and a datagram without DF is
 * fragmented by the path as the guest's own would be.
 * Host → guest are received straight into a pooled guest frame (the kernel copies once) and get
 * Ethernet/IP/UDP headers around them there; a datagram larger than the guest's MTU is sent as
 * IPv4 fragments (RFC 791).
 *
 * ICMP errors (RFC 5508 §4): every host socket has IP_RECVERR; an error about one of our
 * datagrams (port unreachable, host unreachable, TTL exceeded from a router on the path,
 * fragmentation needed) is read from the socket's error queue and sent to the guest from the
 * router's address (or the destination's), quoting a rebuilt copy of the guest's own datagram:
 * its addresses and ports, its TTL and IP id as sent, and the payload bytes the error quoted.
 *
 * Host port forwards for UDP (`addForward`): a socket bound to the host address and port is the
 * mapping of the guest's (address, port); datagrams from a host client C reach the guest from C
 * (127.0.0.1 shows as the gateway), and the guest's replies to that address leave through the
 * forward's socket back to C.
 */
import type { HostForward } from './config';
import type { Family, GuestPacket, ProtocolModule } from './context';
import { copyAddress } from './context';
import { FlowTable, type FlowNode } from './flows';
import { finishTransportChecksum, IPV4_HLEN, type GuestOutputQueue } from './guest-output';
import { writeQuotedIpv4Header } from './icmp-quote';
import { addressBytes, ipv4Number, NOT_REPRESENTABLE, readIpv4, writeIpv4 } from './policy';
import type { StackContext } from './stack-context';
import type { Stage } from '../../meter/meter';
import { HOST_UDP_READ, HOST_UDP_WRITE, NAT_UDP_ERROR_RX, NAT_UDP_RX, NAT_UDP_TX } from '../../meter/stages';
import { hostCapturing } from '../../meter/pcap-host';
import { log, logOnce } from '../../log';
import { internetChecksum, onesSum } from '../../wire/checksum';
import { UdpDatagram } from '../../wire/udp';
import * as native from '../../native';

export const IP_PROTO_UDP = 17;
const UDP_HLEN = 8;
const MAX_UDP_PAYLOAD = 65507;
/** Datagrams read per readiness callback before yielding to other sockets. */
const READ_BUDGET = 64;

/** One guest endpoint's host socket. */
export class UdpMapping {
  node: FlowNode<UdpMapping> | null = null;
  watcher: native.FdWatcher | null = null;
  closed = false;
  /** Destinations the guest sent to (filtering): IPv4 address, or address*65536+port. */
  readonly allowed = new Set<number>();
  readonly allowedText = new Set<string>();
  /** The last destination, cached so that a stream to one peer costs no policy lookup. */
  readonly lastDst = new Uint8Array(16);
  lastDstPort = -1;
  lastHost: Uint8Array | null = null;
  /** What the guest's last datagram looked like, to rebuild it when an ICMP error quotes it. */
  lastTtl = 64;
  lastId = 0;
  lastTos = 0;
  lastLength = 0;
  lastChecksum = 0;
  lastDf = false;
  /** The socket's IP_MTU_DISCOVER mode mirroring the guest's DF bit (-1: kernel default). */
  pmtuMode = -1;
  /** Per-flow counters (payload bytes and datagrams each way) for `usernet stats --flows`. */
  bytesOut = 0;
  bytesIn = 0;
  datagramsOut = 0;
  datagramsIn = 0;

  constructor(
    readonly family: Family,
    readonly guest: Uint8Array,
    readonly guestPort: number,
    readonly fd: native.OwnedFd,
    readonly forward: HostForward | null,
  ) {}
}

/** Write a UDP header at `off` (checksum left 0). */
function writeUdpHeader(b: Uint8Array, off: number, srcPort: number, dstPort: number, length: number): void {
  b[off] = srcPort >>> 8;
  b[off + 1] = srcPort & 0xff;
  b[off + 2] = dstPort >>> 8;
  b[off + 3] = dstPort & 0xff;
  b[off + 4] = length >>> 8;
  b[off + 5] = length & 0xff;
  b[off + 6] = 0;
  b[off + 7] = 0;
}

const fragHead = new Uint8Array(UDP_HLEN);

/**
 * Send one UDP datagram to the guest (DNS and DHCP answers, and the fallback path of the UDP
 * module): headers built in a pooled frame, `payload` copied once (counted in `stage`),
 * checksum as the guest wants it, IPv4 fragments when it exceeds the MTU. `mac` overrides the
 * Ethernet destination (DHCP to a client without an address yet).
 */
export function sendUdpToGuest(
  out: GuestOutputQueue,
  stage: Stage,
  family: Family,
  src: Uint8Array,
  srcPort: number,
  dst: Uint8Array,
  dstPort: number,
  payload: Uint8Array,
  mac: Uint8Array | null = null,
  ttl = 64,
): boolean {
  const len = UDP_HLEN + payload.length;
  if (payload.length > MAX_UDP_PAYLOAD) {
    stage.dropped('too-long');
    return false;
  }
  if (family === 4 && IPV4_HLEN + len > out.mtu) {
    writeUdpHeader(fragHead, 0, srcPort, dstPort, len);
    const pseudo = onesSum(src, 0, 4) + onesSum(dst, 0, 4) + IP_PROTO_UDP + len;
    let c = internetChecksum(payload, 0, payload.length, onesSum(fragHead, 0, UDP_HLEN, pseudo));
    if (c === 0) c = 0xffff;
    fragHead[6] = c >>> 8;
    fragHead[7] = c & 0xff;
    return out.sendFragmented4(src, dst, IP_PROTO_UDP, ttl, fragHead, payload, stage);
  }
  const o = out.beginTo(mac, family, src, dst, IP_PROTO_UDP, ttl, len);
  if (!o) {
    stage.dropped('no-buffer');
    return false;
  }
  writeUdpHeader(o.buf, o.l4Offset, srcPort, dstPort, len);
  o.buf.set(payload, o.l4Offset + UDP_HLEN);
  stage.copied(payload.length);
  finishTransportChecksum(out, o, 6);
  stage.pass(1, len);
  out.commit(o);
  return true;
}

export class UdpModule implements ProtocolModule {
  readonly flows: FlowTable<UdpMapping>;
  private readonly view = new UdpDatagram();
  private readonly outStage: Stage;
  private readonly inStage: Stage;
  private readonly errStage: Stage;
  private readonly hostWrite: Stage;
  private readonly hostRead: Stage;
  private readonly meta = new native.RecvMeta();
  private readonly errBuf = new Uint8Array(1024);
  private readonly quote = new Uint8Array(IPV4_HLEN + UDP_HLEN + 1024);
  private readonly srcScratch = new Uint8Array(16);
  private readonly filtering: string;
  private closed = false;

  constructor(private readonly ctx: StackContext) {
    const { config, meter } = ctx;
    this.outStage = meter.stage(NAT_UDP_TX);
    this.inStage = meter.stage(NAT_UDP_RX);
    this.errStage = meter.stage(NAT_UDP_ERROR_RX);
    this.hostWrite = meter.stage(HOST_UDP_WRITE);
    this.hostRead = meter.stage(HOST_UDP_READ);
    this.filtering = config.udpFiltering;
    this.flows = new FlowTable<UdpMapping>({
      name: 'udp',
      meter,
      limit: config.maxFlows,
      idleMs: config.udpTimeout * 1000,
      whenFull: 'evict-oldest',
      onEvict: (m) => this.closeMapping(m),
    });
  }

  get size(): number {
    return this.flows.size;
  }

  input(pkt: GuestPacket): void {
    const data = pkt.frame.data;
    const u = this.view.wrap(data, pkt.l4Offset, pkt.l4Length);
    if (u.check() !== null) return this.drop('bad-header');
    const length = u.length;
    if (
      !pkt.checksumTrusted &&
      (u.checksum !== 0 || pkt.family === 6) &&
      !(pkt.family === 4 ? u.verifyChecksumV4(readIpv4(pkt.src), readIpv4(pkt.dst)) : u.verifyChecksumV6(pkt.src, pkt.dst))
    ) {
      return this.drop('bad-checksum');
    }
    const srcPort = u.srcPort;
    const dstPort = u.dstPort;
    if (dstPort === 0 || srcPort === 0) return this.drop('port-zero');
    this.outStage.pass(1, length);

    let node = this.flows.lookup(pkt.family, IP_PROTO_UDP, pkt.src, srcPort, null, 0);
    let m = node?.value;
    if (!m) {
      m = this.openMapping(pkt.family, pkt.src, srcPort, null) ?? undefined;
      if (!m) return;
      node = m.node!;
    }
    if (!m.forward) this.flows.touch(node!);

    const host = this.hostFor(m, pkt, dstPort);
    if (!host) {
      this.drop('refused');
      this.ctx.icmpError(pkt, 3, 13, 0); // communication administratively prohibited (RFC 1812 §5.2.7.1)
      return;
    }
    const payloadOffset = pkt.l4Offset + UDP_HLEN;
    const payload = data.subarray(payloadOffset, pkt.l4Offset + length);
    // Our hop: TTL − 1 beyond the gateway (the stack answered TTL ≤ 1); the host's own default
    // towards its loopback.
    const ttl = host[0] === 127 && pkt.family === 4 ? -1 : Math.max(1, pkt.ttl - 1);
    m.lastTtl = pkt.ttl;
    m.lastTos = pkt.tos;
    m.lastLength = length;
    m.lastChecksum = u.checksum;
    m.lastId = pkt.family === 4 ? (data[pkt.l3Offset + 4] << 8) | data[pkt.l3Offset + 5] : 0;
    m.lastDf = pkt.dontFragment;
    if (pkt.family === 4) {
      // The guest's DF bit on the host datagram (IPv4): DF → path MTU errors come back to the
      // guest as frag-needed; no DF → routers fragment, as they would for the guest's packet.
      const mode = pkt.dontFragment ? native.IP_PMTUDISC_DO : native.IP_PMTUDISC_DONT;
      if (m.pmtuMode !== mode) {
        try {
          native.setMtuDiscover(m.fd, 4, mode);
          m.pmtuMode = mode;
        } catch (err) {
          logOnce('nat.udp.pmtu', 'IP_MTU_DISCOVER not available; the guest\'s DF bit is not mirrored', { err: String(err) });
          m.pmtuMode = mode;
        }
      }
    }
    // Translated on the way out: the source becomes the socket's own address and port, the
    // destination the host address the policy chose (the gateway → 127.0.0.1).
    this.outStage.rewrote(sameAddress(host, pkt.dst) ? 2 : 3);
    this.transmit(m, pkt, payload, host, dstPort, ttl, true);
  }

  private transmit(m: UdpMapping, pkt: GuestPacket, payload: Uint8Array, host: Uint8Array, port: number, ttl: number, retry: boolean): void {
    try {
      const n = native.sendTo(m.fd, payload, host, port, ttl);
      if (n < 0) return this.drop('host-would-block');
      this.hostWrite.pass(1, payload.length);
      this.hostWrite.copied(payload.length); // frame → kernel: the one copy
      m.bytesOut += payload.length;
      m.datagramsOut++;
      if (hostCapturing.on) hostCapturing.capture!.udp(m.fd, true, host, port, payload);
    } catch (err) {
      const code = (err as { code?: string }).code ?? '';
      // With IP_RECVERR an ICMP error about an earlier datagram is also reported once as the
      // socket's error: drain the queue (forwarding it) and try this datagram again.
      if (retry && (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'EMSGSIZE')) {
        this.readErrors(m);
        return this.transmit(m, pkt, payload, host, port, ttl, false);
      }
      if (this.outStage.dropped(`send-${code || 'error'}`)) log.warn({ err: String(err) }, 'UDP send to host failed');
      if (code === 'ENETUNREACH') this.ctx.icmpError(pkt, 3, 0, 0);
      else if (code === 'EHOSTUNREACH') this.ctx.icmpError(pkt, 3, 1, 0);
      else if (code === 'EACCES' || code === 'EPERM') this.ctx.icmpError(pkt, 3, 13, 0);
    }
  }

  /** The host address (4 or 16 bytes) a datagram from `m` to the packet's destination goes to. */
  private hostFor(m: UdpMapping, pkt: GuestPacket, dstPort: number): Uint8Array | null {
    const alen = pkt.family === 4 ? 4 : 16;
    const dst = pkt.dst;
    let same = m.lastDstPort === dstPort;
    for (let i = 0; same && i < alen; i++) same = m.lastDst[i] === dst[i];
    if (same) return m.lastHost;
    for (let i = 0; i < alen; i++) m.lastDst[i] = dst[i];
    m.lastDstPort = dstPort;
    const text = this.ctx.hostAddressFor(pkt.family, dst);
    m.lastHost = text === null ? null : addressBytes(text, pkt.family);
    if (m.lastHost) this.allow(m, m.lastHost, dstPort);
    return m.lastHost;
  }

  private allow(m: UdpMapping, host: Uint8Array, port: number): void {
    if (this.filtering === 'endpoint-independent') return;
    const byPort = this.filtering === 'address-and-port-dependent';
    if (m.family === 4) {
      const a = readIpv4(host);
      m.allowed.add(byPort ? a * 65536 + port : a);
    } else {
      const t = Buffer.from(host).toString('hex');
      m.allowedText.add(byPort ? `${t}:${port}` : t);
    }
  }

  private permitted(m: UdpMapping, family: Family, from: Uint8Array, port: number): boolean {
    if (m.forward || this.filtering === 'endpoint-independent') return true;
    const byPort = this.filtering === 'address-and-port-dependent';
    if (family === 4) {
      const a = readIpv4(from);
      return m.allowed.has(byPort ? a * 65536 + port : a);
    }
    const t = Buffer.from(from.subarray(0, 16)).toString('hex');
    return m.allowedText.has(byPort ? `${t}:${port}` : t);
  }

  /**
   * A mapping's host socket: a privileged guest source port (below 1024, e.g. an NFS client's)
   * is kept on the host when it can be (usernet runs as root, the port is free); otherwise the
   * kernel picks one and a log line says so.
   */
  private openHostSocket(family: Family, guestPort: number): native.OwnedFd {
    if (guestPort > 0 && guestPort < 1024) {
      try {
        return native.udpSocket(family, { port: guestPort, netns: this.ctx.hostNetns });
      } catch (err) {
        log.info({ port: guestPort, err: String(err) }, "udp: cannot keep the guest's privileged source port on the host; using an ephemeral one");
      }
    }
    return native.udpSocket(family, { netns: this.ctx.hostNetns });
  }

  private openMapping(family: Family, guest: Uint8Array, guestPort: number, forward: HostForward | null): UdpMapping | null {
    let fd: native.OwnedFd;
    try {
      fd = forward
        ? native.udpSocket(family, { address: forward.hostAddress, port: forward.hostPort, netns: this.ctx.hostNetns })
        : this.openHostSocket(family, guestPort);
    } catch (err) {
      if (forward) throw err;
      if (this.outStage.dropped('socket-failed')) log.warn({ err: String(err) }, 'cannot open a host UDP socket');
      return null;
    }
    try {
      native.setRecvErr(fd, family);
      native.setRecvTtl(fd, family);
    } catch (err) {
      logOnce('nat.udp.sockopt', 'IP_RECVERR/IP_RECVTTL not available; ICMP errors will not reach the guest', { err: String(err) });
    }
    const m = new UdpMapping(family, copyAddress(guest), guestPort, fd, forward);
    const node = this.flows.insert(family, IP_PROTO_UDP, guest, guestPort, null, 0, m, forward !== null);
    if (!node) {
      fd.close();
      this.drop('table-full');
      return null;
    }
    m.node = node;
    const watcher = new native.FdWatcher(fd, (_events, status) => this.onReady(m, status));
    m.watcher = watcher;
    watcher.start(native.POLL_READABLE);
    return m;
  }

  private onReady(m: UdpMapping, status: number): void {
    if (m.closed) return;
    if (status < 0) {
      this.readErrors(m);
      if (!m.closed) m.watcher?.start(native.POLL_READABLE);
      return;
    }
    this.readDatagrams(m);
  }

  /** Host → guest: receive straight into pooled guest frames. */
  private readDatagrams(m: UdpMapping): void {
    const out = this.ctx.out;
    const meta = this.meta;
    const family = m.family;
    for (let i = 0; i < READ_BUDGET && !m.closed; i++) {
      const o = out.reserve(family);
      if (!o) {
        this.inStage.dropped('no-buffer'); // left in the socket; level-triggered, read again later
        return;
      }
      const at = o.l4Offset + UDP_HLEN;
      let n: number;
      try {
        n = native.recvFrom(m.fd, out.receiveView(o, at), meta);
      } catch (err) {
        out.abort(o);
        // A pending socket error (IP_RECVERR): the queue says which.
        this.readErrors(m);
        if (this.inStage.dropped(`recv-${(err as { code?: string }).code ?? 'error'}`)) log.debug({ err: String(err) }, 'UDP recv');
        continue;
      }
      if (n < 0) {
        out.abort(o);
        return;
      }
      this.hostRead.pass(1, n);
      this.hostRead.copied(n); // kernel → guest frame: the one copy
      if (meta.truncated || meta.family !== family) {
        out.abort(o);
        this.inStage.dropped(meta.truncated ? 'truncated' : 'family-mismatch');
        continue;
      }
      const from = meta.addressBytes;
      const port = meta.port;
      if (!this.permitted(m, family, from, port)) {
        out.abort(o);
        this.inStage.dropped('filtered');
        continue;
      }
      const src = this.ctx.policy.guestSource(family, from);
      if (!src) {
        out.abort(o);
        this.inStage.dropped('source-not-representable');
        continue;
      }
      if (hostCapturing.on) hostCapturing.capture!.udp(m.fd, false, from, port, out.receiveView(o, at).subarray(0, n));
      const ttl = meta.ttl > 1 ? meta.ttl - 1 : 64;
      const len = UDP_HLEN + n;
      if (family === 4 && IPV4_HLEN + len > out.mtu) {
        // Too big for the guest's link: fragments (copies the payload once more).
        const body = out.receiveView(o, at).subarray(0, n);
        sendUdpToGuest(out, this.inStage, family, src, port, m.guest, m.guestPort, body, null, ttl);
        out.abort(o);
        continue;
      }
      if (!out.finish(o, null, family, src, m.guest, IP_PROTO_UDP, ttl, len)) {
        this.inStage.dropped('too-long');
        continue;
      }
      writeUdpHeader(o.buf, o.l4Offset, port, m.guestPort, len);
      finishTransportChecksum(out, o, 6);
      this.inStage.pass(1, len);
      m.bytesIn += n;
      m.datagramsIn++;
      // source as the guest knows the peer, destination the guest's own address and port
      this.inStage.rewrote(sameAddress(src, from) ? 2 : 3);
      out.commit(o);
    }
  }

  /** Drain the error queue of a mapping's socket, translating each ICMP error to the guest. */
  private readErrors(m: UdpMapping): void {
    for (let i = 0; i < 64; i++) {
      let e: native.ErrorQueueEntry | null;
      try {
        e = native.readErrorQueue(m.fd, this.errBuf);
      } catch {
        return;
      }
      if (!e) return;
      this.translateError(m, e);
    }
  }

  private translateError(m: UdpMapping, e: native.ErrorQueueEntry): void {
    const stage = this.errStage;
    if (m.family !== 4) {
      stage.dropped('icmpv6-error-not-translated');
      return;
    }
    let type = e.type;
    let code = e.code;
    let info = e.info;
    if (e.origin === native.SO_EE_ORIGIN_LOCAL) {
      if (e.errno !== native.Errno.EMSGSIZE) return void stage.dropped('local-error');
      type = 3;
      code = 4; // fragmentation needed; ee_info is the MTU (RFC 1191)
      info = e.info;
    } else if (e.origin !== native.SO_EE_ORIGIN_ICMP) {
      return void stage.dropped('origin-unknown');
    }
    if (!e.destination) return void stage.dropped('no-destination');
    const policy = this.ctx.policy;
    const dstHost = ipv4Number(e.destination.address);
    const dst = policy.guestSource4(dstHost);
    if (dst === NOT_REPRESENTABLE) return void stage.dropped('destination-not-representable');
    // The ICMP error comes from the router that sent it, or from the destination we forwarded to.
    let from = e.offender ? policy.guestSource4(ipv4Number(e.offender)) : NOT_REPRESENTABLE;
    if (from === NOT_REPRESENTABLE) from = dst;
    // Rebuild the guest's datagram as the guest sent it (RFC 5508 REQ-3/REQ-5).
    const q = this.quote;
    const quoted = Math.min(e.bytes, q.length - IPV4_HLEN - UDP_HLEN);
    const udpLen = m.lastLength >= UDP_HLEN + quoted ? m.lastLength : UDP_HLEN + quoted;
    writeQuotedIpv4Header(q, IP_PROTO_UDP, IPV4_HLEN + udpLen, m.lastTos, m.lastId, m.lastDf, m.lastTtl, m.guest, dst);
    writeUdpHeader(q, IPV4_HLEN, m.guestPort, e.destination.port, udpLen);
    q[IPV4_HLEN + 6] = m.lastChecksum >>> 8;
    q[IPV4_HLEN + 7] = m.lastChecksum & 0xff;
    q.set(this.errBuf.subarray(0, quoted), IPV4_HLEN + UDP_HLEN);
    stage.copied(quoted);
    stage.pass(1, IPV4_HLEN + UDP_HLEN + quoted);
    const fromBytes = this.srcScratch;
    writeIpv4(fromBytes, 0, from);
    this.ctx.icmpErrorQuote(4, m.guest, fromBytes.subarray(0, 4), type, code, info, q.subarray(0, IPV4_HLEN + UDP_HLEN + quoted));
  }

  /* ------------------------------------------------------------------ port forwards */

  /** Open a host UDP port that leads to the guest's address and port (forward.ts calls this). */
  async addForward(rule: HostForward): Promise<void> {
    this.openForward(rule);
  }

  /** As addForward; returns the rule as installed (host port 0 → the port the kernel chose). */
  openForward(rule: HostForward): HostForward {
    if (rule.protocol !== 'udp') throw Object.assign(new Error('UdpModule.addForward: not a udp rule'), { code: 'EINVAL' });
    const family: Family = rule.hostAddress.includes(':') ? 6 : 4;
    const guestText = rule.guestAddress || this.ctx.config.dhcpStart;
    const guest = addressBytes(guestText, family);
    if (!guest) throw Object.assign(new Error(`bad guest address ${guestText}`), { code: 'EINVAL' });
    if (this.findForward(rule.hostAddress, rule.hostPort)) {
      throw Object.assign(new Error(`udp:${rule.hostAddress}:${rule.hostPort} is already forwarded`), { code: 'EADDRINUSE' });
    }
    // The forward becomes the guest endpoint's mapping; an existing ordinary one gives way.
    const existing = this.flows.lookup(family, IP_PROTO_UDP, guest, rule.guestPort, null, 0);
    if (existing) {
      if (existing.value.forward) throw Object.assign(new Error(`guest ${guestText}:${rule.guestPort} already has a udp forward`), { code: 'EEXIST' });
      this.closeMapping(existing.value);
    }
    const actual: HostForward = { ...rule, guestAddress: guestText };
    const m = this.openMapping(family, guest, rule.guestPort, actual);
    if (!m) throw Object.assign(new Error('flow table full'), { code: 'ENOSPC' });
    if (rule.hostPort === 0) {
      const name = native.getSockName(m.fd);
      if (name && name.family !== 'unix') actual.hostPort = name.port;
    }
    return { ...actual };
  }

  /** Close a forward by its host address and port. True if one was there. */
  async removeForward(hostAddress: string, hostPort: number): Promise<boolean> {
    const m = this.findForward(hostAddress, hostPort);
    if (!m) return false;
    this.closeMapping(m);
    return true;
  }

  listForwards(): HostForward[] {
    const list: HostForward[] = [];
    for (const m of this.flows.values()) if (m.forward) list.push({ ...m.forward });
    return list;
  }

  private findForward(hostAddress: string, hostPort: number): UdpMapping | null {
    for (const m of this.flows.values()) {
      if (m.forward && m.forward.hostAddress === hostAddress && m.forward.hostPort === hostPort) return m;
    }
    return null;
  }

  /* ------------------------------------------------------------------ teardown */

  private closeMapping(m: UdpMapping): void {
    if (m.closed) return;
    m.closed = true;
    if (m.node?.live) this.flows.remove(m.node);
    m.fd.close(); // closes the watcher first
  }

  private drop(reason: string): void {
    if (this.outStage.dropped(reason)) logOnce(`nat.udp.${reason}`, `UDP from the guest dropped: ${reason}`);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.flows.close();
  }
}

/** The first 4 (IPv4) or 16 bytes of `a` and `b` are equal (a translated address or not). */
function sameAddress(a: Uint8Array, b: Uint8Array): boolean {
  const n = Math.min(a.length, b.length, 16);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}
