/**
 * The vfio-user server against a test client over a real unix socket (vfio-user-client.ts does
 * what QEMU's client does): version negotiation with QEMU's own capability JSON, device/region/IRQ
 * info, DMA_MAP of a memfd as guest RAM and DMA through it, INTx eventfd with automasking, MSI,
 * posted writes, reset, unmap, and bad input of every kind — answered with errors, never a crash,
 * a bad connection closing only itself.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Rtl8139 } from '../../src/devices/rtl8139/device';
import { plainFrame, type Frame } from '../../src/link/frame';
import { Meter } from '../../src/meter/meter';
import {
  addonLoadError,
  eventfdCreate,
  eventfdRead,
  memfdCreate,
  mmap,
  munmap,
  nativeStats,
  type OwnedFd,
} from '../../src/native';
import { Errno } from '../../src/native/errors';
import { listenVfioUser, vfioUserQemuArgs, type VfioUserServer } from '../../src/transports/vfio-user';
import type { VfioUserConnection } from '../../src/transports/vfio-user-connection';
import {
  Cmd,
  DEVICE_FLAGS_PCI,
  DEVICE_FLAGS_RESET,
  FLAG_ERROR,
  IRQ_INFO_AUTOMASKED,
  IRQ_INFO_EVENTFD,
  IRQ_INFO_MASKABLE,
  IRQ_SET_ACTION_MASK,
  IRQ_SET_ACTION_TRIGGER,
  IRQ_SET_ACTION_UNMASK,
  IRQ_SET_DATA_BOOL,
  IRQ_SET_DATA_EVENTFD,
  IRQ_SET_DATA_NONE,
  TYPE_REPLY,
} from '../../src/transports/vfio-user-protocol';
import { QEMU_CAPS, VfioUserClient, type Reply } from './vfio-user-client';

const nativeTest = addonLoadError ? test.skip : test;
// mapping counts are process wide: these run one at a time
const serialTest = addonLoadError ? test.skip : test.serial;

const MEM = 4 << 20;
const BAR1 = 1;
const CONFIG = 7;
const MAC = Uint8Array.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

interface Rig {
  server: VfioUserServer;
  path: string;
  meter: Meter;
  guests: Rtl8139[];
  connections: VfioUserConnection[];
}

async function rig(t: { teardown(f: () => Promise<void> | void): void }, opts: { msi?: boolean } = {}): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), 'usernet-vfu-'));
  const path = join(dir, 'nic.sock');
  const meter = new Meter();
  const server = await listenVfioUser({ path, meter, rtl8139: { msi: opts.msi } });
  const guests: Rtl8139[] = [];
  const connections: VfioUserConnection[] = [];
  server.on('guest', (nic: Rtl8139, conn: VfioUserConnection) => {
    guests.push(nic);
    connections.push(conn);
  });
  t.teardown(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { server, path, meter, guests, connections };
}

function isError(r: Reply, errno?: number): boolean {
  return (r.flags & FLAG_ERROR) !== 0 && (errno === undefined || r.error === errno);
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/**
 * Connect, negotiate, map a memfd as guest RAM at 0, enable the device like a BIOS + driver. Our
 * own view of the RAM is unmapped at teardown (not left to GC: mapping counts are checked).
 */
async function ready(r: Rig, t: { teardown(f: () => void): void }): Promise<{ c: VfioUserClient; ram: Uint8Array; memfd: OwnedFd; irq: OwnedFd }> {
  const c = new VfioUserClient(r.path);
  const v = await c.version();
  if (isError(v)) throw new Error('version refused');
  const memfd = memfdCreate('guest-ram', MEM);
  const ab = mmap(memfd, 0, MEM);
  t.teardown(() => {
    if (ab.byteLength > 0) munmap(ab);
  });
  const ram = new Uint8Array(ab);
  const m = await c.dmaMap(0, MEM, 0, memfd);
  if (isError(m)) throw new Error(`DMA_MAP failed ${m.error}`);
  await c.write(CONFIG, 0x04, 0x0007, 2); // I/O, memory, bus master
  const irq = eventfdCreate();
  await c.setIrqs(0, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER, 0, 1, [irq]);
  return { c, ram, memfd, irq };
}

