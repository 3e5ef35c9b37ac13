/**
 * PciDevice: one PCI function as a VMM-facing bus endpoint — its configuration space, its BARs
 * dispatched to a device model (`PciFunction`), its bus-master DMA, and its interrupt line — in
 * the shape vfio-user needs (regions indexed 0..5 = BARs, 7 = config space; linux/vfio.h).
 *
 * The device model implements PciFunction: register accesses of 1, 2 or 4 bytes at offsets inside
 * a BAR (both of the RTL8139's BARs map the same registers), a reset, and `quiesce` (finish or
 * drop anything that still points into guest memory, before the VMM unmaps it). It receives a
 * PciHost: `setIrq(level)` for its interrupt line and `dma` for bus mastering.
 *
 * Accesses from the VMM can be any length (vfio-user REGION_READ/WRITE carry a byte count): a
 * naturally aligned 1/2/4-byte access goes to the function as one access; anything else is split
 * into the widest naturally aligned pieces (an 8-byte access = two dwords), the way a PCI host
 * bridge splits a wide CPU access into dword bus cycles (PCI 3.0 §3.2.2).
 *
 * Interrupts (§2.2.6, §6.8): the function drives a level. The INTx line seen outside is that level
 * unless Command.Interrupt Disable is set; Status.Interrupt Status shows the function's level
 * either way. `onInterrupt(asserted)` reports changes of the outside line to the transport, which
 * turns them into eventfd writes (INTx) or, when MSI is enabled by the VMM, into one message per
 * rising edge.
 */
import { log } from '../../log';
import type { GuestMemory } from '../memory';
import { BusMaster } from './bus-master';
import {
  PCI_COMMAND_IO,
  PCI_COMMAND_MEMORY,
  PCI_CONFIG_SIZE,
  PCI_STATUS_REC_MASTER_ABORT,
  PciConfigSpace,
  type PciBarSpec,
  type PciCapabilitySpec,
  type PciIdentity,
} from './config-space';

export type AccessSize = 1 | 2 | 4;

/** What a device model gets from the bus. */
export interface PciHost {
  /** Drive the function's interrupt line. */
  setIrq(asserted: boolean): void;
  /**
   * A new interrupt cause arrived while the line was already asserted (a device that raises
   * the line reports that with setIrq alone). MSI sends a message for it; INTx uses it to know
   * whether the guest may have missed something (vfio-user-irq.ts).
   */
  interruptCause(): void;
  /** DMA into guest memory (respects Bus Master Enable). */
  readonly dma: BusMaster;
}

/** What a device model gives the bus. */
export interface PciFunction {
  readonly identity: PciIdentity;
  readonly bars: readonly PciBarSpec[];
  readonly capabilities?: readonly PciCapabilitySpec[];
  attach(host: PciHost): void;
  /** A register read of `size` bytes at `offset` of BAR `bar` (naturally aligned). */
  barRead(bar: number, offset: number, size: AccessSize): number;
  barWrite(bar: number, offset: number, size: AccessSize, value: number): void;
  /** Function-level reset (vfio-user DEVICE_RESET, PCI RST#). */
  reset(): void;
  /** Drop every reference into guest memory now (a DMA unmap follows). */
  quiesce(): void;
}

/** vfio region indices (linux/vfio.h VFIO_PCI_*_REGION_INDEX). */
export const REGION_BAR0 = 0;
export const REGION_ROM = 6;
export const REGION_CONFIG = 7;
export const REGION_VGA = 8;
export const REGION_COUNT = 9;

export class PciDevice {
  readonly config: PciConfigSpace;
  readonly dma: BusMaster;
  /** The outside INTx line changed (after Interrupt Disable). */
  onInterrupt: ((asserted: boolean) => void) | null = null;
  /** A new cause while the function's line was already asserted (PciHost.interruptCause). */
  onInterruptCause: (() => void) | null = null;
  /** BAR accesses refused because the decode enable (Command I/O / Memory) was off. */
  decodeRefused = 0;
  private readonly barByIndex: Array<PciBarSpec | undefined> = [];
  private functionLevel = false;
  private line = false;

