/**
 * Linux 8139cp's register and descriptor sequences, restated in TypeScript against a PciDevice
 * (drivers/net/ethernet/realtek/8139cp.c: cp_init_one's revision check and EEPROM MAC read,
 * cp_stop_hw, cp_init_hw/cp_start_hw, cp_init_rings/cp_refill_rx, cp_start_xmit with its
 * fragments-first/FS-last order and TxPoll, cp_interrupt, cp_rx_poll, cp_tx), so unit tests
 * drive the C+ model the way the real driver does. MMIO through BAR1, as 8139cp maps it.
 * Register accessors and the EEPROM bit-banging are 8139too's (the same chip interface).
 */
import type { GuestMemory } from '../../src/devices/memory';
import { PCI_COMMAND, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY } from '../../src/devices/pci/config-space';
import type { PciDevice } from '../../src/devices/pci/device';
import * as D from './rtl8139-driver';

export const StatsAddr = 0x10;
export const TxRingAddr = 0x20;
export const HiTxRingAddr = 0x28;
export const Cmd = 0x37;
export const IntrMask = 0x3c;
export const IntrStatus = 0x3e;
export const TxConfig = 0x40;
export const RxConfig = 0x44;
export const TxPoll = 0xd9;
export const CpCmd = 0xe0;
export const IntrMitigate = 0xe2;
export const RxRingAddr = 0xe4;
export const TxThresh = 0xec;

export const DescOwn = 0x80000000;
export const RingEnd = 0x40000000;
export const FirstFrag = 0x20000000;
export const LastFrag = 0x10000000;
export const LargeSend = 0x08000000;
export const MSSShift = 16;
export const TxError = 0x00800000;
export const RxError = 0x00100000;
export const IPCS = 0x00040000;
export const UDPCS = 0x00020000;
export const TCPCS = 0x00010000;
export const TxVlanTag = 0x00020000;
export const IPFail = 0x8000;
export const UDPFail = 0x4000;
export const TCPFail = 0x2000;
export const NormalTxPoll = 0x40;
export const RxProtoTCP = 1;
export const RxProtoUDP = 2;

export const PciErr = 0x8000;
export const SWInt = 0x100;
export const TxEmpty = 0x80;
export const RxFIFOOvr = 0x40;
export const LinkChg = 0x20;
export const RxEmpty = 0x10;
export const TxErr = 0x08;
export const TxOK = 0x04;
export const RxErr = 0x02;
export const RxOK = 0x01;
export const cp_norx_intr_mask = PciErr | LinkChg | TxOK | TxErr | TxEmpty;
export const cp_rx_intr_mask = RxOK | RxErr | RxEmpty | RxFIFOOvr;
export const cp_intr_mask = cp_rx_intr_mask | cp_norx_intr_mask;

export const RxVlanOn = 0x40;
export const RxChkSum = 0x20;
export const PCIDAC = 0x10;
export const PCIMulRW = 0x08;
export const CpRxOn = 0x02;
export const CpTxOn = 0x01;
export const CmdReset = 0x10;
export const RxOn = 0x08;
export const TxOn = 0x04;

export const RING_SIZE = 64;
export const PKT_BUF_SZ = 1536;
const cp_rx_config = (5 << 13) | (4 << 8);

export interface CpReceived {
  status: number;
  len: number;
  data: Uint8Array;
  opts2: number;
}

export interface XmitOptions {
  /** LargeSend with this MSS. */
  mss?: number;
  /** CHECKSUM_PARTIAL for a TCP or UDP frame. */
  csum?: 'tcp' | 'udp';
  /** Split the frame into buffers of these lengths (the rest in the last). */
  frags?: number[];
  /** 802.1Q TCI to insert (TxVlanTag). */
  vlan?: number;
}

export class Driver8139cp extends D.Driver8139 {
  readonly ringDma: number;
  readonly rxBufBase: number;
  readonly txBufBase: number;
  rxTail = 0;
  txHead = 0;
  txTail = 0;
  cpcmd = PCIDAC | PCIMulRW | RxChkSum | CpRxOn | CpTxOn;
  rxBufSz = PKT_BUF_SZ;
  readonly rxAddr: number[] = [];
  /** Frames whose TX completed (cp_tx), and how many of them with TxError. */
  txDone = 0;
  txErrs = 0;
  cpNapi = false;
  private txBufNext = 0;

  constructor(pci: PciDevice, mem: GuestMemory, layout: { ring?: number; rxBufs?: number; txBufs?: number } = {}) {
    super(pci, mem, 1);
    this.ringDma = layout.ring ?? 0x100000;
    this.rxBufBase = layout.rxBufs ?? 0x110000;
    this.txBufBase = layout.txBufs ?? 0x200000;
  }

