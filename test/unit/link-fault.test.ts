/** FaultInjector over a LoopbackPair, with fixed seeds: counts, order, originals untouched. */
import test from 'ava';
import { plainFrame, type Frame } from '../../src/link/frame';
import { LoopbackPair } from '../../src/link/loopback-pair';
import { FaultInjector, SeededRandom, type FaultInjectorOptions } from '../../src/link/fault';
import { Meter } from '../../src/meter/meter';

/** A 100-byte frame whose bytes after the Ethernet header all hold `tag`. */
function frameOf(tag: number): Frame {
  const d = new Uint8Array(100);
  d.fill(0x02, 0, 12);
  d[12] = 0x08;
  d[13] = 0x00;
  d.fill(tag & 0xff, 14);
  return plainFrame(d);
}
const tagOf = (d: Uint8Array): number => d[99];

interface Rig {
  pair: LoopbackPair;
  fault: FaultInjector;
  meter: Meter;
  /** Copies of what reached the far end of the pair, in order. */
  far: Uint8Array[];
  /** Copies of what the injector handed to its own handler, in order. */
  near: Uint8Array[];
  farBatches: number;
}

function rig(opts: Omit<FaultInjectorOptions, 'meter'>): Rig {
  const meter = new Meter();
  const pair = new LoopbackPair({ meter });
  const fault = new FaultInjector(pair.a, { ...opts, meter });
  const r: Rig = { pair, fault, meter, far: [], near: [], farBatches: 0 };
  pair.b.onReceive((fs) => {
    r.farBatches++;
    for (const f of fs) r.far.push(f.data.slice());
  });
  fault.onReceive((fs) => {
    for (const f of fs) r.near.push(f.data.slice());
  });
  return r;
}

const settle = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Wait (polling, up to 10 s) until `cond` holds; never asserts how long it took. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 2000 && !cond(); i++) await settle(5);
}

/** Every frame that entered a lane has left it (nothing held back any more). */
function drained(c: { frames: number; dropped: number; duplicated: number; passed: number }): boolean {
  return c.passed === c.frames - c.dropped + c.duplicated;
}

function frames(n: number): Frame[] {
  return Array.from({ length: n }, (_, i) => frameOf(i));
}

test('drop everything / nothing', async (t) => {
  const r = rig({ seed: 1, outbound: { drop: 1 } });
  r.fault.send(frames(10));
  await settle(20);
  t.is(r.far.length, 0);
  const c = r.fault.counters();
  t.is(c.outbound.dropped, 10);
  t.is(c.outbound.passed, 0);
  t.is(r.meter.stage('link.fault').snapshot().dropReasons['fault-drop'], 10);
  // the other direction is untouched
  r.pair.b.send(frames(3));
  await until(() => r.near.length >= 3);
  t.deepEqual(r.near.map(tagOf), [0, 1, 2]);
  t.is(r.fault.counters().inbound.passed, 3);
  await r.fault.close();
  await r.pair.close();
});

test('duplicate with p=1 passes each frame twice, back to back, in one batch', async (t) => {
  const r = rig({ seed: 2, outbound: { duplicate: 1 } });
  r.fault.send(frames(4));
  await until(() => r.far.length >= 8);
  t.deepEqual(r.far.map(tagOf), [0, 0, 1, 1, 2, 2, 3, 3]);
  t.is(r.farBatches, 1);
  t.is(r.fault.counters().outbound.duplicated, 4);
  await r.fault.close();
  await r.pair.close();
});

test('reorder with p=1 swaps neighbours, across batches too', async (t) => {
  const r = rig({ seed: 3, outbound: { reorder: 1 }, holdMs: 60_000 });
  r.fault.send(frames(5));
  await until(() => r.far.length >= 4);
  t.deepEqual(r.far.map(tagOf), [1, 0, 3, 2], 'frame 4 is still held');
  // a frame held at the end of one batch is released after the first frame of the next
  r.fault.send([frameOf(7)]);
  await until(() => r.far.length >= 6);
  t.deepEqual(r.far.map(tagOf), [1, 0, 3, 2, 7, 4]);
  const c = r.fault.counters().outbound;
  t.is(c.reordered, 3);
  t.is(c.passed, 6);
  // a held frame outlives the send() that lent it: one metered copy per hold
  t.is(r.meter.stage('link.fault').snapshot().copies, 3);
  await r.fault.close();
  await r.pair.close();
});

test('a held frame with no successor is released by the hold timer', async (t) => {
  const r = rig({ seed: 3, outbound: { reorder: 1 }, holdMs: 5 });
  r.fault.send([frameOf(1)]);
  t.is(r.fault.counters().outbound.passed, 0);
  await until(() => r.far.length >= 1);
  t.deepEqual(r.far.map(tagOf), [1]);
  t.true(drained(r.fault.counters().outbound));
  await r.fault.close();
  await r.pair.close();
});

