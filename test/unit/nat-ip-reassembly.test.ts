import test from 'ava';
import { Meter } from '../../src/meter/meter';
import { Ipv4Reassembly } from '../../src/backends/nat/ip-reassembly';
import { internetChecksum } from '../../src/wire/checksum';
import { Ipv4Packet } from '../../src/wire/ipv4';

const ETH = 14;

/** A datagram's payload cut into fragments of `size` bytes (multiples of 8), as Ethernet frames. */
function fragments(payload: Uint8Array, size: number, id = 0x1234): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let off = 0; off < payload.length; off += size) {
    const part = payload.subarray(off, Math.min(payload.length, off + size));
    out.push(fragment(part, off, off + size < payload.length, id));
  }
  return out;
}

function fragment(part: Uint8Array, offset: number, more: boolean, id = 0x1234, src = [10, 0, 2, 15]): Uint8Array {
  const f = new Uint8Array(ETH + 20 + part.length);
  f[12] = 0x08;
  const ip = ETH;
  f[ip] = 0x45;
  const total = 20 + part.length;
  f[ip + 2] = total >> 8;
  f[ip + 3] = total & 0xff;
  f[ip + 4] = id >> 8;
  f[ip + 5] = id & 0xff;
  const fo = (offset >> 3) | (more ? 0x2000 : 0);
  f[ip + 6] = fo >> 8;
  f[ip + 7] = fo & 0xff;
  f[ip + 8] = 64;
  f[ip + 9] = 17;
  f.set(src, ip + 12);
  f.set([10, 0, 2, 2], ip + 16);
  const c = internetChecksum(f, ip, 20);
  f[ip + 10] = c >> 8;
  f[ip + 11] = c & 0xff;
  f.set(part, ip + 20);
  return f;
}

function rig(opts: { now?: () => number; maxDatagrams?: number } = {}) {
  const meter = new Meter();
  const stage = meter.stage('nat.ip.reassembly');
  const expired: Uint8Array[] = [];
  const r = new Ipv4Reassembly(stage, (q) => expired.push(q), { now: opts.now, maxDatagrams: opts.maxDatagrams });
  const view = new Ipv4Packet();
  const add = (f: Uint8Array) => r.add(f, ETH, view.wrap(f, ETH, f.length - ETH));
  return { r, stage, expired, add };
}

const payload = Uint8Array.from({ length: 4000 }, (_, i) => (i * 13) & 0xff);

test('in order and out of order, the datagram comes back whole with a valid header', (t) => {
  for (const order of [[0, 1, 2], [2, 0, 1], [1, 2, 0]]) {
    const { r, add, stage } = rig();
    const frags = fragments(payload, 1480);
    const results = order.map((i) => add(frags[i]));
    t.deepEqual(results.slice(0, 2), [null, null]);
    const whole = results[2]!;
    t.truthy(whole);
    const ip = new Ipv4Packet().wrap(whole, ETH, whole.length - ETH);
    t.is(ip.totalLength, 4020);
    t.false(ip.moreFragments);
    t.is(ip.fragmentOffset, 0);
    t.true(ip.verifyChecksum());
    t.deepEqual(whole.subarray(ETH + 20), payload);
    t.is(r.pending, 0);
    t.is(stage.snapshot().frames, 1);
  }
});

test('an exact duplicate is ignored; an overlap discards the datagram', (t) => {
  const { add, stage, r } = rig();
  const frags = fragments(payload, 1480);
  t.is(add(frags[0]), null);
  t.is(add(frags[0]), null);
  t.is(stage.snapshot().dropReasons['fragment-duplicate'], 1);
  // 8 bytes into the first fragment's data: an overlap (the teardrop shape)
  t.is(add(fragment(payload.subarray(8, 1488), 8, true)), null);
  t.is(stage.snapshot().dropReasons['fragment-overlap'], 1);
  t.is(r.pending, 0);
  t.is(add(frags[1]), null);
  t.is(add(frags[2]), null, 'fragment 0 went with the discarded datagram');
});

test('beyond 65535 bytes, a bad middle length or a second end is refused', (t) => {
  const { add, stage } = rig();
  t.is(add(fragment(new Uint8Array(1480), 65528, false)), null);
  t.is(stage.snapshot().dropReasons['fragment-too-big'], 1);
  t.is(add(fragment(new Uint8Array(100), 0, true, 7)), null);
  t.is(stage.snapshot().dropReasons['fragment-bad-length'], 1);
  t.is(add(fragment(new Uint8Array(800), 1600, false, 9)), null);
  t.is(add(fragment(new Uint8Array(800), 2400, false, 9)), null);
  t.is(stage.snapshot().dropReasons['fragment-inconsistent-end'], 1);
});

test('a datagram not complete in time is dropped, with Time Exceeded quoting fragment 0', (t) => {
  let now = 1_000_000;
  const { add, expired, stage, r } = rig({ now: () => now });
  const frags = fragments(payload, 1480);
  add(frags[0]);
  add(fragments(payload, 1480, 0x9999)[1]); // another datagram, without its fragment 0
  now += 31_000;
  add(fragments(payload, 1480, 0x4444)[0]); // any later fragment runs the expiry
  t.is(stage.snapshot().dropReasons['fragment-timeout'], 2);
  t.is(expired.length, 1, 'only the datagram whose first fragment arrived is reported');
  t.is(expired[0].length, 28);
  t.deepEqual(expired[0].subarray(0, 20), frags[0].subarray(ETH, ETH + 20));
  t.deepEqual(expired[0].subarray(20), payload.subarray(0, 8));
  t.is(r.pending, 1);
  r.close();
});

test('at most maxDatagrams are in progress: the oldest is evicted', (t) => {
  const { add, stage, r } = rig({ maxDatagrams: 2 });
  for (const id of [1, 2, 3]) add(fragments(payload, 1480, id)[0]);
  t.is(r.pending, 2);
  t.is(stage.snapshot().dropReasons['fragment-evicted'], 1);
  const frags = fragments(payload, 1480, 3);
  t.is(add(frags[1]), null);
  t.truthy(add(frags[2]));
  r.close();
});

test('a datagram in more than 64 fragments is discarded (no quadratic overlap check on a flood)', (t) => {
  const { add, stage, r } = rig();
  const tiny = fragments(payload.subarray(0, 8 * 70), 8, 0x7777);
  for (let i = 0; i < 64; i++) t.is(add(tiny[i]), null);
  t.is(r.pending, 1);
  t.is(add(tiny[64]), null);
  t.is(stage.snapshot().dropReasons['fragment-too-many'], 1);
  t.is(r.pending, 0);
});

test('a buffer that grows past the byte bound evicts older datagrams', (t) => {
  const meter = new Meter();
  const stage = meter.stage('nat.ip.reassembly');
  const r = new Ipv4Reassembly(stage, () => {}, { maxBytes: 8192 });
  const view = new Ipv4Packet();
  const add = (f: Uint8Array) => r.add(f, ETH, view.wrap(f, ETH, f.length - ETH));
  add(fragments(payload, 1480, 1)[0]);
  add(fragments(payload, 1480, 2)[0]);
  t.is(r.pending, 2);
  // datagram 2's buffer grows to hold data at offset 6000: datagram 1 (oldest) makes room
  add(fragment(new Uint8Array(800), 6000, true, 2));
  t.is(r.pending, 1);
  t.is(stage.snapshot().dropReasons['fragment-evicted'], 1);
  r.close();
});
