/**
 * NatStack: the user-mode NAT as a Port. Frames the guest sends come in through `send`; frames
 * for the guest leave through the handler installed with `onReceive`.
 *
 * The path of one guest frame (each step counts what it drops, by reason, in the meter; stage
 * names from meter/stages.ts):
 *
 *   nat.parse.tx   Ethernet: to our MAC or broadcast (other unicast is another guest's business on a
 *            switch); ARP → arp.ts; IPv4 → below; IPv6 → parsed, counted as unsupported for
 *            now (NDP and the v6 addresses come with the IPv6 work; everything after the
 *            family-specific parse is already family-generic).
 *   nat.ip.tx      validation: header length/version/total length against the frame, header checksum
 *            unless the frontend vouched for the frame (VNET_F_DATA_VALID); fragments from a
 *            guest address are put back together (ip-reassembly.ts, RFC 4787 REQ-14) and the
 *            whole datagram takes the rest of this path. Source must be a guest address
 *            (0.0.0.0 only for DHCP). The guest's MAC/IP pair is learned for the way back.
 *   local    addressed to the gateway or DNS address (or broadcast): UDP 67 → dhcp.ts; UDP 53
 *            at the DNS address → dns.ts; TCP 53 at the DNS address → the TCP module, whose
 *            hostAddressFor gives an upstream nameserver; ICMP echo to the DNS address (and to
 *            the gateway when hostLoopback is off) answered here; TCP/UDP/ICMP to the gateway →
 *            the modules, which reach 127.0.0.1 (policy.ts); anything else at the DNS address →
 *            ICMP port unreachable.
 *   routed   TTL ≤ 1 → ICMP Time Exceeded from the gateway (RFC 792, RFC 1812 §5.3.1); else
 *            the protocol module (tcp/udp/icmp) with the one reused GuestPacket.
 *
 * ICMP errors to the guest (`icmpError`, `icmpErrorQuote`): RFC 1812 §4.3.2.3 / RFC 5508 —
 * the IP header and as much of the datagram as fits in 576 bytes; never about an ICMP error,
 * a broadcast/multicast or a non-guest source (RFC 1122 §3.2.2); rate-limited by a token bucket
 * (RFC 1812 §4.3.2.8).
 *
 * Output: frames built while a `send` batch is handled are flushed once when it ends; frames
 * from host-socket callbacks are flushed by a setImmediate (guest-output.ts).
 *
 * Nothing in the dispatch path allocates: views are re-pointed, the GuestPacket and its address
 * arrays are reused, meter stages are held as references.
 */
import type { Frame } from '../../link/frame';
import { plainFrame, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM } from '../../link/frame';
import { hasRxBackpressure, type FrameHandler, type Port } from '../../link/port';
import { copyBytes, globalMeter, observing, type Meter, type Stage } from '../../meter/meter';
import { NAT_DHCP, NAT_DNS, NAT_ICMP_ERROR_RX, NAT_IP_REASSEMBLY, NAT_IP_TX, NAT_LOCAL, NAT_PARSE_TX } from '../../meter/stages';
import { tracer } from '../../meter/trace';
import { log, logOnce } from '../../log';
import { internetChecksum } from '../../wire/checksum';
import { Ipv4Packet } from '../../wire/ipv4';
import { Ipv6Packet } from '../../wire/ipv6';
import { UdpDatagram } from '../../wire/udp';
import { parseMac } from '../../wire/address';
import { WireError } from '../../wire/error';
import { ArpResponder } from './arp';
import { formatHostForward, natConfig, type HostForward, type NatConfig } from './config';
import type { LeaseInfo } from './dhcp';
import type { Family, GuestPacket, NatContext, ProtocolModule } from './context';
import { DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpServer } from './dhcp';
import { DnsServer, parseUpstream, readResolvConf, type LookupFn } from './dns';
import { ETH_HLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, GuestOutputQueue, IPV4_HLEN } from './guest-output';
import { IcmpModule, IP_PROTO_ICMP } from './icmp';
import { Ipv4Reassembly } from './ip-reassembly';
import { AddressPolicy, readIpv4, writeIpv4 } from './policy';
import { IP_PROTO_UDP, sendUdpToGuest, UdpModule } from './udp';
import type { StackContext } from './stack-context';

