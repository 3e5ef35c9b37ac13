/**
 * Properties of src/wire, with fast-check:
 * 1. emit → parse round-trips every Repr (and re-emitting the parsed Repr gives the same bytes);
 * 2. views and Reprs never throw on bad input: random bytes, views wrapped partly outside their
 *    buffer, and truncated/mutated real frames from test/fixtures/wire come back as a WireError
 *    or a value; after a null check() every getter returns in-bounds values (no NaN).
 */
import test from 'ava';
import * as fc from 'fast-check';
import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import { readCapture } from '../helpers/pcap-reader';
import {
  ArpPacket,
  ArpRepr,
  DhcpMessage,
  DhcpRepr,
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
  ICMPV4_PARAMETER_PROBLEM,
  ICMPV4_TIME_EXCEEDED,
  Icmpv6Packet,
  Icmpv6Repr,
  ICMPV6_DEST_UNREACHABLE,
  ICMPV6_ECHO_REPLY,
  ICMPV6_ECHO_REQUEST,
  ICMPV6_NEIGHBOR_ADVERTISEMENT,
  ICMPV6_NEIGHBOR_SOLICITATION,
  ICMPV6_PACKET_TOO_BIG,
  ICMPV6_PARAMETER_PROBLEM,
  ICMPV6_ROUTER_ADVERTISEMENT,
  ICMPV6_ROUTER_SOLICITATION,
  ICMPV6_TIME_EXCEEDED,
  Ipv4OptionReader,
  Ipv4Packet,
  Ipv4Repr,
  Ipv6Packet,
  Ipv6Repr,
  IP_PROTO_ICMP,
  IP_PROTO_ICMPV6,
  IP_PROTO_TCP,
  IP_PROTO_UDP,
  NdpOptionReader,
  NdpPrefixInfo,
  NdpRdnss,
  parseTcpOptions,
  TcpOptionsRepr,
  tcpOptionsLength,
  TcpRepr,
  TcpSegment,
  UdpDatagram,
  UdpRepr,
  WireError,
  WireView,
} from '../../src/wire';

const RUNS = 300;

const mac = fc.uint8Array({ minLength: 6, maxLength: 6 });
const ip6 = fc.uint8Array({ minLength: 16, maxLength: 16 });
const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });

/** Plain data of a Repr for deepEqual (typed arrays as arrays, methods ignored). */
function plain(v: unknown): unknown {
  if (v instanceof Uint8Array || v instanceof Uint32Array) return Array.from(v);
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = plain(x);
    return out;
  }
  return v;
}

function notError<T>(v: T | WireError): T {
  if (v instanceof WireError) throw new Error(`unexpected ${v.message}`);
  return v;
}

/* ------------------------------------------------------------ 1. round trips */

test('EthernetRepr and ArpRepr round-trip', (t) => {
  fc.assert(
    fc.property(mac, mac, u16, (dst, src, etherType) => {
      const r = new EthernetRepr({ dst, src, etherType });
      const buf = new Uint8Array(14);
      r.emit(new EthernetFrame().wrap(buf));
      const back = notError(EthernetRepr.parse(new EthernetFrame().wrap(buf)));
      return JSON.stringify(plain(back)) === JSON.stringify(plain(r));
    }),
    { numRuns: RUNS },
  );
  fc.assert(
    fc.property(u16, mac, u32, mac, u32, (operation, senderMac, senderIp, targetMac, targetIp) => {
      const r = new ArpRepr({ operation, senderMac, senderIp, targetMac, targetIp });
      const buf = new Uint8Array(46); // padded to the Ethernet minimum
      r.emit(new ArpPacket().wrap(buf, 0, 28));
      const back = notError(ArpRepr.parse(new ArpPacket().wrap(buf)));
      return JSON.stringify(plain(back)) === JSON.stringify(plain(r));
    }),
    { numRuns: RUNS },
  );
  t.pass();
});

