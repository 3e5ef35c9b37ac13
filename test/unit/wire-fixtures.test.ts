/**
 * src/wire against traffic the real Linux kernel (plus busybox udhcpc and dnsmasq) wrote:
 * test/fixtures/wire/*.pcap, made by test/fixtures/wire/capture.sh. Every frame of every file
 * is dissected layer by layer; at each layer the test
 *   - runs check() and parse(),
 *   - verifies the checksum the sender computed (IPv4 header, ICMP, ICMPv6, UDP, TCP),
 *   - re-emits the Repr into a fresh buffer and compares byte for byte with the original.
 * The Reprs cover their whole headers (IPv4 options and TCP options included); where they do
 * not, the test says so: IPv6 extension headers (walked by upperLayer(), not re-emitted), NDP
 * options other than SLLA/TLLA/prefix/MTU/RDNSS (none occur here), DHCP padding after End.
 * Fragments are reassembled to verify the ICMP checksum over the whole message. Then each file
 * gets spot checks of real values (ports, flags, option values, DHCP fields).
 */
import test, { type ExecutionContext } from 'ava';
import * as path from 'node:path';
import { readCapture, LINKTYPE_ETHERNET, type CaptureRecord } from '../helpers/pcap-reader';
import {
  ArpPacket,
  ArpRepr,
  ARP_REPLY,
  ARP_REQUEST,
  DhcpMessage,
  DhcpRepr,
  DHCP_ACK,
  DHCP_DISCOVER,
  DHCP_OFFER,
  DHCP_RELEASE,
  DHCP_REQUEST,
  EthernetFrame,
  EthernetRepr,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  Icmpv4Packet,
  Icmpv4Repr,
  ICMPV4_DEST_UNREACHABLE,
  ICMPV4_ECHO_REPLY,
  ICMPV4_ECHO_REQUEST,
  ICMPV4_FRAGMENTATION_NEEDED,
  ICMPV4_PORT_UNREACHABLE,
  ICMPV4_TIME_EXCEEDED,
  Icmpv6Packet,
  Icmpv6Repr,
  ICMPV6_DEST_UNREACHABLE,
  ICMPV6_ECHO_REPLY,
  ICMPV6_ECHO_REQUEST,
  ICMPV6_MLDV2_REPORT,
  ICMPV6_NEIGHBOR_ADVERTISEMENT,
  ICMPV6_NEIGHBOR_SOLICITATION,
  ICMPV6_PACKET_TOO_BIG,
  ICMPV6_PORT_UNREACHABLE,
  ICMPV6_ROUTER_ADVERTISEMENT,
  ICMPV6_ROUTER_SOLICITATION,
  ICMPV6_TIME_EXCEEDED,
  internetChecksum,
  Ipv4OptionReader,
  Ipv4Packet,
  Ipv4Repr,
  IPV4_OPT_RECORD_ROUTE,
  ipv4ToString,
  Ipv6Packet,
  Ipv6Repr,
  ipv6ToString,
  IP_PROTO_ICMP,
  IP_PROTO_ICMPV6,
  IP_PROTO_TCP,
  IP_PROTO_UDP,
  IPV6_FRAGMENT,
  IPV6_HOP_BY_HOP,
  macToString,
  NDP_NA_OVERRIDE,
  NDP_NA_ROUTER,
  NDP_NA_SOLICITED,
  NDP_OPT_MTU,
  NDP_OPT_PREFIX_INFO,
  NDP_OPT_RDNSS,
  NDP_OPT_SOURCE_LL_ADDR,
  NDP_PREFIX_AUTONOMOUS,
  NDP_PREFIX_ON_LINK,
  onesSum,
  parseIpv4,
  parseIpv6,
  pseudoHeaderSumV6,
  seqAdd,
  TcpRepr,
  TcpSegment,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_SYN,
  UdpDatagram,
  UdpRepr,
  WireError,
} from '../../src/wire';

const FIXTURES = path.join(__dirname, '..', 'fixtures', 'wire');

/** What dissect() found in one frame. */
interface Dissected {
  record: CaptureRecord;
  eth: EthernetRepr;
  arp?: ArpRepr;
  ipv4?: Ipv4Repr;
  ipv4Options?: Uint8Array;
  ipv6?: Ipv6Repr;
  /** IPv6 extension headers crossed, by type. */
  ipv6Extensions: number[];
  fragment?: { id: number; offset: number; more: boolean; protocol: number; data: Uint8Array };
  icmpv4?: Icmpv4Repr;
  icmpv6?: Icmpv6Repr;
  icmpv6Type?: number;
  udp?: UdpRepr;
  udpPayload?: Uint8Array;
  tcp?: TcpRepr;
  dhcp?: DhcpRepr;
  /** Checksums verified and headers re-emitted, e.g. 'ipv4-checksum', 'tcp-reemit'. */
  verified: string[];
}

