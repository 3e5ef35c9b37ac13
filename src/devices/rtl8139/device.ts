/**
 * Rtl8139: a Realtek RTL8139C as Linux's 8139too driver programs it (Realtek RTL8139C(L)
 * datasheet §5-§7; Linux drivers/net/ethernet/realtek/8139too.c), as both a PCI function (its
 * registers behind BAR0 I/O and BAR1 memory, DMA through the bus, an INTx line) and a Port
 * (frames the guest transmits come out of the receive handler; `send(frames)` is reception).
 *
 * Registers (registers.ts for the map): accessed 1, 2 or 4 bytes at a time; an access is split
 * over the registers it covers and each register sees the bytes written to it as (value, mask),
 * so a byte write into a 16-bit register, or a dword write over four byte registers (IDR0-3),
 * behaves like the hardware's byte lanes. Notable semantics:
 *   - CR: RST resets the chip (self-clearing: reads 0 at once); RE/TE enable the receiver and
 *     transmitter; BUFE reads 1 while the RX ring is empty. Turning the receiver off rewinds the
 *     ring pointers to 0 (8139too's receiver-reset path relies on it, setting cur_rx = 0).
 *   - ISR is write-1-to-clear; the interrupt line is (ISR & IMR) != 0, level, recomputed after
 *     every access and event.
 *   - 9346CR: EEM 10 bit-bangs the 93C46 (eeprom.ts) that holds the MAC; EEM 01 reloads IDR and
 *     CONFIG from it; EEM 11 unlocks writes to CONFIG0/1/3/4 and BMCR speed/AN/duplex.
 *   - TCR: the version bits say RTL8139C (0x74000000), which 8139too knows; the rest is writable
 *     only while the transmitter is enabled (8139too: "Must enable Tx/Rx before setting transfer
 *     thresholds!"). LBK = 11 loops transmitted frames back into the receiver.
 *   - RCR: accept modes (rx-filter.ts), ring length and WRAP (rx-ring.ts).
 *   - MII/MSR/CSCR (phy.ts): a 100 Mbit/s full-duplex link that is up unless `setLink(false)`;
 *     a change raises ISR.PUN/LinkChg and CSCR.LinkChange.
 *   - TCTR/TimerInt (timer.ts): ISR.TimeOut when the counter reaches TimerInt. MPC counts frames
 *     lost to overflow (24 bits); any write clears it.
 *
 * Transmit (datasheet §6.3): four descriptors used round robin. Writing TSDn with OWN = 0 hands
 * descriptor n to the chip; with TE set it reads SIZE bytes at TSADn and sends them, then sets
 * OWN and TOK and raises ISR.TOK. Here the frame is handed on as a *view* of guest memory (no
 * copy) and is delivered with everything else transmitted in the same event-loop turn — one
 * batch per turn; OWN|TOK are set after the handler returned, so the guest cannot reuse the
 * buffer while it is being read. A descriptor whose buffer spans two guest RAM regions is copied
 * (metered). Guest garbage behaves as on the chip and is counted (stage `guest.tx` drops):
 *   SIZE > 1792              → aborted: TSD.TABT|OWN, ISR.TER ('tx-size-over-1792')
 *   TSAD not in guest memory → master abort: PCI Status bit 13, ISR.SERR, TSD.TABT, ISR.TER
 *   Bus Master off           → aborted ('tx-no-bus-master')
 *   SIZE < 14                → a runt: "sent" (TOK) but dropped ('tx-runt')
 * TCR.CLRABT is accepted; the only aborts produced here are permanent (a retransmit would abort
 * again), so it changes nothing.
 *
 * Receive (datasheet §6.2): frames the filter accepts go into the ring with their header and FCS,
 * and raise ISR.ROK — once per `send` batch. Frames longer than 1536 bytes (without CRC) are
 * dropped: 8139too treats a longer entry as ring corruption and resets its receiver. A frame
 * with offload metadata is checksummed/segmented first (software-offload.ts); the NIC declares no
 * offloads (`offloads`), so well-behaved backends never send such frames. When the ring is full
 * a frame waits in the receive FIFO (`rxFifoBytes`, default 1 MiB, standing in for the chip's
 * FIFO plus the VMM's packet queue) until the driver frees space by writing CAPR; meeting the
 * full ring sets ISR.RXOVW ("ring storage resources have been exhausted"), and it stays asserted
 * — set again right after an acknowledgment — while frames wait, as it would on silicon with
 * frames still arriving: that is what brings 8139too back to a full ring it stopped reading
 * (its NAPI poll skips the ring when no RX bit is set, e.g. after using up its budget). When the
 * FIFO is full too the frame is lost: ISR.FOVW, MPC + 1, `guest.rx` drop 'rx-overflow'. With `rxFifoBytes: 0` a full ring drops at once, like QEMU's
 * model. `rxBlocked` / 'rx-unblocked' let a backend that can wait (a tap) stop reading instead.
 *
 * One timing rule is modelled explicitly: an ISR write clears ROK only for frames the driver could
 * have seen. 8139too's NAPI poll reads CR (BUFE = 1: "empty") and then, in rtl8139_isr_ack, reads
 * and acknowledges ROK; a frame landing between those two accesses would have its ROK cleared
 * without ever being read, and — once the ring is full, so nothing sets ROK again — reception
 * would stall. On silicon that window is a few PCI cycles; across vfio-user every register access
 * is a socket round trip, so the window is wide. A frame written after the driver's last CR read
 * therefore keeps ROK through an acknowledgment, and the driver comes back for it. Likewise, when
 * the NAPI poll used up its budget its per-frame acknowledgments have cleared ROK, the next poll
 * skips the ring (no RX bit) and re-enables the RX interrupts with frames still unread; silicon
 * is rescued by the next frame off the wire within microseconds, but here the next frame may be
 * exactly what the peer withholds until those are acknowledged. So re-enabling ROK in IMR while
 * the ring holds frames and no RX bit is pending sets ROK again.
 *
 * Variant 'rtl8139c+' (RTL8139C+ datasheet v1.6; Linux 8139cp): PCI revision 0x20, TCR version
 * RTL8139C+, and C+ mode besides C mode. Writing C+CR (0xE0) with CpRxOn/CpTxOn switches the
 * receiver/transmitter to descriptor rings in guest memory (cplus-rx-ring.ts, cplus-tx-ring.ts;
 * registers and bits in cplus-registers.ts); 0x10-0x2F then hold DTCCR/TNPDS/THPDS instead of
 * TSD0-3/TSAD0-3. TPPoll (0xD9) is the TX doorbell, served once per event-loop turn: all frames
 * the driver posted go out as one batch and complete with one TOK. Received frames are written
 * into the RX descriptors, one ROK per `send` batch; the RX ring has no doorbell, so frames that
 * met "RX descriptor unavailable" (ISR.RxEmpty, the C mode's RXOVW bit) wait in the FIFO and go
 * in when the driver next writes ISR or IMR (8139cp's NAPI poll does both around its refill).
 * The C-mode timing rules above (ROK kept across an acknowledgment) do not apply to C+ mode: the
 * driver reads OWN bits in memory, not registers. The C+ chip declares offloads (CPLUS_OFFLOADS):
 * TSO and partial checksums from the guest, checksums completed by the device towards it.
 * CR.RST returns to C mode. IntrMitigate is stored (8139cp leaves it 0). DTCCR dumps counters.
 *
 * Meter stages (meter/stages.ts): `guest.tx` (frames/bytes from the guest, drops), `guest.rx`
 * (frames/bytes into the ring, drops), `device.dma` (the copy of each received frame into the
 * ring; a transmit is a view, copied only when its buffer spans two guest RAM regions),
 * `device.dma.tx` (C+ mode: transmits gathered from several buffers),
 * `device.fifo` (copies into the FIFO), `device.segment` (software offload).
 */
