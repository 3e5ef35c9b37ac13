import test from 'ava';
import { GuestMemory } from '../../src/devices/memory';
import { VirtioNetDevice, DEFAULT_NET_FEATURES, RX_QUEUE, TX_QUEUE } from '../../src/devices/virtio/net-device';
import {
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET,
  bit,
} from '../../src/devices/virtio/features';
import { GSO_NONE, GSO_TCPV4, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, plainFrame, type Frame } from '../../src/link/frame';
import { Meter } from '../../src/meter/meter';
import { completeChecksum, onesSum } from '../../src/devices/virtio/partial-checksum';
import { TestDriver } from './virtio-driver';

interface Got {
  data: Uint8Array;
  view: boolean;
  flags: number;
  gsoType: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
  hdrLen: number;
}

function rig(features: bigint = DEFAULT_NET_FEATURES, opts: { rxBacklogBytes?: number } = {}) {
  const meter = new Meter();
  const memory = GuestMemory.plain(4 << 20, meter);
  const rx = new TestDriver(256, { memory, base: 0 });
  const tx = new TestDriver(256, { memory, base: 0x200000 });
  const dev = new VirtioNetDevice({ memory, meter, rxBacklogBytes: opts.rxBacklogBytes });
  t_ok(dev.setDriverFeatures(features));
  const notified = [0, 0];
  const batches: Got[][] = [];
  const resets: string[] = [];
  dev.on('needs-reset', (_q: number, reason: string) => resets.push(reason));
  for (const [i, d] of [
    [RX_QUEUE, rx],
    [TX_QUEUE, tx],
  ] as const) {
    const q = dev.queue(i)!;
    q.setSize(256);
    q.setAddresses(d.ring);
    q.setBase(0);
    q.enabled = true;
    dev.setNotifier(i, () => notified[i]++);
    t_ok(dev.startQueue(i));
  }
  const guestBuffer = memory.region(0).bytes.buffer;
  dev.onReceive((frames) => {
    batches.push(
      frames.map((f) => ({
        data: f.data.slice(),
        view: f.data.buffer === guestBuffer,
        flags: f.flags,
        gsoType: f.gsoType,
        gsoSize: f.gsoSize,
        csumStart: f.csumStart,
        csumOffset: f.csumOffset,
        hdrLen: f.hdrLen,
      })),
    );
  });
  // guest-memory copies, both directions (virtio counts them as device.dma.tx / device.dma.rx)
  const dmaTx = meter.stage('device.dma.tx');
  const dmaRx = meter.stage('device.dma.rx');
  const dma = {
    get copies(): number {
      return dmaTx.copies + dmaRx.copies;
    },
    get bytesCopied(): number {
      return dmaTx.bytesCopied + dmaRx.bytesCopied;
    },
  };
  return { dev, rx, tx, notified, batches, resets, meter, dma, memory };
}

function t_ok(err: string | null): void {
  if (err) throw new Error(err);
}

function hdr(o: Partial<{ flags: number; gsoType: number; hdrLen: number; gsoSize: number; csumStart: number; csumOffset: number; numBuffers: number }> = {}): Uint8Array {
  const h = new Uint8Array(12);
  const v = new DataView(h.buffer);
  h[0] = o.flags ?? 0;
  h[1] = o.gsoType ?? 0;
  v.setUint16(2, o.hdrLen ?? 0, true);
  v.setUint16(4, o.gsoSize ?? 0, true);
  v.setUint16(6, o.csumStart ?? 0, true);
  v.setUint16(8, o.csumOffset ?? 0, true);
  v.setUint16(10, o.numBuffers ?? 0, true);
  return h;
}

function frameBytes(n: number, seed = 0): Uint8Array {
  const f = new Uint8Array(n);
  for (let i = 0; i < n; i++) f[i] = (i * 31 + seed) & 0xff;
  f[12] = 0x08; // IPv4 ethertype
  f[13] = 0x00;
  return f;
}

const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

