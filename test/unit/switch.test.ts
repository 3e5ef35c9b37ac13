/**
 * The learning switch with fake ports and a fake clock: learning and unicast forwarding,
 * flooding of broadcast / multicast / unknown unicast, never back out of the ingress port,
 * ageing, the bounded table, station moves, detach, borrowed views (the same Frame object to
 * every flooded port, nothing kept after the call), nested sends, counters, and a property test
 * over random traffic.
 */
import test from 'ava';
import fc from 'fast-check';
import { EventEmitter } from 'node:events';
import { plainFrame, type Frame } from '../../src/link/frame';
import type { FrameHandler, Port } from '../../src/link/port';
import { Switch, ALL_OFFLOADS } from '../../src/link/switch';
import { MacTable, formatMac, macKey, parseMacKey, LEARN_NEW, LEARN_REFRESHED, LEARN_MOVED, LEARN_REFUSED } from '../../src/link/mac-table';
import { Meter, type StageSnapshot } from '../../src/meter/meter';
import { NO_OFFLOADS, type NetOffloads } from '../../src/devices/virtio/net-offloads';

/** The switch's meter stage, whatever the meter's naming scheme calls it ('switch', 'link.switch'). */
function switchStage(meter: Meter): StageSnapshot {
  const s = meter.snapshot().find((x) => x.name === 'switch' || x.name.endsWith('.switch'));
  if (!s) throw new Error(`no switch stage in ${meter.snapshot().map((x) => x.name).join(', ')}`);
  return s;
}

/** A port that records every batch it is sent (as the Frame objects and a copy of the bytes). */
class FakePort extends EventEmitter implements Port {
  handler: FrameHandler = () => {};
  batches: Frame[][] = [];
  copies: Buffer[] = [];
  closed = false;
  /** Called inside send (to test nested sends). */
  onSend: ((frames: readonly Frame[]) => void) | null = null;
  constructor(readonly name: string) {
    super();
  }
  send(frames: readonly Frame[]): void {
    this.batches.push([...frames]);
    for (const f of frames) this.copies.push(Buffer.from(f.data));
    this.onSend?.(frames);
  }
  onReceive(h: FrameHandler): void {
    this.handler = h;
  }
  emitFrames(frames: Frame[]): void {
    this.handler(frames);
  }
  async close(): Promise<void> {
    this.closed = true;
  }
  get received(): number {
    return this.copies.length;
  }
  reset(): void {
    this.batches = [];
    this.copies = [];
  }
}

class OffloadPort extends FakePort {
  constructor(
    name: string,
    public offloads: Readonly<NetOffloads>,
  ) {
    super(name);
  }
  renegotiate(o: Readonly<NetOffloads>): void {
    this.offloads = o;
    this.emit('offloads', o);
  }
}

const mac = (n: number): number[] => [0x52, 0x54, 0x00, 0x00, 0x00, n];
const BCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

function eth(dst: number[], src: number[], payload = 46, type = 0x0800): Frame {
  const b = new Uint8Array(14 + payload);
  b.set(dst, 0);
  b.set(src, 6);
  b[12] = type >> 8;
  b[13] = type & 0xff;
  for (let i = 14; i < b.length; i++) b[i] = i & 0xff;
  return plainFrame(b);
}

function rig(opts: { ageingMs?: number; maxMacs?: number } = {}) {
  let now = 1000;
  const meter = new Meter();
  const sw = new Switch({ ...opts, clock: () => now, meter, sweepIntervalMs: 0 });
  const a = new FakePort('a');
  const b = new FakePort('b');
  const c = new FakePort('c');
  const ma = sw.attach(a);
  const mb = sw.attach(b);
  const mc = sw.attach(c);
  return {
    sw,
    a,
    b,
    c,
    ma,
    mb,
    mc,
    meter,
    advance: (ms: number) => (now += ms),
    reset: () => [a, b, c].forEach((p) => p.reset()),
  };
}