test('Ipv4Repr round-trips, options and fragment fields included', (t) => {
  const repr = fc.record({
    src: u32,
    dst: u32,
    protocol: u8,
    ttl: u8,
    payloadLength: fc.integer({ min: 0, max: 200 }),
    dscpEcn: u8,
    identification: u16,
    dontFragment: fc.boolean(),
    moreFragments: fc.boolean(),
    fragmentOffset: fc.integer({ min: 0, max: 0x1fff }).map((x) => x * 8),
    options: fc.option(fc.integer({ min: 1, max: 10 }).chain((n) => fc.uint8Array({ minLength: 4 * n, maxLength: 4 * n })), { nil: null }),
  });
  fc.assert(
    fc.property(repr, (fields) => {
      const r = new Ipv4Repr(fields);
      const buf = new Uint8Array(r.headerLength + r.payloadLength);
      const view = new Ipv4Packet().wrap(buf);
      r.emit(view);
      if (view.check() !== null || !view.verifyChecksum()) return false;
      const back = notError(Ipv4Repr.parse(view));
      const again = new Uint8Array(buf.length);
      back.emit(new Ipv4Packet().wrap(again));
      return JSON.stringify(plain(back)) === JSON.stringify(plain(r)) && Buffer.compare(again, buf) === 0;
    }),
    { numRuns: RUNS },
  );
  t.pass();
});

test('Ipv6Repr round-trips', (t) => {
  const repr = fc.record({
    src: ip6,
    dst: ip6,
    nextHeader: u8,
    payloadLength: fc.integer({ min: 0, max: 300 }),
    hopLimit: u8,
    trafficClass: u8,
    flowLabel: fc.integer({ min: 0, max: 0xfffff }),
  });
  fc.assert(
    fc.property(repr, (fields) => {
      const r = new Ipv6Repr(fields);
      const buf = new Uint8Array(40 + r.payloadLength);
      r.emit(new Ipv6Packet().wrap(buf));
      const back = notError(Ipv6Repr.parse(new Ipv6Packet().wrap(buf)));
      return JSON.stringify(plain(back)) === JSON.stringify(plain(r));
    }),
    { numRuns: RUNS },
  );
  t.pass();
});

test('Icmpv4Repr round-trips for echo, unreachable (MTU), time exceeded, parameter problem', (t) => {
  const data = fc.uint8Array({ maxLength: 120 });
  const repr = fc.oneof(
    fc.record({ type: fc.constantFrom(ICMPV4_ECHO_REQUEST, ICMPV4_ECHO_REPLY), code: u8, identifier: u16, sequence: u16, data }),
    fc.record({ type: fc.constant(ICMPV4_DEST_UNREACHABLE), code: u8, nextHopMtu: u16, data }),
    fc.record({ type: fc.constant(ICMPV4_TIME_EXCEEDED), code: u8, data }),
    fc.record({ type: fc.constant(ICMPV4_PARAMETER_PROBLEM), code: u8, pointer: u8, data }),
  );
  fc.assert(
    fc.property(repr, (fields) => {
      const r = new Icmpv4Repr(fields);
      const buf = new Uint8Array(r.bufferLength);
      const view = new Icmpv4Packet().wrap(buf);
      r.emit(view);
      if (!view.verifyChecksum()) return false;
      const back = notError(Icmpv4Repr.parse(view));
      return JSON.stringify(plain(back)) === JSON.stringify(plain(r));
    }),
    { numRuns: RUNS },
  );
  t.pass();
});

