/**
 * The RTL8139 model driven with the exact register sequences Linux 8139too performs
 * (rtl8139-driver.ts): probe (reset, EEPROM MAC read, chip version from TxConfig), open (RX ring,
 * IMR, RE/TE), start_xmit, the interrupt handler reading ISR and acking, NAPI receive; then the
 * hardware rules: ring wrap both ways, overflow, guest garbage, IMR/ISR, link, timer, loopback,
 * 9346CR locking, and the software offloads.
 */
import test from 'ava';
import { GuestMemory } from '../../src/devices/memory';
import {
  PCI_BASE_ADDRESS_0,
  PCI_CAPABILITY_LIST,
  PCI_CAP_ID_PM,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_STATUS,
  PCI_STATUS_INTERRUPT,
  PCI_STATUS_REC_MASTER_ABORT,
} from '../../src/devices/pci/config-space';
import { PciDevice, REGION_CONFIG } from '../../src/devices/pci/device';
import { frameCheckSequence } from '../../src/devices/rtl8139/crc';
import { Rtl8139, type Rtl8139Options } from '../../src/devices/rtl8139/device';
import { GSO_TCPV4, VNET_F_NEEDS_CSUM, plainFrame, type Frame } from '../../src/link/frame';
import { Meter } from '../../src/meter/meter';
import { internetChecksum, onesSum } from '../../src/wire/checksum';
import * as D from './rtl8139-driver';

