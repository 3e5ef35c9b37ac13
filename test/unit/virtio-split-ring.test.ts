import test from 'ava';
import { SplitVirtqueue } from '../../src/devices/virtio/split-ring';
import { GuestMemory } from '../../src/devices/memory';
import { Meter } from '../../src/meter/meter';
import { DESC, TestDriver, multiRegionMemory } from './virtio-driver';

function setup(q = 8, opts: { eventIdx?: boolean; indirect?: boolean; maxChainBytes?: number; memory?: GuestMemory } = {}) {
  const drv = new TestDriver(q, { memory: opts.memory });
  const errors: string[] = [];
  const vq = new SplitVirtqueue(0, drv.mem, { onError: (r) => errors.push(r), maxChainBytes: opts.maxChainBytes });
  vq.eventIdx = !!opts.eventIdx;
  vq.indirect = !!opts.indirect;
  vq.setSize(q);
  vq.setAddresses(drv.ring);
  vq.setBase(0);
  const err = vq.start();
  if (err) throw new Error(err);
  return { drv, vq, errors };
}

const bytes = (n: number, seed = 1) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

test('a chain of readable then writable descriptors is walked in order', (t) => {
  const { drv, vq } = setup();
  const head = drv.addChain([{ data: bytes(10) }, { data: bytes(20, 2) }, { len: 100, write: true }]);
  t.is(vq.available(), 1);
  t.is(vq.pop(), head);
  t.true(vq.walk(head));
  const c = vq.chain;
  t.is(c.count, 3);
  t.is(c.readCount, 2);
  t.is(c.readableBytes, 30);
  t.is(c.writableBytes, 100);
  const out = new Uint8Array(30);
  t.is(c.gather(0, 30, out, 0), 30);
  t.deepEqual(out, Uint8Array.from([...bytes(10), ...bytes(20, 2)]));
  t.is(vq.pop(), -1);
});

test('an indirect chain is walked when INDIRECT_DESC is negotiated', (t) => {
  const { drv, vq, errors } = setup(8, { indirect: true });
  const head = drv.addChain([{ data: bytes(12) }, { data: bytes(1500, 3) }, { data: bytes(40, 4) }], { indirect: true });
  t.is(vq.pop(), head);
  t.true(vq.walk(head));
  t.is(vq.chain.count, 3);
  t.is(vq.chain.readableBytes, 1552);
  t.deepEqual(errors, []);
});

test('an indirect descriptor without the feature breaks the queue', (t) => {
  const { drv, vq, errors } = setup(8, { indirect: false });
  const head = drv.addChain([{ data: bytes(12) }], { indirect: true });
  t.is(vq.pop(), head);
  t.false(vq.walk(head));
  t.regex(errors[0], /INDIRECT_DESC was not negotiated/);
  t.false(vq.live);
  t.is(vq.pop(), -1);
});

test('nested indirect and INDIRECT|NEXT break the queue', (t) => {
  const a = setup(8, { indirect: true });
  // indirect table whose entry is itself indirect
  const table = a.drv.alloc(32);
  a.drv.writeDesc(table, 0, table, 16, 4, 0);
  a.drv.writeDesc(DESC, 0, table, 16, 4, 0);
  a.drv.w16(0x9000 + 4, 0);
  a.drv.availIdx = 1;
  a.drv.publish();
  t.is(a.vq.pop(), 0);
  t.false(a.vq.walk(0));
  t.regex(a.errors[0], /nested indirect/);

  const b = setup(8, { indirect: true });
  b.drv.writeDesc(DESC, 0, b.drv.alloc(16), 16, 4 | 1, 1);
  b.drv.w16(0x9000 + 4, 0);
  b.drv.availIdx = 1;
  b.drv.publish();
  t.false(b.vq.walk(b.vq.pop()));
  t.regex(b.errors[0], /both INDIRECT and NEXT/);
});

test('a loop in a chain is detected and the queue needs a reset (reported once)', (t) => {
  const { drv, vq, errors } = setup(8);
  const buf = drv.alloc(64);
  drv.writeDesc(DESC, 0, buf, 64, 1, 1);
  drv.writeDesc(DESC, 1, buf, 64, 1, 0); // 0 → 1 → 0 → …
  drv.w16(0x9000 + 4, 0);
  drv.availIdx = 1;
  drv.publish();
  t.notThrows(() => {
    const head = vq.pop();
    t.false(vq.walk(head));
  });
  t.is(errors.length, 1);
  t.regex(errors[0], /longer than the queue size 8 \(a loop\)/);
  t.is(vq.error, errors[0]);
  // nothing more happens until reconfigured
  t.is(vq.available(), 0);
  vq.setAddresses(drv.ring);
  vq.setBase(1);
  t.is(vq.start(), null);
  t.is(vq.error, null);
});