/** The 8139too open sequence, over the socket (posted memory-BAR writes, reads round-trip). */
async function openNic(c: VfioUserClient, ringAddr: number): Promise<void> {
  c.postWrite(BAR1, 0x37, 0x10, 1); // reset
  while ((await c.readValue(BAR1, 0x37, 1)) & 0x10);
  c.postWrite(BAR1, 0x30, ringAddr, 4);
  c.postWrite(BAR1, 0x37, 0x0c, 1);
  c.postWrite(BAR1, 0x44, 0xf78a, 4);
  c.postWrite(BAR1, 0x40, 0x03000680, 4);
  c.postWrite(BAR1, 0x3c, 0xc07f, 2);
  await c.readValue(BAR1, 0x3c, 2);
}

nativeTest('VERSION: QEMU proposes 0.0 with its capabilities; the reply is 0.0, NUL-terminated JSON, no longer than the request', async (t) => {
  const r = await rig(t);
  const c = new VfioUserClient(r.path);
  t.teardown(() => c.close());
  const reply = await c.version();
  t.false(isError(reply));
  t.is(reply.flags & 0xf, TYPE_REPLY);
  t.is(reply.view.getUint16(16, true), 0);
  t.is(reply.view.getUint16(18, true), 0);
  t.is(reply.bytes[reply.size - 1], 0, 'NUL is the last byte');
  t.true(reply.size <= 16 + 4 + QEMU_CAPS.length + 1, 'fits QEMU’s reply buffer');
  const caps = JSON.parse(Buffer.from(reply.bytes.subarray(20, reply.size - 1)).toString()).capabilities;
  t.is(caps.max_msg_fds, 16);
  t.is(caps.max_data_xfer_size, 1 << 20);
  t.is(caps.write_multiple, true);
  t.is(caps.migration, undefined, 'migration is off');
  await tick();
  t.is(r.guests.length, 1, 'the device is announced once negotiated');
  // a second VERSION is refused
  t.true(isError(await c.version(), Errno.EINVAL));
});

nativeTest('VERSION: a short request gets a shortened reply; bad JSON or major ≠ 0 is refused, the connection stays', async (t) => {
  const r = await rig(t);
  const c = new VfioUserClient(r.path);
  t.teardown(() => c.close());
  t.true(isError(await c.version('{"capabilities":'), Errno.EINVAL));
  t.true(isError(await c.version('[1,2]'), Errno.EINVAL));
  t.true(isError(await c.version('{}', 1), Errno.ENOTSUP));
  const reply = await c.version('{"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576,"pgsizes":4096}}');
  t.false(isError(reply));
  const caps = JSON.parse(Buffer.from(reply.bytes.subarray(20, reply.size - 1)).toString()).capabilities;
  t.is(caps.write_multiple, undefined, 'not offered, not accepted');
  t.true(reply.size <= 16 + 4 + 80);
});

nativeTest('commands before VERSION are refused (EINVAL); unknown commands get ENOSYS', async (t) => {
  const r = await rig(t);
  const c = new VfioUserClient(r.path);
  t.teardown(() => c.close());
  t.true(isError(await c.info(Cmd.DEVICE_GET_INFO, 0, 16), Errno.EINVAL));
  await c.version();
  t.true(isError(await c.request(99, new Uint8Array(8)), Errno.ENOSYS));
  t.true(isError(await c.request(Cmd.DMA_READ, new Uint8Array(16)), Errno.ENOSYS));
  t.true(isError(await c.request(Cmd.DEVICE_GET_REGION_IO_FDS, new Uint8Array(16)), Errno.ENOSYS));
});

