/**
 * Linux 8139too's register sequences, restated in TypeScript against a PciDevice (the same
 * accesses, widths and order as drivers/net/ethernet/realtek/8139too.c: rtl8139_init_board,
 * read_eeprom, rtl8139_hw_start, rtl8139_set_rx_mode, rtl8139_start_xmit, rtl8139_interrupt,
 * rtl8139_tx_interrupt, rtl8139_poll/rtl8139_rx, rtl8139_isr_ack), so unit tests drive the model
 * exactly the way the real driver does. Default is MMIO through BAR1 (the Debian kernel is built
 * without CONFIG_8139TOO_PIO); `bar: 0` uses the I/O BAR.
 */
import type { GuestMemory } from '../../src/devices/memory';
import { PCI_COMMAND, PCI_COMMAND_IO, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY } from '../../src/devices/pci/config-space';
import type { PciDevice } from '../../src/devices/pci/device';

// register offsets as 8139too names them
export const MAC0 = 0x00;
export const MAR0 = 0x08;
export const TxStatus0 = 0x10;
export const TxAddr0 = 0x20;
export const RxBuf = 0x30;
export const ChipCmd = 0x37;
export const RxBufPtr = 0x38;
export const RxBufAddr = 0x3a;
export const IntrMask = 0x3c;
export const IntrStatus = 0x3e;
export const TxConfig = 0x40;
export const RxConfig = 0x44;
export const Timer = 0x48;
export const RxMissed = 0x4c;
export const Cfg9346 = 0x50;
export const Config1 = 0x52;
export const TimerInt = 0x54;
export const MediaStatus = 0x58;
export const Config3 = 0x59;
export const Config4 = 0x5a;
export const HltClk = 0x5b;
export const MultiIntr = 0x5c;
export const TxSummary = 0x60;
export const BasicModeCtrl = 0x62;
export const BasicModeStatus = 0x64;
export const NWayAdvert = 0x66;
export const NWayLPAR = 0x68;
export const CSCR = 0x74;

export const CmdReset = 0x10;
export const CmdRxEnb = 0x08;
export const CmdTxEnb = 0x04;
export const RxBufEmpty = 0x01;
export const PCIErr = 0x8000;
export const PCSTimeout = 0x4000;
export const RxFIFOOver = 0x40;
export const RxUnderrun = 0x20;
export const RxOverflow = 0x10;
export const TxErr = 0x08;
export const TxOK = 0x04;
export const RxErr = 0x02;
export const RxOK = 0x01;
export const RxAckBits = RxFIFOOver | RxOverflow | RxOK;
export const TxHostOwns = 0x2000;
export const TxUnderrun = 0x4000;
export const TxStatOK = 0x8000;
export const TxOutOfWindow = 0x20000000;
export const TxAborted = 0x40000000;
export const TxClearAbt = 1;
export const rtl8139_intr_mask = 0xc07f;
export const rtl8139_norx_intr_mask = 0xc02e;
export const RX_BUF_LEN = 32768;
export const RX_BUF_TOT_LEN = RX_BUF_LEN + 16 + 2048;
export const TX_BUF_SIZE = 1536;
export const rtl8139_rx_config = 0x1000 | 0x80 | (7 << 13) | (7 << 8); // 32K, RxNoWrap, FIFO 7, DMA 7
export const rtl8139_tx_config = (3 << 24) | (6 << 8) | (8 << 4);
export const AcceptBroadcast = 0x08;
export const AcceptMulticast = 0x04;
export const AcceptMyPhys = 0x02;
export const AcceptAllPhys = 0x01;

const HW_REVID_MASK = 0x7cc00000;
const CHIPS: Array<[string, number, number]> = [
  ['RTL-8139', 0x40000000, 1],
  ['RTL-8139 rev K', 0x60000000, 1],
  ['RTL-8139A', 0x70000000, 1],
  ['RTL-8139A rev G', 0x70800000, 1],
  ['RTL-8139B', 0x78000000, 2],
  ['RTL-8130', 0x7c000000, 2],
  ['RTL-8139C', 0x74000000, 2],
  ['RTL-8100', 0x78800000, 2],
  ['RTL-8100B/8139D', 0x74400000, 3],
  ['RTL-8101', 0x74c00000, 2],
];
const CH_8139B = 4;