test('TX: header and frame in one descriptor become a Frame viewing guest memory (no copy)', (t) => {
  const r = rig();
  const f = frameBytes(1514);
  r.tx.addChain([{ data: concat(hdr(), f) }]);
  r.dev.kick(TX_QUEUE);
  t.is(r.batches.length, 1);
  t.is(r.batches[0].length, 1);
  t.true(r.batches[0][0].view);
  t.deepEqual(r.batches[0][0].data, f);
  t.is(r.dma.copies, 0);
  t.deepEqual(r.tx.takeUsed(), [{ id: 0, len: 0 }]);
  t.is(r.notified[TX_QUEUE], 1);
});

test('TX: header in its own descriptor, frame in the next: still a view', (t) => {
  const r = rig();
  const f = frameBytes(600, 3);
  r.tx.addChain([{ data: hdr() }, { data: f }]);
  r.dev.kick(TX_QUEUE);
  t.true(r.batches[0][0].view);
  t.deepEqual(r.batches[0][0].data, f);
  t.is(r.dma.copies, 0);
});

test('TX: a frame scattered over descriptors is copied once (metered)', (t) => {
  const r = rig();
  const f = frameBytes(3000, 5);
  r.tx.addChain([{ data: concat(hdr(), f.subarray(0, 100)) }, { data: f.subarray(100, 1100) }, { data: f.subarray(1100) }]);
  r.dev.kick(TX_QUEUE);
  const got = r.batches[0][0];
  t.false(got.view);
  t.deepEqual(got.data, f);
  t.is(r.dma.copies, 1);
  t.is(r.dma.bytesCopied, 3000);
});

test('TX: an indirect chain', (t) => {
  const r = rig();
  const f = frameBytes(200, 9);
  r.tx.addChain([{ data: hdr() }, { data: f.subarray(0, 50) }, { data: f.subarray(50) }], { indirect: true });
  r.dev.kick(TX_QUEUE);
  t.deepEqual(r.batches[0][0].data, f);
});

test('TX: all chains of one kick are one batch, one used.idx publish, one interrupt', (t) => {
  const r = rig();
  for (let i = 0; i < 10; i++) r.tx.addChain([{ data: concat(hdr(), frameBytes(100 + i, i)) }], { hold: true });
  r.tx.publish();
  r.dev.kick(TX_QUEUE);
  t.is(r.batches.length, 1);
  t.is(r.batches[0].length, 10);
  t.is(r.tx.usedIdx, 10);
  t.is(r.notified[TX_QUEUE], 1);
  t.deepEqual(
    r.batches[0].map((g) => g.data.length),
    [100, 101, 102, 103, 104, 105, 106, 107, 108, 109],
  );
});

test('TX: a 64 KiB TSO chain stays one Frame with its GSO metadata', (t) => {
  const r = rig();
  const f = frameBytes(65535 + 14 - 20, 7);
  const h = hdr({ flags: VNET_F_NEEDS_CSUM, gsoType: GSO_TCPV4, hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16 });
  const segs: Array<{ data: Uint8Array }> = [{ data: concat(h, f.subarray(0, 66)) }];
  for (let at = 66; at < f.length; at += 4096) segs.push({ data: f.subarray(at, Math.min(f.length, at + 4096)) });
  r.tx.addChain(segs);
  r.dev.kick(TX_QUEUE);
  const got = r.batches[0][0];
  t.is(r.batches[0].length, 1);
  t.deepEqual(got.data, f);
  t.like(got, { flags: VNET_F_NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: 1448, csumStart: 34, csumOffset: 16, hdrLen: 66 });
  t.is(r.dma.copies, 1);
});

test('TX: GSO without HOST_TSO negotiated, runts and bad checksum offsets are dropped and counted; chains still returned', (t) => {
  const r = rig(DEFAULT_NET_FEATURES & ~bit(VIRTIO_NET_F_HOST_TSO4));
  r.tx.addChain([{ data: concat(hdr({ flags: VNET_F_NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: 1448, csumStart: 34, csumOffset: 16 }), frameBytes(3000)) }]);
  r.tx.addChain([{ data: concat(hdr(), frameBytes(10)) }]);
  r.tx.addChain([{ data: concat(hdr({ flags: VNET_F_NEEDS_CSUM, csumStart: 90, csumOffset: 16 }), frameBytes(100)) }]);
  r.tx.addChain([{ data: concat(hdr(), frameBytes(60)) }]);
  t.notThrows(() => r.dev.kick(TX_QUEUE));
  t.is(r.batches.length, 1);
  t.is(r.batches[0].length, 1);
  t.is(r.batches[0][0].data.length, 60);
  const tx = r.meter.stage('guest.tx').snapshot();
  t.deepEqual(tx.dropReasons, { 'tx-gso-not-negotiated': 1, 'tx-runt': 1, 'tx-bad-csum-offsets': 1 });
  t.is(r.tx.takeUsed().length, 4);
});