nativeTest('DEVICE_GET_INFO, REGION_INFO, IRQ_INFO: 9 regions, 5 IRQ types, BAR0 I/O 256, BAR1 256, config 256, the rest 0', async (t) => {
  const r = await rig(t);
  const c = new VfioUserClient(r.path);
  t.teardown(() => c.close());
  await c.version();
  const info = await c.info(Cmd.DEVICE_GET_INFO, 0, 16);
  t.is(info.size, 32);
  t.is(info.view.getUint32(20, true), DEVICE_FLAGS_RESET | DEVICE_FLAGS_PCI);
  t.is(info.view.getUint32(24, true), 9);
  t.is(info.view.getUint32(28, true), 5);
  const sizes: number[] = [];
  for (let i = 0; i < 9; i++) {
    const ri = await c.info(Cmd.DEVICE_GET_REGION_INFO, i, 32);
    t.is(ri.size, 48, 'no larger than the request');
    t.is(ri.view.getUint32(24, true), i);
    sizes.push(Number(ri.view.getBigUint64(32, true)));
    t.is(ri.view.getUint32(20, true), sizes[i] > 0 ? 3 : 0);
  }
  t.deepEqual(sizes, [256, 256, 0, 0, 0, 0, 0, 256, 0]);
  t.true(isError(await c.info(Cmd.DEVICE_GET_REGION_INFO, 9, 32), Errno.EINVAL));
  t.true(isError(await c.info(Cmd.DEVICE_GET_REGION_INFO, 0, 8), Errno.EINVAL), 'argsz too small');
  const intx = await c.info(Cmd.DEVICE_GET_IRQ_INFO, 0, 16);
  t.is(intx.view.getUint32(20, true), IRQ_INFO_EVENTFD | IRQ_INFO_MASKABLE | IRQ_INFO_AUTOMASKED);
  t.is(intx.view.getUint32(28, true), 1);
  const counts: number[] = [];
  for (let i = 0; i < 5; i++) counts.push((await c.info(Cmd.DEVICE_GET_IRQ_INFO, i, 16)).view.getUint32(28, true));
  t.deepEqual(counts, [1, 0, 0, 1, 1], 'INTx; no MSI capability on an RTL8139; ERR and REQ accepted');
  t.true(isError(await c.info(Cmd.DEVICE_GET_IRQ_INFO, 5, 16), Errno.EINVAL));
});

nativeTest('config space over REGION_READ/WRITE: whole-header read, IDs, BAR sizing, 8-byte access split', async (t) => {
  const r = await rig(t);
  const c = new VfioUserClient(r.path);
  t.teardown(() => c.close());
  await c.version();
  const cfg = await c.read(CONFIG, 0, 256);
  t.is(cfg.length, 256);
  const v = new DataView(cfg.buffer);
  t.is(v.getUint16(0, true), 0x10ec);
  t.is(v.getUint16(2, true), 0x8139);
  t.true(cfg[8] < 0x20);
  t.is(cfg[0x3d], 1);
  await c.write(CONFIG, 0x14, 0xffffffff, 4);
  t.is(await c.readValue(CONFIG, 0x14, 4), 0xffffff00);
  t.true(isError(await c.request(Cmd.REGION_READ, c.regionReadMsg(CONFIG, 250, 8)), Errno.EINVAL), 'past the end');
  t.true(isError(await c.request(Cmd.REGION_READ, c.regionReadMsg(2, 0, 4)), Errno.EINVAL), 'BAR2 does not exist');
  t.true(isError(await c.request(Cmd.REGION_READ, c.regionReadMsg(12, 0, 4)), Errno.EINVAL));
  // BAR decoding is off until the command register enables it: reads float high
  t.is(await c.readValue(BAR1, 0x40, 4), 0xffffffff);
  await c.write(CONFIG, 0x04, 0x0002, 2);
  t.is((await c.readValue(BAR1, 0x40, 4)) & 0x7cc00000, 0x74000000);
  const eight = await c.read(BAR1, 0, 8);
  t.deepEqual(eight.subarray(0, 6), MAC);
});