/** Linux ether_crc, written out again here so the test does not share the model's code. */
export function linuxEtherCrc(addr: Uint8Array): number {
  let crc = -1;
  for (let i = 0; i < 6; i++) {
    let octet = addr[i];
    for (let bit = 0; bit < 8; bit++, octet >>= 1) {
      crc = (crc << 1) ^ (((crc < 0 ? 1 : 0) ^ (octet & 1)) !== 0 ? 0x04c11db7 : 0);
    }
  }
  return crc >>> 0;
}

export interface ReceivedPacket {
  status: number;
  size: number;
  data: Uint8Array;
  fcs: number;
}

export class Driver8139 {
  chipset = -1;
  chipName = '';
  addrLen = 0;
  mac = new Uint8Array(6);
  curRx = 0;
  curTx = 0;
  dirtyTx = 0;
  txFlag = (256 << 11) & 0x003f0000;
  rxConfig = 0;
  napiScheduled = false;
  readonly rxRing: number;
  readonly txBufs: number;
  /** Accesses made, by kind, for the message-count checks. */
  reads = 0;
  writes = 0;
  readonly txCompleted: number[] = [];
  txErrors = 0;
  rxErrors = 0;

  constructor(
    readonly pci: PciDevice,
    readonly mem: GuestMemory,
    readonly bar = 1,
    layout: { rxRing?: number; txBufs?: number } = {},
  ) {
    this.rxRing = layout.rxRing ?? 0x100000;
    this.txBufs = layout.txBufs ?? 0x200000;
  }

  // ---- accessors (ioread/iowrite) ----
  private buf = new Uint8Array(4);
  r(off: number, size: 1 | 2 | 4): number {
    this.reads++;
    const b = this.buf.subarray(0, size);
    if (!this.pci.regionRead(this.bar, off, b)) throw new Error(`read of ${off} failed`);
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + b[i];
    return v;
  }
  w(off: number, size: 1 | 2 | 4, v: number): void {
    this.writes++;
    const b = this.buf.subarray(0, size);
    for (let i = 0; i < size; i++) b[i] = (v >>> (8 * i)) & 0xff;
    if (!this.pci.regionWrite(this.bar, off, b)) throw new Error(`write of ${off} failed`);
  }
  r8 = (o: number): number => this.r(o, 1);
  r16 = (o: number): number => this.r(o, 2);
  r32 = (o: number): number => this.r(o, 4);
  w8 = (o: number, v: number): void => this.w(o, 1, v);
  w16 = (o: number, v: number): void => this.w(o, 2, v);
  w32 = (o: number, v: number): void => this.w(o, 4, v);
  w8f = (o: number, v: number): void => {
    this.w8(o, v);
    this.r8(o);
  };
  w16f = (o: number, v: number): void => {
    this.w16(o, v);
    this.r16(o);
  };
  w32f = (o: number, v: number): void => {
    this.w32(o, v);
    this.r32(o);
  };