function ok<T>(t: ExecutionContext, v: T | WireError, what: string): T {
  if (v instanceof WireError) {
    t.fail(`${what}: ${v.message}`);
    throw v;
  }
  return v;
}

function bytesEqual(t: ExecutionContext, got: Uint8Array, want: Uint8Array, what: string): void {
  t.is(Buffer.from(got).toString('hex'), Buffer.from(want).toString('hex'), what);
}

/** Parse every layer of one Ethernet frame, verifying checksums and re-emission on the way. */
function dissect(t: ExecutionContext, record: CaptureRecord): Dissected {
  t.is(record.linkType, LINKTYPE_ETHERNET);
  const frame = record.data;
  const complete = record.data.length === record.originalLength;
  const d: Dissected = { record, eth: new EthernetRepr(), ipv6Extensions: [], verified: [] };

  const eth = new EthernetFrame().wrap(frame);
  t.is(eth.check(), null);
  d.eth = ok(t, EthernetRepr.parse(eth), 'ethernet');
  const ethOut = new Uint8Array(14);
  d.eth.emit(new EthernetFrame().wrap(ethOut));
  bytesEqual(t, ethOut, frame.subarray(0, 14), 'ethernet re-emit');
  d.verified.push('ethernet-reemit');

  if (d.eth.etherType === ETHERTYPE_ARP) {
    const arp = new ArpPacket().wrap(frame, eth.payloadOffset, eth.payloadLength);
    d.arp = ok(t, ArpRepr.parse(arp), 'arp');
    const out = new Uint8Array(28);
    d.arp.emit(new ArpPacket().wrap(out));
    bytesEqual(t, out, frame.subarray(14, 42), 'arp re-emit');
    d.verified.push('arp-reemit');
    return d;
  }

  let l4Offset: number;
  let l4Length: number;
  let protocol: number;
  let v4src = 0;
  let v4dst = 0;
  let v6src: Uint8Array | null = null;
  let v6dst: Uint8Array | null = null;

  if (d.eth.etherType === ETHERTYPE_IPV4) {
    const ip = new Ipv4Packet().wrap(frame, eth.payloadOffset, eth.payloadLength);
    t.is(ip.checkHeader(), null);
    t.true(ip.verifyChecksum(), 'ipv4 header checksum');
    d.verified.push('ipv4-checksum');
    if (!complete) return d; // cut by the snapshot length: the header is all there is
    t.is(ip.check(), null);
    d.ipv4 = ok(t, Ipv4Repr.parse(ip), 'ipv4');
    if (ip.headerLength > 20) d.ipv4Options = ip.options.slice();
    const out = new Uint8Array(d.ipv4.headerLength);
    t.is(d.ipv4.emit(new Ipv4Packet().wrap(out)), ip.headerLength);
    bytesEqual(t, out, frame.subarray(ip.offset, ip.offset + ip.headerLength), 'ipv4 re-emit');
    d.verified.push('ipv4-reemit');
    v4src = ip.src;
    v4dst = ip.dst;
    protocol = ip.protocol;
    l4Offset = ip.payloadOffset;
    l4Length = ip.payloadLength;
    if (ip.isFragment) {
      d.fragment = {
        id: ip.identification,
        offset: ip.fragmentOffset,
        more: ip.moreFragments,
        protocol,
        data: frame.slice(l4Offset, l4Offset + l4Length),
      };
      return d; // the L4 checksum needs the reassembled datagram (see the fragment tests)
    }
  } else if (d.eth.etherType === ETHERTYPE_IPV6) {
    const ip = new Ipv6Packet().wrap(frame, eth.payloadOffset, eth.payloadLength);
    t.is(ip.checkHeader(), null);
    if (!complete) return d;
    t.is(ip.check(), null);
    d.ipv6 = ok(t, Ipv6Repr.parse(ip), 'ipv6');
    const out = new Uint8Array(40);
    d.ipv6.emit(new Ipv6Packet().wrap(out));
    bytesEqual(t, out, frame.subarray(ip.offset, ip.offset + 40), 'ipv6 re-emit (fixed header)');
    d.verified.push('ipv6-reemit');
    const upper = ok(t, ip.upperLayer(), 'ipv6 extension headers');
    if (ip.nextHeader !== upper.protocol || upper.fragment) {
      // Extension headers crossed: record which (the first is the fixed header's next header).
      d.ipv6Extensions.push(ip.nextHeader);
      if (upper.fragment && ip.nextHeader !== IPV6_FRAGMENT) d.ipv6Extensions.push(IPV6_FRAGMENT);
    }
    v6src = d.ipv6.src;
    v6dst = d.ipv6.dst;
    protocol = upper.protocol;
    l4Offset = upper.offset;
    l4Length = upper.length;
    if (upper.fragment) {
      d.fragment = {
        id: upper.fragmentId,
        offset: upper.fragmentOffset,
        more: upper.moreFragments,
        protocol,
        data: frame.slice(l4Offset, l4Offset + l4Length),
      };
      return d;
    }
  } else {
    t.fail(`unexpected EtherType 0x${d.eth.etherType.toString(16)}`);
    return d;
  }

  if (protocol === IP_PROTO_ICMP) {
    const p = new Icmpv4Packet().wrap(frame, l4Offset, l4Length);
    t.is(p.check(), null);
    t.true(p.verifyChecksum(), 'icmpv4 checksum');
    t.is(internetChecksum(frame, l4Offset, l4Length), 0);
    d.verified.push('icmpv4-checksum');
    d.icmpv4 = ok(t, Icmpv4Repr.parse(p), 'icmpv4');
    const out = new Uint8Array(l4Length);
    t.is(d.icmpv4.emit(new Icmpv4Packet().wrap(out)), l4Length);
    bytesEqual(t, out, frame.subarray(l4Offset, l4Offset + l4Length), 'icmpv4 re-emit');
    d.verified.push('icmpv4-reemit');
  } else if (protocol === IP_PROTO_ICMPV6) {
    const p = new Icmpv6Packet().wrap(frame, l4Offset, l4Length);
    t.is(p.check(), null);
    t.true(p.verifyChecksum(v6src!, v6dst!), 'icmpv6 checksum');
    d.verified.push('icmpv6-checksum');
    d.icmpv6Type = p.type;
    const r = Icmpv6Repr.parse(p);
    if (p.type === ICMPV6_MLDV2_REPORT) {
      t.true(r instanceof WireError && r.code === 'unsupported', 'MLD is not modelled');
    } else {
      d.icmpv6 = ok(t, r, 'icmpv6');
      const out = new Uint8Array(l4Length);
      t.is(d.icmpv6.emit(new Icmpv6Packet().wrap(out), v6src!, v6dst!), l4Length);
      bytesEqual(t, out, frame.subarray(l4Offset, l4Offset + l4Length), 'icmpv6 re-emit');
      d.verified.push('icmpv6-reemit');
    }
  } else if (protocol === IP_PROTO_UDP) {
    const u = new UdpDatagram().wrap(frame, l4Offset, l4Length);
    t.is(u.check(), null);
    t.true(v6src ? u.verifyChecksumV6(v6src, v6dst!) : u.verifyChecksumV4(v4src, v4dst), 'udp checksum');
    t.not(u.checksum, 0, 'the kernel computed a UDP checksum');
    d.verified.push('udp-checksum');
    d.udp = ok(t, UdpRepr.parse(u), 'udp');
    d.udpPayload = u.payload();
    const out = frame.slice(l4Offset, l4Offset + l4Length);
    out.fill(0xee, 0, 8);
    const v = new UdpDatagram().wrap(out);
    d.udp.emit(v);
    if (v6src) v.fillChecksumV6(v6src, v6dst!);
    else v.fillChecksumV4(v4src, v4dst);
    bytesEqual(t, out, frame.subarray(l4Offset, l4Offset + l4Length), 'udp re-emit');
    d.verified.push('udp-reemit');
    if (d.udp.srcPort === 67 || d.udp.srcPort === 68) {
      const m = new DhcpMessage().wrap(frame, u.payloadOffset, u.payloadLength);
      t.is(m.check(), null);
      d.dhcp = ok(t, DhcpRepr.parse(m), 'dhcp');
      const dout = new Uint8Array(u.payloadLength);
      const n = d.dhcp.emit(new DhcpMessage().wrap(dout));
      t.is(n, d.dhcp.bufferLength);
      bytesEqual(t, dout, frame.subarray(u.payloadOffset, u.payloadOffset + u.payloadLength), 'dhcp re-emit (+ zero padding)');
      d.verified.push('dhcp-reemit');
    }
  } else if (protocol === IP_PROTO_TCP) {
    const s = new TcpSegment().wrap(frame, l4Offset, l4Length);
    t.is(s.check(), null);
    t.true(v6src ? s.verifyChecksumV6(v6src, v6dst!) : s.verifyChecksumV4(v4src, v4dst), 'tcp checksum');
    d.verified.push('tcp-checksum');
    d.tcp = ok(t, TcpRepr.parse(s), 'tcp');
    const out = frame.slice(l4Offset, l4Offset + l4Length);
    out.fill(0xee, 0, s.dataOffset);
    const v = new TcpSegment().wrap(out);
    t.is(d.tcp.emit(v), s.dataOffset);
    if (v6src) v.fillChecksumV6(v6src, v6dst!);
    else v.fillChecksumV4(v4src, v4dst);
    bytesEqual(t, out, frame.subarray(l4Offset, l4Offset + l4Length), 'tcp re-emit');
    d.verified.push('tcp-reemit');
  } else {
    t.fail(`unexpected protocol ${protocol}`);
  }
  return d;
}