import { EventEmitter } from 'node:events';
import { resetFrame, plainFrame, type Frame } from '../../link/frame';
import { FrameQueue } from '../../link/frame-queue';
import { DISCARD, type FrameHandler, type Port } from '../../link/port';
import { log, logOnce } from '../../log';
import { globalMeter, type Meter, type Stage } from '../../meter/meter';
import { DEVICE_DMA_TX, DEVICE_FIFO, DEVICE_SEGMENT, GUEST_RX, GUEST_TX } from '../../meter/stages';
import { MEM_CROSSES_END } from '../memory';
import { DMA_NO_MASTER, DMA_OK, type BusMaster } from '../pci/bus-master';
import {
  msiCapability,
  powerManagementCapability,
  type PciBarSpec,
  type PciCapabilitySpec,
  type PciIdentity,
} from '../pci/config-space';
import type { AccessSize, PciFunction, PciHost } from '../pci/device';
import { NO_OFFLOADS, type NetOffloads } from '../virtio/net-offloads';
import * as C from './cplus-registers';
import { CPLUS_RX_MAX_FRAME, CplusRxRing, RING_BAD_DESCRIPTOR } from './cplus-rx-ring';
import { CplusTxRing, TX_FAULT, TX_MORE } from './cplus-tx-ring';
import { Eeprom93C46, rtl8139EepromImage } from './eeprom';
import { Phy } from './phy';
import * as R from './registers';
import { rxAcceptStatus } from './rx-filter';
import { RX_MAX_FRAME, RING_FULL, RING_NO_MASTER, RING_OK, RxRing } from './rx-ring';
import { SoftwareOffload } from './software-offload';
import { ChipTimer } from './timer';

export const RTL8139_VENDOR_ID = 0x10ec;
export const RTL8139_DEVICE_ID = 0x8139;
/** Below 0x20: Linux binds 8139too (0x20 and up is a C+ chip for 8139cp). */
export const RTL8139_REVISION = 0x10;
export const DEFAULT_MAC = '52:54:00:12:34:56';
const DEFAULT_RX_FIFO_BYTES = 1024 * 1024;
const CONFIG1_DEFAULT = R.CONFIG1_IOMAP | R.CONFIG1_MEMMAP;
/** ISR bits that make 8139too walk the ring (its RxAckBits). */
const RX_PENDING = R.INT_ROK | R.INT_RXOVW | R.INT_FOVW;

export interface Rtl8139Options {
  name?: string;
  meter?: Meter;
  /** Station address: "52:54:00:12:34:56" or 6 bytes. Default 52:54:00:12:34:56. */
  mac?: string | Uint8Array;
  /** Bytes of frames held while the RX ring is full (0: drop at once). Default 1 MiB. */
  rxFifoBytes?: number;
  /** Link state at power-on (default up). */
  linkUp?: boolean;
  /** Add an MSI capability (not on real RTL8139s; lets tests exercise MSI delivery). */
  msi?: boolean;
  /**
   * 'rtl8139c' (default): an RTL8139C, revision 0x10, for Linux 8139too. 'rtl8139c+': an
   * RTL8139C+, revision 0x20, for Linux 8139cp — C mode as well, plus C+ mode's descriptor rings
   * and checksum/TSO offloads (cplus-*.ts).
   */
  variant?: Rtl8139Variant;
}

export type Rtl8139Variant = 'rtl8139c' | 'rtl8139c+';

/** What a C+ chip declares to a backend: frames from the guest may be TSO/partial-checksum
 *  (8139cp's LargeSend/TCPCS/UDPCS); frames to it may leave the checksum to the device, which
 *  completes it (software-offload.ts) and then reports it good in the RX descriptor. */
const CPLUS_OFFLOADS: Readonly<NetOffloads> = Object.freeze({
  ...NO_OFFLOADS,
  guestCsum: true,
  hostCsum: true,
  hostTso4: true,
});

export function parseMac(mac: string | Uint8Array): Uint8Array {
  if (typeof mac !== 'string') {
    if (mac.length !== 6) throw new RangeError('a MAC address has 6 bytes');
    return Uint8Array.from(mac);
  }
  const parts = mac.split(/[:-]/);
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{1,2}$/.test(p))) throw new RangeError(`bad MAC address "${mac}"`);
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}