  // ---- probe: pci_enable_device, pci_set_master, rtl8139_init_board, rtl8139_init_one ----
  probe(): void {
    const cmd = this.pci.config.read(PCI_COMMAND, 2);
    this.pci.config.writeValue(PCI_COMMAND, 2, cmd | PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
    this.pci.config.writeValue(PCI_COMMAND, 2, this.pci.config.read(PCI_COMMAND, 2) | PCI_COMMAND_MASTER);

    this.w8(HltClk, 'R'.charCodeAt(0));
    if (this.r32(TxConfig) === 0xffffffff) throw new Error('Chip not responding, ignoring board');
    const version = this.r32(TxConfig) & HW_REVID_MASK;
    const i = CHIPS.findIndex((c) => c[1] === version);
    this.chipset = i < 0 ? 0 : i;
    this.chipName = CHIPS[this.chipset][0];
    const flags = CHIPS[this.chipset][2];
    if (this.chipset >= CH_8139B) {
      const tmp8 = this.r8(Config1);
      let newTmp8 = tmp8;
      if (flags & 2 && tmp8 & 0x10) newTmp8 &= ~0x10;
      newTmp8 |= 0x01;
      if (newTmp8 !== tmp8) {
        this.w8(Cfg9346, 0xc0);
        this.w8(Config1, tmp8); // (sic: 8139too writes the old value)
        this.w8(Cfg9346, 0x00);
      }
      if (flags & 2) {
        const c4 = this.r8(Config4);
        if (c4 & 0x04) {
          this.w8(Cfg9346, 0xc0);
          this.w8(Config4, c4 & ~0x04);
          this.w8(Cfg9346, 0x00);
        }
      }
    } else {
      this.w8(Config1, this.r8(Config1) & ~0x03);
    }
    this.chipReset();
    this.addrLen = this.readEeprom(0, 8) === 0x8129 ? 8 : 6;
    for (let k = 0; k < 3; k++) {
      const word = this.readEeprom(k + 7, this.addrLen);
      this.mac[2 * k] = word & 0xff;
      this.mac[2 * k + 1] = word >>> 8;
    }
    if (flags & 1) this.w8(HltClk, 'H'.charCodeAt(0));
  }

  chipReset(): boolean {
    this.w8(ChipCmd, CmdReset);
    for (let i = 1000; i > 0; i--) if ((this.r8(ChipCmd) & CmdReset) === 0) return true;
    return false;
  }

  readEeprom(location: number, addrLen: number): number {
    const EE_ENB = 0x80 | 0x08;
    const readCmd = location | (6 << addrLen);
    let retval = 0;
    this.w8(Cfg9346, EE_ENB & ~0x08);
    this.w8(Cfg9346, EE_ENB);
    this.r8(Cfg9346);
    for (let i = 4 + addrLen; i >= 0; i--) {
      const dataval = readCmd & (1 << i) ? 0x02 : 0;
      this.w8(Cfg9346, EE_ENB | dataval);
      this.r8(Cfg9346);
      this.w8(Cfg9346, EE_ENB | dataval | 0x04);
      this.r8(Cfg9346);
    }
    this.w8(Cfg9346, EE_ENB);
    this.r8(Cfg9346);
    for (let i = 16; i > 0; i--) {
      this.w8(Cfg9346, EE_ENB | 0x04);
      this.r8(Cfg9346);
      retval = (retval << 1) | (this.r8(Cfg9346) & 0x01 ? 1 : 0);
      this.w8(Cfg9346, EE_ENB);
      this.r8(Cfg9346);
    }
    this.w8(Cfg9346, 0);
    this.r8(Cfg9346);
    return retval;
  }

  /** mdio_read for the internal PHY (phy_id 32). */
  mdioRead(location: number): number {
    const map = [BasicModeCtrl, BasicModeStatus, 0, 0, NWayAdvert, NWayLPAR, 0x6a, 0];
    return location < 8 && map[location] ? this.r16(map[location]) : 0;
  }

  // ---- open: rtl8139_init_ring + rtl8139_hw_start ----
  open(flags: { promisc?: boolean; multicast?: Uint8Array[] } = {}): void {
    this.curRx = 0;
    this.curTx = 0;
    this.dirtyTx = 0;
    if (CHIPS[this.chipset][2] & 1) this.w8(HltClk, 'R'.charCodeAt(0));
    this.chipReset();
    this.w8f(Cfg9346, 0xc0);
    this.w32f(MAC0, this.mac[0] | (this.mac[1] << 8) | (this.mac[2] << 16) | (this.mac[3] << 24));
    this.w32f(MAC0 + 4, this.mac[4] | (this.mac[5] << 8));
    this.curRx = 0;
    this.w32f(RxBuf, this.rxRing);
    this.w8(ChipCmd, CmdRxEnb | CmdTxEnb);
    this.rxConfig = rtl8139_rx_config | AcceptBroadcast | AcceptMyPhys;
    this.w32(RxConfig, this.rxConfig);
    this.w32(TxConfig, rtl8139_tx_config);
    // rtl_check_media → mii_check_media → mii_link_ok (BMSR twice), nway result
    this.mdioRead(1);
    this.mdioRead(1);
    this.mdioRead(4);
    this.mdioRead(5);
    if (this.chipset >= CH_8139B) this.w8(Config3, this.r8(Config3) & ~0x20);
    this.w8(Cfg9346, 0x00);
    for (let i = 0; i < 4; i++) this.w32f(TxAddr0 + 4 * i, this.txBufs + i * TX_BUF_SIZE);
    this.w32(RxMissed, 0);
    this.setRxMode(flags);
    this.w16(MultiIntr, this.r16(MultiIntr) & 0xf000);
    const tmp = this.r8(ChipCmd);
    if (!(tmp & CmdRxEnb) || !(tmp & CmdTxEnb)) this.w8(ChipCmd, CmdRxEnb | CmdTxEnb);
    this.w16(IntrMask, rtl8139_intr_mask);
  }

  setRxMode(flags: { promisc?: boolean; allmulti?: boolean; multicast?: Uint8Array[] } = {}): void {
    const mc = [0, 0];
    let rxMode: number;
    if (flags.promisc) {
      rxMode = AcceptBroadcast | AcceptMulticast | AcceptMyPhys | AcceptAllPhys;
      mc[0] = mc[1] = 0xffffffff;
    } else if (flags.allmulti) {
      rxMode = AcceptBroadcast | AcceptMulticast | AcceptMyPhys;
      mc[0] = mc[1] = 0xffffffff;
    } else {
      rxMode = AcceptBroadcast | AcceptMyPhys;
      for (const a of flags.multicast ?? []) {
        const bit = linuxEtherCrc(a) >>> 26;
        mc[bit >>> 5] = (mc[bit >>> 5] | (1 << (bit & 31))) >>> 0;
        rxMode |= AcceptMulticast;
      }
    }
    const tmp = rtl8139_rx_config | rxMode;
    if (this.rxConfig !== tmp) {
      this.w32f(RxConfig, tmp);
      this.rxConfig = tmp;
    }
    this.w32f(MAR0, mc[0]);
    this.w32f(MAR0 + 4, mc[1]);
  }

  // ---- transmit: rtl8139_start_xmit ----
  /** Returns false when the queue is stopped (4 outstanding). */
  startXmit(frame: Uint8Array): boolean {
    if (this.curTx - this.dirtyTx >= 4) return false;
    const entry = this.curTx % 4;
    const buf = this.txBufs + entry * TX_BUF_SIZE;
    const len = frame.length;
    // the guest's own memcpy: not a usernet copy, so not through the meter
    const dst = this.mem.view('gpa', buf, TX_BUF_SIZE) as Uint8Array;
    if (len < 60) dst.fill(0, 0, 60);
    dst.set(frame);
    this.w32f(TxStatus0 + entry * 4, this.txFlag | Math.max(len, 60));
    this.curTx++;
    return true;
  }

  // ---- interrupt: rtl8139_interrupt ----
  /** Returns whether the interrupt was ours. */
  interrupt(): boolean {
    const status = this.r16(IntrStatus);
    if ((status & rtl8139_intr_mask) === 0) return false;
    if (status === 0xffff) return true;
    let linkChanged = 0;
    if (status & RxUnderrun) linkChanged = this.r16(CSCR) & 0x0800;
    const ackstat = status & ~(RxAckBits | TxErr);
    if (ackstat) this.w16(IntrStatus, ackstat);
    if (status & RxAckBits && !this.napiScheduled) {
      this.w16f(IntrMask, rtl8139_norx_intr_mask);
      this.napiScheduled = true;
    }
    if (status & (PCIErr | PCSTimeout | RxUnderrun | RxErr)) {
      this.r32(RxMissed);
      this.w32(RxMissed, 0);
      if (status & RxUnderrun && linkChanged) {
        this.mdioRead(1);
        this.mdioRead(1);
      }
      if (status & PCIErr) {
        const s = this.pci.config.read(0x06, 2);
        this.pci.config.writeValue(0x06, 2, s);
      }
    }
    if (status & (TxOK | TxErr)) {
      this.txInterrupt();
      if (status & TxErr) this.w16(IntrStatus, TxErr);
    }
    return true;
  }

  txInterrupt(): void {
    let dirty = this.dirtyTx;
    let left = this.curTx - dirty;
    while (left > 0) {
      const entry = dirty % 4;
      const txstatus = this.r32(TxStatus0 + entry * 4) >>> 0;
      if (!(txstatus & (TxStatOK | TxUnderrun | TxAborted))) break;
      if (txstatus & (TxOutOfWindow | TxAborted)) {
        this.txErrors++;
        if (txstatus & TxAborted) {
          this.w32(TxConfig, TxClearAbt);
          this.w16(IntrStatus, TxErr);
        }
      } else {
        this.txCompleted.push(txstatus & 0x7ff);
      }
      dirty++;
      left--;
    }
    this.dirtyTx = dirty;
  }

  // ---- NAPI poll: rtl8139_poll + rtl8139_rx ----
  poll(budget = 64): ReceivedPacket[] {
    const got: ReceivedPacket[] = [];
    if (this.r16(IntrStatus) & RxAckBits) {
      const r = this.rx(budget, got);
      if (r < 0) return got;
    }
    if (got.length < budget) {
      this.napiScheduled = false;
      this.w16f(IntrMask, rtl8139_intr_mask);
    }
    return got;
  }

  private rx(budget: number, out: ReceivedPacket[]): number {
    let received = 0;
    let curRx = this.curRx;
    let rxSize = 0;
    while (received < budget && (this.r8(ChipCmd) & RxBufEmpty) === 0) {
      const ringOffset = curRx % RX_BUF_LEN;
      const hdr = this.mem.view('gpa', this.rxRing + ringOffset, 4) as Uint8Array;
      const rxStatus = (hdr[0] | (hdr[1] << 8) | (hdr[2] << 16) | (hdr[3] << 24)) >>> 0;
      rxSize = rxStatus >>> 16;
      const pktSize = rxSize - 4;
      if (rxSize > 1536 + 4 || rxSize < 8 || !(rxStatus & 1)) {
        // rtl8139_rx_err
        this.rxErrors++;
        const tmp8 = this.r8(ChipCmd);
        this.w8(ChipCmd, tmp8 & ~CmdRxEnb);
        this.w8(ChipCmd, tmp8);
        this.w32(RxConfig, this.rxConfig);
        this.curRx = 0;
        return -1;
      }
      const data = (this.mem.view('gpa', this.rxRing + ringOffset + 4, pktSize) as Uint8Array).slice();
      const f = this.mem.view('gpa', this.rxRing + ringOffset + 4 + pktSize, 4) as Uint8Array;
      out.push({ status: rxStatus & 0xffff, size: rxSize, data, fcs: (f[0] | (f[1] << 8) | (f[2] << 16) | (f[3] << 24)) >>> 0 });
      received++;
      curRx = (curRx + rxSize + 4 + 3) & ~3;
      this.w16(RxBufPtr, (curRx - 16) & 0xffff);
      this.isrAck();
    }
    if (!received) this.isrAck();
    this.curRx = curRx;
    return received;
  }

  isrAck(): void {
    const status = this.r16(IntrStatus) & RxAckBits;
    if (status !== 0) this.w16f(IntrStatus, RxAckBits);
  }

  // ---- close: rtl8139_close ----
  close(): void {
    this.w8(ChipCmd, 0);
    this.w16(IntrMask, 0);
    this.r32(RxMissed);
    this.w32(RxMissed, 0);
    this.w8(Cfg9346, 0xc0);
  }
}