function dissectFile(t: ExecutionContext, name: string): Dissected[] {
  const records = readCapture(path.join(FIXTURES, name));
  t.true(records.length > 0, `${name} has frames`);
  return records.map((r) => dissect(t, r));
}

const A4 = parseIpv4('10.200.1.2');
const R4 = parseIpv4('10.200.1.1');
const B4 = parseIpv4('10.200.2.2');
const MAC_A = '02:00:00:00:01:02';
const MAC_R = '02:00:00:00:01:01';

test('arp.pcap: a request and its reply', (t) => {
  const [req, rep] = dissectFile(t, 'arp.pcap');
  t.is(macToString(req.eth.dst), 'ff:ff:ff:ff:ff:ff');
  t.is(req.arp!.operation, ARP_REQUEST);
  t.is(macToString(req.arp!.senderMac), MAC_A);
  t.is(req.arp!.senderIp, A4);
  t.is(req.arp!.targetIp, R4);
  t.is(rep.arp!.operation, ARP_REPLY);
  t.is(macToString(rep.arp!.senderMac), MAC_R);
  t.is(ipv4ToString(rep.arp!.senderIp), '10.200.1.1');
  t.is(macToString(rep.arp!.targetMac), MAC_A);
});

test('icmp-echo.pcap: echo requests and replies with the pattern ping -p wrote', (t) => {
  const frames = dissectFile(t, 'icmp-echo.pcap');
  t.is(frames.length, 4);
  const id = frames[0].icmpv4!.identifier;
  frames.forEach((f, i) => {
    const icmp = f.icmpv4!;
    t.is(icmp.type, i % 2 === 0 ? ICMPV4_ECHO_REQUEST : ICMPV4_ECHO_REPLY);
    t.is(icmp.identifier, id);
    t.is(icmp.sequence, (i >> 1) + 1);
    t.is(icmp.data.length, 56);
    // ping -p 7573657276 ("userv"): iputils fills the data after the 16-byte timestamp with
    // the pattern, rotated by where the fill starts.
    t.true(Buffer.from(icmp.data.subarray(16)).toString('latin1').includes('servuserv'));
    t.is(f.ipv4!.ttl, 64);
    t.is(f.ipv4!.dontFragment, i % 2 === 0, 'ping sets DF; the kernel\'s echo reply does not');
    t.true(f.verified.includes('icmpv4-checksum'));
  });
});