test('Icmpv6Repr round-trips, NDP messages and options included', (t) => {
  const data = fc.uint8Array({ maxLength: 120 });
  const opt = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T | null> => fc.option(a, { nil: null });
  const prefix = fc
    .record({ prefixLength: u8, flags: u8, validLifetime: u32, preferredLifetime: u32, prefix: ip6 })
    .map((p) => new NdpPrefixInfo(p));
  const rdnss = fc.record({ lifetime: u32, servers: fc.array(ip6, { minLength: 1, maxLength: 3 }) }).map((r) => new NdpRdnss(r));
  const repr = fc.oneof(
    fc.record({ type: fc.constantFrom(ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY), code: u8, identifier: u16, sequence: u16, data }),
    fc.record({ type: fc.constantFrom(ICMPV6_DEST_UNREACHABLE, ICMPV6_TIME_EXCEEDED), code: u8, data }),
    fc.record({ type: fc.constant(ICMPV6_PACKET_TOO_BIG), code: u8, mtu: u32, data }),
    fc.record({ type: fc.constant(ICMPV6_PARAMETER_PROBLEM), code: u8, pointer: u32, data }),
    fc.record({ type: fc.constant(ICMPV6_ROUTER_SOLICITATION), code: u8, sourceLinkAddress: opt(mac) }),
    fc.record({
      type: fc.constant(ICMPV6_ROUTER_ADVERTISEMENT),
      code: u8,
      curHopLimit: u8,
      raFlags: u8,
      routerLifetime: u16,
      reachableTime: u32,
      retransTimer: u32,
      sourceLinkAddress: opt(mac),
      linkMtu: opt(u32),
      prefixes: fc.array(prefix, { maxLength: 3 }),
      rdnss: opt(rdnss),
    }),
    fc.record({
      type: fc.constant(ICMPV6_NEIGHBOR_SOLICITATION),
      code: u8,
      targetAddress: ip6,
      sourceLinkAddress: opt(mac),
      nonce: opt(fc.uint8Array({ minLength: 6, maxLength: 6 })),
    }),
    fc.record({
      type: fc.constant(ICMPV6_NEIGHBOR_ADVERTISEMENT),
      code: u8,
      targetAddress: ip6,
      naFlags: u8,
      targetLinkAddress: opt(mac),
    }),
  );
  fc.assert(
    fc.property(repr, ip6, ip6, (fields, src, dst) => {
      const r = new Icmpv6Repr(fields);
      const buf = new Uint8Array(r.bufferLength);
      const view = new Icmpv6Packet().wrap(buf);
      if (r.emit(view, src, dst) !== buf.length || !view.verifyChecksum(src, dst)) return false;
      const back = notError(Icmpv6Repr.parse(view));
      const again = new Uint8Array(buf.length);
      back.emit(new Icmpv6Packet().wrap(again), src, dst);
      const a = plain(back) as Record<string, unknown>;
      const b = plain(r) as Record<string, unknown>;
      delete a.optionOrder; // set by parse, null in the generated Repr
      delete b.optionOrder;
      return JSON.stringify(a) === JSON.stringify(b) && Buffer.compare(again, buf) === 0;
    }),
    { numRuns: RUNS },
  );
  t.pass();
});

test('UdpRepr round-trips, with the checksum filled over IPv4 and IPv6', (t) => {
  fc.assert(
    fc.property(u16, u16, fc.uint8Array({ maxLength: 200 }), u32, u32, ip6, ip6, (srcPort, dstPort, payload, s4, d4, s6, d6) => {
      const r = new UdpRepr({ srcPort, dstPort, payloadLength: payload.length });
      const buf = new Uint8Array(8 + payload.length);
      buf.set(payload, 8);
      const v = new UdpDatagram().wrap(buf);
      r.emit(v);
      v.fillChecksumV4(s4, d4);
      if (v.checksum === 0 || !v.verifyChecksumV4(s4, d4)) return false;
      v.fillChecksumV6(s6, d6);
      if (!v.verifyChecksumV6(s6, d6)) return false;
      const back = notError(UdpRepr.parse(v));
      return JSON.stringify(plain(back)) === JSON.stringify(plain(r));
    }),
    { numRuns: RUNS },
  );
  t.pass();
});

