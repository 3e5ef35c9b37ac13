/**
 * A scripted guest for the NAT stack's unit tests: frames built with src/wire (Ethernet, ARP,
 * IPv4, UDP, ICMP), sent into a real NatStack, and every frame the stack sends back copied and
 * decoded (with its checksums verified) so tests can wait for the one they expect.
 */
import { plainFrame, type Frame } from '../../src/link/frame';
import { Meter } from '../../src/meter/meter';
import { NatStack, type NatStackOptions } from '../../src/backends/nat/stack';
import { parseIpv4, parseMac, ipv4ToString, macToString } from '../../src/wire/address';
import { ArpPacket, ArpRepr, ARP_REQUEST } from '../../src/wire/arp';
import { internetChecksum } from '../../src/wire/checksum';
import { EthernetFrame, EthernetRepr, ETHERTYPE_ARP, ETHERTYPE_IPV4 } from '../../src/wire/ethernet';
import { Icmpv4Packet, Icmpv4Repr, ICMPV4_ECHO_REQUEST } from '../../src/wire/icmpv4';
import { Ipv4Packet, Ipv4Repr, IP_PROTO_ICMP, IP_PROTO_UDP } from '../../src/wire/ipv4';
import { UdpDatagram, UdpRepr } from '../../src/wire/udp';

export const GUEST_MAC = parseMac('52:54:00:12:34:56');
export const GW_MAC = parseMac('52:55:0a:00:02:02');
export const BCAST_MAC = parseMac('ff:ff:ff:ff:ff:ff');
export const GUEST_IP = '10.0.2.15';
export const GATEWAY = '10.0.2.2';
export const DNS = '10.0.2.3';

export interface Ip4Options {
  src?: string;
  dst: string;
  protocol: number;
  ttl?: number;
  id?: number;
  dstMac?: Uint8Array;
  srcMac?: Uint8Array;
  dontFragment?: boolean;
}

/** Ethernet + IPv4 around `l4` (already complete, checksum included). */
export function ipv4Frame(o: Ip4Options, l4: Uint8Array): Uint8Array {
  const buf = new Uint8Array(14 + 20 + l4.length);
  new EthernetRepr({ dst: o.dstMac ?? GW_MAC, src: o.srcMac ?? GUEST_MAC, etherType: ETHERTYPE_IPV4 }).emit(new EthernetFrame().wrap(buf));
  new Ipv4Repr({
    src: parseIpv4(o.src ?? GUEST_IP),
    dst: parseIpv4(o.dst),
    protocol: o.protocol,
    ttl: o.ttl ?? 64,
    payloadLength: l4.length,
    identification: o.id ?? 0x1234,
    dontFragment: o.dontFragment ?? true,
  }).emit(new Ipv4Packet().wrap(buf, 14));
  buf.set(l4, 34);
  return buf;
}

export function udpFrame(o: Omit<Ip4Options, 'protocol'> & { srcPort: number; dstPort: number; payload: Uint8Array; noChecksum?: boolean }): Uint8Array {
  const l4 = new Uint8Array(8 + o.payload.length);
  const u = new UdpDatagram().wrap(l4);
  new UdpRepr({ srcPort: o.srcPort, dstPort: o.dstPort, payloadLength: o.payload.length }).emit(u);
  l4.set(o.payload, 8);
  if (!o.noChecksum) u.fillChecksumV4(parseIpv4(o.src ?? GUEST_IP), parseIpv4(o.dst));
  return ipv4Frame({ ...o, protocol: IP_PROTO_UDP }, l4);
}

export function echoFrame(o: Omit<Ip4Options, 'protocol'> & { ident: number; seq: number; data?: Uint8Array }): Uint8Array {
  const data = o.data ?? Uint8Array.from({ length: 32 }, (_, i) => i);
  const l4 = new Uint8Array(8 + data.length);
  new Icmpv4Repr({ type: ICMPV4_ECHO_REQUEST, code: 0, identifier: o.ident, sequence: o.seq, data }).emit(new Icmpv4Packet().wrap(l4), new Meter().stage('t'));
  return ipv4Frame({ ...o, protocol: IP_PROTO_ICMP }, l4);
}

export function arpFrame(o: { op?: number; senderIp: string; targetIp: string; senderMac?: Uint8Array; dstMac?: Uint8Array }): Uint8Array {
  const buf = new Uint8Array(14 + 28);
  const senderMac = o.senderMac ?? GUEST_MAC;
  new EthernetRepr({ dst: o.dstMac ?? BCAST_MAC, src: senderMac, etherType: ETHERTYPE_ARP }).emit(new EthernetFrame().wrap(buf));
  new ArpRepr({
    operation: o.op ?? ARP_REQUEST,
    senderMac,
    senderIp: parseIpv4(o.senderIp),
    targetMac: new Uint8Array(6),
    targetIp: parseIpv4(o.targetIp),
  }).emit(new ArpPacket().wrap(buf, 14));
  return buf;
}