export function formatMac(b: Uint8Array): string {
  return [...b.subarray(0, 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

// byte → first byte of the register holding it (-1: plain storage), and register widths
const REG_START = new Int16Array(R.REGISTER_SPACE).fill(-1);
const REG_WIDTH = new Uint8Array(R.REGISTER_SPACE);
function defineRegister(off: number, width: number): void {
  REG_WIDTH[off] = width;
  for (let i = 0; i < width; i++) REG_START[off + i] = off;
}
for (let i = 0; i < 6; i++) defineRegister(R.IDR0 + i, 1);
for (let i = 0; i < 8; i++) defineRegister(R.MAR0 + i, 1);
for (let i = 0; i < 4; i++) {
  defineRegister(R.TSD0 + 4 * i, 4);
  defineRegister(R.TSAD0 + 4 * i, 4);
}
const CPLUS_REG_START = new Int16Array(R.REGISTER_SPACE);
const CPLUS_REG_WIDTH = new Uint8Array(R.REGISTER_SPACE);
for (const [off, w] of [
  [R.RBSTART, 4], [R.ERBCR, 2], [R.ERSR, 1], [R.CR, 1], [R.CAPR, 2], [R.CBR, 2], [R.IMR, 2], [R.ISR, 2],
  [R.TCR, 4], [R.RCR, 4], [R.TCTR, 4], [R.MPC, 4], [R.CR9346, 1], [R.CONFIG0, 1], [R.CONFIG1, 1],
  [R.TIMER_INT, 4], [R.MSR, 1], [R.CONFIG3, 1], [R.CONFIG4, 1], [R.MULINT, 2], [R.RERID, 1],
  [R.TSAD_SUMMARY, 2], [R.BMCR, 2], [R.BMSR, 2], [R.ANAR, 2], [R.ANLPAR, 2], [R.ANER, 2], [R.DIS, 2],
  [R.FCSC, 2], [R.REC, 2], [R.CSCR, 2], [R.CONFIG5, 1],
] as const) {
  defineRegister(off, w);
}
// the C+ chip decodes more: TPPoll, C+CR, IntrMitigate, RDSAR (0x10-0x2F keep their dword lanes)
CPLUS_REG_START.set(REG_START);
CPLUS_REG_WIDTH.set(REG_WIDTH);
for (const [off, w] of [[C.TPPOLL, 1], [C.CPCR, 2], [C.INTR_MITIGATE, 2], [C.RDSAR, 4], [C.RDSAR + 4, 4]] as const) {
  CPLUS_REG_WIDTH[off] = w;
  for (let i = 0; i < w; i++) CPLUS_REG_START[off + i] = off;
}

export class Rtl8139 extends EventEmitter implements Port, PciFunction {
  readonly name: string;
  readonly identity: PciIdentity;
  readonly variant: Rtl8139Variant;
  readonly bars: readonly PciBarSpec[] = [
    { index: 0, kind: 'io', size: R.REGISTER_SPACE },
    { index: 1, kind: 'mem32', size: R.REGISTER_SPACE },
  ];
  readonly capabilities: readonly PciCapabilitySpec[];
  /** RTL8139C: no checksum or segmentation offload in either direction; up to 1514-byte frames.
   *  RTL8139C+: CPLUS_OFFLOADS. */
  readonly offloads: Readonly<NetOffloads>;
  readonly mac: Uint8Array;
  readonly eeprom: Eeprom93C46;
  readonly phy: Phy;
  closed = false;

  // register state
  readonly idr = new Uint8Array(6);
  readonly mar = new Uint8Array(8);
  readonly tsd = new Uint32Array(4);
  readonly tsad = new Uint32Array(4);
  private txNext = 0;
  private txInFlight = 0;
  private rxEnabled = false;
  private txEnabled = false;
  imr = 0;
  isr = 0;
  tcr: number;
  rcr = 0;
  mpc = 0;
  private eem = R.EEM_NORMAL;
  private eePins = 0;
  private config0 = 0;
  private config1 = CONFIG1_DEFAULT;
  private config3 = 0;
  private config4 = 0;
  private config5 = 0;
  private mulint = 0;
  private readonly plain = new Uint8Array(R.REGISTER_SPACE);
  private readonly timer: ChipTimer;
  private readonly regStart: Int16Array;
  private readonly regWidth: Uint8Array;
  private readonly hwver: number;
  private readonly revision: number;
  private readonly intAll: number;

  // C+ mode (variant 'rtl8139c+' only; cplus-*.ts)
  private readonly cplus: boolean;
  private cpcmd = 0;
  private intrMitigate = 0;
  private readonly rdsar = new Uint32Array(2);
  private readonly tnpds = new Uint32Array(2);
  private readonly thpds = new Uint32Array(2);
  private readonly dtccr = new Uint32Array(2);
  /** TPPoll bits written and not yet served (one walk per event-loop turn). */
  private txPoll = 0;
  private cplusRx!: CplusRxRing;
  private cplusTx!: CplusTxRing;
  private cplusTxHigh!: CplusTxRing;
  private txOk = 0;
  private rxOk = 0;
  private txErr = 0;

  private host: PciHost | null = null;
  private dma!: BusMaster;
  private ring!: RxRing;
  private handler: FrameHandler = DISCARD;
  private readonly rxFifo: FrameQueue | null;
  private readonly fifoFrame: Frame = plainFrame(new Uint8Array(0));
  private readonly offload: SoftwareOffload;
  private readonly offloadSink = (data: Uint8Array, patchAt: number, patchValue: number): void =>
    this.receive(data, patchAt, patchValue);

  // transmit batch: one Frame per descriptor, a staging slot per descriptor for split buffers
  private readonly txFrames: Frame[] = [0, 1, 2, 3].map(() => plainFrame(new Uint8Array(0)));
  private readonly txStaging = new Uint8Array(4 * R.TX_MAX_SIZE);
  private readonly txBatch: Frame[] = [];
  private flushScheduled = false;
  private readonly flushTxBound = (): void => this.flushTx();
  private level = false;
  private activeCauses = 0;
  /** A frame went into the ring after the driver's last read of CR (BUFE). */
  private rxUnseen = false;

  readonly txStage: Stage;
  readonly rxStage: Stage;
  /** C+ transmit gathers (frames over several buffers): `device.dma.tx`. */
  private readonly gatherStage: Stage;

  constructor(opts: Rtl8139Options = {}) {
    super();
    const meter = opts.meter ?? globalMeter;
    this.name = opts.name ?? 'rtl8139';
    this.variant = opts.variant ?? 'rtl8139c';
    if (this.variant !== 'rtl8139c' && this.variant !== 'rtl8139c+') throw new RangeError(`unknown RTL8139 variant "${String(opts.variant)}"`);
    this.cplus = this.variant === 'rtl8139c+';
    this.revision = this.cplus ? C.RTL8139CPLUS_REVISION : RTL8139_REVISION;
    this.hwver = this.cplus ? C.TCR_HWVER_RTL8139CPLUS : R.TCR_HWVER_RTL8139C;
    this.tcr = this.hwver;
    this.intAll = this.cplus ? C.INT_ALL_CPLUS : R.INT_ALL;
    this.regStart = this.cplus ? CPLUS_REG_START : REG_START;
    this.regWidth = this.cplus ? CPLUS_REG_WIDTH : REG_WIDTH;
    this.offloads = this.cplus ? CPLUS_OFFLOADS : NO_OFFLOADS;
    this.identity = {
      vendorId: RTL8139_VENDOR_ID,
      deviceId: RTL8139_DEVICE_ID,
      revision: this.revision,
      classCode: 0x020000,
      subsystemVendorId: RTL8139_VENDOR_ID,
      subsystemId: RTL8139_DEVICE_ID,
      interruptPin: 1,
      minGrant: 0x20,
      maxLatency: 0x40,
    };
    this.mac = parseMac(opts.mac ?? DEFAULT_MAC);
    this.capabilities = opts.msi ? [powerManagementCapability(0x50), msiCapability(0x60)] : [powerManagementCapability(0x50)];
    this.eeprom = new Eeprom93C46(
      rtl8139EepromImage({
        mac: this.mac,
        vendorId: RTL8139_VENDOR_ID,
        deviceId: RTL8139_DEVICE_ID,
        subsystemVendorId: RTL8139_VENDOR_ID,
        subsystemId: RTL8139_DEVICE_ID,
        minGrant: 0x20,
        maxLatency: 0x40,
        config0: 0,
        config1: CONFIG1_DEFAULT,
        config3: 0,
      }),
    );
    this.phy = new Phy(opts.linkUp ?? true);
    this.txStage = meter.stage(GUEST_TX);
    this.rxStage = meter.stage(GUEST_RX);
    this.gatherStage = meter.stage(DEVICE_DMA_TX);
    const fifoBytes = opts.rxFifoBytes ?? DEFAULT_RX_FIFO_BYTES;
    this.rxFifo = fifoBytes > 0 ? new FrameQueue(fifoBytes, meter.stage(DEVICE_FIFO)) : null;
    this.offload = new SoftwareOffload(meter.stage(DEVICE_SEGMENT), RX_MAX_FRAME);
    this.timer = new ChipTimer(() => this.raise(R.INT_TIMEOUT));
    this.autoload();
  }

  // ---- PciFunction ----

  attach(host: PciHost): void {
    this.host = host;
    this.dma = host.dma;
    this.ring = new RxRing(host.dma);
    this.ring.configure(this.rcr);
    if (this.cplus) {
      this.cplusRx = new CplusRxRing(host.dma);
      this.cplusTx = new CplusTxRing(host.dma, this.txStage, this.gatherStage, this.name);
      this.cplusTxHigh = new CplusTxRing(host.dma, this.txStage, this.gatherStage, this.name);
    }
  }

  barRead(_bar: number, offset: number, size: AccessSize): number {
    let v = 0;
    let i = 0;
    while (i < size) {
      const b = offset + i;
      const start = this.regStart[b];
      if (start < 0) {
        v |= this.plain[b] << (8 * i);
        i++;
        continue;
      }
      const full = this.readRegister(start);
      const end = Math.min(start + this.regWidth[start], offset + size);
      for (let k = b; k < end; k++) v |= ((full >>> (8 * (k - start))) & 0xff) << (8 * (k - offset));
      i = end - offset;
    }
    return v >>> 0;
  }

  barWrite(_bar: number, offset: number, size: AccessSize, value: number): void {
    let i = 0;
    while (i < size) {
      const b = offset + i;
      const start = this.regStart[b];
      if (start < 0) {
        this.plain[b] = (value >>> (8 * i)) & 0xff;
        i++;
        continue;
      }
      const end = Math.min(start + this.regWidth[start], offset + size);
      let v = 0;
      let mask = 0;
      for (let k = b; k < end; k++) {
        v |= ((value >>> (8 * (k - offset))) & 0xff) << (8 * (k - start));
        mask |= 0xff << (8 * (k - start));
      }
      this.writeRegister(start, v >>> 0, mask >>> 0);
      i = end - offset;
    }
    this.updateIrq();
  }

  /** Power-on / function-level reset: every register to its default, contents of the EEPROM kept. */
  reset(): void {
    this.softReset();
    this.rcr = 0;
    this.ring?.configure(0);
    this.tcr = this.hwver;
    this.mpc = 0;
    this.eem = R.EEM_NORMAL;
    this.eePins = 0;
    this.eeprom.reset();
    this.mar.fill(0);
    this.tsad.fill(0);
    if (this.ring) this.ring.base = 0;
    this.mulint = 0;
    this.config4 = 0;
    this.config5 = 0;
    this.intrMitigate = 0;
    this.rdsar.fill(0);
    this.tnpds.fill(0);
    this.thpds.fill(0);
    this.dtccr.fill(0);
    if (this.cplus && this.cplusRx) {
      this.cplusRx.base = 0;
      this.cplusTx.base = 0;
      this.cplusTxHigh.base = 0;
    }
    this.plain.fill(0);
    this.timer.reset();
    this.phy.reset();
    this.autoload();
    this.updateIrq();
  }

  quiesce(): void {
    this.flushTx();
  }

  // ---- Port ----

  onReceive(handler: FrameHandler): void {
    this.handler = handler;
  }

  /** Reception: each frame goes through the address filter into the RX ring. */
  send(frames: readonly Frame[]): void {
    if (this.closed || !this.host) return;
    for (let i = 0; i < frames.length; i++) {
      const f = frames[i];
      if (SoftwareOffload.needed(f)) this.offload.process(f, this.offloadSink);
      else this.receive(f.data, -1, 0);
    }
    this.updateIrq();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.timer.close();
    this.txBatch.length = 0;
    this.txInFlight = 0;
    this.rxFifo?.clear();
    this.emit('close');
  }

  /** Frames are waiting in the FIFO because the ring is full: a backend may pause. */
  get rxBlocked(): boolean {
    return this.rxFifo !== null && this.rxFifo.length > 0;
  }

  /** Plug or unplug the cable. */
  setLink(up: boolean): void {
    if (this.phy.setLink(up)) this.raise(R.INT_PUN_LINKCHG);
  }

  /** Register state for logs and tests. */
  snapshot(): Record<string, number | string | boolean> {
    return {
      idr: formatMac(this.idr),
      cr: this.readRegister(R.CR),
      imr: this.imr,
      isr: this.isr,
      tcr: this.tcr,
      rcr: this.rcr,
      rbstart: this.ring?.base ?? 0,
      capr: this.ring?.capr ?? 0,
      cbr: this.ring?.writeOffset ?? 0,
      mpc: this.mpc,
      txNext: this.txNext,
      txInFlight: this.txInFlight,
      rxFifo: this.rxFifo?.length ?? 0,
      irq: this.level,
      ...(this.cplus && this.cplusRx
        ? { cpcmd: this.cpcmd, rxIndex: this.cplusRx.index, txIndex: this.cplusTx.index, rdsar: this.cplusRx.base, tnpds: this.cplusTx.base }
        : {}),
    };
  }

  /** C+ mode: C+CR has the receiver or the transmitter on the descriptor rings. Then 0x10-0x2F
   *  hold DTCCR/TNPDS/THPDS instead of TSD0-3/TSAD0-3. */
  private get cplusMode(): boolean {
    return (this.cpcmd & (C.CPCR_RX_ON | C.CPCR_TX_ON)) !== 0;
  }

  private get cplusRxMode(): boolean {
    return (this.cpcmd & C.CPCR_RX_ON) !== 0;
  }

  // ---- registers ----

  private get configUnlocked(): boolean {
    return this.eem === R.EEM_CONFIG_WRITE;
  }

  private readRegister(start: number): number {
    switch (start) {
      case R.CR:
        this.rxUnseen = false; // the driver looks at BUFE: it will read what is in the ring
        return (this.rxEnabled ? R.CR_RE : 0) | (this.txEnabled ? R.CR_TE : 0) | (this.ring.empty ? R.CR_BUFE : 0);
      case R.ISR:
        return this.isr;
      case R.IMR:
        return this.imr;
      case R.CAPR:
        return this.ring.capr;
      case R.CBR:
        return this.ring.writeOffset;
      case R.TSD0:
      case R.TSD0 + 4:
      case R.TSD0 + 8:
      case R.TSD0 + 12:
        if (this.cplusMode) return start < R.TSD0 + 8 ? this.dtccr[(start - R.TSD0) >>> 2] : 0;
        return this.tsd[(start - R.TSD0) >>> 2];
      case R.TSAD0:
      case R.TSAD0 + 4:
      case R.TSAD0 + 8:
      case R.TSAD0 + 12:
        if (this.cplusMode) return start < C.THPDS ? this.tnpds[(start - C.TNPDS) >>> 2] : this.thpds[(start - C.THPDS) >>> 2];
        return this.tsad[(start - R.TSAD0) >>> 2];
      case C.TPPOLL:
        return this.txPoll;
      case C.CPCR:
        return this.cpcmd;
      case C.INTR_MITIGATE:
        return this.intrMitigate;
      case C.RDSAR:
      case C.RDSAR + 4:
        return this.rdsar[(start - C.RDSAR) >>> 2];
      case R.RBSTART:
        return this.ring.base;
      case R.ERBCR:
      case R.ERSR:
      case R.DIS:
      case R.FCSC:
      case R.REC:
        return 0;
      case R.TCR:
        return this.tcr;
      case R.RCR:
        return this.rcr;
      case R.TCTR:
        return this.timer.read();
      case R.MPC:
        return this.mpc;
      case R.CR9346:
        return (this.eem << R.EEM_SHIFT) | this.eePins | (this.eem === R.EEM_PROGRAM ? this.eeprom.dataOut : 0);
      case R.CONFIG0:
        return this.config0;
      case R.CONFIG1:
        return this.config1;
      case R.CONFIG3:
        return this.config3;
      case R.CONFIG4:
        return this.config4;
      case R.CONFIG5:
        return this.config5;
      case R.TIMER_INT:
        return this.timer.timerInt;
      case R.MSR:
        return this.phy.readMsr();
      case R.MULINT:
        return this.mulint;
      case R.RERID:
        return this.revision;
      case R.TSAD_SUMMARY:
        return this.txSummary();
      case R.BMCR:
        return this.phy.bmcr;
      case R.BMSR:
        return this.phy.readBmsr();
      case R.ANAR:
        return this.phy.anar;
      case R.ANLPAR:
        return this.phy.readAnlpar();
      case R.ANER:
        return this.phy.readAner();
      case R.CSCR:
        return this.phy.readCscr();
      default:
        if (start >= R.IDR0 && start < R.IDR0 + 6) return this.idr[start - R.IDR0];
        if (start >= R.MAR0 && start < R.MAR0 + 8) return this.mar[start - R.MAR0];
        return 0;
    }
  }

  private writeRegister(start: number, v: number, mask: number): void {
    switch (start) {
      case R.TSD0:
      case R.TSD0 + 4:
      case R.TSD0 + 8:
      case R.TSD0 + 12: {
        if (this.cplusMode) {
          if (start < R.TSD0 + 8) this.writeDtccr((start - R.TSD0) >>> 2, v, mask);
          return;
        }
        const n = (start - R.TSD0) >>> 2;
        // status bits belong to the chip: a driver write clears them (the next completion sets them)
        this.tsd[n] = merge(this.tsd[n], v, mask) & R.TSD_DRIVER_BITS;
        this.txKick();
        return;
      }
      case R.TSAD0:
      case R.TSAD0 + 4:
      case R.TSAD0 + 8:
      case R.TSAD0 + 12: {
        if (this.cplusMode) {
          const high = start >= C.THPDS;
          const reg = high ? this.thpds : this.tnpds;
          const k = (start - (high ? C.THPDS : C.TNPDS)) >>> 2;
          reg[k] = merge(reg[k], v, mask);
          const ring = high ? this.cplusTxHigh : this.cplusTx;
          ring.base = reg[0] + reg[1] * 0x100000000;
          ring.reset();
          return;
        }
        const n = (start - R.TSAD0) >>> 2;
        this.tsad[n] = merge(this.tsad[n], v, mask);
        return;
      }
      case C.TPPOLL:
        this.writeTxPoll(v & 0xff);
        return;
      case C.CPCR:
        this.writeCplusCommand(merge(this.cpcmd, v, mask) & C.CPCR_WRITABLE);
        return;
      case C.INTR_MITIGATE:
        this.intrMitigate = merge(this.intrMitigate, v, mask) & 0xffff;
        return;
      case C.RDSAR:
      case C.RDSAR + 4: {
        const k = (start - C.RDSAR) >>> 2;
        this.rdsar[k] = merge(this.rdsar[k], v, mask);
        this.cplusRx.base = this.rdsar[0] + this.rdsar[1] * 0x100000000;
        this.cplusRx.reset();
        return;
      }
      case R.RBSTART:
        this.ring.base = merge(this.ring.base, v, mask);
        return;
      case R.CR:
        this.writeCommand(v & 0xff);
        return;
      case R.CAPR:
        this.ring.capr = merge(this.ring.capr, v, mask) & 0xffff;
        this.drainFifo();
        return;
      case R.IMR: {
        const was = this.imr;
        this.imr = merge(this.imr, v, mask) & this.intAll;
        if (this.cplusRxMode) {
          // 8139cp unmasks RX after its poll refilled the ring: frames waiting in the FIFO go in now
          this.drainFifo();
          return;
        }
        // RX interrupts back on, frames still in the ring, no RX bit pending: the driver stopped
        // walking the ring with frames left (see the file comment) — tell it again
        if ((this.imr & ~was & R.INT_ROK) !== 0 && !this.ring.empty && (this.isr & RX_PENDING) === 0) this.isr |= R.INT_ROK;
        return;
      }
      case R.ISR: {
        let clear = v & mask;
        // a frame that landed after the driver last read CR.BUFE keeps ROK (see the file comment)
        if (this.rxUnseen && !this.cplusRxMode) clear &= ~R.INT_ROK;
        this.isr &= ~clear;
        if (this.cplusRxMode) this.drainFifo(); // no RX doorbell in C+ mode: retry at each acknowledgment
        // frames still waiting for ring space hit the full ring again at once (RXOVW)
        if (this.rxFifo !== null && this.rxFifo.length > 0) this.isr |= R.INT_RXOVW;
        return;
      }
      case R.TCR:
        // CLRABT (bit 0, write-only) needs nothing: no abort produced here is retransmittable
        if (this.txEnabled) this.tcr = (this.tcr & ~R.TCR_WRITABLE) | (merge(this.tcr, v, mask) & R.TCR_WRITABLE);
        return;
      case R.RCR:
        this.rcr = (this.rcr & ~R.RCR_WRITABLE) | (merge(this.rcr, v, mask) & R.RCR_WRITABLE);
        this.ring.configure(this.rcr);
        return;
      case R.TCTR:
        this.timer.restart();
        return;
      case R.MPC:
        this.mpc = 0;
        return;
      case R.CR9346:
        this.write9346(v & 0xff);
        return;
      case R.CONFIG1:
        if (this.configUnlocked) this.config1 = (this.config1 & ~R.CONFIG1_WRITABLE) | (v & R.CONFIG1_WRITABLE);
        return;
      case R.CONFIG3:
        if (this.configUnlocked) this.config3 = (this.config3 & ~R.CONFIG3_WRITABLE) | (v & R.CONFIG3_WRITABLE);
        return;
      case R.CONFIG4:
        if (this.configUnlocked) this.config4 = (this.config4 & ~R.CONFIG4_WRITABLE) | (v & R.CONFIG4_WRITABLE);
        return;
      case R.CONFIG5:
        this.config5 = v & R.CONFIG5_WRITABLE;
        return;
      case R.TIMER_INT:
        this.timer.setTimerInt(merge(this.timer.timerInt, v, mask));
        return;
      case R.MSR:
        this.phy.writeMsr(v);
        return;
      case R.MULINT:
        this.mulint = merge(this.mulint, v, mask) & 0x0fff;
        return;
      case R.BMCR:
        this.phy.writeBmcr(merge(this.phy.bmcr, v, mask), this.configUnlocked);
        return;
      case R.ANAR:
        this.phy.writeAnar(merge(this.phy.anar, v, mask));
        return;
      case R.CSCR:
        this.phy.writeCscr(v);
        return;
      default:
        if (start >= R.IDR0 && start < R.IDR0 + 6) this.idr[start - R.IDR0] = v & 0xff;
        else if (start >= R.MAR0 && start < R.MAR0 + 8) this.mar[start - R.MAR0] = v & 0xff;
      // everything else (ERBCR, ERSR, CBR, CONFIG0, RERID, TSAD summary, BMSR, ANLPAR, ANER, counters) is read-only
    }
  }

  private writeCommand(v: number): void {
    if ((v & R.CR_RST) !== 0) this.softReset();
    const re = (v & R.CR_RE) !== 0;
    const te = (v & R.CR_TE) !== 0;
    if (this.rxEnabled && !re) {
      // receiver off: the ring starts over at offset 0 and the FIFO is flushed
      this.ring.reset();
      this.cplusRx?.reset();
      this.dropFifo('rx-disabled');
    }
    if (this.txEnabled && !te && this.cplus) this.cplusTxOff();
    this.rxEnabled = re;
    const txOn = te && !this.txEnabled;
    this.txEnabled = te;
    if (txOn) this.txKick();
  }

  // ---- C+ mode registers ----

  /** C+CR (datasheet v1.6 §6 "C+ Command Register"): turning a ring off rewinds the chip's index. */
  private writeCplusCommand(v: number): void {
    if (!this.cplus) return;
    const was = this.cpcmd;
    this.cpcmd = v;
    this.cplusRx.checksum = (v & C.CPCR_RX_CHKSUM) !== 0;
    if ((was & ~v & C.CPCR_RX_ON) !== 0) {
      this.cplusRx.reset();
      this.dropFifo('rx-disabled');
    }
    if ((was & ~v & C.CPCR_TX_ON) !== 0) this.cplusTxOff();
  }

  /** The transmitter leaves C+ mode or stops: what was collected is completed, indexes rewind. */
  private cplusTxOff(): void {
    this.txPoll = 0;
    this.cplusTx.reset();
    this.cplusTxHigh.reset();
  }

  /** TPPoll: HPQ/NPQ ask for a walk of that ring (served once per turn), FSWInt raises SWInt. */
  private writeTxPoll(v: number): void {
    if ((v & C.TPPOLL_FSWINT) !== 0) this.isr |= C.INT_SW;
    const queues = v & (C.TPPOLL_HPQ | C.TPPOLL_NPQ);
    if (queues === 0 || this.closed) return;
    this.txPoll |= queues;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushTxBound);
    }
  }

  /** DTCCR: writing the low dword with Cmd dumps the tally counters (64 bytes) and clears Cmd. */
  private writeDtccr(k: number, v: number, mask: number): void {
    this.dtccr[k] = merge(this.dtccr[k], v, mask);
    if (k !== 0 || (this.dtccr[0] & C.DTCCR_CMD) === 0) return;
    const addr = (this.dtccr[0] & ~0x3f) + this.dtccr[1] * 0x100000000;
    const b = new Uint8Array(C.DTCCR_SIZE); // rare (ethtool -S): not a hot path
    const dv = new DataView(b.buffer);
    dv.setUint32(0, this.txOk, true); // TxOk (64)
    dv.setUint32(8, this.rxOk, true); // RxOk (64)
    dv.setUint32(16, this.txErr, true); // TxER (64)
    dv.setUint32(24, 0, true); // RxEr (32)
    dv.setUint16(28, this.mpc & 0xffff, true); // MissPkt
    if (this.dma.write(addr, b, false) !== DMA_OK) this.isr |= R.INT_SERR;
    this.dtccr[0] &= ~C.DTCCR_CMD;
  }

  /** CR.RST (datasheet: "disables the transmitter and receiver, reinitializes the FIFOs, resets
   *  the system buffer pointer to the initial value"; IDR and MAR keep their values). */
  private softReset(): void {
    this.rxEnabled = false;
    this.txEnabled = false;
    this.tsd.fill(R.TSD_OWN);
    this.txNext = 0;
    this.txInFlight = 0;
    this.txBatch.length = 0;
    this.ring?.reset();
    this.rxUnseen = false;
    if (this.cplus && this.cplusRx) {
      // CR.RST takes the chip back to C mode with its rings rewound
      this.cpcmd = 0;
      this.txPoll = 0;
      this.cplusRx.reset();
      this.cplusRx.checksum = false;
      this.cplusTx.reset();
      this.cplusTxHigh.reset();
    }
    this.dropFifo('chip-reset');
    this.isr = 0;
    this.imr = 0;
  }

  private write9346(v: number): void {
    const eem = v >>> R.EEM_SHIFT;
    this.eePins = v & (R.EE_CS | R.EE_SK | R.EE_DI);
    if (eem === R.EEM_AUTOLOAD) {
      // reload from the EEPROM, then back to normal mode by itself
      this.autoload();
      this.eem = R.EEM_NORMAL;
      this.eeprom.setPins(false, false, false);
      return;
    }
    this.eem = eem;
    if (eem === R.EEM_PROGRAM) {
      this.eeprom.setPins((v & R.EE_CS) !== 0, (v & R.EE_SK) !== 0, (v & R.EE_DI) !== 0);
    } else {
      this.eeprom.setPins(false, false, false);
    }
  }

  /** EEPROM auto-load: station address and CONFIG registers from the 93C46 image. */
  private autoload(): void {
    const w = this.eeprom.words;
    for (let i = 0; i < 3; i++) {
      this.idr[2 * i] = w[7 + i] & 0xff;
      this.idr[2 * i + 1] = w[7 + i] >>> 8;
    }
    this.config0 = w[10] & 0xff;
    this.config1 = w[10] >>> 8;
    this.config3 = w[6] >>> 8;
  }

  private txSummary(): number {
    let v = 0;
    for (let i = 0; i < 4; i++) {
      const t = this.tsd[i];
      if (t & R.TSD_TOK) v |= 0x1000 << i;
      if (t & R.TSD_TUN) v |= 0x100 << i;
      if (t & R.TSD_TABT) v |= 0x10 << i;
      if (t & R.TSD_OWN) v |= 0x1 << i;
    }
    return v;
  }

  // ---- interrupts ----

  private raise(bits: number): void {
    this.isr |= bits;
    this.updateIrq();
  }

  /**
   * The line is (ISR & IMR) != 0. A cause that appears while the line is already up is reported
   * separately (PciHost.interruptCause), so MSI and the vfio-user INTx logic can tell the guest.
   */
  private updateIrq(): void {
    const active = this.isr & this.imr;
    const fresh = active & ~this.activeCauses;
    this.activeCauses = active;
    const level = active !== 0;
    if (level !== this.level) {
      this.level = level;
      this.host?.setIrq(level);
    } else if (fresh !== 0) {
      this.host?.interruptCause();
    }
  }

  // ---- transmit ----

  private txKick(): void {
    if (!this.txEnabled || this.closed) return;
    for (let n = 0; n < 4; n++) {
      const i = this.txNext;
      if ((this.tsd[i] & R.TSD_OWN) !== 0 || (this.txInFlight & (1 << i)) !== 0) return;
      this.transmit(i);
      this.txNext = (i + 1) & 3;
    }
  }

  private transmit(i: number): void {
    const size = this.tsd[i] & R.TSD_SIZE_MASK;
    if (size > R.TX_MAX_SIZE) return this.txAbort(i, 'tx-size-over-1792', `${this.name}: guest queued a ${size}-byte frame (max ${R.TX_MAX_SIZE})`);
    const addr = this.tsad[i];
    const dma = this.dma;
    const r = dma.locate(addr, size);
    let data: Uint8Array;
    if (r >= 0) {
      const mem = dma.memory;
      const off = mem.lastOffset;
      data = mem.region(r).bytes.subarray(off, off + size);
    } else if (r === DMA_NO_MASTER) {
      return this.txAbort(i, 'tx-no-bus-master', `${this.name}: transmit with bus mastering disabled`);
    } else if (r === MEM_CROSSES_END) {
      const slot = this.txStaging.subarray(i * R.TX_MAX_SIZE, i * R.TX_MAX_SIZE + size);
      if (dma.read(addr, size, slot) !== DMA_OK) return this.txDmaFault(i, addr, size);
      data = slot;
    } else {
      dma.abort();
      return this.txDmaFault(i, addr, size);
    }
    this.txStage.pass(1, size);
    if (size < 14 || !this.phy.linkUp) {
      // a runt leaves the chip and is discarded by every receiver; without a link nothing leaves
      this.txStage.dropped(size < 14 ? 'tx-runt' : 'tx-link-down');
      this.tsd[i] |= R.TSD_OWN | R.TSD_TOK;
      this.isr |= R.INT_TOK;
      return;
    }
    const frame = resetFrame(this.txFrames[i], data);
    this.txBatch.push(frame);
    this.txInFlight |= 1 << i;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushTxBound);
    }
  }

  private txAbort(i: number, reason: string, message: string): void {
    if (this.txStage.dropped(reason)) logOnce(`rtl8139-${reason}`, message);
    this.tsd[i] |= R.TSD_TABT | R.TSD_OWN;
    this.isr |= R.INT_TER;
  }

  private txDmaFault(i: number, addr: number, size: number): void {
    this.isr |= R.INT_SERR;
    this.txAbort(i, 'tx-dma-outside-memory', `${this.name}: TSAD${i} 0x${addr.toString(16)}+${size} is not guest memory (master abort)`);
  }

  /** Hand this turn's transmitted frames on, then complete their descriptors. */
  private flushTx(): void {
    this.flushScheduled = false;
    if (this.txBatch.length > 0) this.flushCTx();
    if (this.txPoll !== 0) this.flushCplusTx();
  }

  /** C mode: the TSD descriptors collected this turn. */
  private flushCTx(): void {
    this.handOn(this.txBatch);
    const done = this.txInFlight;
    this.txInFlight = 0;
    for (let i = 0; i < 4; i++) if (done & (1 << i)) this.tsd[i] |= R.TSD_OWN | R.TSD_TOK;
    this.isr |= R.INT_TOK;
    this.txKick();
    this.updateIrq();
  }

  /**
   * C+ mode: walk the rings TPPoll named (high priority first), hand the frames on as one batch,
   * write their descriptors back, and raise TOK once for the lot — one interrupt per batch, the
   * mitigation IntrMitigate asks of the chip. A batch cut short by staging space goes round again.
   */
  private flushCplusTx(): void {
    const poll = this.txPoll;
    this.txPoll = 0;
    if (!this.txEnabled || (this.cpcmd & C.CPCR_TX_ON) === 0 || this.closed) return;
    const batch = this.txBatch;
    let high = (poll & C.TPPOLL_HPQ) !== 0;
    let normal = (poll & C.TPPOLL_NPQ) !== 0;
    while (high || normal) {
      let fault = false;
      if (high) {
        const r = this.cplusTxHigh.collect(batch);
        fault = r === TX_FAULT;
        high = r === TX_MORE;
      }
      if (normal && !high) {
        const r = this.cplusTx.collect(batch);
        fault ||= r === TX_FAULT;
        normal = r === TX_MORE;
      }
      const frames = batch.length;
      if (frames > 0) this.handOn(batch);
      const completed = this.cplusTx.pending + this.cplusTxHigh.pending;
      this.cplusTx.complete();
      this.cplusTxHigh.complete();
      this.txOk += frames;
      if (completed > 0) this.isr |= R.INT_TOK;
      if (fault || this.cplusTx.aborted || this.cplusTxHigh.aborted) {
        this.cplusTx.aborted = this.cplusTxHigh.aborted = false;
        this.txErr++;
        this.isr |= R.INT_TER | R.INT_SERR;
      }
    }
    this.updateIrq();
  }

  /** One batch out: to the receive handler, or back into the receiver in loopback mode. */
  private handOn(batch: Frame[]): void {
    if (!this.phy.linkUp) {
      for (let k = 0; k < batch.length; k++) this.txStage.dropped('tx-link-down');
    } else if ((this.tcr & R.TCR_LBK_MASK) === R.TCR_LBK_LOOPBACK) {
      for (let k = 0; k < batch.length; k++) {
        const f = batch[k];
        if (SoftwareOffload.needed(f)) this.offload.process(f, this.offloadSink);
        else this.receive(f.data, -1, 0);
      }
    } else {
      try {
        this.handler(batch);
      } catch (err) {
        log.error({ device: this.name, err: String(err) }, `${this.name}: the transmit handler threw`);
      }
    }
    batch.length = 0;
  }

  // ---- receive ----

  private receive(data: Uint8Array, patchAt: number, patchValue: number): void {
    const rx = this.rxStage;
    if (!this.rxEnabled) {
      rx.dropped('rx-disabled');
      return;
    }
    if (!this.phy.linkUp) {
      rx.dropped('rx-link-down');
      return;
    }
    const len = data.length;
    if (this.cplusRxMode) {
      this.receiveCplus(data, patchAt, patchValue);
      return;
    }
    if (len > RX_MAX_FRAME) {
      if (rx.dropped('rx-frame-over-1536')) logOnce('rtl8139-rx-long', `${this.name}: frames over ${RX_MAX_FRAME} bytes are dropped (8139too resets on them); is the MTU above 1500?`);
      return;
    }
    const status = this.admit(data);
    if (status === 0) return;
    const fifo = this.rxFifo;
    if (fifo !== null && fifo.length > 0) {
      this.toFifo(data, patchAt, patchValue);
      return;
    }
    const r = this.ring.put(data, status, patchAt, patchValue);
    if (r === RING_OK) {
      rx.pass(1, len);
      this.isr |= R.INT_ROK;
      this.rxUnseen = true;
    } else if (r === RING_FULL) {
      if (fifo !== null) this.toFifo(data, patchAt, patchValue);
      else this.overflow();
    } else {
      this.rxDmaFailed(r);
    }
  }

  /** Runt and address-filter checks: the frame's RX status, or 0 (dropped and counted). */
  private admit(data: Uint8Array): number {
    if (data.length < 14) {
      this.rxStage.dropped('rx-runt');
      return 0;
    }
    const status = rxAcceptStatus(data, this.rcr, this.idr, this.mar);
    if (status === 0) this.rxStage.dropped('rx-address-filter');
    return status;
  }

  /** C+ mode reception: into the descriptor ring (cplus-rx-ring.ts), else the FIFO. */
  private receiveCplus(data: Uint8Array, patchAt: number, patchValue: number): void {
    const rx = this.rxStage;
    const len = data.length;
    if (len > CPLUS_RX_MAX_FRAME) {
      if (rx.dropped('rx-frame-over-8187')) logOnce('rtl8139cp-rx-long', `${this.name}: frames over ${CPLUS_RX_MAX_FRAME} bytes are dropped (13-bit length)`);
      return;
    }
    const status = this.admit(data);
    if (status === 0) return;
    const fifo = this.rxFifo;
    if (fifo !== null && fifo.length > 0) {
      this.drainFifo();
      if (fifo.length > 0) {
        this.toFifo(data, patchAt, patchValue);
        return;
      }
    }
    const r = this.cplusRx.put(data, status, patchAt, patchValue);
    if (r === RING_OK) {
      rx.pass(1, len);
      this.rxOk++;
      this.isr |= R.INT_ROK;
    } else if (r === RING_FULL) {
      if (fifo !== null) this.toFifo(data, patchAt, patchValue);
      else this.overflow();
    } else if (r === RING_BAD_DESCRIPTOR) {
      if (rx.dropped('rx-descriptor-size-0')) logOnce('rtl8139cp-rx-size0', `${this.name}: an RX descriptor offers a 0-byte buffer`);
      this.isr |= R.INT_RER;
    } else {
      this.rxDmaFailed(r);
    }
  }

  private toFifo(data: Uint8Array, patchAt: number, patchValue: number): void {
    const fifo = this.rxFifo!;
    // the frame met a full ring: "receive buffer ring storage resources have been exhausted"
    this.isr |= R.INT_RXOVW;
    if (!fifo.push(resetFrame(this.fifoFrame, data))) {
      this.overflow();
      return;
    }
    if (patchAt >= 0) {
      const q = fifo.at(fifo.length - 1).data;
      q[patchAt] = patchValue >>> 8;
      q[patchAt + 1] = patchValue & 0xff;
    }
  }

  /** A frame is lost: no room in the ring (and none in the FIFO). */
  private overflow(): void {
    this.rxStage.dropped('rx-overflow');
    this.mpc = (this.mpc + 1) & 0xffffff;
    this.isr |= R.INT_RXOVW | (this.rxFifo !== null ? R.INT_FOVW : 0);
  }

  private rxDmaFailed(r: number): void {
    if (r === RING_NO_MASTER) {
      this.rxStage.dropped('rx-no-bus-master');
      return;
    }
    if (this.rxStage.dropped('rx-dma-outside-memory')) {
      const where = this.cplusRxMode ? `RDSAR 0x${this.cplusRx.base.toString(16)} (or a buffer)` : `RBSTART 0x${this.ring.base.toString(16)}`;
      logOnce('rtl8139-rx-dma', `${this.name}: ${where} is not guest memory (master abort)`);
    }
    this.isr |= R.INT_SERR;
  }

  /** The driver freed ring space (CAPR): move waiting frames in, in order. */
  private drainFifo(): void {
    const fifo = this.rxFifo;
    if (fifo === null || fifo.length === 0) return;
    let n = 0;
    while (n < fifo.length) {
      const data = fifo.at(n).data;
      const status = rxAcceptStatus(data, this.rcr, this.idr, this.mar);
      if (status !== 0 && this.rxEnabled) {
        const r = this.cplusRxMode ? this.cplusRx.put(data, status) : this.ring.put(data, status);
        if (r === RING_FULL) break;
        if (r === RING_OK) {
          this.rxStage.pass(1, data.length);
          this.isr |= R.INT_ROK;
          this.rxUnseen = true;
        } else if (r === RING_BAD_DESCRIPTOR) {
          this.rxStage.dropped('rx-descriptor-size-0');
          this.isr |= R.INT_RER;
        } else this.rxDmaFailed(r);
      } else {
        this.rxStage.dropped(this.rxEnabled ? 'rx-address-filter' : 'rx-disabled');
      }
      n++;
    }
    fifo.shift(n);
    if (fifo.length > 0) this.isr |= R.INT_RXOVW; // the head still does not fit
    else if (n > 0) this.emit('rx-unblocked');
  }

  private dropFifo(reason: string): void {
    const fifo = this.rxFifo;
    if (fifo === null || fifo.length === 0) return;
    for (let i = 0; i < fifo.length; i++) this.rxStage.dropped(reason);
    fifo.clear();
    this.emit('rx-unblocked');
  }
}

function merge(old: number, v: number, mask: number): number {
  return ((old & ~mask) | (v & mask)) >>> 0;
}
