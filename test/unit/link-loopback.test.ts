/** LoopbackPair and the FrameQueue under it: async delivery, batching, copies, bounds. */
import test from 'ava';
import { plainFrame, VNET_F_NEEDS_CSUM, type Frame } from '../../src/link/frame';
import { LoopbackPair } from '../../src/link/loopback-pair';
import { FrameQueue } from '../../src/link/frame-queue';
import { Meter } from '../../src/meter/meter';

function frameOf(tag: number, len = 60): Frame {
  const d = new Uint8Array(len);
  d.fill(tag & 0xff);
  d[12] = 0x08;
  d[13] = 0x00;
  return plainFrame(d);
}

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

test('a.send delivers to b later, as one batch per turn, with copies', async (t) => {
  const meter = new Meter();
  const pair = new LoopbackPair({ meter });
  const batches: number[][] = [];
  pair.b.onReceive((fs) => batches.push(fs.map((f) => f.data[0])));
  const f1 = frameOf(1);
  const f2 = frameOf(2);
  const f3 = frameOf(3);
  pair.a.send([f1, f2]);
  pair.a.send([f3]);
  t.is(batches.length, 0, 'nothing is delivered inside send()');
  // the sender reuses its buffers at once: the receiver must still see what was sent
  f1.data.fill(0xee);
  f2.data.fill(0xee);
  await nextTurn();
  t.deepEqual(batches, [[1, 2, 3]]);
  const s = meter.stage('link.loopback').snapshot();
  t.is(s.copies, 3);
  t.is(s.bytesCopied, 180);
  t.is(s.frames, 3);
  t.deepEqual(pair.a.stats(), { sent: 3, delivered: 0, dropped: 0 });
  t.deepEqual(pair.b.stats(), { sent: 0, delivered: 3, dropped: 0 });
  await pair.close();
});

test('offload metadata travels with the copy', async (t) => {
  const pair = new LoopbackPair({ meter: new Meter() });
  const f = frameOf(9, 200);
  f.flags = VNET_F_NEEDS_CSUM;
  f.csumStart = 34;
  f.csumOffset = 16;
  const got = new Promise<Frame>((resolve) => pair.a.onReceive((fs) => resolve({ ...fs[0], data: fs[0].data.slice() })));
  pair.b.send([f]);
  const g = await got;
  t.is(g.flags, VNET_F_NEEDS_CSUM);
  t.is(g.csumStart, 34);
  t.is(g.csumOffset, 16);
  t.deepEqual(g.data, f.data);
  await pair.close();
});

test('ping-pong: a handler may answer from inside its call', async (t) => {
  const pair = new LoopbackPair({ meter: new Meter() });
  let rounds = 0;
  const finished = new Promise<void>((resolve) => {
    pair.a.onReceive((fs) => {
      rounds++;
      if (rounds === 100) resolve();
      else pair.a.send(fs); // the borrowed frames are still valid here
    });
  });
  pair.b.onReceive((fs) => pair.b.send(fs));
  pair.a.send([frameOf(7), frameOf(8)]);
  await finished;
  t.is(rounds, 100);
  t.is(pair.a.stats().dropped + pair.b.stats().dropped, 0);
  await pair.close();
});

test('a full receive queue drops and counts; a closed end drops too', async (t) => {
  const meter = new Meter();
  const pair = new LoopbackPair({ meter, queueBytes: 1000 });
  let got = 0;
  pair.b.onReceive((fs) => (got += fs.length));
  const frames = Array.from({ length: 30 }, (_, i) => frameOf(i, 100));
  pair.a.send(frames);
  t.deepEqual(pair.a.stats(), { sent: 10, delivered: 0, dropped: 20 });
  await nextTurn();
  t.is(got, 10);
  t.is(meter.stage('link.loopback').snapshot().dropReasons['rx-full'], 20);

  await pair.b.close();
  pair.a.send([frameOf(1)]);
  t.is(pair.a.stats().dropped, 21);
  await nextTurn();
  t.is(got, 10);
  await pair.close();
});

test('FrameQueue: ring arena wraps, keeps FIFO order and refuses what does not fit', (t) => {
  const stage = new Meter().stage('q');
  const q = new FrameQueue(1000, stage);
  const seen: number[] = [];
  let next = 0;
  // push and shift in uneven steps so the arena wraps many times
  for (let round = 0; round < 200; round++) {
    const pushes = (round % 5) + 1;
    for (let i = 0; i < pushes; i++) {
      const len = 60 + ((next * 37) % 300);
      if (q.push(frameOf(next, len))) next++;
      else break;
    }
    t.true(q.bytes <= 1000);
    const take = Math.min(q.length, (round % 3) + 1);
    for (let i = 0; i < take; i++) {
      const f = q.at(i);
      t.true(f.data.every((b, j) => j === 12 || j === 13 || b === ((seen.length + i) & 0xff)));
    }
    for (let i = 0; i < take; i++) seen.push(seen.length);
    q.shift(take);
  }
  t.true(next > 200);
  t.false(q.push(frameOf(1, 1001)), 'larger than the arena');
  q.clear();
  t.is(q.length, 0);
  t.is(q.bytes, 0);
  t.true(q.push(frameOf(1, 1000)), 'an empty queue takes a frame of the full arena size');
});