const MAC = '52:54:00:ab:cd:ef';
const MAC_BYTES = Uint8Array.from([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
const BCAST = new Uint8Array(6).fill(0xff);
const PEER = Uint8Array.from([0x02, 0, 0, 0, 0, 2]);

interface Rig {
  nic: Rtl8139;
  pci: PciDevice;
  mem: GuestMemory;
  drv: D.Driver8139;
  meter: Meter;
  sent: Uint8Array[][];
  irq: boolean[];
}

function rig(opts: Rtl8139Options = {}, bar = 1): Rig {
  const meter = new Meter();
  const mem = GuestMemory.plain(4 << 20, meter);
  const nic = new Rtl8139({ mac: MAC, meter, ...opts });
  const pci = new PciDevice(nic, mem);
  const sent: Uint8Array[][] = [];
  nic.onReceive((frames) => sent.push(frames.map((f) => f.data.slice())));
  const irq: boolean[] = [];
  pci.onInterrupt = (a) => irq.push(a);
  const drv = new D.Driver8139(pci, mem, bar);
  return { nic, pci, mem, drv, meter, sent, irq };
}

function up(r: Rig, flags?: Parameters<D.Driver8139['open']>[0]): void {
  r.drv.probe();
  r.drv.open(flags);
}

function frame(dst: Uint8Array, len: number, fill = 0x5a): Uint8Array {
  const f = new Uint8Array(len).fill(fill);
  f.set(dst, 0);
  f.set(PEER, 6);
  f[12] = 0x08;
  f[13] = 0x00;
  for (let i = 14; i < len; i++) f[i] = (i * 7 + fill) & 0xff;
  return f;
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

test('PCI identity: 10ec:8139 revision < 0x20, Ethernet class, INTA, PM capability, BAR sizing', (t) => {
  const { pci } = rig();
  const c = pci.config;
  t.is(c.read(0, 2), 0x10ec);
  t.is(c.read(2, 2), 0x8139);
  t.true(c.read(8, 1) < 0x20, 'revision below 0x20 so Linux picks 8139too, not 8139cp');
  t.is(c.read(9, 1) | (c.read(0x0a, 2) << 8), 0x020000);
  t.is(c.read(0x3d, 1), 1);
  t.is(c.read(0x2c, 2), 0x10ec);
  // capabilities list: status bit 4, pointer, PM
  t.truthy(c.read(PCI_STATUS, 2) & 0x10);
  const cap = c.read(PCI_CAPABILITY_LIST, 1);
  t.is(c.read(cap, 1), PCI_CAP_ID_PM);
  // BAR sizing (PCI 3.0 §6.2.5.1): all ones in, ~(size-1) | type back; address bits stick
  c.writeValue(PCI_BASE_ADDRESS_0, 4, 0xffffffff);
  t.is(c.read(PCI_BASE_ADDRESS_0, 4), 0xffffff01, 'BAR0: 256 bytes of I/O');
  c.writeValue(PCI_BASE_ADDRESS_0 + 4, 4, 0xffffffff);
  t.is(c.read(PCI_BASE_ADDRESS_0 + 4, 4), 0xffffff00, 'BAR1: 256 bytes of 32-bit memory');
  c.writeValue(PCI_BASE_ADDRESS_0 + 4, 4, 0xfebf1234);
  t.is(c.read(PCI_BASE_ADDRESS_0 + 4, 4), 0xfebf1200);
  for (let i = 2; i < 6; i++) {
    c.writeValue(PCI_BASE_ADDRESS_0 + 4 * i, 4, 0xffffffff);
    t.is(c.read(PCI_BASE_ADDRESS_0 + 4 * i, 4), 0, `BAR${i} not implemented`);
  }
  c.writeValue(0x30, 4, 0xffffffff);
  t.is(c.read(0x30, 4), 0, 'no expansion ROM');
  // read-only identity
  c.writeValue(0, 4, 0);
  t.is(c.read(0, 4), 0x813910ec);
  t.is(pci.regionSize(0), 256);
  t.is(pci.regionSize(1), 256);
  t.is(pci.regionSize(REGION_CONFIG), 256);
  t.is(pci.regionSize(2), 0);
});

test('probe: chip version RTL-8139C from TxConfig, EEPROM falls back to 93C46 addressing, MAC from words 7-9', (t) => {
  const r = rig();
  r.drv.probe();
  t.is(r.drv.chipName, 'RTL-8139C');
  t.is(r.drv.addrLen, 6, 'the 8-bit probe does not read back 0x8129 from a 93C46');
  t.deepEqual(r.drv.mac, MAC_BYTES);
  t.is(r.drv.readEeprom(0, 6), 0x8129);
  t.is(r.drv.readEeprom(1, 6), 0x10ec);
  t.is(r.drv.readEeprom(2, 6), 0x8139);
  t.is(r.drv.r8(D.ChipCmd) & D.CmdReset, 0, 'reset self-clears');
  t.is(r.drv.r32(D.TxStatus0) & D.TxHostOwns, D.TxHostOwns, 'descriptors start owned by the host');
});

test('the I/O BAR decodes the same registers (CONFIG_8139TOO_PIO)', (t) => {
  const r = rig({}, 0);
  r.drv.probe();
  t.is(r.drv.chipName, 'RTL-8139C');
  t.deepEqual(r.drv.mac, MAC_BYTES);
});

test('open: ring, IMR, RE/TE, link up at 100 Mbit/s full duplex', (t) => {
  const r = rig();
  up(r);
  const d = r.drv;
  t.is(d.r8(D.ChipCmd), D.CmdRxEnb | D.CmdTxEnb | D.RxBufEmpty);
  t.is(d.r16(D.IntrMask), D.rtl8139_intr_mask);
  t.is(d.r32(D.RxConfig), D.rtl8139_rx_config | D.AcceptBroadcast | D.AcceptMyPhys);
  t.is(d.r32(D.TxConfig), 0x74000000 | D.rtl8139_tx_config, 'TxConfig written after TE: thresholds stick');
  t.is(d.r32(D.RxBuf), d.rxRing);
  t.is(d.r16(D.RxBufPtr), 0xfff0, 'CAPR reads R - 16');
  t.is(d.r16(D.RxBufAddr), 0);
  t.truthy(d.mdioRead(1) & 0x0004, 'BMSR link');
  t.truthy(d.mdioRead(1) & 0x0020, 'autonegotiation complete');
  t.is(d.mdioRead(0) & 0x3100, 0x3100, 'BMCR 100M, AN, full duplex');
  t.truthy(d.mdioRead(5) & 0x0100, 'link partner 100FD');
  t.is(d.r8(D.MediaStatus) & 0x0c, 0, 'MSR: link ok, 100 Mbit/s');
  t.is(d.r8(D.Config3) & 0x20, 0, 'magic packet off');
  t.deepEqual(r.irq, []);
});

test('start_xmit: descriptors in round robin, one batch per turn, OWN|TOK after delivery, TxOK interrupt acked', async (t) => {
  const r = rig();
  up(r);
  const d = r.drv;
  const frames = [frame(PEER, 42), frame(PEER, 1514), frame(PEER, 100)];
  for (const f of frames) t.true(d.startXmit(f));
  // the flush read-back sees the descriptor not yet done
  t.is(d.r32(D.TxStatus0) & (D.TxHostOwns | D.TxStatOK), 0);
  await turn();
  t.is(r.sent.length, 1, 'one batch for the turn');
  t.deepEqual(
    r.sent[0].map((f) => f.length),
    [60, 1514, 100],
  );
  t.deepEqual(r.sent[0][0].subarray(0, 42), frames[0], 'padded by the driver to 60');
  t.deepEqual(r.sent[0][1], frames[1]);
  t.truthy(d.r32(D.TxStatus0 + 4) & D.TxStatOK);
  t.is(d.r16(D.TxSummary) & 0x7007, 0x7007, 'TSAD summary: TOK0-2, OWN0-2');
  t.deepEqual(r.irq, [true]);
  t.true(d.interrupt());
  t.deepEqual(d.txCompleted, [60, 1514, 100]);
  t.is(d.r16(D.IntrStatus), 0, 'acked');
  t.deepEqual(r.irq, [true, false]);
  // a fourth and fifth frame wrap to descriptors 3 and 0
  d.startXmit(frame(PEER, 70));
  d.startXmit(frame(PEER, 80));
  await turn();
  t.deepEqual(
    r.sent[1].map((f) => f.length),
    [70, 80],
  );
  d.interrupt();
  t.is(d.dirtyTx, 5);
  const tx = r.meter.stage('guest.tx').snapshot();
  t.is(tx.frames, 5);
  t.is(r.meter.stage('device.dma').copies, 0, 'transmit hands views of guest memory on: no copy');
});

test('receive: header with ROK and match bits, length incl. CRC, FCS, 4-byte alignment, CAPR - 16, BUFE', (t) => {
  const r = rig();
  up(r);
  const d = r.drv;
  const uni = frame(MAC_BYTES, 1514, 1);
  const bc = frame(BCAST, 42, 2);
  const odd = frame(MAC_BYTES, 101, 3);
  r.nic.send([plainFrame(uni), plainFrame(bc), plainFrame(odd)]);
  t.deepEqual(r.irq, [true]);
  t.is(d.r8(D.ChipCmd) & D.RxBufEmpty, 0);
  t.true(d.interrupt());
  t.is(d.r16(D.IntrMask), D.rtl8139_norx_intr_mask, 'NAPI scheduled with RX masked');
  t.deepEqual(r.irq, [true, false]);
  const got = d.poll();
  t.is(got.length, 3);
  t.is(got[0].status, 0x0001 | 0x4000, 'ROK | PAM');
  t.is(got[0].size, 1518);
  t.deepEqual(got[0].data, uni);
  t.is(got[0].fcs, frameCheckSequence(uni));
  t.is(got[1].status, 0x0001 | 0x2000, 'ROK | BAR');
  t.is(got[1].size, 64, 'a 42-byte frame is padded to 60, plus CRC');
  t.deepEqual(got[1].data.subarray(0, 42), bc);
  t.deepEqual(got[1].data.subarray(42), new Uint8Array(18));
  t.deepEqual(got[2].data, odd);
  t.is(d.r8(D.ChipCmd) & D.RxBufEmpty, D.RxBufEmpty);
  t.is(d.r16(D.RxBufAddr), d.curRx, 'CBR where the driver expects the next entry');
  t.is(d.r16(D.RxBufPtr), (d.curRx - 16) & 0xffff);
  t.is(d.r16(D.IntrMask), D.rtl8139_intr_mask);
  t.is(d.rxErrors, 0);
  const rx = r.meter.stage('guest.rx').snapshot();
  t.is(rx.frames, 3);
  t.is(r.meter.stage('device.dma').copies, 3, 'one copy per received frame, into the ring');
});

test('address filter: other unicast and unlisted multicast dropped; multicast hash, allmulti, promiscuous', (t) => {
  const r = rig();
  up(r);
  const d = r.drv;
  const group = Uint8Array.from([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
  const other = Uint8Array.from([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]);
  const stranger = Uint8Array.from([0x52, 0x54, 0, 1, 2, 3]);
  r.nic.send([plainFrame(frame(group, 60)), plainFrame(frame(stranger, 60))]);
  t.is(d.poll().length, 0);
  t.is(r.meter.stage('guest.rx').snapshot().dropReasons['rx-address-filter'], 2);
  d.setRxMode({ multicast: [group] });
  r.nic.send([plainFrame(frame(group, 60)), plainFrame(frame(other, 60))]);
  let got = d.poll();
  t.is(got.length, 1, 'only the listed group (its hash bit) passes');
  t.is(got[0].status, 0x0001 | 0x8000, 'ROK | MAR');
  d.setRxMode({ promisc: true });
  r.nic.send([plainFrame(frame(stranger, 60)), plainFrame(frame(other, 60))]);
  got = d.poll();
  t.is(got.length, 2);
  t.is(got[0].status, 0x0001, 'promiscuous unicast: ROK without PAM');
});

test('RX ring wrap: with WRAP an entry runs past the end linearly; without it the entry is split at the end', (t) => {
  for (const wrap of [true, false]) {
    const r = rig();
    up(r);
    const d = r.drv;
    if (!wrap) {
      d.rxConfig &= ~0x80;
      d.w32f(D.RxConfig, d.rxConfig);
    }
    // fill and consume until the write pointer is near the end, then one frame that crosses it
    const sizes: number[] = [];
    let pos = 0;
    while (pos < D.RX_BUF_LEN - 1500) {
      sizes.push(1400);
      pos += (1400 + 8 + 3) & ~3;
    }
    for (const s of sizes) {
      r.nic.send([plainFrame(frame(MAC_BYTES, s))]);
      d.poll();
    }
    const before = d.r16(D.RxBufAddr);
    const big = frame(MAC_BYTES, 1514, 9);
    const next = frame(MAC_BYTES, 300, 10);
    r.nic.send([plainFrame(big), plainFrame(next)]);
    t.true(before + 1522 > D.RX_BUF_LEN && before < D.RX_BUF_LEN, 'the big frame crosses the end of the ring');
    // the driver reads linearly (32K ring); for the split case read it the way a wrapping driver would
    const at = d.rxRing + (d.curRx % D.RX_BUF_LEN);
    if (wrap) {
      const got = d.poll();
      t.deepEqual(got[0].data, big);
      t.deepEqual(got[1].data, next);
    } else {
      const hdr = r.mem.view('gpa', at, 4) as Uint8Array;
      t.is(hdr[2] | (hdr[3] << 8), 1518);
      const first = D.RX_BUF_LEN - (d.curRx % D.RX_BUF_LEN) - 4;
      const a = r.mem.view('gpa', at + 4, Math.min(first, 1514)) as Uint8Array;
      t.deepEqual(a, big.subarray(0, a.length));
      const b = r.mem.view('gpa', d.rxRing, 1514 - a.length) as Uint8Array;
      t.deepEqual(b, big.subarray(a.length), 'the rest continues at offset 0');
      t.is(d.r16(D.RxBufAddr) , ((((before + 1522 + 3) & ~3) % D.RX_BUF_LEN) + 308) & ~3 , 'the next entry follows the wrapped one');
    }
    t.is(d.rxErrors, 0);
  }
});

test('ring overflow without a FIFO: RXOVW, MPC, counted drop; the driver recovers once it reads', (t) => {
  const r = rig({ rxFifoBytes: 0 });
  up(r);
  const d = r.drv;
  const frames: Frame[] = [];
  for (let i = 0; i < 40; i++) frames.push(plainFrame(frame(MAC_BYTES, 1514, i)));
  r.nic.send(frames);
  const fit = Math.floor((D.RX_BUF_LEN - 4) / 1524);
  const lost = 40 - fit;
  t.is(r.meter.stage('guest.rx').snapshot().dropReasons['rx-overflow'], lost);
  t.is(d.r32(D.RxMissed), lost);
  t.truthy(d.r16(D.IntrStatus) & D.RxOverflow);
  d.interrupt();
  const got = d.poll(64);
  t.is(got.length, fit);
  t.deepEqual(got[0].data, frames[0].data);
  t.is(d.r16(D.IntrStatus) & D.RxAckBits, 0, 'RXOVW acked with the RX bits');
  r.nic.send([plainFrame(frame(MAC_BYTES, 200))]);
  t.is(d.poll().length, 1);
  t.is(d.rxErrors, 0);
});

test('ring full with a FIFO: frames wait and arrive in order after CAPR; a full FIFO loses with RXOVW|FOVW', (t) => {
  const r = rig({ rxFifoBytes: 16 * 1024 });
  up(r);
  const d = r.drv;
  const frames: Frame[] = [];
  for (let i = 0; i < 30; i++) frames.push(plainFrame(frame(MAC_BYTES, 1514, i)));
  r.nic.send(frames);
  t.true(r.nic.rxBlocked);
  t.is(d.r32(D.RxMissed), 0, 'nothing lost yet');
  let unblocked = 0;
  r.nic.on('rx-unblocked', () => unblocked++);
  const got: Uint8Array[] = [];
  for (let k = 0; k < 5 && got.length < 30; k++) for (const p of d.poll(64)) got.push(p.data);
  t.is(got.length, 30);
  got.forEach((g, i) => t.deepEqual(g, frames[i].data));
  t.is(unblocked, 1);
  // now overflow both
  const many: Frame[] = [];
  for (let i = 0; i < 40; i++) many.push(plainFrame(frame(MAC_BYTES, 1514, i)));
  r.nic.send(many);
  const st = d.r16(D.IntrStatus);
  t.truthy(st & D.RxOverflow);
  t.truthy(st & D.RxFIFOOver);
  t.true(d.r32(D.RxMissed) > 0);
  t.is(r.meter.stage('device.fifo').copies > 0, true, 'FIFO copies are metered');
});

test('guest garbage: TX size over 1792 aborts (TABT, TxErr), outside memory is a master abort (SERR, PCI status), no bus master aborts', async (t) => {
  const r = rig();
  up(r);
  const d = r.drv;
  d.w32f(D.TxStatus0, 0x2000 + 0); // nothing: OWN stays set → not queued
  // oversize
  d.w32f(D.TxStatus0, 1800);
  t.is(d.r32(D.TxStatus0) & (D.TxAborted | D.TxHostOwns), D.TxAborted | D.TxHostOwns);
  t.truthy(d.r16(D.IntrStatus) & D.TxErr);
  t.is(r.meter.stage('guest.tx').snapshot().dropReasons['tx-size-over-1792'], 1);
  d.curTx = 1;
  d.interrupt();
  t.is(d.txErrors, 1);
  t.is(d.r16(D.IntrStatus) & D.TxErr, 0, 'TER acked by the driver');
  // outside guest memory
  d.w32f(D.TxAddr0 + 4, 0x7ff00000);
  d.w32f(D.TxStatus0 + 4, 100);
  t.truthy(d.r32(D.TxStatus0 + 4) & D.TxAborted);
  t.truthy(d.r16(D.IntrStatus) & D.PCIErr);
  t.truthy(r.pci.config.read(PCI_STATUS, 2) & PCI_STATUS_REC_MASTER_ABORT);
  d.curTx = 2;
  d.interrupt(); // clears PCI status like 8139too
  t.is(r.pci.config.read(PCI_STATUS, 2) & PCI_STATUS_REC_MASTER_ABORT, 0, 'status bit is write-1-to-clear');
  // bus mastering off
  r.pci.config.writeValue(PCI_COMMAND, 2, r.pci.config.read(PCI_COMMAND, 2) & ~0x4);
  d.w32f(D.TxAddr0 + 8, d.txBufs + 2 * 1536);
  d.w32f(D.TxStatus0 + 8, 100);
  t.truthy(d.r32(D.TxStatus0 + 8) & D.TxAborted);
  t.is(r.meter.stage('guest.tx').snapshot().dropReasons['tx-no-bus-master'], 1);
  // RX with RBSTART outside memory: dropped, SERR
  r.pci.config.writeValue(PCI_COMMAND, 2, r.pci.config.read(PCI_COMMAND, 2) | 0x4);
  d.w32f(D.RxBuf, 0x7ff00000);
  r.nic.send([plainFrame(frame(MAC_BYTES, 100))]);
  t.is(r.meter.stage('guest.rx').snapshot().dropReasons['rx-dma-outside-memory'], 1);
  await turn();
  t.is(r.sent.length, 0, 'nothing went out');
});

test('ISR is write-1-to-clear, the line is ISR & IMR, Interrupt Disable hides it but Status.Interrupt shows it', (t) => {
  const r = rig();
  up(r);
  const d = r.drv;
  r.nic.send([plainFrame(frame(MAC_BYTES, 60))]);
  t.true(r.pci.intxAsserted);
  t.truthy(r.pci.config.read(PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
  d.w16(D.IntrMask, 0);
  t.false(r.pci.intxAsserted, 'masked');
  t.is(d.r16(D.IntrStatus), D.RxOK, 'status stays');
  d.w16(D.IntrMask, D.rtl8139_intr_mask);
  t.true(r.pci.intxAsserted);
  r.pci.config.writeValue(PCI_COMMAND, 2, r.pci.config.read(PCI_COMMAND, 2) | PCI_COMMAND_INTX_DISABLE);
  t.false(r.pci.intxAsserted, 'INTx disabled');
  t.truthy(r.pci.config.read(PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, 'Interrupt Status still set');
  r.pci.config.writeValue(PCI_COMMAND, 2, r.pci.config.read(PCI_COMMAND, 2) & ~PCI_COMMAND_INTX_DISABLE);
  d.w8(D.IntrStatus + 1, 0xff); // a byte write to the high half clears nothing of the low half
  t.is(d.r16(D.IntrStatus), D.RxOK);
  d.w16(D.IntrStatus, D.TxOK);
  t.is(d.r16(D.IntrStatus), D.RxOK, 'writing 0 bits leaves them');
  d.w16(D.IntrStatus, D.RxOK);
  t.is(d.r16(D.IntrStatus), D.RxOK, 'a frame that landed after the last CR read keeps ROK through the ack');
  d.r8(D.ChipCmd);
  d.w16(D.IntrStatus, D.RxOK);
  t.is(d.r16(D.IntrStatus), 0, 'once the driver looked at BUFE, the ack clears it');
  t.false(r.pci.intxAsserted);
});

test('8139too NAPI race: a frame landing between the BUFE check and isr_ack is not lost', (t) => {
  const r = rig();
  up(r);
  const d = r.drv;
  // the poll finds the ring empty (BUFE), a frame arrives, then rtl8139_isr_ack acknowledges ROK
  t.is(d.r8(D.ChipCmd) & D.RxBufEmpty, D.RxBufEmpty);
  r.nic.send([plainFrame(frame(MAC_BYTES, 80))]);
  d.isrAck();
  t.is(d.r16(D.IntrStatus) & D.RxOK, D.RxOK, 'ROK survives: the driver never saw that frame');
  d.w16f(D.IntrMask, D.rtl8139_intr_mask);
  t.true(r.pci.intxAsserted, 'so the interrupt comes back');
  d.interrupt();
  t.is(d.poll().length, 1);
});

test('link: cable out raises RxUnderrun/LinkChg, CSCR LinkChange, BMSR link latched low, MSR LINKB; back in', (t) => {
  const r = rig();
  up(r);
  const d = r.drv;
  r.nic.setLink(false);
  t.truthy(d.r16(D.IntrStatus) & D.RxUnderrun);
  t.is(d.r8(D.MediaStatus) & 0x04, 0x04);
  r.nic.setLink(true);
  t.is(d.mdioRead(1) & 0x04, 0, 'the drop stays visible in the first BMSR read');
  t.is(d.mdioRead(1) & 0x04, 0x04);
  d.interrupt(); // reads CSCR (LinkChange) and rechecks the media
  t.is(d.r16(D.CSCR) & 0x0800, 0, 'LinkChange clears on read');
  t.is(d.r16(D.IntrStatus) & D.RxUnderrun, 0);
  // no link: frames neither leave nor arrive
  r.nic.setLink(false);
  r.nic.send([plainFrame(frame(MAC_BYTES, 60))]);
  t.is(r.meter.stage('guest.rx').snapshot().dropReasons['rx-link-down'], 1);
});

test('timer: PCSTimeout when TCTR reaches TimerInt; TimerInt 0 disables it; a TCTR write restarts the count', async (t) => {
  const r = rig();
  up(r);
  const d = r.drv;
  const a = d.r32(D.Timer);
  const b = d.r32(D.Timer);
  t.true(b >= a, 'TCTR counts up');
  d.w32(D.Timer, 0);
  d.w32(D.TimerInt, 33_000); // 1 ms at 33 MHz
  for (let i = 0; i < 500 && !(d.r16(D.IntrStatus) & D.PCSTimeout); i++) await new Promise((res) => setTimeout(res, 5));
  t.truthy(d.r16(D.IntrStatus) & D.PCSTimeout);
  t.true(r.pci.intxAsserted);
  d.interrupt();
  t.is(d.r16(D.IntrStatus) & D.PCSTimeout, 0);
  d.w32(D.TimerInt, 0);
  t.is(d.r32(D.TimerInt), 0);
  await r.nic.close();
});

test('9346CR: CONFIG1/3/4 and BMCR speed bits only change unlocked; EEM 01 reloads the MAC from the EEPROM', (t) => {
  const r = rig();
  up(r);
  const d = r.drv;
  const c1 = d.r8(D.Config1);
  d.w8(D.Config1, c1 | 0x10);
  t.is(d.r8(D.Config1), c1, 'locked');
  d.w8(D.Cfg9346, 0xc0);
  d.w8(D.Config1, c1 | 0x10);
  d.w8(D.Cfg9346, 0x00);
  t.is(d.r8(D.Config1), c1 | 0x10);
  d.w16(D.BasicModeCtrl, 0x0000);
  t.is(d.r16(D.BasicModeCtrl) & 0x3100, 0x3100, 'speed/AN/duplex locked');
  // change the station address, then auto-load brings the EEPROM's back
  d.w8(D.Cfg9346, 0xc0);
  d.w32(0, 0x44332211);
  t.is(d.r32(0), 0x44332211);
  d.w8(D.Cfg9346, 0x40);
  t.is(d.r8(D.Cfg9346) >> 6, 0, 'auto-load returns to normal mode by itself');
  t.is(d.r32(0), (MAC_BYTES[0] | (MAC_BYTES[1] << 8) | (MAC_BYTES[2] << 16) | (MAC_BYTES[3] << 24)) >>> 0);
});

test('TCR loopback: transmitted frames come back into the receiver, nothing leaves', async (t) => {
  const r = rig();
  up(r);
  const d = r.drv;
  d.w32(D.TxConfig, D.rtl8139_tx_config | 0x60000);
  const f = frame(MAC_BYTES, 200, 4);
  d.startXmit(f);
  await turn();
  t.is(r.sent.length, 0);
  d.interrupt();
  const got = d.poll();
  t.is(got.length, 1);
  t.deepEqual(got[0].data, f);
});

test('chip reset while the transmitter and receiver run: everything stops, descriptors return to the host', async (t) => {
  const r = rig();
  up(r);
  const d = r.drv;
  d.startXmit(frame(PEER, 60));
  d.chipReset();
  await turn();
  t.is(r.sent.length, 0, 'the frame in the FIFO is gone');
  t.is(d.r8(D.ChipCmd), D.RxBufEmpty);
  t.is(d.r16(D.IntrMask), 0);
  t.is(d.r32(D.TxStatus0) & D.TxHostOwns, D.TxHostOwns);
  t.deepEqual(r.mem.view('gpa', 0, 0), new Uint8Array(0));
  d.open();
  d.startXmit(frame(PEER, 61));
  await turn();
  t.is(r.sent.length, 1);
});

test('software offload: a NEEDS_CSUM frame gets its checksum, a TCP TSO frame is cut into MSS segments with valid headers', (t) => {
  const r = rig();
  up(r);
  const d = r.drv;
  // an IPv4/TCP frame to the guest with 4000 bytes of payload, MSS 1448, partial checksum
  const payload = 4000;
  const ip = 20;
  const tcp = 32;
  const f = new Uint8Array(14 + ip + tcp + payload);
  f.set(MAC_BYTES, 0);
  f.set(PEER, 6);
  f[12] = 0x08;
  f[14] = 0x45;
  const dv = new DataView(f.buffer);
  dv.setUint16(16, ip + tcp + payload);
  dv.setUint16(18, 0x1234);
  f[20] = 0x40;
  f[22] = 64;
  f[23] = 6;
  f.set([10, 0, 2, 2], 26);
  f.set([10, 0, 2, 15], 30);
  const l4 = 34;
  dv.setUint16(l4, 80);
  dv.setUint16(l4 + 2, 40000);
  dv.setUint32(l4 + 4, 1000);
  dv.setUint32(l4 + 8, 5);
  f[l4 + 12] = (tcp / 4) << 4;
  f[l4 + 13] = 0x18 | 0x01; // PSH ACK FIN
  for (let i = 0; i < payload; i++) f[l4 + tcp + i] = i & 0xff;
  // pseudo header sum in the checksum field, as a partial-checksum sender leaves it
  const pseudo = onesSum(f, 26, 8) + 6 + tcp + payload;
  dv.setUint16(l4 + 16, ((pseudo & 0xffff) + (pseudo >>> 16)) & 0xffff);
  const gso: Frame = { ...plainFrame(f), flags: VNET_F_NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: 1448, csumStart: l4, csumOffset: 16, hdrLen: l4 + tcp };
  r.nic.send([gso]);
  const got = d.poll();
  t.is(got.length, 3);
  let seq = 1000;
  let total = 0;
  got.forEach((p, i) => {
    const s = p.data;
    const sv = new DataView(s.buffer, s.byteOffset);
    t.is(internetChecksum(s, 14, 20), 0, 'IPv4 header checksum');
    t.is(sv.getUint16(16), s.length - 14);
    t.is(sv.getUint16(18), 0x1234 + i);
    t.is(sv.getUint32(l4 + 4), seq);
    const len = s.length - l4 - tcp;
    seq += len;
    total += len;
    const sum = onesSum(s, 26, 8) + 6 + (s.length - l4);
    t.is(internetChecksum(s, l4, s.length - l4, sum), 0, 'TCP checksum');
    t.is(s[l4 + 13] & 0x09, i === 2 ? 0x09 : 0, 'PSH/FIN only on the last');
    t.deepEqual(s.subarray(l4 + tcp), f.subarray(l4 + tcp + i * 1448, l4 + tcp + i * 1448 + len));
  });
  t.is(total, payload);
  // a plain NEEDS_CSUM frame (no GSO): completed on the way into the ring, sender's bytes untouched
  const small = f.slice(0, l4 + tcp + 100);
  const sdv = new DataView(small.buffer);
  sdv.setUint16(16, ip + tcp + 100);
  sdv.setUint16(24, 0);
  sdv.setUint16(24, internetChecksum(small, 14, 20));
  const ps = onesSum(small, 26, 8) + 6 + tcp + 100;
  sdv.setUint16(l4 + 16, ((ps & 0xffff) + (ps >>> 16)) & 0xffff);
  const before = small.slice();
  r.nic.send([{ ...plainFrame(small), flags: VNET_F_NEEDS_CSUM, csumStart: l4, csumOffset: 16 }]);
  const [p] = d.poll();
  t.is(internetChecksum(p.data, l4, tcp + 100, onesSum(p.data, 26, 8) + 6 + tcp + 100), 0);
  t.deepEqual(small, before, 'the borrowed frame is not modified');
  t.true(r.meter.stage('device.segment').copies >= 3);
});

test('8139too NAPI budget: while frames wait for ring space RXOVW stays up, so a poll that used its budget comes back', (t) => {
  const r = rig({ rxFifoBytes: 256 * 1024 });
  up(r);
  const d = r.drv;
  const frames: Frame[] = [];
  for (let i = 0; i < 60; i++) frames.push(plainFrame(frame(MAC_BYTES, 1514, i)));
  r.nic.send(frames);
  t.truthy(d.r16(D.IntrStatus) & D.RxOverflow, 'the ring was exhausted');
  d.interrupt();
  const got: Uint8Array[] = [];
  // small budgets: each poll stops early, exactly where a real budget leaves the ring; poll() walks
  // the ring only when an RX bit is set and completes NAPI (IMR back) when it did less than its
  // budget — then only an interrupt (the line) brings it back
  for (let k = 0; k < 200 && got.length < 60; k++) {
    if (r.pci.intxAsserted && !d.napiScheduled) d.interrupt();
    if (!d.napiScheduled) break;
    for (const p of d.poll(3)) got.push(p.data);
  }
  t.is(got.length, 60, 'nothing stranded in the ring');
  got.forEach((g, i) => t.deepEqual(g, frames[i].data));
  t.is(d.r32(D.RxMissed), 0);
  t.is(d.r16(D.IntrStatus) & D.RxOverflow, 0, 'RXOVW stops once nothing waits');
});

test('8139too NAPI budget without a FIFO: re-enabling RX interrupts with frames left in the ring raises ROK again', (t) => {
  const r = rig({ rxFifoBytes: 0 });
  up(r);
  const d = r.drv;
  const frames: Frame[] = [];
  for (let i = 0; i < 10; i++) frames.push(plainFrame(frame(MAC_BYTES, 200, i)));
  r.nic.send(frames);
  d.interrupt();
  const first = d.poll(4); // budget used: ROK acked along the way, six frames left
  t.is(first.length, 4);
  t.is(d.r16(D.IntrStatus) & D.RxAckBits, 0);
  const second = d.poll(4); // no RX bit: no ring walk, NAPI completes and restores IMR
  t.is(second.length, 0);
  t.true(r.pci.intxAsserted, 'ROK is back, so is the interrupt');
  d.interrupt();
  t.is(d.poll(64).length, 6);
});

test('frames over 1536 bytes are dropped (8139too would reset its receiver), counted', (t) => {
  const r = rig();
  up(r);
  r.nic.send([plainFrame(frame(MAC_BYTES, 1537))]);
  t.is(r.drv.poll().length, 0);
  t.is(r.meter.stage('guest.rx').snapshot().dropReasons['rx-frame-over-1536'], 1);
  r.nic.send([plainFrame(frame(MAC_BYTES, 1536))]);
  t.is(r.drv.poll().length, 1);
  t.is(r.drv.rxErrors, 0);
});

test('accesses of every width at every offset never throw, and odd widths split into byte lanes', (t) => {
  const r = rig();
  up(r);
  const buf = new Uint8Array(8);
  for (let off = 0; off < 256; off++) {
    for (const n of [1, 2, 3, 4, 8]) {
      if (off + n > 256) continue;
      t.notThrows(() => r.pci.regionRead(1, off, buf.subarray(0, n)));
    }
  }
  // a dword read of IDR0-3 equals four byte reads
  const b4 = new Uint8Array(4);
  r.pci.regionRead(1, 0, b4);
  t.deepEqual(b4, MAC_BYTES.subarray(0, 4));
  // the config region refuses out-of-range
  t.false(r.pci.regionRead(REGION_CONFIG, 250, new Uint8Array(8)));
  t.false(r.pci.regionRead(1, 255, new Uint8Array(2)));
});
