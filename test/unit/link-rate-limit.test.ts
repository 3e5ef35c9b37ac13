/**
 * RateLimiter over a LoopbackPair. The bucket reads a test clock, so what passes, waits and is
 * dropped is exact; the release timer is real, and the tests wait for its effect, never for a time.
 */
import test from 'ava';
import { plainFrame, type Frame } from '../../src/link/frame';
import { LoopbackPair } from '../../src/link/loopback-pair';
import { RateLimiter, type RateLimiterOptions } from '../../src/link/rate-limit';
import { Meter } from '../../src/meter/meter';

function frameOf(tag: number, len = 1000): Frame {
  const d = new Uint8Array(len);
  d[12] = 0x08;
  d.fill(tag & 0xff, 14);
  return plainFrame(d);
}
const tagOf = (d: Uint8Array): number => d[d.length - 1];

const settle = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 2000 && !cond(); i++) await settle(5);
}

function rig(opts: Omit<RateLimiterOptions, 'meter' | 'now'>) {
  const meter = new Meter();
  const clock = { ms: 1000 };
  const pair = new LoopbackPair({ meter });
  const limiter = new RateLimiter(pair.a, { ...opts, meter, now: () => clock.ms });
  const far: number[] = [];
  const near: number[] = [];
  pair.b.onReceive((fs) => fs.forEach((f) => far.push(tagOf(f.data))));
  limiter.onReceive((fs) => fs.forEach((f) => near.push(tagOf(f.data))));
  return { meter, clock, pair, limiter, far, near };
}

test('burst passes, the rest waits in order, overflow is tail-dropped', async (t) => {
  // 8 Mbit/s = 1000 bytes per ms; bucket 3000 bytes; queue 5000 bytes
  const r = rig({ outbound: { bitsPerSecond: 8_000_000, burstBytes: 3000, queueBytes: 5000 } });
  const mine = Array.from({ length: 12 }, (_, i) => frameOf(i));
  r.limiter.send(mine);
  let c = r.limiter.counters().outbound!;
  t.is(c.passed, 3);
  t.is(c.queued, 5);
  t.is(c.dropped, 4);
  t.is(c.waiting, 5);
  t.is(r.meter.stage('link.ratelimit').snapshot().dropReasons['rate-queue-full'], 4);
  t.is(r.meter.stage('link.ratelimit').snapshot().copies, 5, 'queued frames are metered copies');
  await until(() => r.far.length >= 3);
  t.deepEqual(r.far, [0, 1, 2]);

  // while frames wait, a new one queues behind them even if the bucket would allow it
  r.clock.ms += 2; // 2000 bytes of budget
  r.limiter.send([frameOf(50)]);
  c = r.limiter.counters().outbound!;
  t.is(c.passed, 3);
  t.is(c.queued, 5, 'the queue was still full (5000 bytes): frame 50 dropped');
  t.is(c.dropped, 5);
  await until(() => r.far.length >= 5);
  t.deepEqual(r.far, [0, 1, 2, 3, 4], 'exactly the 2 ms worth was released');

  r.clock.ms += 100;
  await until(() => r.far.length >= 8);
  t.deepEqual(r.far, [0, 1, 2, 3, 4, 5, 6, 7]);
  c = r.limiter.counters().outbound!;
  t.is(c.released, 5);
  t.is(c.waiting, 0);
  // the inbound direction is not limited
  r.pair.b.send(Array.from({ length: 20 }, (_, i) => frameOf(i)));
  await until(() => r.near.length >= 20);
  t.is(r.limiter.counters().inbound, null);
  await r.limiter.close();
  await r.pair.close();
});

test('released bytes never exceed burst + rate × elapsed', async (t) => {
  const r = rig({ inbound: { bitsPerSecond: 800_000, burstBytes: 1500, queueBytes: 1 << 20 } }); // 100 B/ms
  const total = 200;
  r.pair.b.send(Array.from({ length: total }, (_, i) => frameOf(i, 500)));
  await until(() => r.near.length >= 3);
  let elapsed = 0;
  while (r.near.length < total) {
    r.clock.ms += 7;
    elapsed += 7;
    const before = r.near.length;
    await until(() => r.near.length > before);
    t.true(r.near.length * 500 <= 1500 + elapsed * 100, `${r.near.length} frames after ${elapsed} ms`);
  }
  t.deepEqual(r.near, Array.from({ length: total }, (_, i) => i & 0xff), 'order kept');
  const c = r.limiter.counters().inbound!;
  t.is(c.passed + c.released, total);
  t.is(c.dropped, 0);
  await r.limiter.close();
  await r.pair.close();
});

test('a frame larger than the bucket still passes, and pays for itself afterwards', async (t) => {
  const r = rig({ outbound: { bitsPerSecond: 8_000_000, burstBytes: 1514 } });
  r.limiter.send([frameOf(1, 65000), frameOf(2, 100)]);
  let c = r.limiter.counters().outbound!;
  t.is(c.passed, 1, 'the 64 KiB GSO frame passes on a full bucket');
  t.is(c.queued, 1, 'then the bucket is deep in debt');
  r.clock.ms += 63; // 63000 bytes: still short of the 63486-byte debt plus 100
  await settle(20);
  t.is(r.limiter.counters().outbound!.released, 0);
  r.clock.ms += 2;
  await until(() => r.far.length >= 2);
  c = r.limiter.counters().outbound!;
  t.is(c.released, 1);
  t.deepEqual(r.far, [1, 2]);
  await r.limiter.close();
  await r.pair.close();
});

test('close drops what waits, counts it, and stops the timer', async (t) => {
  const r = rig({ outbound: { bitsPerSecond: 8000, burstBytes: 1000 } });
  r.limiter.send(Array.from({ length: 5 }, (_, i) => frameOf(i)));
  t.is(r.limiter.counters().outbound!.waiting, 4);
  await r.limiter.close();
  const c = r.limiter.counters().outbound!;
  t.is(c.dropped, 4);
  t.is(c.waiting, 0);
  r.clock.ms += 1e6;
  await settle(20);
  t.deepEqual(r.far, [0]);
  await r.pair.close();
});