test('a loop inside an indirect table is detected', (t) => {
  const { drv, vq, errors } = setup(8, { indirect: true });
  const table = drv.alloc(32);
  const buf = drv.alloc(16);
  drv.writeDesc(table, 0, buf, 16, 1, 1);
  drv.writeDesc(table, 1, buf, 16, 1, 0);
  drv.writeDesc(DESC, 0, table, 32, 4, 0);
  drv.w16(0x9000 + 4, 0);
  drv.availIdx = 1;
  drv.publish();
  t.false(vq.walk(vq.pop()));
  t.regex(errors[0], /longer than its table \(a loop\)/);
});

test('next index outside the queue, head outside the queue', (t) => {
  const a = setup(8);
  a.drv.writeDesc(DESC, 0, a.drv.alloc(8), 8, 1, 9);
  a.drv.w16(0x9000 + 4, 0);
  a.drv.availIdx = 1;
  a.drv.publish();
  t.false(a.vq.walk(a.vq.pop()));
  t.regex(a.errors[0], /chains to 9, outside the queue/);

  const b = setup(8);
  b.drv.w16(0x9000 + 4, 200);
  b.drv.availIdx = 1;
  b.drv.publish();
  t.is(b.vq.pop(), -1);
  t.regex(b.errors[0], /names descriptor 200/);
});

test('a buffer outside guest memory breaks the queue without throwing', (t) => {
  const { drv, vq, errors } = setup(8);
  const head = drv.addChain([{ addr: 0x7fff_0000_0000, len: 64 }]);
  t.notThrows(() => t.false(vq.walk(vq.pop())));
  t.regex(errors[0], /outside guest memory/);
  t.is(head, 0);
  // a length running off the end of memory
  const b = setup(8);
  b.drv.addChain([{ addr: (4 << 20) - 16, len: 64 }]);
  t.false(b.vq.walk(b.vq.pop()));
  t.regex(b.errors[0], /outside guest memory/);
  // an absurd 64-bit address
  const c = setup(8);
  c.drv.addChain([{ addr: 2 ** 63, len: 1 }]);
  t.false(c.vq.walk(c.vq.pop()));
});

test('a chain over the byte limit breaks the queue', (t) => {
  const { drv, vq, errors } = setup(8, { maxChainBytes: 4096 });
  drv.addChain([{ len: 4000 }, { len: 4000 }]);
  t.false(vq.walk(vq.pop()));
  t.regex(errors[0], /longer than 4096 bytes/);
});

test('a readable descriptor after a writable one breaks the queue', (t) => {
  const { drv, vq, errors } = setup(8);
  drv.addChain([{ len: 10, write: true }, { data: bytes(10) }]);
  t.false(vq.walk(vq.pop()));
  t.regex(errors[0], /readable descriptor follows a writable/);
});

test('the available index moving by more than the queue size breaks the queue', (t) => {
  const { drv, vq, errors } = setup(8);
  drv.availIdx = 9;
  drv.publish();
  t.is(vq.available(), 0);
  t.regex(errors[0], /moved from 0 to 9/);
});

test('a buffer crossing from one memory region into the next becomes two segments', (t) => {
  const memory = multiRegionMemory([
    [0, 0x100000],
    [0x100000, 0x100000],
  ]);
  const { drv, vq } = setup(8, { memory });
  const data = bytes(256, 9);
  drv.addChain([{ addr: 0x100000 - 100, data }]);
  t.true(vq.walk(vq.pop()));
  t.is(vq.chain.count, 2);
  t.deepEqual([vq.chain.length[0], vq.chain.length[1]], [100, 156]);
  const out = new Uint8Array(256);
  vq.chain.gather(0, 256, out, 0);
  t.deepEqual(out, data);
});

test('indices wrap around 65535 → 0 on both rings', (t) => {
  const { drv, vq } = setup(8);
  drv.startAt(65533);
  vq.setBase(65533);
  t.is(vq.start(), null);
  const heads: number[] = [];
  for (let i = 0; i < 6; i++) heads.push(drv.addChain([{ len: 64, write: true }]));
  t.is(drv.availIdx, 3);
  t.is(vq.available(), 6);
  const seen: number[] = [];
  for (let h = vq.pop(); h >= 0; h = vq.pop()) {
    t.true(vq.walk(h));
    seen.push(h);
    vq.pushUsed(h, 10 + h);
  }
  t.deepEqual(seen, heads);
  t.is(vq.lastAvail, 3);
  vq.publish();
  t.is(drv.usedIdx, 3);
  t.deepEqual(
    drv.takeUsed(),
    heads.map((h) => ({ id: h, len: 10 + h })),
  );
});

