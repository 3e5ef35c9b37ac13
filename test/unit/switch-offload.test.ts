/**
 * A switch forwarding offloaded frames to a port that cannot take them: TSO frames (IPv4, IPv6,
 * with a VLAN tag) are segmented in software — every segment checked with independent checksum
 * code, sequence numbers, flags and the reassembled payload — partial checksums are completed,
 * UFO and malformed GSO frames are dropped and counted; ports that accept the offload get the
 * very same Frame object. Copies are metered.
 */
import test from 'ava';
import fc from 'fast-check';
import { GSO_ECN, GSO_TCPV4, GSO_TCPV6, GSO_UDP, VNET_F_NEEDS_CSUM, plainFrame, type Frame } from '../../src/link/frame';
import type { FrameHandler, Port } from '../../src/link/port';
import { Switch } from '../../src/link/switch';
import { OffloadAdapter, acceptsFrame, ADAPT_AS_IS, ADAPT_ARENA_FULL, ADAPT_DONE } from '../../src/link/switch-offload';
import { Meter, type StageSnapshot } from '../../src/meter/meter';
import { NO_OFFLOADS, type NetOffloads } from '../../src/devices/virtio/net-offloads';
import { EventEmitter } from 'node:events';

/** The switch's meter stage, whatever the meter's naming scheme calls it ('switch', 'link.switch'). */
function switchStage(meter: Meter): StageSnapshot {
  const s = meter.snapshot().find((x) => x.name === 'switch' || x.name.endsWith('.switch'));
  if (!s) throw new Error(`no switch stage in ${meter.snapshot().map((x) => x.name).join(', ')}`);
  return s;
}

class Sink extends EventEmitter implements Port {
  got: Buffer[] = [];
  objects: Frame[] = [];
  handler: FrameHandler = () => {};
  constructor(
    readonly name: string,
    readonly offloads: Readonly<NetOffloads> = NO_OFFLOADS,
  ) {
    super();
  }
  send(frames: readonly Frame[]): void {
    for (const f of frames) {
      this.got.push(Buffer.from(f.data));
      this.objects.push(f);
    }
  }
  onReceive(h: FrameHandler): void {
    this.handler = h;
  }
  async close(): Promise<void> {}
}

const TSO: Readonly<NetOffloads> = { ...NO_OFFLOADS, guestCsum: true, guestTso4: true, guestTso6: true, guestEcn: true, hostCsum: true, hostTso4: true, hostTso6: true };
const CSUM_ONLY: Readonly<NetOffloads> = { ...NO_OFFLOADS, guestCsum: true };

/** RFC 1071 sum, written independently of src/wire. */
function sum(buf: Uint8Array, off: number, len: number, acc = 0): number {
  for (let i = 0; i < len; i += 2) acc += (buf[off + i] << 8) | (i + 1 < len ? buf[off + i + 1] : 0);
  while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
  return acc;
}

interface TcpSpec {
  v6?: boolean;
  vlan?: boolean;
  payload: Uint8Array;
  mss: number;
  flags?: number;
  seq?: number;
  ecn?: boolean;
  options?: number[];
}