test('mac keys round-trip and the table learns, refreshes, moves, refuses when full', (t) => {
  const k = parseMacKey('52:54:00:12:34:56');
  t.is(formatMac(k), '52:54:00:12:34:56');
  t.is(macKey(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), 0), 2 ** 48 - 1);
  t.throws(() => parseMacKey('52:54:00:12:34'), { instanceOf: RangeError });
  const tbl = new MacTable({ ageingMs: 100, maxEntries: 2 });
  t.is(tbl.learn(1, 0, 0), LEARN_NEW);
  t.is(tbl.learn(1, 0, 10), LEARN_REFRESHED);
  t.is(tbl.learn(1, 1, 20), LEARN_MOVED);
  t.is(tbl.moves, 1);
  t.is(tbl.learn(2, 0, 20), LEARN_NEW);
  t.is(tbl.learn(3, 0, 30), LEARN_REFUSED);
  t.is(tbl.refused, 1);
  t.is(tbl.lookup(3, 30), -1);
  // both entries age out; learning sweeps them first
  t.is(tbl.learn(3, 2, 200), LEARN_NEW);
  t.is(tbl.lookup(3, 200), 2);
  t.is(tbl.lookup(3, 301), -1, 'aged out at lookup');
  t.is(tbl.size, 0);
});

test('a full table is swept at most once per interval, not per frame, under a flood of new source addresses', (t) => {
  class Counting extends MacTable {
    sweeps = 0;
    override sweep(now: number): number {
      this.sweeps++;
      return super.sweep(now);
    }
  }
  const tbl = new Counting({ ageingMs: 300_000, maxEntries: 16 });
  for (let k = 0; k < 16; k++) tbl.learn(k, 0, 0);
  for (let k = 100; k < 10_100; k++) tbl.learn(k, 1, 10 + Math.floor((k - 100) / 20)); // 10 000 new addresses within 0.5 s
  t.is(tbl.sweeps, 1);
  t.is(tbl.refused, 10_000);
  tbl.learn(99_999, 1, 2000); // a second later: swept again
  t.is(tbl.sweeps, 2);
});

test('unknown unicast floods (not back to the sender); the answer is learned and forwarded to one port', (t) => {
  const r = rig();
  r.a.emitFrames([eth(mac(2), mac(1))]);
  t.is(r.a.received, 0, 'never back out of the ingress port');
  t.is(r.b.received, 1);
  t.is(r.c.received, 1);
  r.reset();
  r.b.emitFrames([eth(mac(1), mac(2))]);
  t.is(r.a.received, 1, 'A was learned');
  t.is(r.c.received, 0);
  r.reset();
  r.a.emitFrames([eth(mac(2), mac(1))]);
  t.is(r.b.received, 1, 'B was learned');
  t.is(r.c.received, 0);
  t.is(r.ma.stats().flooded, 1);
  t.deepEqual(
    r.sw.macTable().map((e) => [e.mac, e.portName]).sort(),
    [
      ['52:54:00:00:00:01', 'a'],
      ['52:54:00:00:00:02', 'b'],
    ],
  );
});

test('broadcast and multicast flood to every other port; link-local control frames are not forwarded', (t) => {
  const r = rig();
  r.b.emitFrames([eth(BCAST, mac(2)), eth([0x01, 0x00, 0x5e, 0, 0, 1], mac(2)), eth([0x33, 0x33, 0, 0, 0, 1], mac(2), 46, 0x86dd)]);
  t.is(r.a.received, 3);
  t.is(r.c.received, 3);
  t.is(r.b.received, 0);
  r.reset();
  r.b.emitFrames([eth([0x01, 0x80, 0xc2, 0, 0, 0], mac(2)), eth([0x01, 0x80, 0xc2, 0, 0, 0x0e], mac(2))]);
  t.is(r.a.received + r.c.received, 0);
  t.is(r.mb.stats().drops['link-local'], 2);
});

test('a frame for a station behind its own ingress port is filtered, never reflected', (t) => {
  const r = rig();
  r.a.emitFrames([eth(BCAST, mac(1)), eth(BCAST, mac(9))]); // 1 and 9 both behind port a (a bridge behind it)
  r.reset();
  r.a.emitFrames([eth(mac(9), mac(1))]);
  t.is(r.a.received + r.b.received + r.c.received, 0);
  t.is(r.ma.stats().drops['same-port'], 1);
});

test('runts and group or zero source addresses are dropped and counted per port', (t) => {
  const r = rig();
  r.c.emitFrames([plainFrame(new Uint8Array(10)), eth(mac(1), [0x01, 0, 0, 0, 0, 1]), eth(mac(1), [0, 0, 0, 0, 0, 0])]);
  t.is(r.a.received + r.b.received, 0);
  t.deepEqual(r.mc.stats().drops, { runt: 1, 'bad-source': 2 });
  t.is(switchStage(r.meter).drops, 3);
  t.is(r.sw.macs.size, 0, 'nothing learned from bad sources');
});