export type { StackContext };

export const IP_PROTO_TCP = 6;
const DNS_PORT = 53;
const ICMP_ERROR_MAX = 576; // RFC 1812 §4.3.2.3
const ICMP_HLEN = 8;
const ERR_RATE_PER_S = 1000;
const ERR_BURST = 100;

/**
 * Host → guest port forwards for both protocols (forward.ts's PortForwarder has this shape).
 * Without one, the stack forwards UDP itself (udp.ts) and refuses TCP rules.
 */
export interface Forwarder {
  /** Open every rule of config.hostForwards. */
  start(): Promise<void>;
  /** Resolves to the rule as installed (host port filled in when it was 0). */
  add(rule: HostForward): Promise<HostForward>;
  remove(protocol: 'tcp' | 'udp', hostAddress: string, hostPort: number): Promise<boolean>;
  list(): HostForward[];
  close(): Promise<void>;
}

export interface NatStats {
  flows: { tcp: number; tcpHalfOpen: number; udp: number; icmp: number };
  /** What ICMP echo uses on the host: ping sockets, raw sockets, nothing (null: not tried yet). */
  icmpSocket: 'ping' | 'raw' | 'none' | null;
  dnsPending: number;
  leases: LeaseInfo[];
  forwards: string[];
  guestBuffers: { free: number; total: number };
}

export interface NatStackOptions {
  /** A full config, or the fields to change from the QEMU defaults. */
  config?: Partial<NatConfig>;
  meter?: Meter;
  name?: string;
  /** The TCP module (tcp.ts), given the stack as its context. Without it TCP is refused. */
  tcp?: (ctx: NatContext) => ProtocolModule;
  /**
   * Port forwarding for both protocols (e.g. forward.ts's PortForwarder, built with the stack,
   * its TCP module and `stack.udp`). Without it, the stack forwards UDP rules itself.
   */
  forwarder?: (stack: NatStack, tcp: ProtocolModule | null) => Forwarder | null;
  /** Guest-side offloads (virtio: what the driver negotiated; netns tap: both true). */
  checksumOffload?: boolean;
  tsoOffload?: boolean;
  /** Frame buffers towards the guest. */
  poolSize?: number;
  /** resolv.conf to read the upstream nameservers from when config.dnsUpstream is empty. */
  resolvConf?: string;
  /** Host resolver for A/AAAA (tests). */
  dnsLookup?: LookupFn;
  dnsTimeoutMs?: number;
  /** Domain name offered by DHCP (option 15). */
  domainName?: string;
  /** Open UDP/ICMP host sockets inside this network namespace (path or name). */
  hostNetns?: string | null;
}

export class NatStack implements Port, StackContext {
  readonly name: string;
  readonly config: NatConfig;
  readonly meter: Meter;
  readonly out: GuestOutputQueue;
  readonly policy: AddressPolicy;
  readonly hostNetns: string | null;
  readonly arp: ArpResponder;
  readonly dhcp: DhcpServer;
  readonly dns: DnsServer;
  readonly udp: UdpModule;
  readonly icmp: IcmpModule;
  readonly tcp: ProtocolModule | null;
  readonly forwarder: Forwarder | null;

  private readonly rx: Stage;
  private readonly ipStage: Stage;
  private readonly localStage: Stage;
  private readonly errStage: Stage;
  private readonly dnsStage: Stage;
  private readonly dhcpStage: Stage;
  private readonly reassembly: Ipv4Reassembly;
  private readonly ip4 = new Ipv4Packet();
  private readonly ip6 = new Ipv6Packet();
  private readonly udpView = new UdpDatagram();
  private readonly src4 = new Uint8Array(4);
  private readonly dst4 = new Uint8Array(4);
  private readonly src6 = new Uint8Array(16);
  private readonly dst6 = new Uint8Array(16);
  private readonly scratch4 = new Uint8Array(4);
  private readonly pkt: GuestPacket;
  private readonly gatewayMac: Uint8Array;
  private lastLearnedIp = -1;
  private readonly lastLearnedMac = new Uint8Array(6);
  private started: Promise<void> | null = null;
  private errTokens = ERR_BURST;
  private errRefillAt = Date.now();
  private closed = false;

