/**
 * The RTL8139C+ model (variant 'rtl8139c+') in C+ mode, driven with the register and descriptor
 * sequences Linux 8139cp performs (rtl8139cp-driver.ts): probe (revision check, EEPROM MAC),
 * open (CpCmd, ring addresses, RxOn|TxOn), start_xmit (fragments first, FS last, TxPoll), the
 * interrupt handler, the NAPI poll; then what the chip must do with them: views for single-buffer
 * transmits, gathers for scattered ones, one batch and one interrupt per turn, LargeSend and
 * checksum offloads as Frame metadata, VLAN insertion, receive status (FCS length, address
 * match, checksum results), frames waiting for descriptors, frames spanning buffers, and guest
 * garbage counted without throwing.
 */
import test from 'ava';
import { GuestMemory } from '../../src/devices/memory';
import { PCI_COMMAND, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY, PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT } from '../../src/devices/pci/config-space';
import { PciDevice } from '../../src/devices/pci/device';
import { frameCheckSequence } from '../../src/devices/rtl8139/crc';
import { Rtl8139, type Rtl8139Options } from '../../src/devices/rtl8139/device';
import { GSO_NONE, GSO_TCPV4, VNET_F_NEEDS_CSUM, plainFrame, type Frame } from '../../src/link/frame';
import { Meter } from '../../src/meter/meter';
import { internetChecksum, onesSum, pseudoHeaderSumV4 } from '../../src/wire/checksum';
import * as P from './rtl8139cp-driver';

const MAC = '52:54:00:ab:cd:02';
const MAC_BYTES = Uint8Array.from([0x52, 0x54, 0x00, 0xab, 0xcd, 0x02]);
const BCAST = new Uint8Array(6).fill(0xff);
const PEER = Uint8Array.from([0x02, 0, 0, 0, 0, 2]);

interface Sent {
  data: Uint8Array;
  view: boolean;
  gsoType: number;
  gsoSize: number;
  flags: number;
  csumStart: number;
  csumOffset: number;
}

interface Rig {
  nic: Rtl8139;
  pci: PciDevice;
  mem: GuestMemory;
  drv: P.Driver8139cp;
  meter: Meter;
  batches: Sent[][];
  irq: boolean[];
}

function rig(opts: Rtl8139Options = {}): Rig {
  const meter = new Meter();
  const mem = GuestMemory.plain(4 << 20, meter);
  const nic = new Rtl8139({ mac: MAC, meter, variant: 'rtl8139c+', ...opts });
  const pci = new PciDevice(nic, mem);
  const batches: Sent[][] = [];
  const ram = mem.region(0).bytes.buffer;
  nic.onReceive((frames) =>
    batches.push(
      frames.map((f) => ({
        data: f.data.slice(),
        view: f.data.buffer === ram,
        gsoType: f.gsoType,
        gsoSize: f.gsoSize,
        flags: f.flags,
        csumStart: f.csumStart,
        csumOffset: f.csumOffset,
      })),
    ),
  );
  const irq: boolean[] = [];
  pci.onInterrupt = (a) => irq.push(a);
  const drv = new P.Driver8139cp(pci, mem);
  return { nic, pci, mem, drv, meter, batches, irq };
}

function up(r: Rig, rxMode?: number): void {
  if (!r.drv.probeCp()) throw new Error('8139cp refused the chip');
  r.drv.openCp(rxMode);
}

const turn = (): Promise<void> => new Promise((res) => setImmediate(res));

function ether(dst: Uint8Array, type: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + payload.length);
  f.set(dst, 0);
  f.set(PEER, 6);
  f[12] = type >>> 8;
  f[13] = type & 0xff;
  f.set(payload, 14);
  return f;
}

