/**
 * BusMaster: a PCI function's DMA into guest memory (PCI 3.0 §3.2: the function becomes the bus
 * master and addresses host memory directly). Three rules from the bus:
 *   - A function may master the bus only while Command.Bus Master is set (§6.2.2 bit 2); with it
 *     clear, nothing is read or written (`DMA_NO_MASTER`), the attempt is counted.
 *   - An address no memory answers ends in a master abort (§3.3.3.1): the function sees the
 *     transfer fail and the bus master records Received Master Abort in its Status register
 *     (bit 13); `DMA_FAULT` is returned and `onMasterAbort` is called so the function can also
 *     raise its own error interrupt (the RTL8139 sets ISR.SERR, datasheet §5 "ISR").
 *   - A transfer may span two guest RAM regions (adjacent vfio-user DMA mappings); it is split.
 *
 * Addresses are guest physical (IOVA = GPA without a vIOMMU). Every byte moved is one metered copy
 * (`GuestMemory.dma`, stage `device.dma`); `view` hands out a zero-copy window instead when the
 * range lies in one region (the caller must not keep it past a DMA unmap — see PciFunction.quiesce).
 */
import { MEM_CROSSES_END, MEM_OUTSIDE, type GuestMemory } from '../memory';

export const DMA_OK = 0;
export const DMA_FAULT = -1;
export const DMA_NO_MASTER = -2;

export class BusMaster {
  /** Mirrors Command.Bus Master (kept by PciDevice). */
  enabled = false;
  /** Transfers refused or aborted, for the meter and tests. */
  masterAborts = 0;
  refusedNoMaster = 0;
  /** Called on a master abort (address not backed by guest memory). */
  onMasterAbort: (() => void) | null = null;

  constructor(readonly memory: GuestMemory) {}

  /** Region index holding [addr, addr+len) — offset in `memory.lastOffset` — or a negative code. */
  locate(addr: number, len: number): number {
    if (!this.enabled) {
      this.refusedNoMaster++;
      return DMA_NO_MASTER;
    }
    const i = this.memory.find('gpa', addr, len);
    if (i >= 0) return i;
    return i === MEM_CROSSES_END ? MEM_CROSSES_END : MEM_OUTSIDE;
  }

  /**
   * A view of [addr, addr+len) when it lies in one region, else null (not mastering, outside
   * memory, or spanning regions: use `read`). Does not count as a copy.
   */
  view(addr: number, len: number): Uint8Array | null {
    const i = this.locate(addr, len);
    if (i < 0) return null;
    const off = this.memory.lastOffset;
    return this.memory.region(i).bytes.subarray(off, off + len);
  }

  /** Read `len` bytes at `addr` into `dst` at `dstOffset` (one metered copy). */
  read(addr: number, len: number, dst: Uint8Array, dstOffset = 0): number {
    if (!this.enabled) {
      this.refusedNoMaster++;
      return DMA_NO_MASTER;
    }
    const mem = this.memory;
    let done = 0;
    while (done < len) {
      const a = addr + done;
      const i = mem.find('gpa', a, 1);
      if (i < 0) return this.abort();
      const r = mem.region(i);
      const off = mem.lastOffset;
      const n = Math.min(len - done, r.size - off);
      dst.set(r.bytes.subarray(off, off + n), dstOffset + done);
      done += n;
    }
    mem.dma.copied(len);
    return DMA_OK;
  }

  /** Write `src` to `addr` (one metered copy when `metered`, e.g. not for a 4-byte header). */
  write(addr: number, src: Uint8Array, metered = true): number {
    if (!this.enabled) {
      this.refusedNoMaster++;
      return DMA_NO_MASTER;
    }
    const mem = this.memory;
    const len = src.length;
    let done = 0;
    while (done < len) {
      const a = addr + done;
      const i = mem.find('gpa', a, 1);
      if (i < 0) return this.abort();
      const r = mem.region(i);
      const off = mem.lastOffset;
      const n = Math.min(len - done, r.size - off);
      r.bytes.set(done === 0 && n === len ? src : src.subarray(done, done + n), off);
      done += n;
    }
    if (metered) mem.dma.copied(len);
    return DMA_OK;
  }

  /** Record a master abort (the caller found the address unbacked). */
  abort(): number {
    this.masterAborts++;
    this.onMasterAbort?.();
    return DMA_FAULT;
  }
}