  constructor(opts: NatStackOptions = {}) {
    this.name = opts.name ?? 'nat';
    this.config = natConfig(opts.config ?? {});
    this.meter = opts.meter ?? globalMeter;
    this.policy = new AddressPolicy(this.config);
    this.hostNetns = opts.hostNetns ?? null;
    this.gatewayMac = parseMac(this.config.gatewayMac);
    this.out = new GuestOutputQueue({
      meter: this.meter,
      gatewayMac: this.gatewayMac,
      gatewayIp: this.policy.gateway,
      resolvable: (ip) => this.policy.isGuestSource4(ip),
      mtu: this.config.mtu,
      checksumOffload: opts.checksumOffload,
      tsoOffload: opts.tsoOffload,
      poolSize: opts.poolSize,
    });
    const m = this.meter;
    this.rx = m.stage(NAT_PARSE_TX);
    this.ipStage = m.stage(NAT_IP_TX);
    this.localStage = m.stage(NAT_LOCAL);
    this.errStage = m.stage(NAT_ICMP_ERROR_RX);
    this.dnsStage = m.stage(NAT_DNS);
    this.dhcpStage = m.stage(NAT_DHCP);
    this.reassembly = new Ipv4Reassembly(m.stage(NAT_IP_REASSEMBLY), (quote) => {
      // fragment reassembly time exceeded (RFC 792), to the guest that sent fragment 0
      if (this.policy.isGuestSource4(readIpv4(quote, 12))) this.icmpErrorQuote(4, quote.subarray(12, 16), this.policy.gatewayBytes, 11, 1, 0, quote);
    });
    this.pkt = {
      family: 4,
      src: this.src4,
      dst: this.dst4,
      protocol: 0,
      ttl: 0,
      dontFragment: false,
      tos: 0,
      frame: { data: new Uint8Array(0), flags: 0, gsoType: 0, gsoSize: 0, hdrLen: 0, csumStart: 0, csumOffset: 0 },
      l3Offset: ETH_HLEN,
      l4Offset: ETH_HLEN + IPV4_HLEN,
      l4Length: 0,
      checksumTrusted: false,
    };

    const upstreams = this.config.dnsUpstream.length > 0 ? this.config.dnsUpstream.map(parseUpstream) : readResolvConf(opts.resolvConf);
    if (upstreams.length === 0) logOnce('nat.dns.no-upstream', 'no DNS upstream (config or resolv.conf): only host lookups are answered');
    const tcpDns = upstreams.find((u) => u.family === 4 && u.port === DNS_PORT);
    this.policy.dnsTcpUpstream = tcpDns ? tcpDns.address : null;

    this.dhcp = new DhcpServer({
      meter: m,
      policy: this.policy,
      leaseTime: this.config.leaseTime,
      mtu: this.config.mtu,
      domainName: opts.domainName,
      send: (payload, ip, mac) => {
        writeIpv4(this.scratch4, 0, ip);
        sendUdpToGuest(this.out, this.dhcpStage, 4, this.policy.gatewayBytes, DHCP_SERVER_PORT, this.scratch4, DHCP_CLIENT_PORT, payload, mac);
      },
    });
    this.arp = new ArpResponder({ out: this.out, policy: this.policy, meter: m, leaseHolder: (ip) => this.dhcp.leaseHolder(ip) });
    this.dns = new DnsServer({
      meter: m,
      hosts: this.config.dnsHosts,
      gateway: this.config.gateway,
      upstreams,
      lookup: opts.dnsLookup,
      timeoutMs: opts.dnsTimeoutMs,
      reply: (family, guest, port, payload) =>
        sendUdpToGuest(this.out, this.dnsStage, family, this.policy.dnsBytes, DNS_PORT, guest, port, payload),
    });
    this.udp = new UdpModule(this);
    this.icmp = new IcmpModule(this);
    this.tcp = opts.tcp ? opts.tcp(this) : null;
    this.forwarder = opts.forwarder?.(this, this.tcp) ?? null;
  }