test('ageing: a station not heard from for the ageing time is unknown again (fake clock)', (t) => {
  const r = rig({ ageingMs: 5000 });
  r.b.emitFrames([eth(BCAST, mac(2))]);
  r.reset();
  r.advance(4999);
  r.a.emitFrames([eth(mac(2), mac(1))]);
  t.is(r.b.received, 1);
  t.is(r.c.received, 0, 'still known at 4999 ms');
  r.reset();
  r.advance(5001);
  r.a.emitFrames([eth(mac(2), mac(1))]);
  t.is(r.b.received, 1);
  t.is(r.c.received, 1, 'aged out: flooded');
  // sweep removes entries nobody looks up
  r.advance(6000);
  t.is(r.sw.macs.sweep(r.advance(0)), 1);
  t.is(r.sw.macs.size, 0);
});

test('default ageing is 300 s', (t) => {
  const sw = new Switch({ sweepIntervalMs: 0 });
  t.is(sw.macs.ageingMs, 300_000);
  void sw.close();
});

test('the table is bounded: addresses beyond it are not learned and their frames flood', (t) => {
  const r = rig({ maxMacs: 4 });
  const frames: Frame[] = [];
  for (let i = 10; i < 20; i++) frames.push(eth(BCAST, mac(i)));
  r.a.emitFrames(frames);
  t.is(r.sw.macs.size, 4);
  t.is(r.sw.macs.refused, 6);
  r.reset();
  r.b.emitFrames([eth(mac(10), mac(2))]); // learned (first four): a only
  t.is(r.a.received, 1);
  t.is(r.c.received, 0);
  r.reset();
  r.b.emitFrames([eth(mac(19), mac(2))]); // not learned: flood
  t.is(r.a.received, 1);
  t.is(r.c.received, 1);
});

test('a station that moves is followed; detaching a port forgets its stations', (t) => {
  const r = rig();
  r.a.emitFrames([eth(BCAST, mac(5))]);
  r.b.emitFrames([eth(BCAST, mac(5))]); // 5 moved to b
  r.reset();
  r.c.emitFrames([eth(mac(5), mac(3))]);
  t.is(r.b.received, 1);
  t.is(r.a.received, 0);
  t.is(r.sw.macs.moves, 1);
  r.mb.detach();
  r.reset();
  r.c.emitFrames([eth(mac(5), mac(3))]);
  t.is(r.a.received, 1, 'unknown again: flooded to the remaining ports');
  t.is(r.b.received, 0);
  r.b.emitFrames([eth(BCAST, mac(2))]);
  t.is(r.a.received, 1, 'a detached port no longer feeds the switch');
});

test('frames are borrowed: a flood sends the same Frame object to every port within the call, and nothing is kept', (t) => {
  const r = rig();
  const f = eth(BCAST, mac(1));
  let seenDuring = 0;
  r.b.onSend = (frames) => {
    if (frames[0] === f) seenDuring++;
  };
  r.c.onSend = (frames) => {
    if (frames[0] === f) seenDuring++;
  };
  r.a.emitFrames([f]);
  t.is(seenDuring, 2);
  t.is(r.b.batches[0][0], f);
  t.is(r.c.batches[0][0], f);
  t.is(switchStage(r.meter).copies, 0, 'no copy');
  // one batch per port per incoming batch
  r.reset();
  r.a.emitFrames([eth(BCAST, mac(1)), eth(BCAST, mac(1)), eth(BCAST, mac(1))]);
  t.is(r.b.batches.length, 1);
  t.is(r.b.batches[0].length, 3);
  // the switch's batch arrays are empty after the call (no borrowed frame stays reachable)
  for (const m of [r.ma, r.mb, r.mc]) for (const out of m.out) t.is(out.length, 0);
});

test('a port that answers from inside its send (nested dispatch) does not disturb the outer batch', (t) => {
  const r = rig();
  // b answers every frame it gets with a broadcast of its own, synchronously
  let depth = 0;
  r.b.onSend = () => {
    if (depth++ > 0) return;
    r.b.emitFrames([eth(BCAST, mac(2), 46), eth(mac(1), mac(2), 46)]);
    depth = 0;
  };
  const first = eth(BCAST, mac(1));
  const second = eth(BCAST, mac(1));
  r.a.emitFrames([first, second]);
  t.is(r.c.batches.length, 2);
  // c got the nested broadcast first (b sent it from inside its own send), then a's two frames
  const outer = r.c.batches.find((bt) => bt.includes(first));
  t.truthy(outer);
  t.deepEqual(outer, [first, second]);
  t.is(r.a.received, 2, 'a got the nested broadcast and the unicast answer');
});