test('icmp-record-route.pcap: IPv4 options (RFC 791 Record Route) parse and re-emit', (t) => {
  const [req, rep] = dissectFile(t, 'icmp-record-route.pcap');
  for (const f of [req, rep]) {
    t.is(f.ipv4!.headerLength, 60);
    t.truthy(f.ipv4Options);
    t.true(f.verified.includes('ipv4-reemit'));
  }
  // Walk the reply's options: one Record Route, 39 bytes, full of hops.
  const frame = rep.record.data;
  const ip = new Ipv4Packet().wrap(frame, 14, frame.length - 14);
  const reader = new Ipv4OptionReader().reset(ip);
  const seen: number[] = [];
  const hops: string[] = [];
  while (reader.next()) {
    seen.push(reader.type);
    if (reader.type === IPV4_OPT_RECORD_ROUTE) {
      t.is(reader.length, 39);
      const pointer = frame[reader.dataOffset];
      for (let at = reader.dataOffset + 1; at + 4 <= reader.dataOffset - 2 + pointer - 1; at += 4) {
        hops.push(ipv4ToString(((frame[at] << 24) | (frame[at + 1] << 16) | (frame[at + 2] << 8) | frame[at + 3]) >>> 0));
      }
    }
  }
  t.is(reader.error, null);
  t.deepEqual(seen, [IPV4_OPT_RECORD_ROUTE]);
  // Out through R (10.200.2.1), B's own address, back through R (10.200.1.1).
  t.true(hops.includes('10.200.2.1'), hops.join(' '));
  t.true(hops.includes('10.200.1.1'), hops.join(' '));
  t.is(rep.icmpv4!.type, ICMPV4_ECHO_REPLY);
});

/** Reassemble fragments (by id) into whole L4 messages, in offset order. */
function reassemble(t: ExecutionContext, frames: Dissected[]): Map<number, { protocol: number; data: Uint8Array; frames: Dissected[] }> {
  const byId = new Map<number, Dissected[]>();
  for (const f of frames) {
    if (!f.fragment) continue;
    const list = byId.get(f.fragment.id) ?? [];
    list.push(f);
    byId.set(f.fragment.id, list);
  }
  const out = new Map<number, { protocol: number; data: Uint8Array; frames: Dissected[] }>();
  for (const [id, list] of byId) {
    list.sort((a, b) => a.fragment!.offset - b.fragment!.offset);
    let expect = 0;
    for (const f of list) {
      t.is(f.fragment!.offset, expect, 'fragments are contiguous');
      expect += f.fragment!.data.length;
    }
    t.false(list[list.length - 1].fragment!.more, 'the last fragment has MF clear');
    t.true(list.slice(0, -1).every((f) => f.fragment!.more && f.fragment!.data.length % 8 === 0));
    out.set(id, { protocol: list[0].fragment!.protocol, data: Buffer.concat(list.map((f) => f.fragment!.data)), frames: list });
  }
  return out;
}