  private get rxRingAt(): number {
    return this.ringDma;
  }

  private get txRingAt(): number {
    return this.ringDma + 16 * RING_SIZE;
  }

  desc(ring: 'rx' | 'tx', i: number): { opts1: number; opts2: number; addr: number } {
    const at = (ring === 'rx' ? this.rxRingAt : this.txRingAt) + 16 * i;
    const v = this.mem.region(0).view;
    return { opts1: v.getUint32(at, true), opts2: v.getUint32(at + 4, true), addr: v.getUint32(at + 8, true) + v.getUint32(at + 12, true) * 2 ** 32 };
  }

  setDesc(ring: 'rx' | 'tx', i: number, opts1: number, opts2: number, addr: number): void {
    const at = (ring === 'rx' ? this.rxRingAt : this.txRingAt) + 16 * i;
    const v = this.mem.region(0).view;
    v.setUint32(at + 4, opts2 >>> 0, true);
    v.setUint32(at + 8, addr % 2 ** 32, true);
    v.setUint32(at + 12, Math.floor(addr / 2 ** 32), true);
    v.setUint32(at, opts1 >>> 0, true);
  }

  // ---- cp_init_one ----
  /** The probe; returns false when 8139cp would refuse the chip (revision below 0x20). */
  probeCp(): boolean {
    if (this.pci.config.read(8, 1) < 0x20) return false;
    const cmd = this.pci.config.read(PCI_COMMAND, 2);
    this.pci.config.writeValue(PCI_COMMAND, 2, cmd | PCI_COMMAND_MEMORY);
    this.stopHw();
    this.addrLen = this.readEeprom(0, 8) === 0x8129 ? 8 : 6;
    for (let k = 0; k < 3; k++) {
      const word = this.readEeprom(k + 7, this.addrLen);
      this.mac[2 * k] = word & 0xff;
      this.mac[2 * k + 1] = word >>> 8;
    }
    this.pci.config.writeValue(PCI_COMMAND, 2, this.pci.config.read(PCI_COMMAND, 2) | PCI_COMMAND_MASTER);
    return true;
  }

  stopHw(): void {
    this.w16(IntrStatus, ~this.r16(IntrStatus) & 0xffff);
    this.w16f(IntrMask, 0);
    this.w8(Cmd, 0);
    this.w16f(CpCmd, 0);
    this.w16f(IntrStatus, ~this.r16(IntrStatus) & 0xffff);
    this.rxTail = 0;
    this.txHead = this.txTail = 0;
  }

  // ---- cp_open: cp_alloc_rings, cp_init_hw, cp_enable_irq ----
  openCp(rxMode = 0x08 | 0x02): void {
    for (let i = 0; i < RING_SIZE; i++) this.setDesc('tx', i, i === RING_SIZE - 1 ? RingEnd : 0, 0, 0);
    this.rxTail = 0;
    this.txHead = this.txTail = 0;
    for (let i = 0; i < RING_SIZE; i++) {
      this.rxAddr[i] = this.rxBufBase + i * 2048;
      this.setDesc('rx', i, DescOwn | (i === RING_SIZE - 1 ? RingEnd : 0) | this.rxBufSz, 0, this.rxAddr[i]);
    }
    this.initHw(rxMode);
    this.w16f(IntrMask, cp_intr_mask);
  }

  initHw(rxMode: number): void {
    this.w8(Cmd, CmdReset);
    for (let i = 1000; i > 0; i--) if ((this.r8(Cmd) & CmdReset) === 0) break;
    this.w8f(D.Cfg9346, 0xc0);
    const m = this.mac;
    this.w32f(0, (m[0] | (m[1] << 8) | (m[2] << 16) | (m[3] << 24)) >>> 0);
    this.w32f(4, m[4] | (m[5] << 8));
    // cp_start_hw
    this.w16(CpCmd, this.cpcmd);
    this.w32f(HiTxRingAddr, 0);
    this.w32f(HiTxRingAddr + 4, 0);
    this.w32f(RxRingAddr, this.rxRingAt);
    this.w32f(RxRingAddr + 4, 0);
    this.w32f(TxRingAddr, this.txRingAt);
    this.w32f(TxRingAddr + 4, 0);
    this.w8(Cmd, RxOn | TxOn);
    this.w8(TxThresh, 0x06);
    // __cp_set_rx_mode
    this.w32f(RxConfig, cp_rx_config | rxMode);
    this.w32f(D.MAR0, 0);
    this.w32f(D.MAR0 + 4, 0);
    this.w32f(TxConfig, (3 << 24) | (6 << 8));
    this.w8(D.Config1, this.r8(D.Config1) | 0x20 | 0x01);
    this.w8(D.Config3, 0x40);
    this.w8(0xd8, this.r8(0xd8) & 0x01);
    this.w16(D.MultiIntr, 0);
    this.w8f(D.Cfg9346, 0);
  }