serialTest('DMA: a memfd mapped as guest RAM; RX lands in the ring, INTx eventfd fires and stays masked until unmasked; TX reads the buffer', async (t) => {
  const r = await rig(t);
  const before = nativeStats();
  const { c, ram, irq } = await ready(r, t);
  t.teardown(() => c.close());
  t.is(nativeStats().mappings, before.mappings + 2, 'our mapping and the server’s');
  const ring = 0x10000;
  await openNic(c, ring);
  const nic = r.guests[0];
  const sent: Uint8Array[] = [];
  nic.onReceive((frames) => frames.forEach((f) => sent.push(f.data.slice())));
  // RX: a frame for our MAC
  const f = new Uint8Array(100).fill(7);
  f.set(MAC, 0);
  nic.send([plainFrame(f)]);
  t.is(eventfdRead(irq), 1, 'INTx signalled');
  nic.send([plainFrame(f)]);
  t.is(eventfdRead(irq), 0, 'automasked: no second signal before the unmask');
  const isr = await c.readValue(BAR1, 0x3e, 2);
  t.is(isr & 1, 1);
  const hdr = new DataView(ram.buffer, ring);
  t.is(hdr.getUint16(0, true) & 1, 1, 'ROK in the packet header');
  t.is(hdr.getUint16(2, true), 104);
  t.deepEqual(ram.subarray(ring + 4, ring + 104), f);
  // the guest read ISR after both frames arrived: the unmask does not signal again
  await c.setIrqs(0, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK, 0, 1);
  t.is(eventfdRead(irq), 0, 'nothing unseen');
  // the guest acknowledges (having looked at BUFE, as 8139too does); the next frame is a new cause, signalled at once
  await c.readValue(BAR1, 0x37, 1);
  c.postWrite(BAR1, 0x3e, 0x0001, 2);
  t.is(await c.readValue(BAR1, 0x3e, 2), 0);
  nic.send([plainFrame(f)]);
  t.is(eventfdRead(irq), 1);
  // masked now: the guest looks (reads ISR, CR), acknowledges, then another frame lands — unseen by it
  await c.readValue(BAR1, 0x3e, 2);
  await c.readValue(BAR1, 0x37, 1);
  c.postWrite(BAR1, 0x3e, 0x0001, 2);
  await c.readValue(BAR1, 0x3c, 2);
  nic.send([plainFrame(f)]);
  t.is(eventfdRead(irq), 0, 'masked');
  await c.setIrqs(0, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK, 0, 1);
  t.is(eventfdRead(irq), 1, 'the unseen cause is signalled at the unmask');
  // ack everything; line drops
  await c.readValue(BAR1, 0x37, 1);
  c.postWrite(BAR1, 0x3e, 0xffff, 2);
  t.is(await c.readValue(BAR1, 0x3e, 2), 0);
  await c.setIrqs(0, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK, 0, 1);
  // TX: frame in guest RAM, TSAD0/TSD0 posted, completion interrupt
  const txBuf = 0x40000;
  const out = new Uint8Array(60).fill(0x33);
  out.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0);
  ram.set(out, txBuf);
  c.postWrite(BAR1, 0x20, txBuf, 4);
  c.postWrite(BAR1, 0x10, 60 | 0x80000, 4);
  await c.readValue(BAR1, 0x10, 4);
  await until(() => sent.length === 1, 'the transmitted frame');
  t.deepEqual(sent[0], out);
  t.truthy((await c.readValue(BAR1, 0x10, 4)) & 0x8000, 'TOK');
  t.is(eventfdRead(irq), 1, 'TX interrupt');
  const msgs = r.meter.stage('vfio-user.msg').snapshot();
  t.true(msgs.frames > 10);
  t.true(r.connections[0].stats.postedWrites > 0);
  t.is(r.meter.stage('device.dma').copies, 4, 'four received frames, one copy each; the transmit was a view');
});