  /* ------------------------------------------------------------------ Port */

  send(frames: readonly Frame[]): void {
    if (this.closed) return;
    const rx = this.rx;
    const t = rx.start();
    this.out.hold();
    try {
      for (let i = 0; i < frames.length; i++) {
        const f = frames[i];
        if (observing.on) tracer.select(f); // the stages below count this frame's journey
        rx.pass(1, f.data.length);
        try {
          this.input(f);
        } catch (err) {
          // A bug must cost one frame, not the process.
          if (rx.dropped('internal-error')) log.error({ err }, 'NAT stack: unexpected error handling a frame');
        }
        if (observing.on) tracer.done();
      }
    } finally {
      this.out.release();
      rx.stop(t);
    }
  }

  onReceive(handler: FrameHandler): void {
    this.out.onDeliver(handler);
  }

  /**
   * The guest side's offloads (virtio: what the driver negotiated; the netns tap: both). Either
   * `setOffloads(checksum, tso)` or `setOffloads({ checksum, tso })`.
   */
  setOffloads(checksum: boolean | { checksum: boolean; tso: boolean }, tso = false): void {
    if (typeof checksum === 'object') this.out.setOffloads(checksum.checksum, checksum.tso);
    else this.out.setOffloads(checksum, tso);
  }

  /**
   * Follow the guest port's RxBackpressure (link/port.ts; null or a port without it: none):
   * while it is full, TCP data stays in the host sockets instead of its queue (guest-output.ts).
   */
  followGuest(peer: unknown): void {
    this.out.setPressure(hasRxBackpressure(peer) ? peer : null);
  }

  /**
   * Open the configured port forwards (`createNatStack` calls it; `ready` settles with it).
   * Rejects with the first rule that cannot be opened.
   */
  start(): Promise<void> {
    if (!this.started) {
      this.started = (async () => {
        if (this.forwarder) return this.forwarder.start();
        for (const rule of this.config.hostForwards) await this.addHostForward(rule);
      })();
    }
    return this.started;
  }

  /** Settles when the configured forwards are open (after `start`, which createNatStack calls). */
  get ready(): Promise<void> {
    return this.start();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.dns.close();
    await Promise.allSettled([
      this.forwarder?.close() ?? Promise.resolve(),
      this.udp.close(),
      this.icmp.close(),
      this.tcp?.close() ?? Promise.resolve(),
    ]);
    this.reassembly.close();
    this.out.close();
    this.out.flush();
  }

  /* ------------------------------------------------------------------ forwards */

  /** Add a forward at run time; resolves to the rule as installed (host port 0 → the real one). */
  async addHostForward(rule: HostForward): Promise<HostForward> {
    if (this.forwarder) return this.forwarder.add(rule);
    if (rule.protocol !== 'udp') throw Object.assign(new Error('TCP port forwarding needs the TCP module and a forwarder'), { code: 'ENOTSUP' });
    return this.udp.openForward(rule);
  }

  /** Remove the forward of `rule`'s protocol, host address and host port. True if there was one. */
  async removeHostForward(rule: Pick<HostForward, 'protocol' | 'hostAddress' | 'hostPort'>): Promise<boolean> {
    if (this.forwarder) return this.forwarder.remove(rule.protocol, rule.hostAddress, rule.hostPort);
    return rule.protocol === 'udp' ? this.udp.removeForward(rule.hostAddress, rule.hostPort) : false;
  }

  /** Every forward as installed. */
  hostForwards(): HostForward[] {
    return this.forwarder ? this.forwarder.list() : this.udp.listForwards();
  }

  /** The guest's address as far as the stack knows (its DHCP lease), else null. */
  guestAddress(): string | null {
    const bound = this.dhcp.leases().find((l) => l.state === 'bound');
    return bound ? bound.address : null;
  }