/** A frame the stack sent, decoded. */
export interface Received {
  data: Uint8Array;
  frame: Frame;
  ethDst: string;
  ethSrc: string;
  etherType: number;
  arp?: ArpRepr;
  ip?: {
    src: string;
    dst: string;
    protocol: number;
    ttl: number;
    identification: number;
    moreFragments: boolean;
    fragmentOffset: number;
    headerChecksumOk: boolean;
    payload: Uint8Array;
  };
  udp?: { srcPort: number; dstPort: number; length: number; payload: Uint8Array; checksumOk: boolean };
  icmp?: { type: number; code: number; ident: number; seq: number; rest: number; body: Uint8Array; checksumOk: boolean };
}

export function decode(frame: Frame): Received {
  const data = Uint8Array.from(frame.data);
  const eth = new EthernetFrame().wrap(data);
  const r: Received = {
    data,
    frame: { ...frame, data },
    ethDst: macToString(eth.dst),
    ethSrc: macToString(eth.src),
    etherType: eth.etherType,
  };
  if (r.etherType === ETHERTYPE_ARP) {
    const a = ArpRepr.parse(new ArpPacket().wrap(data, 14));
    if (!(a instanceof Error)) r.arp = a;
    return r;
  }
  if (r.etherType !== ETHERTYPE_IPV4) return r;
  const ip = new Ipv4Packet().wrap(data, 14);
  if (ip.check()) return r;
  const payload = data.subarray(ip.payloadOffset, ip.payloadOffset + ip.payloadLength);
  r.ip = {
    src: ipv4ToString(ip.src),
    dst: ipv4ToString(ip.dst),
    protocol: ip.protocol,
    ttl: ip.ttl,
    identification: ip.identification,
    moreFragments: ip.moreFragments,
    fragmentOffset: ip.fragmentOffset,
    headerChecksumOk: ip.verifyChecksum(),
    payload,
  };
  if (ip.moreFragments || ip.fragmentOffset) return r;
  if (ip.protocol === IP_PROTO_UDP) {
    const u = new UdpDatagram().wrap(data, ip.payloadOffset, ip.payloadLength);
    if (!u.check()) {
      r.udp = {
        srcPort: u.srcPort,
        dstPort: u.dstPort,
        length: u.length,
        payload: data.subarray(u.payloadOffset, u.payloadOffset + u.payloadLength),
        checksumOk: u.checksum === 0 || u.verifyChecksumV4(ip.src, ip.dst),
      };
    }
  } else if (ip.protocol === IP_PROTO_ICMP && payload.length >= 8) {
    r.icmp = {
      type: payload[0],
      code: payload[1],
      ident: (payload[4] << 8) | payload[5],
      seq: (payload[6] << 8) | payload[7],
      rest: ((payload[4] << 24) | (payload[5] << 16) | (payload[6] << 8) | payload[7]) >>> 0,
      body: payload.subarray(8),
      checksumOk: internetChecksum(payload, 0, payload.length) === 0,
    };
  }
  return r;
}

/** A NatStack with a recording guest attached. */
export class Guest {
  readonly stack: NatStack;
  readonly meter: Meter;
  readonly received: Received[] = [];
  private waiters: (() => void)[] = [];

  constructor(opts: NatStackOptions = {}) {
    this.meter = opts.meter ?? new Meter();
    this.stack = new NatStack({ resolvConf: '/nonexistent', ...opts, meter: this.meter });
    this.stack.onReceive((frames) => {
      for (const f of frames) this.received.push(decode(f));
      const w = this.waiters;
      this.waiters = [];
      for (const fn of w) fn();
    });
  }

  send(...frames: Uint8Array[]): void {
    this.stack.send(frames.map((f) => plainFrame(f)));
  }

  /** The first received frame (from now on, or already received if `fromStart`) that matches. */
  async waitFor(match: (r: Received) => boolean, timeoutMs = 4000): Promise<Received> {
    const deadline = Date.now() + timeoutMs;
    let seen = 0;
    for (;;) {
      for (; seen < this.received.length; seen++) {
        const r = this.received[seen];
        if (match(r)) {
          this.received.splice(seen, 1);
          return r;
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for a frame from the stack');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Resolve after `ms` and return what arrived matching `match` (for "expect nothing"). */
  async collect(match: (r: Received) => boolean, ms: number): Promise<Received[]> {
    await new Promise((r) => setTimeout(r, ms));
    return this.received.filter(match);
  }

  drops(stage: string): Record<string, number> {
    return Object.fromEntries(this.meter.stage(stage).dropReasons);
  }

  close(): Promise<void> {
    return this.stack.close();
  }
}