/** A GSO super-frame with a partial TCP checksum, as a virtio guest or the kernel hands it over. */
function tsoFrame(s: TcpSpec): Frame {
  const l2 = s.vlan ? 18 : 14;
  const l3len = s.v6 ? 40 : 20;
  const opts = s.options ?? [];
  const thl = 20 + opts.length;
  const l4 = l2 + l3len;
  const b = new Uint8Array(l4 + thl + s.payload.length);
  b.set([0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1], 0);
  if (s.vlan) b.set([0x81, 0x00, 0x00, 0x07], 12);
  const et = s.v6 ? 0x86dd : 0x0800;
  b[l2 - 2] = et >> 8;
  b[l2 - 1] = et & 0xff;
  const l4len = thl + s.payload.length;
  let pseudo: number;
  if (!s.v6) {
    b[l2] = 0x45;
    const total = 20 + l4len;
    b[l2 + 2] = total >> 8;
    b[l2 + 3] = total & 0xff;
    b[l2 + 4] = 0x12;
    b[l2 + 5] = 0x34;
    b[l2 + 6] = 0x40;
    b[l2 + 8] = 64;
    b[l2 + 9] = 6;
    b.set([10, 0, 3, 15], l2 + 12);
    b.set([10, 0, 3, 1], l2 + 16);
    const c = ~sum(b, l2, 20) & 0xffff;
    b[l2 + 10] = c >> 8;
    b[l2 + 11] = c & 0xff;
    pseudo = sum(b, l2 + 12, 8, 6 + l4len);
  } else {
    b[l2] = 0x60;
    b[l2 + 4] = l4len >> 8;
    b[l2 + 5] = l4len & 0xff;
    b[l2 + 6] = 6;
    b[l2 + 7] = 64;
    b.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0f], l2 + 8);
    b.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01], l2 + 24);
    pseudo = sum(b, l2 + 8, 32, 6 + l4len);
  }
  const seq = s.seq ?? 0xfffff000; // wraps within the frame
  b[l4] = 0x9c;
  b[l4 + 1] = 0x40;
  b[l4 + 2] = 0x14;
  b[l4 + 3] = 0x51;
  b[l4 + 4] = seq >>> 24;
  b[l4 + 5] = (seq >>> 16) & 0xff;
  b[l4 + 6] = (seq >>> 8) & 0xff;
  b[l4 + 7] = seq & 0xff;
  b[l4 + 11] = 1;
  b[l4 + 12] = (thl / 4) << 4;
  b[l4 + 13] = s.flags ?? 0x18;
  b[l4 + 14] = 0xff;
  b[l4 + 15] = 0xff;
  b.set(opts, l4 + 20);
  b[l4 + 16] = pseudo >> 8; // partial: the pseudo-header sum only (virtio NEEDS_CSUM)
  b[l4 + 17] = pseudo & 0xff;
  b.set(s.payload, l4 + thl);
  const f = plainFrame(b);
  f.flags = VNET_F_NEEDS_CSUM;
  f.gsoType = (s.v6 ? GSO_TCPV6 : GSO_TCPV4) | (s.ecn ? GSO_ECN : 0);
  f.gsoSize = s.mss;
  f.hdrLen = l4 + thl;
  f.csumStart = l4;
  f.csumOffset = 16;
  return f;
}

interface Seg {
  seq: number;
  flags: number;
  payload: Buffer;
}

/** Check one segment's headers and checksums independently; return its TCP facts. */
function checkSegment(t: { is: (a: unknown, b: unknown, m?: string) => void; true: (v: boolean, m?: string) => void }, b: Buffer, v6: boolean, vlan: boolean, mtuPayload: number): Seg {
  const l2 = vlan ? 18 : 14;
  const l4 = l2 + (v6 ? 40 : 20);
  const thl = (b[l4 + 12] >> 4) * 4;
  const l4len = b.length - l4;
  let pseudo: number;
  if (!v6) {
    t.is(b.readUInt16BE(l2 + 2), b.length - l2, 'IPv4 total length');
    t.is(~sum(b, l2, 20) & 0xffff, 0, 'IPv4 header checksum');
    pseudo = sum(b, l2 + 12, 8, 6 + l4len);
  } else {
    t.is(b.readUInt16BE(l2 + 4), l4len, 'IPv6 payload length');
    pseudo = sum(b, l2 + 8, 32, 6 + l4len);
  }
  t.is(~sum(b, l4, l4len, pseudo) & 0xffff, 0, 'TCP checksum');
  t.true(l4len - thl <= mtuPayload, 'segment payload within gso_size');
  return { seq: b.readUInt32BE(l4 + 4), flags: b[l4 + 13], payload: b.subarray(l4 + thl) };
}