  /** A summary for `usernet stats` (the per-stage counters are in the meter). */
  stats(): NatStats {
    const tcp = this.tcp as (ProtocolModule & { size?: number; halfOpen?: number }) | null;
    return {
      flows: {
        tcp: tcp?.size ?? 0,
        tcpHalfOpen: tcp?.halfOpen ?? 0,
        udp: this.udp.flows.size,
        icmp: this.icmp.flows.size,
      },
      icmpSocket: this.icmp.socketKind(4),
      dnsPending: this.dns.pending,
      leases: this.dhcp.leases(),
      forwards: this.hostForwards().map(formatHostForward),
      guestBuffers: { free: this.out.available, total: this.out.poolSize },
    };
  }

  /* ------------------------------------------------------------------ NatContext */

  hostAddressFor(family: Family, dst: Uint8Array): string | null {
    return this.policy.hostAddressFor(family, dst);
  }

  icmpError(pkt: GuestPacket, type: number, code: number, info: number, from?: Uint8Array): void {
    if (pkt.family !== 4) {
      this.errStage.dropped('icmpv6-not-yet');
      return;
    }
    const data = pkt.frame.data;
    // RFC 1122 §3.2.2: not about ICMP errors, not to a non-unicast or unknown source.
    if (pkt.protocol === IP_PROTO_ICMP && pkt.l4Length > 0 && !isIcmpQuery(data[pkt.l4Offset])) return;
    const dst = readIpv4(pkt.dst);
    if (this.policy.isBroadcast4(dst) || dst >>> 28 === 0xe) return;
    if (!this.policy.isGuestSource4(readIpv4(pkt.src))) return;
    const ipLen = pkt.l4Offset - pkt.l3Offset + pkt.l4Length;
    const len = Math.min(ipLen, ICMP_ERROR_MAX - IPV4_HLEN - ICMP_HLEN);
    this.icmpErrorQuote(4, pkt.src, from ?? this.policy.gatewayBytes, type, code, info, data.subarray(pkt.l3Offset, pkt.l3Offset + len));
  }

  icmpErrorQuote(family: Family, to: Uint8Array, from: Uint8Array, type: number, code: number, info: number, quote: Uint8Array): void {
    const stage = this.errStage;
    if (family !== 4) return void stage.dropped('icmpv6-not-yet');
    if (!this.takeErrorToken()) return void stage.dropped('rate-limited');
    const qlen = Math.min(quote.length, ICMP_ERROR_MAX - IPV4_HLEN - ICMP_HLEN);
    const o = this.out.beginTo(null, 4, from, to, IP_PROTO_ICMP, 64, ICMP_HLEN + qlen, 0xc0);
    if (!o) return void stage.dropped('no-buffer');
    const b = o.buf;
    const at = o.l4Offset;
    b[at] = type;
    b[at + 1] = code;
    b[at + 2] = b[at + 3] = 0;
    b[at + 4] = b[at + 5] = b[at + 6] = b[at + 7] = 0;
    if (type === 3) {
      // Next-hop MTU for "fragmentation needed" (RFC 1191 §4).
      b[at + 6] = (info >>> 8) & 0xff;
      b[at + 7] = info & 0xff;
    } else if (type === 12) {
      b[at + 4] = info & 0xff; // pointer
    }
    copyBytes(stage, quote.subarray(0, qlen), b, at + ICMP_HLEN);
    const c = internetChecksum(b, at, ICMP_HLEN + qlen);
    b[at + 2] = c >>> 8;
    b[at + 3] = c & 0xff;
    this.out.commit(o);
    stage.pass(1, ICMP_HLEN + qlen);
  }

  private takeErrorToken(): boolean {
    const now = Date.now();
    if (now > this.errRefillAt) {
      this.errTokens = Math.min(ERR_BURST, this.errTokens + ((now - this.errRefillAt) * ERR_RATE_PER_S) / 1000);
      this.errRefillAt = now;
    }
    if (this.errTokens < 1) return false;
    this.errTokens--;
    return true;
  }

  /* ------------------------------------------------------------------ dispatch */