test('corrupt copies, flips exactly one byte past the Ethernet header, never the original', async (t) => {
  const r = rig({ seed: 4, inbound: { corrupt: 1 } });
  const sent = frames(20);
  const originals = sent.map((f) => f.data.slice());
  r.pair.b.send(sent);
  await until(() => r.near.length >= 20);
  t.is(r.near.length, 20);
  r.near.forEach((got, i) => {
    let diffs = 0;
    for (let j = 0; j < got.length; j++) {
      if (got[j] !== originals[i][j]) {
        diffs++;
        t.true(j >= 14, 'the Ethernet header is intact');
      }
    }
    t.is(diffs, 1);
  });
  const s = r.meter.stage('link.fault').snapshot();
  t.is(s.rewrites, 20);
  t.is(r.fault.counters().inbound.corrupted, 20);

  // outbound: the caller's frames must not change either
  const r2 = rig({ seed: 4, outbound: { corrupt: 1 } });
  const mine = frames(8);
  const before = mine.map((f) => Buffer.from(f.data).toString('hex'));
  r2.fault.send(mine);
  t.deepEqual(mine.map((f) => Buffer.from(f.data).toString('hex')), before);
  await until(() => r2.far.length >= 8);
  t.is(r2.far.length, 8);
  t.true(r2.far.every((d, i) => Buffer.from(d).toString('hex') !== before[i]));
  for (const x of [r, r2]) {
    await x.fault.close();
    await x.pair.close();
  }
});

/** Run a mixed fault mix and describe what came out. */
async function mixedRun(seed: number): Promise<{ tags: number[]; counters: ReturnType<FaultInjector['counters']> }> {
  const r = rig({
    seed,
    outbound: { drop: 0.1, corrupt: 0.1, duplicate: 0.1, reorder: 0.1 },
    inbound: { drop: 0.3 },
    holdMs: 5,
  });
  for (let b = 0; b < 20; b++) {
    r.fault.send(Array.from({ length: 10 }, (_, i) => frameOf(b * 10 + i)));
    r.pair.b.send(frames(5));
  }
  await until(() => drained(r.fault.counters().outbound) && r.far.length === r.fault.counters().outbound.passed);
  await until(() => r.near.length === r.fault.counters().inbound.passed);
  await r.fault.close();
  await r.pair.close();
  return { tags: r.far.map(tagOf), counters: r.fault.counters() };
}

test('a fixed seed gives the same faults every run; counters add up', async (t) => {
  const a = await mixedRun(42);
  const b = await mixedRun(42);
  const c = await mixedRun(43);
  t.deepEqual(a, b);
  t.notDeepEqual(a.tags, c.tags);

  const o = a.counters.outbound;
  t.is(o.frames, 200);
  t.true(o.dropped > 0 && o.corrupted > 0 && o.duplicated > 0 && o.reordered > 0);
  t.is(o.passed, o.frames - o.dropped + o.duplicated, 'every held frame was released');
  t.is(a.tags.length, o.passed);
  t.is(o.skipped, 0);
  const i = a.counters.inbound;
  t.is(i.frames, 100);
  t.is(i.passed + i.dropped, 100);
  t.is(i.corrupted + i.duplicated + i.reordered, 0);
});

test('SeededRandom is repeatable and roughly uniform', (t) => {
  const a = new SeededRandom(7);
  const b = new SeededRandom(7);
  const buckets = new Array(10).fill(0);
  for (let i = 0; i < 100_000; i++) {
    const x = a.next();
    t.is(x, b.next());
    t.true(x >= 0 && x < 1);
    buckets[Math.floor(x * 10)]++;
  }
  for (const n of buckets) t.true(n > 9_000 && n < 11_000, `bucket ${n}`);
  t.not(new SeededRandom(0).next(), new SeededRandom(1).next());
});

test('a handler that sends back into the injector from inside its call is safe', async (t) => {
  // inner port emits synchronously in answer to send(): a fake NIC that reflects every frame
  let handler: (fs: readonly Frame[]) => void = () => {};
  const reflector = {
    name: 'reflector',
    send: (fs: readonly Frame[]) => handler(fs),
    onReceive: (h: (fs: readonly Frame[]) => void) => {
      handler = h;
    },
    close: async () => {},
  };
  const fault = new FaultInjector(reflector, {
    seed: 9,
    meter: new Meter(),
    outbound: { corrupt: 0.5, reorder: 0.3 },
    inbound: { corrupt: 0.5, duplicate: 0.2 },
  });
  let depth = 0;
  const seen: number[] = [];
  fault.onReceive((fs) => {
    for (const f of fs) seen.push(f.data.length);
    if (depth++ < 3) fault.send(fs); // re-enter the outbound lane while both lanes are mid-batch
  });
  const mine = frames(6);
  const before = mine.map((f) => Buffer.from(f.data).toString('hex'));
  fault.send(mine);
  await until(() => drained(fault.counters().outbound) && drained(fault.counters().inbound));
  await fault.close();
  t.true(seen.length > 0);
  t.true(seen.every((len) => len === 100), 'no frame was cut or emptied while in flight');
  t.deepEqual(mine.map((f) => Buffer.from(f.data).toString('hex')), before);
});