test('ipv4-fragments.pcap: fragment fields, and the ICMP checksum over the reassembled message', (t) => {
  const frames = dissectFile(t, 'ipv4-fragments.pcap');
  t.is(frames.length, 6);
  const whole = reassemble(t, frames);
  t.is(whole.size, 2);
  const types: number[] = [];
  for (const { protocol, data, frames: parts } of whole.values()) {
    t.is(protocol, IP_PROTO_ICMP);
    t.is(parts.length, 3);
    t.deepEqual(parts.map((f) => f.fragment!.offset), [0, 1480, 2960]);
    t.is(data.length, 8 + 3000);
    const p = new Icmpv4Packet().wrap(data);
    t.true(p.verifyChecksum());
    const r = ok(t, Icmpv4Repr.parse(p), 'reassembled icmp');
    types.push(r.type);
    t.is(r.data.length, 3000);
    const out = new Uint8Array(data.length);
    r.emit(new Icmpv4Packet().wrap(out));
    bytesEqual(t, out, data, 'reassembled icmp re-emit');
    // Every fragment's IP header: same id, DF clear, payload length as the offsets say.
    for (const f of parts) {
      t.false(f.ipv4!.dontFragment);
      t.is(f.ipv4!.fragmentOffset, f.fragment!.offset);
      t.is(f.ipv4!.moreFragments, f.fragment!.more);
    }
  }
  t.deepEqual(types.sort(), [ICMPV4_ECHO_REPLY, ICMPV4_ECHO_REQUEST].sort());
});

test('icmp-errors.pcap: time exceeded, port unreachable, fragmentation needed with the next-hop MTU', (t) => {
  const frames = dissectFile(t, 'icmp-errors.pcap');
  const errors = frames.filter((f) => f.icmpv4 && f.icmpv4.type !== ICMPV4_ECHO_REQUEST);
  t.is(errors.length, 3);
  const [ttl, port, frag] = errors;

  const quoted = (f: Dissected): Ipv4Packet => {
    const q = new Ipv4Packet().wrap(f.icmpv4!.data);
    t.is(q.checkHeader(), null);
    t.true(q.verifyChecksum(), 'quoted header checksum');
    return q;
  };

  t.is(ttl.icmpv4!.type, ICMPV4_TIME_EXCEEDED);
  t.is(ttl.icmpv4!.code, 0);
  t.is(ttl.ipv4!.src, R4);
  let q = quoted(ttl);
  t.is(q.dst, B4);
  t.is(q.protocol, IP_PROTO_ICMP);
  t.is(q.ttl, 1);

  t.is(port.icmpv4!.type, ICMPV4_DEST_UNREACHABLE);
  t.is(port.icmpv4!.code, ICMPV4_PORT_UNREACHABLE);
  t.is(port.ipv4!.src, B4);
  q = quoted(port);
  t.is(q.protocol, IP_PROTO_UDP);
  t.is(q.check(), null, 'the whole small datagram is quoted');
  const u = new UdpDatagram().wrap(q.buffer, q.payloadOffset, q.payloadLength);
  t.is(u.check(), null);
  t.is(u.dstPort, 9);
  t.is(u.srcPort, 40000);

  t.is(frag.icmpv4!.type, ICMPV4_DEST_UNREACHABLE);
  t.is(frag.icmpv4!.code, ICMPV4_FRAGMENTATION_NEEDED);
  t.is(frag.icmpv4!.nextHopMtu, 1400);
  q = quoted(frag);
  t.true(q.dontFragment);
  t.is(q.totalLength, 1448);
  t.truthy(q.check(), 'the quoted datagram is cut short: check() refuses, checkHeader() accepts');
});

test('udp.pcap: datagrams over IPv4 and IPv6 with the kernel’s checksums', (t) => {
  const frames = dissectFile(t, 'udp.pcap');
  t.is(frames.length, 4);
  for (const f of frames) t.true(f.verified.includes('udp-checksum') && f.verified.includes('udp-reemit'));
  const [q4, a4, q6, a6] = frames;
  t.is(q4.udp!.srcPort, 40000);
  t.is(q4.udp!.dstPort, 5003);
  t.is(Buffer.from(q4.udpPayload!).toString(), 'hello over udp4');
  t.is(a4.udp!.srcPort, 5003);
  t.is(Buffer.from(a4.udpPayload!).toString(), 'echo hello over udp4');
  t.truthy(q6.ipv6);
  t.is(ipv6ToString(q6.ipv6!.dst), 'fd00:2::2');
  t.is(Buffer.from(q6.udpPayload!).toString(), 'hello over udp6');
  t.is(Buffer.from(a6.udpPayload!).toString(), 'echo hello over udp6');
  t.is(a6.ipv6!.hopLimit, 63, 'one router on the way back');
});

