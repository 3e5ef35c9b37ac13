/**
 * The TCP module's building blocks on their own: timer wheel (injected clock), out-of-order
 * queue, byte ring, option parser.
 */
import test from 'ava';
import fc from 'fast-check';
import { Stage } from '../../src/meter/meter';
import { TimerWheel, type TimerEntry } from '../../src/backends/nat/tcp-timers';
import { Reassembly, type ReadyPiece } from '../../src/backends/nat/tcp-reassembly';
import { ByteRing } from '../../src/backends/nat/tcp-byte-ring';
import { parseOptions } from '../../src/backends/nat/tcp';
import { GuestSegment } from '../../src/backends/nat/tcp-segment';

class Entry implements TimerEntry {
  timerDue = 0;
  timerNext: TimerEntry | null = null;
  timerPrev: TimerEntry | null = null;
  timerLinked = false;
  timerSlot = 0;
  fired: number[] = [];
  onTimer(now: number): void {
    this.fired.push(now);
  }
}

test('timer wheel: fires no earlier than due, armBy keeps the earlier deadline, cancel works', (t) => {
  let now = 1000;
  const w = new TimerWheel(() => now, 10, 16);
  const a = new Entry();
  const b = new Entry();
  const c = new Entry();
  w.armBy(a, 1050);
  w.armBy(a, 1500); // later: ignored
  w.armBy(b, 1300); // more than a revolution (160 ms) away
  w.armBy(c, 1020);
  w.cancel(c);
  t.is(w.size, 2);
  now = 1049;
  w.advance();
  t.deepEqual(a.fired, []);
  now = 1051;
  w.advance();
  t.deepEqual(a.fired, [1051]);
  t.false(a.timerLinked);
  now = 1200;
  w.advance();
  t.deepEqual(b.fired, [], 'skipped on the first revolution');
  now = 1310;
  w.advance();
  t.deepEqual(b.fired, [1310]);
  t.deepEqual(c.fired, []);
  t.is(w.size, 0);
  // Armed in the past: fires on the next advance.
  w.armBy(c, 5);
  now = 1320;
  w.advance();
  t.deepEqual(c.fired, [1320]);
  w.close();
});

test('timer wheel: many random entries each fire once, never early', (t) => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 5000 }), { minLength: 1, maxLength: 200 }), (dues) => {
      let now = 0;
      const w = new TimerWheel(() => now, 10, 64);
      const es = dues.map((d) => {
        const e = new Entry();
        w.armBy(e, d);
        return e;
      });
      for (now = 0; now <= 5100; now += 7) w.advance();
      w.close();
      return es.every((e, i) => e.fired.length === 1 && e.fired[0] >= dues[i]);
    }),
    { numRuns: 50 },
  );
  t.pass();
});

test('reassembly: out-of-order ranges merge, SACK reports the latest first, in-order data drains', (t) => {
  const stage = new Stage('test');
  const q = new Reassembly(8192);
  const data = Buffer.alloc(100);
  for (let i = 0; i < 100; i++) data[i] = i;
  const base = 0xfffffff0; // wraps around 2^32
  t.is(q.insert(base, (base + 20) >>> 0, data, 20, 10, stage), 'queued');
  t.is(q.insert(base, (base + 50) >>> 0, data, 50, 10, stage), 'queued');
  t.is(q.insert(base, (base + 30) >>> 0, data, 30, 20, stage), 'queued'); // bridges both
  t.is(q.ranges, 1);
  t.is(q.insert(base, (base + 25) >>> 0, data, 25, 5, stage), 'duplicate');
  const blocks = new Uint32Array(8);
  t.is(q.sackBlocks(blocks, 4), 1);
  t.deepEqual([blocks[0], blocks[1]], [(base + 20) >>> 0, (base + 60) >>> 0]);
  t.is(q.readyAt(base), 0, 'a hole at RCV.NXT');
  // The hole fills (the caller writes [base, base+20) itself and moves RCV.NXT).
  const rcvNxt = (base + 20) >>> 0;
  t.is(q.readyAt(rcvNxt), 40);
  const piece: ReadyPiece = { buf: new Uint8Array(0), offset: 0, length: 0 };
  const out: number[] = [];
  let nxt = rcvNxt;
  while (q.readyPiece(nxt, piece)) {
    out.push(...piece.buf.subarray(piece.offset, piece.offset + piece.length));
    nxt = (nxt + piece.length) >>> 0;
    q.advance(nxt);
  }
  t.deepEqual(out, [...data.subarray(20, 60)]);
  t.true(q.empty);
});

test('reassembly: bounded ranges and capacity', (t) => {
  const stage = new Stage('test');
  const q = new Reassembly(4096);
  const d = Buffer.alloc(10);
  for (let i = 0; i < 8; i++) t.is(q.insert(0, 100 + i * 100, d, 0, 10, stage), 'queued');
  t.is(q.insert(0, 2000, d, 0, 10, stage), 'no-room', 'a ninth disjoint range is refused');
  t.is(q.insert(0, 5000, d, 0, 10, stage), 'no-room', 'beyond the capacity');
  t.is(q.insert(0, 790, d, 0, 10, stage), 'queued', 'merging needs no new range');
  t.is(q.bytes, 8 * 10 + 10);
  const q2 = new Reassembly(4096);
  t.is(q2.insert(0, 4090, d, 0, 10, stage), 'queued', 'cut at the capacity');
  t.is(q2.bytes, 6);
});

test('byte ring: append, copy out at offsets across the wrap, consume, grow', (t) => {
  const stage = new Stage('test');
  const r = new ByteRing(16);
  const src = Buffer.from('abcdefghijklmnopqrstuvwxyz');
  t.is(r.append(src, 0, 12, stage), 12);
  r.consume(8);
  t.is(r.append(src, 12, 14, stage), 12, 'only what fits');
  t.is(r.length, 16);
  const dst = Buffer.alloc(16);
  t.is(r.copyOut(2, dst, 0, 16, stage), 14);
  t.is(dst.subarray(0, 14).toString(), 'klmnopqrstuvwx');
  r.grow(64, stage);
  t.is(r.capacity, 64);
  t.is(r.copyOut(0, dst, 0, 16, stage), 16);
  t.is(dst.toString(), 'ijklmnopqrstuvwx');
  t.is(r.append(src, 0, 26, stage), 26);
  t.is(r.length, 42);
});

test('option parser: well-formed lists parse, malformed ones are refused without throwing', (t) => {
  const s = new GuestSegment();
  const good = Uint8Array.from([2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 3, 3, 7, 0, 0, 0, 0]);
  t.true(parseOptions(good, 0, good.length, s));
  t.is(s.mss, 1460);
  t.true(s.sackPermitted);
  t.is(s.windowScale, 7);
  t.deepEqual([s.tsVal, s.tsEcr], [1, 2]);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => {
      s.resetOptions();
      parseOptions(bytes, 0, bytes.length, s);
      return true;
    }),
  );
  s.resetOptions();
  t.false(parseOptions(Uint8Array.from([5, 6, 0, 0, 0, 0]), 0, 6, s), 'SACK block of a bad length');
  t.false(parseOptions(Uint8Array.from([2, 0]), 0, 2, s), 'zero option length');
  t.false(parseOptions(Uint8Array.from([8, 10, 0, 0]), 0, 4, s), 'runs past the header');
});