/** An Ethernet + IPv4 + TCP/UDP frame with correct checksums (or, with `partial`, the pseudo-header sum in the L4 checksum, as Linux leaves it for CHECKSUM_PARTIAL). */
function ipFrame(dst: Uint8Array, proto: 6 | 17, payloadLen: number, o: { partial?: boolean; seed?: number } = {}): Uint8Array {
  const l4h = proto === 6 ? 20 : 8;
  const ip = new Uint8Array(20 + l4h + payloadLen);
  const dv = new DataView(ip.buffer);
  ip[0] = 0x45;
  dv.setUint16(2, ip.length);
  dv.setUint16(4, 0x1234);
  ip[8] = 64;
  ip[9] = proto;
  ip.set([10, 0, 2, 2], 12);
  ip.set([10, 0, 2, 15], 16);
  dv.setUint16(10, internetChecksum(ip, 0, 20));
  const l4 = 20;
  dv.setUint16(l4, 8080);
  dv.setUint16(l4 + 2, 40000);
  if (proto === 6) {
    dv.setUint32(l4 + 4, 1000);
    ip[l4 + 12] = 0x50;
    ip[l4 + 13] = 0x18;
    dv.setUint16(l4 + 14, 65535);
  } else {
    dv.setUint16(l4 + 4, l4h + payloadLen);
  }
  for (let i = 0; i < payloadLen; i++) ip[l4 + l4h + i] = (i * 13 + (o.seed ?? 1)) & 0xff;
  const pseudo = pseudoHeaderSumV4(0x0a000202, 0x0a00020f, proto, l4h + payloadLen);
  const at = l4 + (proto === 6 ? 16 : 6);
  if (o.partial) dv.setUint16(at, onesSum(new Uint8Array(0), 0, 0, pseudo));
  else dv.setUint16(at, internetChecksum(ip, l4, l4h + payloadLen, pseudo));
  return ether(dst, 0x0800, ip);
}

test('identity: revision 0x20 and RTL8139C+ version bits, so 8139cp binds (and refuses the default RTL8139C)', (t) => {
  const r = rig();
  t.is(r.pci.config.read(8, 1), 0x20);
  t.true(r.drv.probeCp());
  t.deepEqual(r.drv.mac, MAC_BYTES, 'MAC from EEPROM words 7-9');
  t.is(r.drv.r32(P.TxConfig) & 0x7cc00000, 0x74800000);
  t.is(r.drv.r8(0x5e), 0x20, 'RERID');
  const c = rig({ variant: 'rtl8139c' });
  t.false(c.drv.probeCp(), 'revision 0x10: "not an 8139C+ compatible chip, use 8139too"');
  t.throws(() => new Rtl8139({ variant: 'rtl8139x' as never }), { instanceOf: RangeError });
});

test('open: C+CR and the ring addresses read back; 0x10-0x2F decode as ring registers in C+ mode; CR.RST goes back to C mode', (t) => {
  const r = rig();
  up(r);
  const d = r.drv;
  t.is(d.r16(P.CpCmd), d.cpcmd);
  t.is(d.r32(P.RxRingAddr), d.ringDma);
  t.is(d.r32(P.TxRingAddr), d.ringDma + 16 * P.RING_SIZE);
  t.is(d.r32(P.HiTxRingAddr), 0);
  t.is(d.r8(P.Cmd) & (P.RxOn | P.TxOn), P.RxOn | P.TxOn);
  t.is(d.r16(P.IntrMask), P.cp_intr_mask);
  t.is(d.r32(P.TxConfig), 0x74800000 | (3 << 24) | (6 << 8));
  t.deepEqual(r.nic.offloads.hostTso4 && r.nic.offloads.hostCsum && r.nic.offloads.guestCsum, true);
  t.false(r.nic.offloads.guestTso4);
  d.w8(P.Cmd, P.CmdReset);
  t.is(d.r16(P.CpCmd), 0, 'reset leaves C+ mode');
  d.w32(0x20, 0x1234);
  t.is(d.r32(0x20), 0x1234, 'TSAD0 again');
  t.is(d.r32(0x10) & 0x2000, 0x2000, 'TSD0: OWN after reset');
});

test('TX: a frame in one buffer goes out as a view of guest memory; its descriptor comes back with OWN clear, one TOK', async (t) => {
  const r = rig();
  up(r);
  const f = ether(BCAST, 0x0800, new Uint8Array(100).fill(7));
  r.drv.xmit(f);
  t.is(r.batches.length, 0, 'served at the end of the turn');
  t.true((r.drv.desc('tx', 0).opts1 & P.DescOwn) !== 0);
  await turn();
  t.is(r.batches.length, 1);
  t.deepEqual(r.batches[0][0].data, f);
  t.true(r.batches[0][0].view, 'a view of guest RAM');
  t.is(r.batches[0][0].gsoType, GSO_NONE);
  t.is(r.drv.desc('tx', 0).opts1 & P.DescOwn, 0);
  t.is(r.meter.stage('device.dma.tx').snapshot().copies, 0);
  t.deepEqual(r.irq, [true]);
  const status = r.drv.cpInterrupt();
  t.truthy(status & P.TxOK);
  t.is(r.drv.txDone, 1);
  t.is(r.drv.txTail, 1);
  t.deepEqual(r.irq, [true, false], 'acknowledged: line down');
});