function checkTcpConversation(t: ExecutionContext, frames: Dissected[], mssClient: number): void {
  t.is(frames.length, 10);
  const tcp = frames.map((f) => f.tcp!);
  for (const f of frames) t.true(f.verified.includes('tcp-checksum') && f.verified.includes('tcp-reemit'));
  const [syn, synAck, ack] = tcp;
  t.is(syn.flags, TCP_SYN);
  t.is(syn.dstPort, 5001);
  t.is(syn.options.mss, mssClient);
  t.true(syn.options.sackPermitted);
  t.true(syn.options.hasTimestamps);
  t.is(syn.options.tsEcr, 0);
  t.is(syn.options.windowScale, 10, 'Linux scales by 2^10 with default buffers');
  t.is(synAck.flags, TCP_SYN | TCP_ACK);
  t.is(synAck.ack, seqAdd(syn.seq, 1));
  t.true(synAck.options.sackPermitted);
  t.is(synAck.options.tsEcr, syn.options.tsVal);
  t.is(ack.flags, TCP_ACK);
  t.is(ack.options.mss, 0);
  t.is(ack.options.windowScale, -1);
  t.true(ack.options.hasTimestamps);
  // Data: "hello usernet\n" (14 bytes) one way, "pong hello usernet\n" (19) back; then FINs.
  const data = tcp.filter((s) => s.payloadLength > 0);
  t.deepEqual(data.map((s) => s.payloadLength), [14, 19]);
  t.true(data.every((s) => (s.flags & (TCP_PSH | TCP_ACK)) === (TCP_PSH | TCP_ACK)));
  const fins = tcp.filter((s) => s.flags & TCP_FIN);
  t.is(fins.length, 2);
  t.is(fins[0].srcPort, 5001, 'the server closes first');
  const last = tcp[9];
  t.is(last.ack, seqAdd(fins[1].seq, 1));
}

test('tcp.pcap: handshake with MSS, SACK-permitted, timestamps, window scale; data; FIN', (t) => {
  const frames = dissectFile(t, 'tcp.pcap');
  checkTcpConversation(t, frames, 1360);
  t.true(frames.every((f) => f.ipv4 && f.ipv4.protocol === IP_PROTO_TCP));
});

test('tcp-ipv6.pcap: the same conversation over IPv6', (t) => {
  const frames = dissectFile(t, 'tcp-ipv6.pcap');
  checkTcpConversation(t, frames, 1440);
  t.true(frames.every((f) => f.ipv6 && f.ipv6.nextHeader === IP_PROTO_TCP));
});

test('tcp-bulk.pcap: SACK blocks (RFC 2018) after tail drops', (t) => {
  const frames = dissectFile(t, 'tcp-bulk.pcap');
  const sacks = frames.filter((f) => f.tcp!.options.sackCount > 0);
  t.true(sacks.length >= 3);
  let multi = 0;
  for (const f of sacks) {
    const o = f.tcp!.options;
    t.true(o.hasTimestamps);
    for (let k = 0; k < o.sackCount; k++) {
      const left = o.sackBlocks[2 * k];
      const right = o.sackBlocks[2 * k + 1];
      t.true(((right - left) | 0) > 0, 'a block is not empty');
      t.true(((left - f.tcp!.ack) | 0) > 0, 'SACKed data lies above the cumulative ACK');
    }
    if (o.sackCount > 1) multi++;
  }
  t.true(multi > 0, 'some ACK carries more than one block');
});

test('ipv6-echo.pcap: ICMPv6 echo with the pseudo-header checksum', (t) => {
  const frames = dissectFile(t, 'ipv6-echo.pcap');
  t.is(frames.length, 4);
  frames.forEach((f, i) => {
    t.is(f.icmpv6!.type, i % 2 === 0 ? ICMPV6_ECHO_REQUEST : ICMPV6_ECHO_REPLY);
    t.is(f.icmpv6!.sequence, (i >> 1) + 1);
    t.is(f.icmpv6!.data.length, 56);
    t.true(f.verified.includes('icmpv6-checksum') && f.verified.includes('icmpv6-reemit'));
  });
  t.is(ipv6ToString(frames[0].ipv6!.src), 'fd00:1::2');
});