test('TcpRepr round-trips with every option combination that fits in 40 bytes', (t) => {
  const options = fc
    .record({
      mss: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 0xffff })),
      windowScale: fc.integer({ min: -1, max: 14 }),
      sackPermitted: fc.boolean(),
      hasTimestamps: fc.boolean(),
      tsVal: u32,
      tsEcr: u32,
      blocks: fc.array(fc.tuple(u32, u32), { maxLength: 4 }),
    })
    .map((o) => {
      const r = new TcpOptionsRepr({ mss: o.mss, windowScale: o.windowScale, sackPermitted: o.sackPermitted, hasTimestamps: o.hasTimestamps });
      if (o.hasTimestamps) {
        r.tsVal = o.tsVal;
        r.tsEcr = o.tsEcr;
      }
      for (const [l, rt] of o.blocks) r.addSackBlock(l, rt);
      return r;
    })
    .filter((o) => tcpOptionsLength(o) <= 40);
  const repr = fc.record({ srcPort: u16, dstPort: u16, seq: u32, ack: u32, flags: u8, window: u16, urgent: u16, options, payloadLength: fc.integer({ min: 0, max: 100 }) });
  fc.assert(
    fc.property(repr, u32, u32, (fields, s4, d4) => {
      const r = new TcpRepr(fields);
      const buf = new Uint8Array(r.headerLength + r.payloadLength);
      const v = new TcpSegment().wrap(buf);
      if (r.emit(v) !== r.headerLength || v.check() !== null) return false;
      v.fillChecksumV4(s4, d4);
      if (!v.verifyChecksumV4(s4, d4)) return false;
      const back = notError(TcpRepr.parse(v));
      const again = new Uint8Array(buf.length);
      back.emit(new TcpSegment().wrap(again));
      new TcpSegment().wrap(again).fillChecksumV4(s4, d4);
      // Blocks past sackCount are leftovers in the reused array, not data.
      const norm = (x: TcpRepr): unknown => ({ ...(plain(x) as object), options: { ...(plain(x.options) as object), sackBlocks: Array.from(x.options.sackBlocks.subarray(0, 2 * x.options.sackCount)) } });
      return JSON.stringify(norm(back)) === JSON.stringify(norm(r)) && Buffer.compare(again, buf) === 0;
    }),
    { numRuns: RUNS },
  );
  t.pass();
});

test('DhcpRepr round-trips, unknown options and their order included', (t) => {
  const opt = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T | null> => fc.option(a, { nil: null });
  const text = fc.array(u8, { minLength: 1, maxLength: 60 }).map((a) => String.fromCharCode(...a));
  const repr = fc.record({
    op: fc.constantFrom(1, 2),
    hops: u8,
    xid: u32,
    secs: u16,
    flags: u16,
    ciaddr: u32,
    yiaddr: u32,
    siaddr: u32,
    giaddr: u32,
    chaddr: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    messageType: fc.integer({ min: 1, max: 8 }),
    requestedIp: opt(u32),
    serverId: opt(u32),
    leaseTime: opt(u32),
    renewalTime: opt(u32),
    rebindingTime: opt(u32),
    subnetMask: opt(u32),
    router: opt(u32),
    dnsServers: fc.array(u32, { maxLength: 4 }),
    mtu: opt(u16),
    broadcastAddress: opt(u32),
    hostname: opt(text),
    domainName: opt(text),
    clientId: opt(fc.uint8Array({ minLength: 1, maxLength: 20 })),
    parameterRequestList: opt(fc.array(u8, { minLength: 1, maxLength: 20 })),
    maxMessageSize: opt(u16),
    otherOptions: fc.array(
      fc.record({ code: fc.constantFrom(42, 60, 81, 119, 121, 249), data: fc.uint8Array({ maxLength: 40 }) }),
      { maxLength: 3 },
    ),
  });
  fc.assert(
    fc.property(repr, (fields) => {
      const r = new DhcpRepr(fields);
      const buf = new Uint8Array(r.bufferLength + 20);
      const n = r.emit(new DhcpMessage().wrap(buf));
      if (n !== r.bufferLength) return false;
      const back = notError(DhcpRepr.parse(new DhcpMessage().wrap(buf)));
      const again = new Uint8Array(buf.length);
      back.emit(new DhcpMessage().wrap(again));
      const a = plain(back) as Record<string, unknown>;
      const b = plain(r) as Record<string, unknown>;
      delete a.optionOrder;
      delete b.optionOrder;
      return JSON.stringify(a) === JSON.stringify(b) && Buffer.compare(again, buf) === 0;
    }),
    { numRuns: RUNS },
  );
  t.pass();
});

/* ------------------------------------------------------------ 2. never throws */

/** Call every getter of a checked view; each must return a finite number, boolean or view. */
function readAll(view: WireView): void {
  let proto = Object.getPrototypeOf(view) as object | null;
  while (proto && proto !== WireView.prototype) {
    for (const [name, d] of Object.entries(Object.getOwnPropertyDescriptors(proto))) {
      if (!d.get) continue;
      const v: unknown = d.get.call(view);
      if (typeof v === 'number' && !Number.isFinite(v)) throw new Error(`${proto.constructor.name}.${name} is ${v}`);
    }
    proto = Object.getPrototypeOf(proto) as object | null;
  }
}