test('TX: the frames posted in one turn are one batch and one interrupt; the ring wraps at EOR', async (t) => {
  const r = rig();
  up(r);
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 30; i++) r.drv.xmit(ether(BCAST, 0x0800, new Uint8Array(60 + i).fill(i)));
    await turn();
    t.is(r.batches.length, round + 1);
    t.is(r.batches[round].length, 30);
    t.deepEqual([...r.batches[round][29].data.subarray(14, 16)], [29, 29]);
    r.drv.cpInterrupt();
  }
  t.is(r.drv.txDone, 90, 'every frame completed, across the wrap at descriptor 63');
  t.deepEqual(r.irq, [true, false, true, false, true, false], 'one interrupt per batch');
  t.deepEqual(r.meter.stage('guest.tx').snapshot().dropReasons, {});
});

test('TX: LargeSend over scattered buffers becomes one gathered GSO_TCPV4 frame (copies metered), MSS and checksum offsets set', async (t) => {
  const r = rig();
  up(r);
  const f = ipFrame(PEER, 6, 20000, { partial: true });
  r.drv.xmit(f, { mss: 1448, frags: [54, 4096, 4096, 4096] });
  await turn();
  const s = r.batches[0][0];
  t.deepEqual(s.data, f);
  t.false(s.view);
  t.is(s.gsoType, GSO_TCPV4);
  t.is(s.gsoSize, 1448);
  t.is(s.flags, VNET_F_NEEDS_CSUM);
  t.is(s.csumStart, 34);
  t.is(s.csumOffset, 16);
  const g = r.meter.stage('device.dma.tx').snapshot();
  t.is(g.copies, 5, 'one metered copy per buffer');
  t.is(g.bytesCopied, f.length);
  // descriptors: all five returned, LS on the last
  r.drv.cpInterrupt();
  t.is(r.drv.txDone, 1);
  t.is(r.drv.txTail, 5);
});

test('TX: TCPCS/UDPCS ask for the L4 checksum (NEEDS_CSUM at 16 / 6); a plain frame carries no metadata', async (t) => {
  const r = rig();
  up(r);
  r.drv.xmit(ipFrame(PEER, 6, 100, { partial: true }), { csum: 'tcp' });
  r.drv.xmit(ipFrame(PEER, 17, 100, { partial: true }), { csum: 'udp' });
  r.drv.xmit(ipFrame(PEER, 17, 100));
  await turn();
  const [tcp, udp, plain] = r.batches[0];
  t.deepEqual([tcp.flags, tcp.csumStart, tcp.csumOffset, tcp.gsoType], [VNET_F_NEEDS_CSUM, 34, 16, GSO_NONE]);
  t.deepEqual([udp.flags, udp.csumStart, udp.csumOffset], [VNET_F_NEEDS_CSUM, 34, 6]);
  t.is(plain.flags, 0);
  t.true(tcp.view && udp.view && plain.view);
});

test('TX: TxVlanTag inserts the 802.1Q tag from opts2 after the source address', async (t) => {
  const r = rig();
  up(r);
  const f = ether(BCAST, 0x0800, new Uint8Array(80).fill(3));
  r.drv.xmit(f, { vlan: 0x2064 });
  await turn();
  const s = r.batches[0][0].data;
  t.is(s.length, f.length + 4);
  t.deepEqual([...s.subarray(12, 16)], [0x81, 0x00, 0x20, 0x64]);
  t.deepEqual(s.subarray(16), f.subarray(12));
  t.deepEqual(s.subarray(0, 12), f.subarray(0, 12));
});