test('ipv6-fragments.pcap: the fragment extension header, reassembly, checksum', (t) => {
  const frames = dissectFile(t, 'ipv6-fragments.pcap');
  t.is(frames.length, 6);
  for (const f of frames) {
    t.is(f.ipv6!.nextHeader, IPV6_FRAGMENT);
    t.deepEqual(f.ipv6Extensions, [IPV6_FRAGMENT]);
  }
  const whole = reassemble(t, frames);
  t.is(whole.size, 2);
  for (const { protocol, data, frames: parts } of whole.values()) {
    t.is(protocol, IP_PROTO_ICMPV6);
    t.deepEqual(parts.map((f) => f.fragment!.offset), [0, 1448, 2896]);
    const src = parts[0].ipv6!.src;
    const dst = parts[0].ipv6!.dst;
    const p = new Icmpv6Packet().wrap(data);
    t.true(p.verifyChecksum(src, dst));
    t.is(onesSum(data, 0, data.length, pseudoHeaderSumV6(src, dst, IP_PROTO_ICMPV6, data.length)), 0xffff);
    const r = ok(t, Icmpv6Repr.parse(p), 'reassembled icmpv6');
    t.is(r.data.length, 3000);
    t.true(r.type === ICMPV6_ECHO_REQUEST || r.type === ICMPV6_ECHO_REPLY);
  }
});

test('icmpv6-errors.pcap: time exceeded, port unreachable, packet too big (MTU 1400)', (t) => {
  const frames = dissectFile(t, 'icmpv6-errors.pcap');
  t.is(frames.length, 3);
  const [ttl, port, ptb] = frames.map((f) => f.icmpv6!);
  t.is(ttl.type, ICMPV6_TIME_EXCEEDED);
  t.is(ttl.code, 0);
  t.is(port.type, ICMPV6_DEST_UNREACHABLE);
  t.is(port.code, ICMPV6_PORT_UNREACHABLE);
  t.is(ptb.type, ICMPV6_PACKET_TOO_BIG);
  t.is(ptb.mtu, 1400);
  t.true(ptb.data.length <= 1280 - 48, 'the quote fits the minimum MTU (RFC 4443 §3.2)');
  for (const r of [ttl, port, ptb]) {
    const q = new Ipv6Packet().wrap(r.data);
    t.is(q.checkHeader(), null);
    t.is(ipv6ToString(q.dst), 'fd00:2::2');
    t.true(q.srcEquals(parseIpv6('fd00:1::2')));
  }
  const q = new Ipv6Packet().wrap(port.data);
  t.is(q.check(), null);
  const upper = ok(t, q.upperLayer(), 'quoted upper layer');
  t.is(upper.protocol, IP_PROTO_UDP);
  const u = new UdpDatagram().wrap(q.buffer, upper.offset, upper.length);
  t.is(u.dstPort, 9);
});

test('ndp.pcap: DAD, RS, dnsmasq RA (prefix, MTU, SLLA, RDNSS), NS/NA; MLD behind hop-by-hop', (t) => {
  const frames = dissectFile(t, 'ndp.pcap');
  t.true(frames.every((f) => f.record.data.length === f.record.originalLength));
  const types = frames.map((f) => f.icmpv6Type);
  t.true(frames.every((f) => f.verified.includes('icmpv6-checksum')));

  // MLDv2 reports carry a hop-by-hop header (router alert) before ICMPv6.
  const mld = frames.filter((f) => f.icmpv6Type === ICMPV6_MLDV2_REPORT);
  t.true(mld.length > 0);
  for (const f of mld) t.deepEqual(f.ipv6Extensions, [IPV6_HOP_BY_HOP]);

  // DAD: a neighbor solicitation from :: for a tentative address, without SLLA (RFC 4862 §5.4.2).
  const dad = frames.filter((f) => f.icmpv6Type === ICMPV6_NEIGHBOR_SOLICITATION && ipv6ToString(f.ipv6!.src) === '::');
  t.true(dad.length >= 2);
  for (const f of dad) {
    t.is(f.icmpv6!.sourceLinkAddress, null);
    t.is(f.icmpv6!.nonce?.length, 6, 'Linux adds an RFC 7527 nonce to DAD solicitations');
    t.is(ipv6ToString(f.ipv6!.dst).slice(0, 13), 'ff02::1:ff00:');
  }

  const rs = frames.find((f) => f.icmpv6Type === ICMPV6_ROUTER_SOLICITATION)!;
  t.truthy(rs);
  t.is(macToString(rs.icmpv6!.sourceLinkAddress!), '02:00:00:00:03:02');

  const ra = frames.find((f) => f.icmpv6Type === ICMPV6_ROUTER_ADVERTISEMENT)!;
  t.truthy(ra);
  const r = ra.icmpv6!;
  t.is(r.curHopLimit, 64);
  t.true(r.routerLifetime > 0);
  t.deepEqual(r.optionOrder, [NDP_OPT_PREFIX_INFO, NDP_OPT_MTU, NDP_OPT_SOURCE_LL_ADDR, NDP_OPT_RDNSS]);
  t.is(r.prefixes.length, 1);
  t.is(ipv6ToString(r.prefixes[0].prefix), 'fd00:3::');
  t.is(r.prefixes[0].prefixLength, 64);
  t.is(r.prefixes[0].flags, NDP_PREFIX_ON_LINK | NDP_PREFIX_AUTONOMOUS);
  t.is(r.prefixes[0].validLifetime, 3600);
  t.is(r.linkMtu, 1500);
  t.is(macToString(r.sourceLinkAddress!), '02:00:00:00:03:01');
  t.is(r.rdnss!.servers.length, 1);
  t.is(ipv6ToString(r.rdnss!.servers[0]), 'fd00:3::1');
  t.true(ra.verified.includes('icmpv6-reemit'));

  const ns = frames.filter((f) => f.icmpv6Type === ICMPV6_NEIGHBOR_SOLICITATION && f.icmpv6!.sourceLinkAddress);
  t.true(ns.length >= 1);
  t.is(ipv6ToString(ns[ns.length - 1].icmpv6!.targetAddress), 'fd00:3::1');
  const nas = frames.filter((f) => f.icmpv6Type === ICMPV6_NEIGHBOR_ADVERTISEMENT);
  // A unicast-solicited NA may leave out the target link-layer address (RFC 4861 §7.2.4).
  t.true(nas.some((f) => f.icmpv6!.targetLinkAddress === null && f.icmpv6!.naFlags === NDP_NA_SOLICITED));
  const na = nas.find((f) => ipv6ToString(f.icmpv6!.targetAddress) === 'fd00:3::1')!;
  t.truthy(na);
  t.is(na.icmpv6!.naFlags, NDP_NA_ROUTER | NDP_NA_SOLICITED | NDP_NA_OVERRIDE);
  t.is(ipv6ToString(na.icmpv6!.targetAddress), 'fd00:3::1');
  t.is(macToString(na.icmpv6!.targetLinkAddress!), '02:00:00:00:03:01');
  t.true(types.includes(ICMPV6_NEIGHBOR_ADVERTISEMENT));
});