  private input(frame: Frame): void {
    const data = frame.data;
    if (data.length < ETH_HLEN) return this.drop(this.rx, 'runt');
    // Destination: our MAC, or broadcast. Multicast (IPv4 01:00:5e, IPv6 33:33) and other
    // guests' unicast are not ours.
    const g = this.gatewayMac;
    if (data[0] & 1) {
      if ((data[0] & data[1] & data[2] & data[3] & data[4] & data[5]) !== 0xff) return this.drop(this.rx, 'multicast', true);
    } else if (data[0] !== g[0] || data[1] !== g[1] || data[2] !== g[2] || data[3] !== g[3] || data[4] !== g[4] || data[5] !== g[5]) {
      return this.drop(this.rx, 'not-for-us', true);
    }
    const etherType = (data[12] << 8) | data[13];
    if (etherType === ETHERTYPE_IPV4) return this.inputIpv4(frame);
    if (etherType === ETHERTYPE_ARP) return this.arp.input(frame);
    if (etherType === ETHERTYPE_IPV6) return this.inputIpv6(frame);
    this.drop(this.rx, etherType === 0x8100 ? 'vlan' : 'unsupported-ethertype');
  }

  private inputIpv4(frame: Frame): void {
    const data = frame.data;
    const ip = this.ip4.wrap(data, ETH_HLEN, data.length - ETH_HLEN);
    const err = ip.check();
    if (err) return this.drop(this.ipStage, `bad-${err.code}`);
    if (!(frame.flags & VNET_F_DATA_VALID) && !ip.verifyChecksum()) return this.drop(this.ipStage, 'bad-checksum');
    if (ip.moreFragments || ip.fragmentOffset !== 0) {
      if (!this.policy.isGuestSource4(ip.src >>> 0)) return this.drop(this.ipStage, 'bad-source');
      const whole = this.reassembly.add(data, ETH_HLEN, ip);
      return whole === null ? undefined : this.inputIpv4(plainFrame(whole));
    }
    const src = ip.src >>> 0;
    const dst = ip.dst >>> 0;
    const policy = this.policy;
    const hlen = ip.headerLength;
    const pkt = this.pkt;
    pkt.family = 4;
    pkt.src = this.src4;
    pkt.dst = this.dst4;
    writeIpv4(this.src4, 0, src);
    writeIpv4(this.dst4, 0, dst);
    pkt.protocol = ip.protocol;
    pkt.ttl = ip.ttl;
    pkt.dontFragment = ip.dontFragment;
    pkt.tos = ip.dscpEcn;
    pkt.frame = frame;
    pkt.l3Offset = ETH_HLEN;
    pkt.l4Offset = ETH_HLEN + hlen;
    pkt.l4Length = ip.totalLength - hlen;
    pkt.checksumTrusted = checksumTrusted(frame, pkt.l4Offset, pkt.protocol);

    if (!policy.isGuestSource4(src)) {
      // 0.0.0.0 is how a client without an address speaks DHCP (RFC 2131 §4.1).
      if (src === 0 && pkt.protocol === IP_PROTO_UDP && this.udpDstPort(pkt) === DHCP_SERVER_PORT) return this.inputLocalUdp(pkt, dst);
      return this.drop(this.ipStage, 'bad-source');
    }
    this.learn(src, data);
    this.ipStage.pass(1, ip.totalLength);

    if (policy.isOurs4(dst) || policy.isBroadcast4(dst)) return this.inputLocal(pkt, dst);
    if (dst >>> 28 === 0xe) return this.drop(this.ipStage, 'multicast', true);
    if (pkt.ttl <= 1) {
      this.drop(this.ipStage, 'ttl-exceeded', true);
      this.icmpError(pkt, 11, 0, 0); // time to live exceeded in transit
      return;
    }
    this.route(pkt);
  }