test('counters per port: frames and bytes in and out', (t) => {
  const r = rig();
  r.a.emitFrames([eth(BCAST, mac(1), 100)]);
  r.b.emitFrames([eth(mac(1), mac(2), 200)]);
  const s = Object.fromEntries(r.sw.stats().map((p) => [p.name, p]));
  t.like(s.a, { inFrames: 1, inBytes: 114, outFrames: 1, outBytes: 214, flooded: 1 });
  t.like(s.b, { inFrames: 1, inBytes: 214, outFrames: 1, outBytes: 114, flooded: 0 });
  t.like(s.c, { inFrames: 0, outFrames: 1, outBytes: 114 });
});

test('offloads towards the uplink are what every member accepts; the uplink accepts everything', (t) => {
  const sw = new Switch({ sweepIntervalMs: 0 });
  const seen: NetOffloads[] = [];
  sw.on('offloads', (o: NetOffloads) => seen.push(o));
  const tso = { ...NO_OFFLOADS, guestCsum: true, guestTso4: true, guestTso6: true, guestEcn: true };
  const g1 = new OffloadPort('g1', tso);
  const g2 = new OffloadPort('g2', tso);
  const up = new FakePort('uplink');
  sw.setUplink(up);
  t.is(sw.uplink?.port, up);
  t.deepEqual(sw.uplink?.accepts, ALL_OFFLOADS);
  sw.attach(g1);
  t.true(sw.offloads.guestTso4);
  sw.attach(g2);
  t.true(sw.offloads.guestTso4);
  g2.renegotiate({ ...tso, guestTso4: false });
  t.false(sw.offloads.guestTso4);
  t.true(sw.offloads.guestCsum);
  const plain = new FakePort('rtl8139');
  const mp = sw.attach(plain);
  t.false(sw.offloads.guestCsum, 'a plain port accepts no offloads');
  mp.detach();
  t.true(sw.offloads.guestCsum);
  t.true(seen.length >= 3);
  t.throws(() => sw.attach(g1), { code: 'EEXIST' } as never);
  void sw.close();
});

test('close detaches and closes every port; a closed switch forwards nothing', async (t) => {
  const r = rig();
  await r.sw.close();
  t.true(r.a.closed && r.b.closed && r.c.closed);
  r.a.emitFrames([eth(BCAST, mac(1))]);
  t.is(r.b.received, 0);
  t.throws(() => r.sw.attach(new FakePort('late')), { code: 'ERR_SWITCH_CLOSED' } as never);
});

test('property: random traffic never throws, never reflects, and delivers each frame at most once per port', (t) => {
  const arbFrame = fc.record({
    from: fc.integer({ min: 0, max: 3 }),
    dst: fc.oneof(fc.integer({ min: 1, max: 8 }).map(mac), fc.constant(BCAST), fc.uint8Array({ minLength: 6, maxLength: 6 }).map((u) => [...u])),
    src: fc.oneof(fc.integer({ min: 1, max: 8 }).map(mac), fc.uint8Array({ minLength: 6, maxLength: 6 }).map((u) => [...u])),
    len: fc.oneof(fc.constant(60), fc.integer({ min: 0, max: 80 })),
    tick: fc.integer({ min: 0, max: 200 }),
  });
  fc.assert(
    fc.property(fc.array(fc.array(arbFrame, { minLength: 1, maxLength: 8 }), { maxLength: 30 }), (batches) => {
      let now = 0;
      const sw = new Switch({ clock: () => now, ageingMs: 500, maxMacs: 5, sweepIntervalMs: 0, meter: new Meter() });
      const ports = [0, 1, 2, 3].map((i) => new FakePort(`p${i}`));
      ports.forEach((p) => sw.attach(p));
      for (const batch of batches) {
        for (const p of ports) p.reset();
        const from = batch[0].from;
        const frames = batch.map((x) => {
          now += x.tick;
          const b = new Uint8Array(x.len);
          b.set(x.dst.slice(0, Math.min(6, x.len)), 0);
          if (x.len > 6) b.set(x.src.slice(0, Math.min(6, x.len - 6)), 6);
          return plainFrame(b);
        });
        ports[from].emitFrames(frames);
        if (ports[from].received !== 0) return false;
        for (const p of ports) {
          const objs = p.batches.flat();
          if (new Set(objs).size !== objs.length) return false;
          if (p.batches.length > 1) return false;
        }
      }
      void sw.close();
      return true;
    }),
    { numRuns: 300 },
  );
  t.pass();
});