  constructor(
    readonly fn: PciFunction,
    memory: GuestMemory,
  ) {
    this.config = new PciConfigSpace(fn.identity, fn.bars, fn.capabilities ?? []);
    for (const b of fn.bars) this.barByIndex[b.index] = b;
    this.dma = new BusMaster(memory);
    this.dma.onMasterAbort = () => this.config.setStatusBits(PCI_STATUS_REC_MASTER_ABORT);
    this.config.onCommandWrite = (command) => {
      this.dma.enabled = (command & 0x4) !== 0;
      this.updateLine();
    };
    const host: PciHost = {
      setIrq: (asserted) => {
        if (asserted === this.functionLevel) return;
        this.functionLevel = asserted;
        this.config.intxStatus = asserted;
        this.updateLine();
      },
      interruptCause: () => this.onInterruptCause?.(),
      dma: this.dma,
    };
    fn.attach(host);
  }

  /** The INTx line as seen by the interrupt controller. */
  get intxAsserted(): boolean {
    return this.line;
  }

  /** The function's own interrupt level (ignoring Interrupt Disable). */
  get functionIrq(): boolean {
    return this.functionLevel;
  }

  private updateLine(): void {
    const line = this.functionLevel && !this.config.intxDisabled;
    if (line === this.line) return;
    this.line = line;
    this.onInterrupt?.(line);
  }

  /** Size of vfio region `index` (0 = not implemented). */
  regionSize(index: number): number {
    if (index === REGION_CONFIG) return PCI_CONFIG_SIZE;
    if (index >= 0 && index < 6) return this.barByIndex[index]?.size ?? 0;
    return 0;
  }

  bar(index: number): PciBarSpec | undefined {
    return index >= 0 && index < 6 ? this.barByIndex[index] : undefined;
  }

  /**
   * Read `len` bytes of region `index` at `offset` into `dst` at `dstOff` (default: all of
   * `dst`). Returns false when the range is not inside an implemented region.
   */
  regionRead(index: number, offset: number, dst: Uint8Array, dstOff = 0, len = dst.length - dstOff): boolean {
    if (index === REGION_CONFIG) return this.config.readInto(offset, dst.subarray(dstOff, dstOff + len));
    const bar = this.bar(index);
    if (!bar || !inRange(offset, len, bar.size) || dstOff + len > dst.length) return false;
    if (!this.decodes(bar)) {
      // a disabled BAR does not claim the cycle: the host sees a master abort, all ones
      dst.fill(0xff, dstOff, dstOff + len);
      return true;
    }
    let done = 0;
    while (done < len) {
      const at = offset + done;
      const size = accessWidth(at, len - done);
      const v = this.fn.barRead(index, at, size);
      for (let i = 0; i < size; i++) dst[dstOff + done + i] = (v >>> (8 * i)) & 0xff;
      done += size;
    }
    return true;
  }

  /** Write `len` bytes of `src` from `srcOff` to region `index` at `offset`; false when out of range. */
  regionWrite(index: number, offset: number, src: Uint8Array, srcOff = 0, len = src.length - srcOff): boolean {
    if (index === REGION_CONFIG) return this.config.write(offset, src.subarray(srcOff, srcOff + len));
    const bar = this.bar(index);
    if (!bar || !inRange(offset, len, bar.size) || srcOff + len > src.length) return false;
    if (!this.decodes(bar)) return true; // not claimed: the write goes nowhere
    let done = 0;
    while (done < len) {
      const at = offset + done;
      const size = accessWidth(at, len - done);
      let v = 0;
      for (let i = size - 1; i >= 0; i--) v = v * 256 + src[srcOff + done + i];
      this.fn.barWrite(index, at, size, v);
      done += size;
    }
    return true;
  }

  /**
   * Whether the BAR's decoder is on (Command I/O Space / Memory Space). QEMU's vfio-pci maps a
   * BAR into the guest only once software enabled its space, so a disabled BAR is never reached
   * by a well-behaved VMM; refusing it here keeps a confused one from poking registers.
   */
  private decodes(bar: PciBarSpec): boolean {
    const need = bar.kind === 'io' ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
    if ((this.config.command & need) !== 0) return true;
    if (this.decodeRefused++ === 0) log.debug({ bar: bar.index }, 'PCI: access to a BAR whose decoding is disabled');
    return false;
  }

  /** Function reset: the device model, then the configuration header (Command, Status, caps). */
  reset(): void {
    this.fn.reset();
    this.config.reset();
  }
}

function inRange(offset: number, len: number, size: number): boolean {
  return Number.isInteger(offset) && offset >= 0 && len >= 0 && offset + len <= size;
}

/** The widest naturally aligned access (4, 2 or 1) starting at `at` with `left` bytes to go. */
export function accessWidth(at: number, left: number): AccessSize {
  if (left >= 4 && (at & 3) === 0) return 4;
  if (left >= 2 && (at & 1) === 0) return 2;
  return 1;
}