function through(frame: Frame, accepts: Readonly<NetOffloads>) {
  const meter = new Meter();
  const sw = new Switch({ sweepIntervalMs: 0, meter });
  const from = new Sink('guest', TSO);
  const to = new Sink('plain', accepts);
  const tsoPeer = new Sink('tso-peer', TSO);
  sw.attach(from);
  const mt = sw.attach(to);
  sw.attach(tsoPeer);
  from.handler([frame]);
  void sw.close();
  return { to, tsoPeer, meter, mt };
}

for (const v6 of [false, true]) {
  for (const vlan of [false, true]) {
    test(`TSO over ${v6 ? 'IPv6' : 'IPv4'}${vlan ? ' with a VLAN tag' : ''} to a port without TSO is segmented correctly; a TSO port gets the frame itself`, (t) => {
      const payload = new Uint8Array(10_000).map((_, i) => (i * 7 + 3) & 0xff);
      const f = tsoFrame({ v6, vlan, payload, mss: 1448, flags: 0x18 | 0x01 | 0x80, options: [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2] });
      const { to, tsoPeer, meter } = through(f, NO_OFFLOADS);
      t.is(tsoPeer.objects.length, 1);
      t.is(tsoPeer.objects[0], f, 'the same Frame object, not a copy');
      t.is(to.got.length, Math.ceil(10_000 / 1448));
      const segs = to.got.map((b) => checkSegment(t, b, v6, vlan, 1448));
      t.true(Buffer.concat(segs.map((s) => s.payload)).equals(Buffer.from(payload)), 'payload reassembles');
      for (let k = 0; k < segs.length; k++) {
        t.is(segs[k].seq, (0xfffff000 + k * 1448) >>> 0);
        const last = k === segs.length - 1;
        t.is((segs[k].flags & 0x09) !== 0, last, 'FIN/PSH only on the last segment');
        t.is((segs[k].flags & 0x80) !== 0, k === 0, 'CWR only on the first');
        t.is(segs[k].flags & 0x10, 0x10, 'ACK on all');
      }
      for (const o of to.objects) t.is(o.gsoType, 0);
      if (!v6) {
        const ids = to.got.map((b) => b.readUInt16BE((vlan ? 18 : 14) + 4));
        t.deepEqual(ids, ids.map((_, k) => 0x1234 + k));
      }
      const s = switchStage(meter);
      t.is(s.bytesCopied, to.got.reduce((n, b) => n + b.length, 0), 'every byte copied is metered');
    });
  }
}

test('a partial checksum to a port without GUEST_CSUM is completed in a copy; a port with it gets the original', (t) => {
  // UDP/IPv4 with NEEDS_CSUM
  const payload = Buffer.from('a datagram whose checksum the sender left to the NIC');
  const b = new Uint8Array(14 + 20 + 8 + payload.length);
  b.set([0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x00], 0);
  b[14] = 0x45;
  b[14 + 9] = 17;
  b.set([10, 0, 3, 15, 10, 0, 3, 1], 26);
  const ulen = 8 + payload.length;
  b[16] = (20 + ulen) >> 8;
  b[17] = (20 + ulen) & 0xff;
  b[34] = 0x30;
  b[35] = 0x39;
  b[36] = 0x00;
  b[37] = 0x35;
  b[38] = ulen >> 8;
  b[39] = ulen & 0xff;
  const pseudo = sum(b, 26, 8, 17 + ulen);
  b[40] = pseudo >> 8;
  b[41] = pseudo & 0xff;
  b.set(payload, 42);
  const original = Buffer.from(b);
  const f = plainFrame(b);
  f.flags = VNET_F_NEEDS_CSUM;
  f.csumStart = 34;
  f.csumOffset = 6;
  const { to, meter } = through(f, NO_OFFLOADS);
  t.is(to.got.length, 1);
  t.is(~sum(to.got[0], 34, ulen, sum(to.got[0], 26, 8, 17 + ulen)) & 0xffff, 0, 'UDP checksum complete');
  t.is(to.objects[0].flags, 0);
  t.true(Buffer.from(f.data).equals(original), 'the borrowed frame is untouched');
  t.is(switchStage(meter).copies, 1);
  const csumPort = through(f, CSUM_ONLY);
  t.is(csumPort.to.objects[0], f);
});