const v4src = 0x0a000001;
const v4dst = 0x0a000002;
const v6src = new Uint8Array(16).fill(1);
const v6dst = new Uint8Array(16).fill(2);

/** Every view and Repr on bytes [off, off+len) of buf: results, never exceptions. */
function probeAll(buf: Uint8Array, off: number, len: number): void {
  // [view, what only a checked view may do, the Repr parse (which runs check() itself)]
  const views: [WireView, (v: never) => void, (v: never) => unknown][] = [
    [new EthernetFrame(), () => {}, (v: EthernetFrame) => EthernetRepr.parse(v)],
    [new ArpPacket(), () => {}, (v: ArpPacket) => ArpRepr.parse(v)],
    [
      new Ipv4Packet(),
      (v: Ipv4Packet) => {
        v.verifyChecksum();
        const r = new Ipv4OptionReader().reset(v);
        while (r.next());
      },
      (v: Ipv4Packet) => Ipv4Repr.parse(v),
    ],
    [new Ipv6Packet(), (v: Ipv6Packet) => void v.upperLayer(), (v: Ipv6Packet) => Ipv6Repr.parse(v)],
    [new Icmpv4Packet(), (v: Icmpv4Packet) => void v.verifyChecksum(), (v: Icmpv4Packet) => Icmpv4Repr.parse(v)],
    [
      new Icmpv6Packet(),
      (v: Icmpv6Packet) => {
        v.verifyChecksum(v6src, v6dst);
        const r = new NdpOptionReader().reset(v);
        while (r.next());
      },
      (v: Icmpv6Packet) => Icmpv6Repr.parse(v),
    ],
    [
      new UdpDatagram(),
      (v: UdpDatagram) => {
        v.verifyChecksumV4(v4src, v4dst);
        v.verifyChecksumV6(v6src, v6dst);
      },
      (v: UdpDatagram) => UdpRepr.parse(v),
    ],
    [
      new TcpSegment(),
      (v: TcpSegment) => {
        v.verifyChecksumV4(v4src, v4dst);
        parseTcpOptions(v, new TcpOptionsRepr());
      },
      (v: TcpSegment) => TcpRepr.parse(v),
    ],
    [new DhcpMessage(), (v: DhcpMessage) => void v.findOption(53), (v: DhcpMessage) => DhcpRepr.parse(v)],
  ];
  for (const [view, extra, parse] of views) {
    view.wrap(buf, off, len);
    const err = view.check();
    const r = parse(view as never);
    if (err !== null) {
      if (!(err instanceof WireError)) throw new Error('check returned a non-WireError');
      if (r !== err) throw new Error(`${view.constructor.name}: parse did not return check's error`);
      continue;
    }
    readAll(view);
    extra(view as never);
    if (r === undefined) throw new Error('parse returned undefined');
  }
  // Ipv4Packet/Ipv6Packet checkHeader() is the laxer gate for quoted headers.
  const q4 = new Ipv4Packet().wrap(buf, off, len);
  if (q4.checkHeader() === null) {
    q4.verifyChecksum();
    const reader = new Ipv4OptionReader().reset(q4);
    while (reader.next());
  }
  const q6 = new Ipv6Packet().wrap(buf, off, len);
  if (q6.checkHeader() === null) q6.upperLayer();
}

test('random bytes: check() and parse() answer, never throw', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), fc.integer({ min: -4, max: 420 }), fc.integer({ min: -4, max: 420 }), (buf, off, len) => {
      probeAll(buf, off, len); // partly or wholly outside the buffer too
      probeAll(buf, 0, buf.length);
      return true;
    }),
    { numRuns: 3000 },
  );
  t.pass();
});

test('random bytes shaped like headers (right version/type nibbles) never throw', (t) => {
  const shaped = fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.constantFrom(0x45, 0x46, 0x4f, 0x60, 0x41)).map(([b, first]) => {
    b[0] = first;
    return b;
  });
  fc.assert(
    fc.property(shaped, (buf) => {
      probeAll(buf, 0, buf.length);
      // As an IPv6 packet with a plausible chain of extension headers.
      if (buf.length > 48 && buf[0] === 0x60) {
        buf[4] = 0;
        buf[5] = buf.length - 40;
        buf[6] = [0, 43, 44, 60, 51][buf[7] % 5];
        probeAll(buf, 0, buf.length);
      }
      return true;
    }),
    { numRuns: 3000 },
  );
  t.pass();
});