serialTest('DMA_MAP/UNMAP: overlap → EEXIST, unaligned → EINVAL, unknown unmap → ENOENT, UNMAP_ALL; after unmap DMA fails as a master abort', async (t) => {
  const r = await rig(t);
  const base = nativeStats().mappings;
  const { c, memfd } = await ready(r, t);
  t.teardown(() => c.close());
  t.true(isError(await c.dmaMap(0x100000, 0x1000, 0, memfd), Errno.EEXIST));
  t.true(isError(await c.dmaMap(MEM + 0x123, 0x1000, 0, memfd), Errno.EINVAL));
  t.true(isError(await c.dmaMap(MEM, 0, 0, memfd), Errno.EINVAL));
  // a second range without an fd: accepted, unreachable (ROM-like)
  t.false(isError(await c.dmaMap(0xfffc0000, 0x40000, 0, null, 1)));
  t.true(isError(await c.dmaUnmap(0, 0x1000), Errno.ENOENT), 'must match a mapping exactly');
  t.true(isError(await c.dmaUnmap(0, MEM, 1), Errno.ENOTSUP), 'dirty bitmap: no migration');
  t.false(isError(await c.dmaUnmap(0xfffc0000, 0x40000)));
  const ring = 0x10000;
  await openNic(c, ring);
  t.false(isError(await c.dmaUnmap(0, MEM)));
  t.is(nativeStats().mappings, base + 1, 'the server unmapped its view (ours remains)');
  const nic = r.guests[0];
  const f = new Uint8Array(64).fill(1);
  f.set(MAC, 0);
  nic.send([plainFrame(f)]);
  t.is(r.meter.stage('guest.rx').snapshot().dropReasons['rx-dma-outside-memory'], 1);
  t.truthy((await c.readValue(BAR1, 0x3e, 2)) & 0x8000, 'ISR.SERR');
  t.truthy((await c.readValue(CONFIG, 0x06, 2)) & 0x2000, 'PCI status: received master abort');
  t.false(isError(await c.dmaMap(0, MEM, 0, memfd)));
  t.false(isError(await c.dmaUnmap(0, 0, 2)), 'UNMAP_ALL');
  t.is(nativeStats().mappings, base + 1);
});