  private inputIpv6(frame: Frame): void {
    const data = frame.data;
    const ip = this.ip6.wrap(data, ETH_HLEN, data.length - ETH_HLEN);
    const err = ip.check();
    if (err) return this.drop(this.ipStage, `bad-v6-${err.code}`);
    const upper = ip.upperLayer();
    if (upper instanceof WireError) return this.drop(this.ipStage, `bad-v6-${upper.code}`);
    if (upper.fragment) return this.drop(this.ipStage, 'fragment');
    const pkt = this.pkt;
    pkt.family = 6;
    pkt.src = this.src6;
    pkt.dst = this.dst6;
    ip.copySrc(this.src6);
    ip.copyDst(this.dst6);
    pkt.protocol = upper.protocol;
    pkt.ttl = ip.hopLimit;
    pkt.dontFragment = true;
    pkt.tos = ip.trafficClass;
    pkt.frame = frame;
    pkt.l3Offset = ETH_HLEN;
    pkt.l4Offset = upper.offset;
    pkt.l4Length = upper.length;
    pkt.checksumTrusted = checksumTrusted(frame, pkt.l4Offset, pkt.protocol);
    // From here the path is family-generic (route → modules); what IPv6 still lacks is its
    // addresses in the config, NDP (ndp.ts) and ICMPv6 errors. Until then: counted, dropped.
    this.drop(this.ipStage, 'ipv6-unsupported');
  }

  /** A routed packet (not for us): to its protocol module. */
  private route(pkt: GuestPacket): void {
    switch (pkt.protocol) {
      case IP_PROTO_TCP:
        if (this.tcp) return this.tcp.input(pkt);
        this.drop(this.ipStage, 'no-tcp-module');
        return this.icmpError(pkt, 3, 2, 0);
      case IP_PROTO_UDP:
        return this.udp.input(pkt);
      case IP_PROTO_ICMP:
        return this.icmp.input(pkt);
      default:
        // A router would forward it; we have no host socket for it (RFC 1812 §5.2.7.1).
        this.drop(this.ipStage, `protocol-${pkt.protocol}`);
        return this.icmpError(pkt, 3, 13, 0);
    }
  }

  /** Addressed to the gateway, the DNS address or broadcast. */
  private inputLocal(pkt: GuestPacket, dst: number): void {
    const policy = this.policy;
    if (pkt.protocol === IP_PROTO_UDP) return this.inputLocalUdp(pkt, dst);
    if (policy.isBroadcast4(dst)) return this.drop(this.localStage, 'broadcast', true);
    const atDns = dst === policy.dns;
    if (pkt.protocol === IP_PROTO_ICMP) {
      const type = pkt.l4Length >= ICMP_HLEN ? pkt.frame.data[pkt.l4Offset] : -1;
      if (type !== 8) return this.drop(this.localStage, 'icmp-to-us', true);
      if (atDns || !policy.hostLoopback) return this.echoReply(pkt);
      return this.icmp.input(pkt); // the gateway is the host's loopback: a real reply from it
    }
    if (pkt.protocol === IP_PROTO_TCP) {
      if (atDns && (this.tcpDstPort(pkt) !== DNS_PORT || !policy.dnsTcpUpstream)) {
        this.drop(this.localStage, 'dns-tcp-refused');
        return this.icmpError(pkt, 3, 3, 0, policy.dnsBytes);
      }
      if (this.tcp) return this.tcp.input(pkt);
      this.drop(this.localStage, 'no-tcp-module');
      return this.icmpError(pkt, 3, 2, 0);
    }
    this.drop(this.localStage, `protocol-${pkt.protocol}`);
    this.icmpError(pkt, 3, 2, 0, atDns ? policy.dnsBytes : policy.gatewayBytes); // protocol unreachable
  }

  private inputLocalUdp(pkt: GuestPacket, dst: number): void {
    const policy = this.policy;
    const u = this.udpView.wrap(pkt.frame.data, pkt.l4Offset, pkt.l4Length);
    if (u.check() !== null) return this.drop(this.localStage, 'bad-udp');
    const port = u.dstPort;
    const broadcast = policy.isBroadcast4(dst);
    if (port === DHCP_SERVER_PORT && (broadcast || dst === policy.gateway)) {
      if (!this.udpChecksumOk(pkt, u)) return this.drop(this.localStage, 'bad-udp-checksum');
      return this.dhcp.input(pkt.frame.data.subarray(u.payloadOffset, u.payloadOffset + u.payloadLength));
    }
    if (broadcast) return this.drop(this.localStage, 'broadcast', true);
    if (dst === policy.dns) {
      if (port !== DNS_PORT) {
        this.drop(this.localStage, 'dns-port-closed');
        return this.icmpError(pkt, 3, 3, 0, policy.dnsBytes);
      }
      if (!this.udpChecksumOk(pkt, u)) return this.drop(this.localStage, 'bad-udp-checksum');
      return this.dns.query(pkt.family, pkt.src, u.srcPort, pkt.frame.data.subarray(u.payloadOffset, u.payloadOffset + u.payloadLength));
    }
    this.udp.input(pkt); // the gateway: the host's loopback
  }