/** Walk a frame through every layer the way a stack would, swallowing only WireErrors. */
function dissectQuiet(frame: Uint8Array): number {
  let layers = 0;
  const eth = new EthernetFrame().wrap(frame);
  if (eth.check()) return layers;
  layers++;
  let off = eth.payloadOffset;
  let len = eth.payloadLength;
  let proto = -1;
  let v6 = false;
  if (eth.etherType === ETHERTYPE_ARP) {
    ArpRepr.parse(new ArpPacket().wrap(frame, off, len));
    return layers + 1;
  }
  if (eth.etherType === ETHERTYPE_IPV4) {
    const ip = new Ipv4Packet().wrap(frame, off, len);
    if (Ipv4Repr.parse(ip) instanceof WireError) return layers;
    readAll(ip);
    proto = ip.protocol;
    off = ip.payloadOffset;
    len = ip.payloadLength;
  } else if (eth.etherType === ETHERTYPE_IPV6) {
    const ip = new Ipv6Packet().wrap(frame, off, len);
    if (Ipv6Repr.parse(ip) instanceof WireError) return layers;
    const u = ip.upperLayer();
    if (u instanceof WireError) return layers;
    proto = u.protocol;
    off = u.offset;
    len = u.length;
    v6 = true;
  } else return layers;
  layers++;
  if (proto === IP_PROTO_ICMP) {
    const p = new Icmpv4Packet().wrap(frame, off, len);
    const r = Icmpv4Repr.parse(p);
    if (!(r instanceof WireError)) {
      // Errors quote a datagram: parse it too, as NAT does.
      const q = new Ipv4Packet().wrap(r.data);
      if (q.checkHeader() === null) readAll(q);
    }
  } else if (proto === IP_PROTO_ICMPV6) {
    const p = new Icmpv6Packet().wrap(frame, off, len);
    const r = Icmpv6Repr.parse(p);
    if (!(r instanceof WireError)) {
      const q = new Ipv6Packet().wrap(r.data);
      if (q.checkHeader() === null) q.upperLayer();
    }
  } else if (proto === IP_PROTO_UDP) {
    const u = new UdpDatagram().wrap(frame, off, len);
    if (UdpRepr.parse(u) instanceof WireError) return layers;
    if (v6) u.verifyChecksumV6(v6src, v6dst);
    else u.verifyChecksumV4(v4src, v4dst);
    DhcpRepr.parse(new DhcpMessage().wrap(frame, u.payloadOffset, u.payloadLength));
  } else if (proto === IP_PROTO_TCP) {
    const s = new TcpSegment().wrap(frame, off, len);
    if (TcpRepr.parse(s) instanceof WireError) return layers;
    readAll(s);
  }
  return layers + 1;
}

const FIXTURE_DIR = path.join(__dirname, '..', 'fixtures', 'wire');
const REAL_FRAMES: Uint8Array[] = readdirSync(FIXTURE_DIR)
  .filter((f) => f.endsWith('.pcap'))
  .flatMap((f) => readCapture(path.join(FIXTURE_DIR, f)).map((r) => r.data));

test('truncated and mutated real frames come back as WireErrors or values, never exceptions', (t) => {
  t.true(REAL_FRAMES.length > 80);
  // Unmodified, every real frame dissects through at least Ethernet and IP/ARP.
  for (const f of REAL_FRAMES) t.true(dissectQuiet(f) >= 2);
  const mutation = fc.record({
    frame: fc.nat(REAL_FRAMES.length - 1),
    cut: fc.nat(),
    edits: fc.array(fc.tuple(fc.nat(), u8), { maxLength: 8 }),
  });
  fc.assert(
    fc.property(mutation, ({ frame, cut, edits }) => {
      const original = REAL_FRAMES[frame];
      const b = original.slice(0, cut % (original.length + 1));
      for (const [at, v] of edits) if (b.length) b[at % b.length] = v;
      dissectQuiet(b);
      probeAll(b, 0, b.length);
      if (b.length > 14) probeAll(b, 14, b.length - 14);
      return true;
    }),
    { numRuns: 5000 },
  );
});