serialTest('SET_IRQS validation: one data type and one action, ranges, fd counts; MASK/UNMASK with DATA_BOOL; disable', async (t) => {
  const r = await rig(t);
  const { c, irq } = await ready(r, t);
  t.teardown(() => c.close());
  const e2 = eventfdCreate();
  t.true(isError(await c.setIrqs(0, IRQ_SET_DATA_NONE | IRQ_SET_DATA_BOOL | IRQ_SET_ACTION_MASK, 0, 1), Errno.EINVAL));
  t.true(isError(await c.setIrqs(0, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_MASK | IRQ_SET_ACTION_UNMASK, 0, 1), Errno.EINVAL));
  t.true(isError(await c.setIrqs(0, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_MASK, 0, 2), Errno.EINVAL), 'INTx has one vector');
  t.true(isError(await c.setIrqs(1, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER, 0, 1, [e2]), Errno.EINVAL), 'no MSI vectors');
  t.true(isError(await c.setIrqs(0, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_MASK, 0, 0), Errno.EINVAL), 'count 0 only for disable');
  t.true(isError(await c.setIrqs(0, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER, 0, 1, [e2]), Errno.EINVAL), 'fds without DATA_EVENTFD');
  t.true(isError(await c.setIrqs(0, 0x100 | IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER, 0, 1), Errno.EINVAL), 'unknown flag');
  t.true(isError(await c.setIrqs(9, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER, 0, 0), Errno.EINVAL));
  // DATA_NONE|TRIGGER count 1: a software trigger
  await c.setIrqs(0, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER, 0, 1);
  t.is(eventfdRead(irq), 1);
  await c.setIrqs(0, IRQ_SET_DATA_BOOL | IRQ_SET_ACTION_TRIGGER, 0, 1, [], Uint8Array.of(0));
  t.is(eventfdRead(irq), 0, 'bool false: no trigger');
  // mask: causes do not signal; unmask does
  await openNic(c, 0x10000);
  await c.setIrqs(0, IRQ_SET_DATA_BOOL | IRQ_SET_ACTION_MASK, 0, 1, [], Uint8Array.of(1));
  const f = new Uint8Array(64).fill(2);
  f.set(MAC, 0);
  r.guests[0].send([plainFrame(f)]);
  t.is(eventfdRead(irq), 0);
  await c.setIrqs(0, IRQ_SET_DATA_BOOL | IRQ_SET_ACTION_UNMASK, 0, 1, [], Uint8Array.of(1));
  t.is(eventfdRead(irq), 1);
  // the resample eventfd (KVM path): each event is an unmask
  const resample = eventfdCreate();
  t.false(isError(await c.setIrqs(0, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_UNMASK, 0, 1, [resample])));
  await c.readValue(BAR1, 0x37, 1);
  c.postWrite(BAR1, 0x3e, 0xffff, 2);
  await c.readValue(BAR1, 0x3e, 2);
  r.guests[0].send([plainFrame(f)]); // a cause while masked, after the guest's last access
  const { eventfdWrite } = await import('../../src/native');
  eventfdWrite(resample, 1);
  await until(() => eventfdRead(irq) === 1, 'the resample unmask to signal');
  t.pass();
  // disable INTx: no more signals
  t.false(isError(await c.setIrqs(0, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER, 0, 0)));
  await c.readValue(BAR1, 0x37, 1);
  c.postWrite(BAR1, 0x3e, 0xffff, 2);
  r.guests[0].send([plainFrame(f)]);
  await tick();
  t.is(eventfdRead(irq), 0);
  // ERR and REQ take an eventfd
  t.false(isError(await c.setIrqs(3, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER, 0, 1, [e2])));
  t.false(isError(await c.setIrqs(4, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER, 0, 1, [eventfdCreate()])));
});

serialTest('MSI: with an MSI capability, an eventfd per vector; each new cause is one message; INTx stays quiet', async (t) => {
  const r = await rig(t, { msi: true });
  const { c, irq, ram } = await ready(r, t);
  t.teardown(() => c.close());
  t.is((await c.info(Cmd.DEVICE_GET_IRQ_INFO, 1, 16)).view.getUint32(28, true), 1);
  const msi = eventfdCreate();
  t.false(isError(await c.setIrqs(1, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER, 0, 1, [msi])));
  await openNic(c, 0x10000);
  const nic = r.guests[0];
  const f = new Uint8Array(64).fill(3);
  f.set(MAC, 0);
  nic.send([plainFrame(f)]);
  t.is(eventfdRead(msi), 1);
  // TX completion is a new cause while RX is still pending: another message
  ram.fill(0xff, 0x40000, 0x40000 + 60);
  c.postWrite(BAR1, 0x20, 0x40000, 4);
  c.postWrite(BAR1, 0x10, 60, 4);
  await c.readValue(BAR1, 0x10, 4);
  await until(() => eventfdRead(msi) === 1, 'a message for TOK');
  t.is(eventfdRead(irq), 0, 'INTx not used while MSI is on');
  t.false(isError(await c.setIrqs(1, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER, 0, 0)), 'disable MSI');
});