test('UFO and malformed GSO frames to a port without the offload are dropped and counted', (t) => {
  const f = tsoFrame({ payload: new Uint8Array(3000), mss: 1448 });
  f.gsoType = GSO_UDP;
  const r = through(f, NO_OFFLOADS);
  t.is(r.to.got.length, 0);
  t.deepEqual(r.mt.stats().drops, { 'ufo-unsupported': 1 });
  const bad = tsoFrame({ payload: new Uint8Array(3000), mss: 1448 });
  bad.data[23] = 17; // IPv4 protocol is not TCP
  const r2 = through(bad, NO_OFFLOADS);
  t.deepEqual(r2.mt.stats().drops, { 'gso-malformed': 1 });
  const zeroMss = tsoFrame({ payload: new Uint8Array(3000), mss: 0 });
  t.deepEqual(through(zeroMss, NO_OFFLOADS).mt.stats().drops, { 'gso-malformed': 1 });
});

test('ECN GSO frames need GUEST_ECN; a TSO port without it gets segments', (t) => {
  const f = tsoFrame({ payload: new Uint8Array(4000), mss: 1000, ecn: true });
  t.false(acceptsFrame(f, { ...TSO, guestEcn: false }));
  t.true(acceptsFrame(f, TSO));
  const r = through(f, { ...TSO, guestEcn: false });
  t.is(r.to.got.length, 4);
});

test('the adapter says when its arena is full, and the switch sends what it has and goes on', (t) => {
  const meter = new Meter();
  const adapter = new OffloadAdapter(meter.stage('x'), 20_000);
  const f = tsoFrame({ payload: new Uint8Array(15_000), mss: 1448 });
  const out: Frame[] = [];
  t.is(adapter.adapt(f, NO_OFFLOADS, out), ADAPT_DONE);
  t.is(adapter.adapt(f, NO_OFFLOADS, out), ADAPT_ARENA_FULL);
  adapter.reset();
  t.is(adapter.adapt(f, TSO, out), ADAPT_AS_IS);
  // through a switch: many super-frames in one batch to a plain port, all arrive segmented
  const sw = new Switch({ sweepIntervalMs: 0, meter });
  const from = new Sink('guest', TSO);
  const to = new Sink('plain');
  sw.attach(from);
  sw.attach(to);
  const batch = Array.from({ length: 40 }, (_, i) => tsoFrame({ payload: new Uint8Array(60_000).fill(i), mss: 1448, seq: i * 60_000 }));
  from.handler(batch);
  t.is(to.got.length, 40 * Math.ceil(60_000 / 1448));
  void sw.close();
});

// gso_size below TCP_MIN_MSS (88, as Linux enforces) is guest garbage the adapter may drop when its segment arena fills.
test('property: any payload size and MSS segments into valid segments that reassemble', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 20_000 }), fc.integer({ min: 88, max: 9000 }), fc.boolean(), (n, mss, v6) => {
      const payload = new Uint8Array(n).map((_, i) => i & 0xff);
      const { to } = through(tsoFrame({ payload, mss, v6, seq: 5 }), NO_OFFLOADS);
      const checks: string[] = [];
      const tt = { is: (a: unknown, b: unknown, m?: string) => void (a !== b && checks.push(m ?? '')), true: (v: boolean, m?: string) => void (!v && checks.push(m ?? '')) };
      const segs = to.got.map((b) => checkSegment(tt, b, v6, false, mss));
      return checks.length === 0 && segs.length === Math.max(1, Math.ceil(n / mss)) && Buffer.concat(segs.map((s) => s.payload)).equals(Buffer.from(payload));
    }),
    { numRuns: 200 },
  );
  t.pass();
});