test('TX: a bad descriptor puts the device into NEEDS_RESET without throwing', (t) => {
  const r = rig();
  r.tx.addChain([{ data: concat(hdr(), frameBytes(100)) }]);
  r.tx.addChain([{ addr: 0x7f000000, len: 100 }]);
  r.tx.addChain([{ data: concat(hdr(), frameBytes(100)) }]);
  t.notThrows(() => r.dev.kick(TX_QUEUE));
  t.is(r.resets.length, 1);
  t.regex(r.resets[0], /outside guest memory/);
  t.truthy(r.dev.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
  t.is(r.batches.length, 1, 'the good frame before it was delivered');
  t.notThrows(() => r.dev.kick(TX_QUEUE));
  t.is(r.batches.length, 1, 'nothing more from a broken queue');
});

test('TX: a handler that throws does not escape', (t) => {
  const r = rig();
  r.dev.onReceive(() => {
    throw new Error('backend bug');
  });
  r.tx.addChain([{ data: concat(hdr(), frameBytes(100)) }]);
  t.notThrows(() => r.dev.kick(TX_QUEUE));
  t.is(r.tx.usedIdx, 1);
});

function postRx(r: ReturnType<typeof rig>, n: number, size: number): Map<number, number> {
  const addrs = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const addr = r.rx.alloc(size);
    const head = r.rx.addChain([{ addr, len: size, write: true }], { hold: true });
    addrs.set(head, addr);
  }
  r.rx.publish();
  return addrs;
}

test('RX mergeable: a 64 KiB GSO frame is spread over 4 KiB buffers, num_buffers in the first header', (t) => {
  const r = rig();
  const addrs = postRx(r, 32, 4096);
  const data = frameBytes(65536, 11);
  const f: Frame = { ...plainFrame(data), flags: VNET_F_NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: 1448, hdrLen: 66, csumStart: 34, csumOffset: 16 };
  r.dev.send([f]);
  const used = r.rx.takeUsed();
  const need = Math.ceil((65536 + 12) / 4096);
  t.is(used.length, need);
  t.deepEqual(
    used.map((u) => u.len),
    [...Array(need - 1).fill(4096), 65536 + 12 - 4096 * (need - 1)],
  );
  const stream = concat(...used.map((u) => r.rx.read(addrs.get(u.id)!, u.len)));
  const h = new DataView(stream.buffer, 0, 12);
  t.is(stream[0], VNET_F_NEEDS_CSUM);
  t.is(stream[1], GSO_TCPV4);
  t.is(h.getUint16(2, true), 66);
  t.is(h.getUint16(4, true), 1448);
  t.is(h.getUint16(6, true), 34);
  t.is(h.getUint16(8, true), 16);
  t.is(h.getUint16(10, true), need, 'num_buffers');
  t.deepEqual(stream.subarray(12), data);
  t.is(r.notified[RX_QUEUE], 1);
  t.is(r.dma.copies, 1);
});

test('RX without MRG_RXBUF: one chain per frame, num_buffers 1, used.len = header + frame', (t) => {
  const r = rig(DEFAULT_NET_FEATURES & ~bit(VIRTIO_NET_F_MRG_RXBUF));
  const addrs = postRx(r, 4, 2048);
  const a = frameBytes(1000, 1);
  const b = frameBytes(1514, 2);
  r.dev.send([plainFrame(a), plainFrame(b), plainFrame(frameBytes(3000))]);
  const used = r.rx.takeUsed();
  t.deepEqual(
    used.map((u) => u.len),
    [1012, 1526],
  );
  const first = r.rx.read(addrs.get(used[0].id)!, used[0].len);
  t.is(new DataView(first.buffer).getUint16(10, true), 1);
  t.deepEqual(first.subarray(12), a);
  t.deepEqual(r.meter.stage('guest.rx').snapshot().dropReasons, { 'rx-buffer-too-small': 1 });
  t.is(r.notified[RX_QUEUE], 1);
});