test('RX: frames land in descriptors with FS|LS, length with FCS, address match and checksum status; one ROK per batch', (t) => {
  const r = rig();
  up(r);
  const good = ipFrame(MAC_BYTES, 6, 1000);
  const bad = ipFrame(MAC_BYTES, 6, 1000);
  bad[100] ^= 0xff;
  const udp = ipFrame(BCAST, 17, 200);
  const arp = ether(BCAST, 0x0806, new Uint8Array(28).fill(1));
  r.nic.send([good, bad, udp, arp].map((d) => plainFrame(d)));
  t.deepEqual(r.irq, [true], 'one interrupt for the batch');
  t.truthy(r.drv.cpInterrupt() & P.RxOK);
  const got = r.drv.cpPoll();
  t.is(got.length, 4);
  const pid = (s: number): number => (s >>> 16) & 3;
  t.deepEqual(got[0].data, good);
  t.is(got[0].len, good.length);
  t.is(pid(got[0].status), P.RxProtoTCP);
  t.is(got[0].status & (P.TCPFail | P.IPFail), 0);
  t.truthy(got[0].status & 0x02000000, 'PAM');
  t.is(pid(got[1].status), P.RxProtoTCP);
  t.truthy(got[1].status & P.TCPFail, 'corrupted payload: TCP checksum failed');
  t.is(pid(got[2].status), P.RxProtoUDP);
  t.is(got[2].status & P.UDPFail, 0);
  t.truthy(got[2].status & 0x01000000, 'BAR');
  t.is(pid(got[3].status), 0, 'ARP is not IP');
  t.is(got[3].len, 60, 'a runt arrives padded to 60 bytes');
  // the FCS follows the frame in the buffer
  const d0 = r.drv.rxAddr[0];
  const fcs = r.mem.region(0).view.getUint32(d0 + good.length, true);
  t.is(fcs, frameCheckSequence(good));
  t.is(r.drv.r16(P.IntrMask), P.cp_intr_mask, 'the poll re-enabled RX interrupts');
  t.is(r.meter.stage('guest.rx').snapshot().frames, 4);
  t.is(r.meter.stage('device.dma').snapshot().copies, 4, 'one copy per received frame');
});

test('RX: a NEEDS_CSUM frame from the backend is completed by the device and reported good', (t) => {
  const r = rig();
  up(r);
  const partial = ipFrame(MAC_BYTES, 6, 500, { partial: true });
  const full = ipFrame(MAC_BYTES, 6, 500);
  const f: Frame = { ...plainFrame(partial), flags: VNET_F_NEEDS_CSUM, csumStart: 34, csumOffset: 16 };
  r.nic.send([f]);
  r.drv.cpInterrupt();
  const [got] = r.drv.cpPoll();
  t.deepEqual(got.data, full);
  t.is((got.status >>> 16) & 3, P.RxProtoTCP);
  t.is(got.status & P.TCPFail, 0);
});

test('RX: with every descriptor full, frames wait in the FIFO (RxEmpty) and go in after the poll refills the ring, in order', (t) => {
  const r = rig();
  up(r);
  const frames = Array.from({ length: 100 }, (_, i) => ether(MAC_BYTES, 0x88b5, new Uint8Array(200).fill(i)));
  r.nic.send(frames.map((d) => plainFrame(d)));
  t.is(r.meter.stage('guest.rx').snapshot().frames, 64);
  t.true(r.nic.rxBlocked);
  const status = r.drv.cpInterrupt();
  t.truthy(status & P.RxEmpty, 'RX descriptor unavailable');
  const got: Uint8Array[] = [];
  for (let i = 0; i < 20 && got.length < 100; i++) {
    for (const p of r.drv.cpPoll(64)) got.push(p.data);
    if (r.drv.cpNapi) continue;
    if (r.pci.config.read(PCI_STATUS, 2) & 0x08) r.drv.cpInterrupt();
  }
  t.is(got.length, 100);
  t.deepEqual(got.map((d) => d[14]), frames.map((_, i) => i), 'in order, none lost');
  t.false(r.nic.rxBlocked);
  t.deepEqual(r.meter.stage('guest.rx').snapshot().dropReasons, {});
});