  // ---- cp_start_xmit ----
  xmit(frame: Uint8Array, o: XmitOptions = {}): void {
    let opts1 = DescOwn;
    if (o.mss) opts1 |= LargeSend | (o.mss << MSSShift);
    else if (o.csum === 'tcp') opts1 |= IPCS | TCPCS;
    else if (o.csum === 'udp') opts1 |= IPCS | UDPCS;
    const opts2 = o.vlan !== undefined ? TxVlanTag | (((o.vlan & 0xff) << 8) | (o.vlan >>> 8)) : 0;
    const lens = o.frags && o.frags.length > 0 ? [...o.frags, frame.length - o.frags.reduce((a, b) => a + b, 0)] : [frame.length];
    const addrs: number[] = [];
    let off = 0;
    for (const len of lens) {
      const a = this.txBufBase + this.txBufNext;
      this.mem.region(0).bytes.set(frame.subarray(off, off + len), a);
      this.txBufNext = (this.txBufNext + len + 63) & ~63;
      if (this.txBufNext > 0x0f0000) this.txBufNext = 0;
      addrs.push(a);
      off += len;
    }
    const first = this.txHead;
    const eor = (i: number): number => (i === RING_SIZE - 1 ? RingEnd : 0);
    if (lens.length === 1) {
      this.setDesc('tx', first, opts1 | eor(first) | lens[0] | FirstFrag | LastFrag, opts2, addrs[0]);
      this.txHead = (first + 1) % RING_SIZE;
    } else {
      let entry = first;
      for (let k = 1; k < lens.length; k++) {
        entry = (entry + 1) % RING_SIZE;
        this.setDesc('tx', entry, opts1 | eor(entry) | lens[k] | (k === lens.length - 1 ? LastFrag : 0), opts2, addrs[k]);
      }
      this.setDesc('tx', first, opts1 | eor(first) | lens[0] | FirstFrag, opts2, addrs[0]);
      this.txHead = (entry + 1) % RING_SIZE;
    }
    this.w8(TxPoll, NormalTxPoll);
  }

  // ---- cp_interrupt ----
  /** Returns the status read, 0 when the interrupt was not ours. */
  cpInterrupt(): number {
    const mask = this.r16(IntrMask);
    if (!mask) return 0;
    const status = this.r16(IntrStatus);
    if (!status || status === 0xffff) return 0;
    this.w16(IntrStatus, status & ~cp_rx_intr_mask);
    if (status & (RxOK | RxErr | RxEmpty | RxFIFOOvr) && !this.cpNapi) {
      this.cpNapi = true;
      this.w16f(IntrMask, cp_norx_intr_mask);
    }
    if (status & (TxOK | TxErr | TxEmpty | SWInt)) this.cpTx();
    return status;
  }

  // ---- cp_rx_poll ----
  cpPoll(budget = 16): CpReceived[] {
    const out: CpReceived[] = [];
    this.w16(IntrStatus, cp_rx_intr_mask);
    let rx = 0;
    while (rx < budget) {
      const d = this.desc('rx', this.rxTail);
      if (d.opts1 & DescOwn) break;
      const len = (d.opts1 & 0x1fff) - 4;
      const ok = (d.opts1 & (FirstFrag | LastFrag)) === (FirstFrag | LastFrag) && !(d.opts1 & RxError);
      if (ok) {
        out.push({ status: d.opts1, len, data: this.mem.region(0).bytes.slice(d.addr, d.addr + len), opts2: d.opts2 });
        rx++;
      } else {
        this.rxErrors++;
      }
      const i = this.rxTail;
      this.setDesc('rx', i, DescOwn | (i === RING_SIZE - 1 ? RingEnd : 0) | this.rxBufSz, 0, this.rxAddr[i]);
      this.rxTail = (i + 1) % RING_SIZE;
    }
    if (rx < budget) {
      this.cpNapi = false;
      this.w16f(IntrMask, cp_intr_mask);
    }
    return out;
  }

  // ---- cp_tx ----
  cpTx(): void {
    while (this.txTail !== this.txHead) {
      const d = this.desc('tx', this.txTail);
      if (d.opts1 & DescOwn) break;
      if (d.opts1 & LastFrag) {
        this.txDone++;
        if (d.opts1 & TxError) this.txErrs++;
      }
      this.txTail = (this.txTail + 1) % RING_SIZE;
    }
  }
}