test('RX: frames wait in the backlog while the guest has no buffers, and go in on the next kick', (t) => {
  const r = rig();
  let unblocked = 0;
  r.dev.on('rx-unblocked', () => unblocked++);
  t.false(r.dev.rxBlocked);
  r.dev.send([plainFrame(frameBytes(100, 1)), plainFrame(frameBytes(200, 2))]);
  t.is(r.dev.stats().rxBacklog, 2);
  t.true(r.dev.rxBlocked, 'a tap behind it may stop reading (RxBackpressure)');
  t.is(r.rx.usedIdx, 0);
  // the device asked to be kicked at the next buffer
  t.is(r.rx.availEvent, 0);
  postRx(r, 4, 2048);
  r.dev.kick(RX_QUEUE);
  t.is(r.dev.stats().rxBacklog, 0);
  t.false(r.dev.rxBlocked);
  t.is(unblocked, 1);
  t.deepEqual(
    r.rx.takeUsed().map((u) => u.len),
    [112, 212],
  );
  // a bounded backlog drops beyond its size
  const small = rig(DEFAULT_NET_FEATURES, { rxBacklogBytes: 1000 });
  small.dev.send([plainFrame(frameBytes(600)), plainFrame(frameBytes(600))]);
  t.is(small.dev.stats().rxBacklog, 1);
  t.deepEqual(small.meter.stage('guest.rx').snapshot().dropReasons, { 'rx-backlog-full': 1 });
});

test('RX: a big frame waits until enough buffers are posted (no partial use)', (t) => {
  const r = rig();
  postRx(r, 2, 4096);
  r.dev.send([plainFrame(frameBytes(20000))]);
  t.is(r.rx.usedIdx, 0, 'two buffers are not enough; nothing consumed');
  t.is(r.rx.availEvent, 2, 'kick me when the next buffer comes');
  postRx(r, 4, 4096);
  r.dev.kick(RX_QUEUE);
  t.is(r.rx.takeUsed().length, 5);
});

test('RX: a partial checksum is completed for a guest without GUEST_CSUM', (t) => {
  const r = rig(DEFAULT_NET_FEATURES & ~bit(VIRTIO_NET_F_GUEST_CSUM));
  const addrs = postRx(r, 2, 2048);
  // Ethernet + IPv4 + UDP, checksum field holding the pseudo-header sum (what NEEDS_CSUM means)
  const f = new Uint8Array(14 + 20 + 8 + 33);
  f[12] = 8;
  f[14] = 0x45;
  f[23] = 17;
  f.set([10, 0, 2, 2], 26);
  f.set([10, 0, 2, 15], 30);
  const udpLen = 8 + 33;
  const v = new DataView(f.buffer);
  v.setUint16(34, 53);
  v.setUint16(36, 40000);
  v.setUint16(38, udpLen);
  for (let i = 0; i < 33; i++) f[42 + i] = i * 3;
  let pseudo = onesSum(f, 26, 34) + 17 + udpLen;
  while (pseudo > 0xffff) pseudo = (pseudo & 0xffff) + (pseudo >>> 16);
  v.setUint16(40, pseudo);
  r.dev.send([{ ...plainFrame(f), flags: VNET_F_NEEDS_CSUM, csumStart: 34, csumOffset: 6 }]);
  const [u] = r.rx.takeUsed();
  const got = r.rx.read(addrs.get(u.id)!, u.len);
  t.is(got[0], 0, 'NEEDS_CSUM cleared in the header');
  const pkt = got.subarray(12);
  // verify: pseudo header + UDP sums to 0xffff
  let s = onesSum(pkt, 26, 34) + 17 + udpLen + onesSum(pkt, 34, pkt.length);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  t.is(s, 0xffff);
  t.is(completeChecksum(f, 34, 6), new DataView(pkt.buffer, pkt.byteOffset).getUint16(40));
});