serialTest('posted writes get no reply, not even an error; REGION_WRITE_MULTI; DEVICE_RESET', async (t) => {
  const r = await rig(t);
  const { c } = await ready(r, t);
  t.teardown(() => c.close());
  // a posted write to a bad region: nothing comes back, the next request is answered normally
  c.post(Cmd.REGION_WRITE, c.writeMsg(12, 0, 1, 4));
  c.post(99, new Uint8Array(4));
  const v = await c.readValue(BAR1, 0x5e, 1);
  t.is(v, 0x10, 'RERID');
  t.deepEqual(c.unsolicited, [], 'no reply to NO_REPLY commands');
  // WRITE_MULTI: IMR and RBSTART in one message
  const multi = new Uint8Array(8 + 2 * 24);
  const mv = new DataView(multi.buffer);
  mv.setUint32(0, 2, true);
  mv.setUint32(8 + 8, BAR1, true);
  mv.setUint32(8 + 0, 0x3c, true);
  mv.setUint32(8 + 12, 2, true);
  mv.setUint16(8 + 16, 0xc07f, true);
  mv.setUint32(32 + 0, 0x30, true);
  mv.setUint32(32 + 8, BAR1, true);
  mv.setUint32(32 + 12, 4, true);
  mv.setUint32(32 + 16, 0x123400, true);
  c.post(Cmd.REGION_WRITE_MULTI, multi);
  t.is(await c.readValue(BAR1, 0x3c, 2), 0xc07f);
  t.is(await c.readValue(BAR1, 0x30, 4), 0x123400);
  const reset = await c.request(Cmd.DEVICE_RESET, new Uint8Array(0));
  t.false(isError(reset));
  t.is(await c.readValue(CONFIG, 0x04, 2), 0, 'command register cleared by the function reset');
  t.is(await c.readValue(BAR1, 0x3c, 2), 0xffff, 'memory decoding off: reads float high');
  await c.write(CONFIG, 0x04, 0x0002, 2);
  t.is(await c.readValue(BAR1, 0x3c, 2), 0, 'IMR back to 0');
});

nativeTest('malformed input: short payloads, bad sizes and types, unexpected fds — errors, and a broken framing closes only that connection', async (t) => {
  const r = await rig(t);
  const c = new VfioUserClient(r.path);
  t.teardown(() => c.close());
  await c.version();
  t.true(isError(await c.request(Cmd.DMA_MAP, new Uint8Array(8)), Errno.EINVAL));
  t.true(isError(await c.request(Cmd.DMA_UNMAP, new Uint8Array(4)), Errno.EINVAL));
  t.true(isError(await c.request(Cmd.REGION_READ, new Uint8Array(4)), Errno.EINVAL));
  t.true(isError(await c.request(Cmd.REGION_WRITE, c.writeMsg(CONFIG, 0, 0, 4).subarray(0, 17)), Errno.EINVAL), 'count larger than the data');
  t.true(isError(await c.request(Cmd.DEVICE_SET_IRQS, new Uint8Array(10)), Errno.EINVAL));
  t.true(isError(await c.request(Cmd.DEVICE_GET_INFO, new Uint8Array(4)), Errno.EINVAL));
  t.true(isError(await c.request(Cmd.REGION_READ, c.regionReadMsg(CONFIG, 0, (1 << 20) + 1)), Errno.EINVAL), 'over max_data_xfer_size');
  const fd = eventfdCreate();
  t.true(isError(await c.request(Cmd.DEVICE_GET_INFO, new Uint8Array(16), { fds: [fd] }), Errno.EINVAL), 'fds where none belong');
  // a message larger than the maximum is read, discarded and refused; the connection goes on
  const big = new Uint8Array((1 << 20) + 64);
  t.true(isError(await c.request(Cmd.REGION_WRITE, big), Errno.E2BIG));
  t.is(await c.readValue(CONFIG, 0, 2), 0x10ec);
  // a reply sent to the server is ignored
  c.post(Cmd.REGION_READ, new Uint8Array(0));
  c.send(Cmd.REGION_READ, new Uint8Array(0), { flags: TYPE_REPLY });
  t.is(await c.readValue(CONFIG, 2, 2), 0x8139);
  // unframeable: size < 16 closes this connection
  c.send(Cmd.DEVICE_GET_INFO, new Uint8Array(16), { sizeOverride: 8 });
  await c.waitClosed();
  t.true(c.closed);
  // the server still serves the next client
  await until(() => r.server.connection === null, 'the bad connection to go');
  const d = new VfioUserClient(r.path);
  t.teardown(() => d.close());
  t.false(isError(await d.version()));
});