test('dhcp.pcap: udhcpc against dnsmasq — DISCOVER, OFFER, REQUEST, ACK, RELEASE', (t) => {
  const frames = dissectFile(t, 'dhcp.pcap');
  const msgs = frames.map((f) => f.dhcp!);
  t.deepEqual(msgs.map((m) => m.messageType), [DHCP_DISCOVER, DHCP_OFFER, DHCP_REQUEST, DHCP_ACK, DHCP_RELEASE]);
  t.true(frames.every((f) => f.verified.includes('dhcp-reemit')));
  const [discover, offer, request, ack, release] = msgs;
  const server = parseIpv4('10.200.3.1');
  for (const m of msgs) t.is(macToString(m.chaddr.subarray(0, 6)), '02:00:00:00:03:02');
  t.is(new Set(msgs.slice(0, 4).map((m) => m.xid)).size, 1, 'one transaction');

  t.is(discover.op, 1);
  t.is(discover.hostname, 'usernet-guest');
  t.is(discover.maxMessageSize, 576);
  t.deepEqual(Array.from(discover.clientId!), [1, 2, 0, 0, 0, 3, 2]);
  t.true(discover.parameterRequestList!.includes(1) && discover.parameterRequestList!.includes(3) && discover.parameterRequestList!.includes(6));
  t.true(discover.otherOptions.some((o) => o.code === 60 && Buffer.from(o.data).toString().startsWith('udhcp')));

  t.is(offer.op, 2);
  const leased = offer.yiaddr;
  t.true(leased >= parseIpv4('10.200.3.50') && leased <= parseIpv4('10.200.3.60'));
  t.is(offer.serverId, server);
  t.is(offer.leaseTime, 3600);
  t.is(offer.renewalTime, 1800);
  t.is(offer.rebindingTime, 3150);
  t.is(offer.subnetMask, parseIpv4('255.255.255.0'));
  t.is(offer.broadcastAddress, parseIpv4('10.200.3.255'));
  t.is(offer.router, server);
  t.deepEqual(offer.dnsServers, [server]);
  t.is(offer.domainName, 'usernet.test');

  t.is(request.requestedIp, leased);
  t.is(request.serverId, server);
  t.is(ack.yiaddr, leased);
  t.is(ack.hostname, 'usernet-guest');
  t.is(release.ciaddr, leased);
  t.is(release.serverId, server);
  t.is(frames[4].ipv4!.src, leased, 'RELEASE comes from a kernel socket on the leased address');
});

test('every fixture frame is accounted for', (t) => {
  const files = ['arp', 'icmp-echo', 'icmp-record-route', 'ipv4-fragments', 'icmp-errors', 'udp', 'tcp', 'tcp-ipv6', 'tcp-bulk', 'ipv6-echo', 'ipv6-fragments', 'icmpv6-errors', 'ndp', 'dhcp'];
  let frames = 0;
  let bytes = 0;
  for (const name of files) {
    for (const d of dissectFile(t, `${name}.pcap`)) {
      frames++;
      bytes += d.record.data.length;
      t.true(d.verified.length >= 2, `${name} #${d.record.index}: ${d.verified.join(',')}`);
    }
  }
  t.true(frames > 80);
  t.log(`${frames} frames, ${bytes} bytes dissected`);
});