test('RX: offloads the guest did not negotiate are refused; DATA_VALID passes with GUEST_CSUM', (t) => {
  const r = rig(DEFAULT_NET_FEATURES & ~(bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6) | bit(VIRTIO_NET_F_GUEST_ECN)));
  t.false(r.dev.offloads.guestTso4);
  t.true(r.dev.offloads.guestCsum);
  const addrs = postRx(r, 4, 4096);
  r.dev.send([
    { ...plainFrame(frameBytes(3000)), flags: VNET_F_NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: 1448, csumStart: 34, csumOffset: 16 },
    { ...plainFrame(frameBytes(100)), flags: VNET_F_DATA_VALID },
  ]);
  const used = r.rx.takeUsed();
  t.is(used.length, 1);
  const got = r.rx.read(addrs.get(used[0].id)!, 12);
  t.is(got[0], VNET_F_DATA_VALID);
  t.is(got[1], GSO_NONE);
  t.deepEqual(r.meter.stage('guest.rx').snapshot().dropReasons, { 'rx-gso-not-negotiated': 1 });
});

test('RX with EVENT_IDX: one interrupt per batch, and none when used_event says no', (t) => {
  const r = rig();
  postRx(r, 20, 2048);
  r.rx.usedEvent = 0;
  r.dev.send([1, 2, 3, 4, 5].map((i) => plainFrame(frameBytes(100, i))));
  t.is(r.notified[RX_QUEUE], 1);
  r.rx.usedEvent = 100; // the driver is not interested before used.idx passes 100
  r.dev.send([plainFrame(frameBytes(100))]);
  t.is(r.notified[RX_QUEUE], 1);
  t.is(r.rx.usedIdx, 6);
});

test('RX and TX across the 16-bit index wrap', (t) => {
  const r = rig(DEFAULT_NET_FEATURES & ~bit(VIRTIO_RING_F_EVENT_IDX));
  for (const [i, d] of [
    [RX_QUEUE, r.rx],
    [TX_QUEUE, r.tx],
  ] as const) {
    d.startAt(65530);
    r.dev.stopQueue(i);
    r.dev.queue(i)!.setBase(65530);
    t_ok(r.dev.startQueue(i));
  }
  let delivered = 0;
  for (let round = 0; round < 4; round++) {
    postRx(r, 4, 2048);
    r.dev.send([1, 2, 3, 4].map((i) => plainFrame(frameBytes(60 + i))));
    delivered += r.rx.takeUsed().length;
    for (let i = 0; i < 3; i++) r.tx.addChain([{ data: concat(hdr(), frameBytes(80)) }]);
    r.dev.kick(TX_QUEUE);
  }
  t.is(delivered, 16);
  t.is(r.rx.usedIdx, (65530 + 16) & 0xffff);
  t.is(r.tx.usedIdx, (65530 + 12) & 0xffff);
  t.is(r.batches.reduce((n, b) => n + b.length, 0), 12);
});

test('RX to a disabled or stopped queue is dropped and counted; TX on a disabled queue is consumed', (t) => {
  const r = rig();
  r.dev.rx.enabled = false;
  r.dev.send([plainFrame(frameBytes(100))]);
  t.deepEqual(r.meter.stage('guest.rx').snapshot().dropReasons, { 'rx-not-ready': 1 });
  r.dev.tx.enabled = false;
  r.tx.addChain([{ data: concat(hdr(), frameBytes(100)) }]);
  r.dev.kick(TX_QUEUE);
  t.is(r.batches.length, 0);
  t.is(r.tx.usedIdx, 1);
});

test('negotiated offloads are exposed and announced', (t) => {
  const meter = new Meter();
  const dev = new VirtioNetDevice({ memory: GuestMemory.plain(1 << 16, meter), meter });
  const seen: unknown[] = [];
  dev.on('offloads', (o) => seen.push(o));
  dev.setDriverFeatures(DEFAULT_NET_FEATURES);
  t.like(dev.offloads, { guestCsum: true, guestTso4: true, guestTso6: true, hostTso4: true, mergeableRx: true });
  dev.setDriverFeatures(bit(32));
  t.like(dev.offloads, { guestCsum: false, guestTso4: false, hostCsum: false, mergeableRx: false });
  t.is(seen.length, 2);
  t.is(dev.config[0], 0x52);
  t.is(new DataView(dev.config.buffer).getUint16(6, true), 1, 'link up');
});