  private udpChecksumOk(pkt: GuestPacket, u: UdpDatagram): boolean {
    if (pkt.checksumTrusted || u.checksum === 0) return true;
    return u.verifyChecksumV4(readIpv4(pkt.src), readIpv4(pkt.dst));
  }

  private udpDstPort(pkt: GuestPacket): number {
    if (pkt.l4Length < 8) return -1;
    const d = pkt.frame.data;
    return (d[pkt.l4Offset + 2] << 8) | d[pkt.l4Offset + 3];
  }

  private tcpDstPort(pkt: GuestPacket): number {
    return this.udpDstPort(pkt); // same place in both headers
  }

  /** Echo reply from one of our own addresses (RFC 792): the request with type 0. */
  private echoReply(pkt: GuestPacket): void {
    const data = pkt.frame.data;
    const at = pkt.l4Offset;
    const len = pkt.l4Length;
    if (!pkt.checksumTrusted && internetChecksum(data, at, len) !== 0) return this.drop(this.localStage, 'bad-icmp-checksum');
    const o = this.out.begin(4, pkt.dst, pkt.src, IP_PROTO_ICMP, 64, len);
    if (!o) return this.drop(this.localStage, 'no-buffer');
    const b = o.buf;
    copyBytes(this.localStage, data.subarray(at, at + len), b, o.l4Offset);
    b[o.l4Offset] = 0;
    b[o.l4Offset + 2] = b[o.l4Offset + 3] = 0;
    const c = internetChecksum(b, o.l4Offset, len);
    b[o.l4Offset + 2] = c >>> 8;
    b[o.l4Offset + 3] = c & 0xff;
    this.out.commit(o);
    this.localStage.pass(1, len);
  }

  /** Remember which MAC the guest address `ip` uses (cheap when nothing changed). */
  private learn(ip: number, data: Uint8Array): void {
    const m = this.lastLearnedMac;
    if (ip === this.lastLearnedIp && m[0] === data[6] && m[1] === data[7] && m[2] === data[8] && m[3] === data[9] && m[4] === data[10] && m[5] === data[11]) {
      return;
    }
    for (let i = 0; i < 6; i++) m[i] = data[6 + i];
    this.lastLearnedIp = ip;
    this.out.neighbors.learn4(ip, m);
  }

  private drop(stage: Stage, reason: string, quiet = false): void {
    if (stage.dropped(reason) && !quiet) logOnce(`${stage.name}.${reason}`, `${stage.name}: frame dropped (${reason})`);
  }
}

/**
 * The transport checksum need not be verified: the frontend validated it (DATA_VALID), or the
 * guest left it to be filled (NEEDS_CSUM) — but only when csum_start/csum_offset point at this
 * packet's TCP/UDP checksum field (virtio 1.x §5.1.6.2); metadata pointing elsewhere describes
 * some other frame, and the checksum is verified as for any frame.
 */
function checksumTrusted(frame: Frame, l4Offset: number, protocol: number): boolean {
  if (frame.flags & VNET_F_DATA_VALID) return true;
  if (!(frame.flags & VNET_F_NEEDS_CSUM) || frame.csumStart !== l4Offset) return false;
  return frame.csumOffset === (protocol === IP_PROTO_TCP ? 16 : protocol === IP_PROTO_UDP ? 6 : -1);
}

/** ICMP types that are queries (echo, timestamp, info, address mask), not errors. */
function isIcmpQuery(type: number): boolean {
  return type === 0 || type === 8 || (type >= 13 && type <= 18);
}