test('RX: a frame longer than one buffer spans descriptors (FS on the first, LS and the length on the last)', (t) => {
  const r = rig();
  r.drv.rxBufSz = 512;
  up(r);
  const f = ether(MAC_BYTES, 0x88b5, new Uint8Array(1400).fill(9));
  r.nic.send([plainFrame(f)]);
  const d = [0, 1, 2].map((i) => r.drv.desc('rx', i).opts1);
  t.deepEqual(d.map((o) => o & (P.DescOwn | P.FirstFrag | P.LastFrag)), [P.FirstFrag, 0, P.LastFrag]);
  t.is(d[2] & 0x1fff, f.length + 4);
  const bytes = r.mem.region(0).bytes;
  const joined = new Uint8Array([...bytes.subarray(r.drv.rxAddr[0], r.drv.rxAddr[0] + 512), ...bytes.subarray(r.drv.rxAddr[1], r.drv.rxAddr[1] + 512), ...bytes.subarray(r.drv.rxAddr[2], r.drv.rxAddr[2] + 394)]);
  t.deepEqual(joined.subarray(0, f.length), f);
  t.true((r.drv.desc('rx', 3).opts1 & P.DescOwn) !== 0, 'the next frame starts at descriptor 3');
  // 8139cp drops fragmented frames: counted as its errors, the ring moves on
  r.drv.cpInterrupt();
  t.is(r.drv.cpPoll().length, 0);
  t.is(r.drv.rxErrors, 3);
});

test('guest garbage: rings and buffers outside memory, missing FS, LargeSend on UDP, zero-size RX buffers — counted, PCI error where the bus would, never thrown', async (t) => {
  const r = rig();
  up(r);
  const d = r.drv;
  // a TX buffer outside guest memory: TxError on its descriptor, PCI error, master abort
  d.setDesc('tx', 0, P.DescOwn | P.FirstFrag | P.LastFrag | 100, 0, 0x7fff0000);
  d.txHead = 1;
  // a descriptor without FS
  d.setDesc('tx', 1, P.DescOwn | P.LastFrag | 100, 0, 0x200000);
  d.txHead = 2;
  // LargeSend on a UDP frame
  d.xmit(ipFrame(PEER, 17, 3000), { mss: 1000 });
  await turn();
  t.is(r.batches.length, 0, 'nothing left the chip');
  const status = d.cpInterrupt();
  t.truthy(status & P.PciErr);
  t.truthy(status & P.TxErr);
  t.is(d.txErrs, 1);
  t.is(d.txDone, 3, 'the LS descriptors came back');
  t.truthy(r.pci.config.read(PCI_STATUS, 2) & PCI_STATUS_REC_MASTER_ABORT);
  const tx = r.meter.stage('guest.tx').snapshot().dropReasons;
  t.is(tx['tx-dma-outside-memory'], 1);
  t.is(tx['tx-no-first-fragment'], 1);
  t.is(tx['tx-largesend-not-tcp4'], 1);
  // the TX ring itself outside memory
  d.w32(P.TxRingAddr, 0x7ff00000);
  d.w8(P.TxPoll, P.NormalTxPoll);
  await turn();
  t.is(r.meter.stage('guest.tx').snapshot().dropReasons['tx-ring-outside-memory'], 1);
  // RX: a zero-size buffer is returned with RxError; the ring outside memory drops
  d.setDesc('rx', 0, P.DescOwn, 0, d.rxAddr[0]);
  r.nic.send([plainFrame(ether(MAC_BYTES, 0x88b5, new Uint8Array(100)))]);
  t.truthy(d.desc('rx', 0).opts1 & P.RxError);
  t.is(d.desc('rx', 0).opts1 & P.DescOwn, 0);
  d.w32(P.RxRingAddr, 0x7ff00000);
  r.nic.send([plainFrame(ether(MAC_BYTES, 0x88b5, new Uint8Array(100)))]);
  const rx = r.meter.stage('guest.rx').snapshot().dropReasons;
  t.is(rx['rx-descriptor-size-0'], 1);
  t.is(rx['rx-dma-outside-memory'], 1);
  t.truthy(d.r16(P.IntrStatus) & (P.PciErr | P.RxErr));
});

test('the default variant keeps C mode only: C+ offsets are plain storage, TxPoll sends nothing', async (t) => {
  const r = rig({ variant: 'rtl8139c' });
  const d = r.drv;
  r.pci.config.writeValue(PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
  d.w16(P.CpCmd, P.CpRxOn | P.CpTxOn);
  t.is(d.r16(P.CpCmd), P.CpRxOn | P.CpTxOn, 'stored as written');
  d.w32(0x20, 0x200000);
  t.is(d.r32(0x20), 0x200000, 'still TSAD0');
  d.w8(P.TxPoll, P.NormalTxPoll);
  await turn();
  t.is(r.batches.length, 0);
  t.is(r.pci.config.read(8, 1), 0x10);
});