nativeTest('random messages never crash the server; every request without NO_REPLY gets exactly one reply', async (t) => {
  const r = await rig(t);
  const c = new VfioUserClient(r.path);
  t.teardown(() => c.close());
  await c.version();
  let seed = 12345;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const replies: Promise<Reply>[] = [];
  for (let i = 0; i < 2000; i++) {
    const cmd = rnd(20);
    if (cmd === Cmd.VERSION || cmd === Cmd.DEVICE_RESET || cmd === Cmd.DMA_MAP || cmd === Cmd.DMA_UNMAP) continue;
    const len = rnd(48);
    const p = new Uint8Array(len);
    for (let k = 0; k < len; k++) p[k] = rnd(256);
    if (cmd === Cmd.REGION_READ && len >= 16) new DataView(p.buffer).setUint32(12, rnd(64), true);
    if (cmd === Cmd.REGION_WRITE && len >= 16) new DataView(p.buffer).setUint32(12, rnd(len - 15), true);
    const posted = rnd(4) === 0;
    if (posted) c.post(cmd, p);
    else replies.push(c.request(cmd, p));
  }
  const all = await Promise.all(replies);
  t.is(all.length, replies.length);
  t.false(c.closed);
  t.is(await c.readValue(CONFIG, 0, 2), 0x10ec, 'still serving');
  t.deepEqual(c.unsolicited, []);
});

serialTest('disconnect: the device Port closes, guest memory is unmapped, the fds are released, the next client gets a fresh device', async (t) => {
  const r = await rig(t);
  const base = nativeStats();
  const { c, irq, memfd } = await ready(r, t);
  const nic = r.guests[0];
  let closed = false;
  let disconnected = false;
  nic.once('close', () => (closed = true));
  r.server.once('disconnect', () => (disconnected = true));
  c.close();
  await until(() => closed && disconnected, 'the close');
  t.is(r.server.connection, null);
  irq.close();
  memfd.close();
  await until(() => nativeStats().mappings === base.mappings + 1, 'the server mapping to go'); // our own view stays
  const d = new VfioUserClient(r.path);
  t.teardown(() => d.close());
  await d.version();
  t.is(r.guests.length, 2);
  t.not(r.guests[1], nic);
  // a frame sent to the old port is ignored
  const f: Frame = plainFrame(new Uint8Array(60));
  t.notThrows(() => nic.send([f]));
});

test('QEMU arguments: the JSON -device form with a unix socket', (t) => {
  const args = vfioUserQemuArgs('/tmp/x.sock', { id: 'nic0', noPostedWrites: true });
  t.is(args[0], '-device');
  t.deepEqual(JSON.parse(args[1]), { driver: 'vfio-user-pci', socket: { type: 'unix', path: '/tmp/x.sock' }, id: 'nic0', 'x-no-posted-writes': true });
});

nativeTest('a second client while one is connected is refused; the first keeps working', async (t) => {
  const r = await rig(t);
  const a = new VfioUserClient(r.path);
  t.teardown(() => a.close());
  await a.version();
  const b = new VfioUserClient(r.path);
  t.teardown(() => b.close());
  await b.waitClosed();
  t.true(b.closed);
  t.is(await a.readValue(CONFIG, 0, 2), 0x10ec);
});