test('without EVENT_IDX: notify unless avail.flags has NO_INTERRUPT; NO_NOTIFY toggles', (t) => {
  const { drv, vq } = setup(8);
  drv.addChain([{ len: 8, write: true }]);
  vq.pushUsed(vq.pop(), 8);
  t.true(vq.publish());
  drv.availFlags = 1;
  drv.addChain([{ len: 8, write: true }]);
  vq.pushUsed(vq.pop(), 8);
  t.false(vq.publish());
  t.false(vq.publish(), 'nothing pending, nothing to notify');
  vq.disableNotifications();
  t.is(drv.usedFlags, 1);
  t.false(vq.enableNotifications());
  t.is(drv.usedFlags, 0);
});

test('EVENT_IDX: the driver is notified only when used.idx crosses used_event', (t) => {
  const { drv, vq } = setup(8, { eventIdx: true });
  const cycle = (n: number): boolean => {
    for (let i = 0; i < n; i++) drv.addChain([{ len: 8, write: true }]);
    for (let i = 0; i < n; i++) vq.pushUsed(vq.pop(), 8);
    return vq.publish();
  };
  drv.usedEvent = 0; // notify when used.idx passes 0
  t.true(cycle(1)); // 0 → 1 crosses 0
  drv.usedEvent = 5;
  t.false(cycle(2)); // 1 → 3
  t.true(cycle(3)); // 3 → 6 crosses 5
  t.false(cycle(1)); // 6 → 7, event 5 already behind
  // wrap-around of the event arithmetic
  drv.usedEvent = 65535;
  const w = setup(8, { eventIdx: true });
  w.drv.startAt(65534);
  w.vq.setBase(65534);
  w.vq.start();
  w.drv.usedEvent = 65535;
  for (let i = 0; i < 3; i++) w.drv.addChain([{ len: 8, write: true }]);
  for (let i = 0; i < 3; i++) w.vq.pushUsed(w.vq.pop(), 8);
  t.true(w.vq.publish()); // 65534 → 1 crosses 65535
});

test('EVENT_IDX: enabling notifications writes avail_event and re-checks avail.idx', (t) => {
  const { drv, vq } = setup(8, { eventIdx: true });
  drv.addChain([{ len: 8 }]);
  drv.addChain([{ len: 8 }]);
  t.is(vq.pop(), 0);
  t.is(vq.pop(), 1);
  t.false(vq.enableNotifications());
  t.is(drv.availEvent, 2);
  // the driver adds a buffer "concurrently": the next enable sees it
  drv.addChain([{ len: 8 }]);
  t.true(vq.enableNotifications());
  t.is(drv.availEvent, 2);
  t.is(vq.pop(), 2);
  t.false(vq.enableNotifications());
  t.is(drv.availEvent, 3);
});

test('a misaligned used ring or a ring outside memory is refused by map()', (t) => {
  const memory = GuestMemory.plain(1 << 20, new Meter());
  const vq = new SplitVirtqueue(0, memory);
  vq.setSize(8);
  vq.setAddresses({ desc: 0x1000, avail: 0x2000, used: 0x3002, space: 'gpa' });
  t.regex(vq.map() ?? '', /not aligned/);
  vq.setAddresses({ desc: 0x1000, avail: 0x2000, used: 0x200000, space: 'gpa' });
  t.regex(vq.map() ?? '', /used ring .* not inside guest memory/);
  t.regex(vq.setSize(6) ?? '', /not a power of two/);
  t.regex(vq.setSize(65536) ?? '', /not a power of two/);
});

test('rings found by user address (vhost-user) in a region whose gpa differs', (t) => {
  const memory = multiRegionMemory([[0x100000000, 1 << 20]]);
  const vq = new SplitVirtqueue(0, memory);
  vq.setSize(8);
  const ua = 0x100000000 + 0x7f0000000000;
  vq.setAddresses({ desc: ua + 0x1000, avail: ua + 0x2000, used: ua + 0x3000, space: 'uaddr' });
  t.is(vq.map(), null);
  vq.setAddresses({ desc: 0x1000, avail: 0x2000, used: 0x3000, space: 'uaddr' });
  t.truthy(vq.map());
});

test('memory table replaced: the queue must be mapped again', (t) => {
  const { drv, vq } = setup(8);
  t.true(vq.ready);
  drv.mem.setRegions(drv.mem.regions.slice());
  t.false(vq.ready);
  t.is(vq.map(), null);
  t.true(vq.ready);
});
