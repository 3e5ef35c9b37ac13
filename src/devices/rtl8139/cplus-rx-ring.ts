/**
 * CplusRxRing: reception in RTL8139C+ "C+ mode" (datasheet v1.6 §9.2 "Receive descriptor"; RDSAR
 * 0xE4): the driver owns a ring of 16-byte descriptors in guest memory — opts1 (OWN, EOR, buffer
 * size in bits 12-0), opts2, a 64-bit buffer address — and hands each to the chip by setting OWN.
 * The chip keeps its own index; a frame goes into the buffer of the descriptor at the index, and
 * the chip writes the descriptor back with OWN clear, FS|LS, the length *with* the 4-byte FCS,
 * the address-match bits (MAR/PAM/BAR), the checksum result (cplus-rx-checksum.ts, with
 * C+CR.RxChkSum) and opts2 = 0, then moves on (to 0 after a descriptor with EOR). A frame longer
 * than one buffer continues in the next descriptors (FS on the first, LS on the last, the total
 * length on the last); it is placed only when all of them are the chip's. Runts are padded to
 * 60 bytes as the wire would have them; the FCS is computed (crc.ts) and stored after the frame.
 *
 * A descriptor that is not the chip's (OWN clear) means "RX descriptor unavailable": `put`
 * returns RING_FULL and the device keeps the frame in its FIFO (ISR.RxEmpty). The ring has no
 * doorbell — the driver refills descriptors in memory only — so the device retries when the
 * driver next touches ISR or IMR (8139cp's NAPI poll acknowledges ISR before and unmasks IMR
 * after refilling) and before each new batch.
 *
 * Guest garbage, as the chip would meet it: a descriptor or buffer address outside guest memory
 * is a master abort (RING_DMA_FAULT: the device raises PCI error and drops the frame; the
 * descriptor stays the chip's, so the next frame tries it again), a buffer size of 0 cannot take
 * any byte — the descriptor is returned with RxError and the frame dropped (RING_BAD_DESCRIPTOR),
 * a ring without EOR wraps after RING_MAX_DESCRIPTORS. Copies: one metered copy of the frame into
 * the buffer (stage `device.dma`); a frame that spans buffers or regions is staged first.
 */
import { MEM_CROSSES_END } from '../memory';
import { DMA_NO_MASTER, DMA_OK, type BusMaster } from '../pci/bus-master';
import { crc32Update } from './crc';
import {
  DESC_EOR,
  DESC_FS,
  DESC_LS,
  DESC_OWN,
  DESC_SIZE,
  RING_MAX_DESCRIPTORS,
  RX_BAR,
  RX_ES,
  RX_LEN_MASK,
  RX_MAR,
  RX_PAM,
} from './cplus-registers';
import { rxChecksumStatus } from './cplus-rx-checksum';
import { RXS_BAR, RXS_MAR, RXS_PAM } from './registers';
import { ETH_ZLEN, RING_DMA_FAULT, RING_FULL, RING_NO_MASTER, RING_OK } from './rx-ring';

/** The descriptor had a zero-size buffer: returned with RxError, the frame dropped. */
export const RING_BAD_DESCRIPTOR = 4;
/** Largest frame (FCS excluded) the C+ receiver takes: the 13-bit length field holds it with FCS. */
export const CPLUS_RX_MAX_FRAME = RX_LEN_MASK - 4;

export class CplusRxRing {
  /** RDSAR: ring base (guest physical, 64 bit as a number). */
  base = 0;
  /** The chip's next descriptor. */
  index = 0;
  /** C+CR.RxChkSum. */
  checksum = false;
  private readonly scratch = new Uint8Array(RX_LEN_MASK + 1);
  // descriptors of a frame that spans several buffers
  private readonly spanOpts = new Uint32Array(64);
  private readonly spanAddr = new Float64Array(64);

  constructor(private readonly dma: BusMaster) {}

  reset(): void {
    this.index = 0;
  }

  /**
   * Place one frame; `accept` is rx-filter.ts's status (RXS_BAR/PAM/MAR), `patchAt` ≥ 0 stores
   * the BE16 `patchValue` there as the frame lands (a checksum the device completed). RING_*.
   */
  put(data: Uint8Array, accept: number, patchAt = -1, patchValue = 0): number {
    const dma = this.dma;
    const len = data.length;
    const size = len < ETH_ZLEN ? ETH_ZLEN : len;
    const total = size + 4;
    const descAt = this.base + this.index * DESC_SIZE;
    const d = dma.locate(descAt, DESC_SIZE);
    if (d < 0) return this.fault(d);
    const mem = dma.memory;
    const dv = mem.region(d).view;
    const o = mem.lastOffset;
    const opts1 = dv.getUint32(o, true);
    if ((opts1 & DESC_OWN) === 0) return RING_FULL;
    const bufSize = opts1 & RX_LEN_MASK;
    const addr = dv.getUint32(o + 8, true) + dv.getUint32(o + 12, true) * 0x100000000;
    const match = matchBits(accept);
    if (bufSize === 0) {
      dv.setUint32(o + 4, 0, true);
      dv.setUint32(o, ((opts1 & DESC_EOR) | DESC_FS | DESC_LS | RX_ES | match) >>> 0, true);
      this.advance(opts1);
      return RING_BAD_DESCRIPTOR;
    }
    if (total > bufSize) return this.putSpanning(data, len, size, total, match, patchAt, patchValue);
    const b = dma.locate(addr, total);
    let status: number;
    if (b >= 0) {
      const bytes = mem.region(b).bytes;
      const p = mem.lastOffset;
      bytes.set(data, p);
      mem.dma.copied(len);
      if (size > len) bytes.fill(0, p + len, p + size);
      if (patchAt >= 0) {
        bytes[p + patchAt] = patchValue >>> 8;
        bytes[p + patchAt + 1] = patchValue & 0xff;
      }
      writeLe32(bytes, p + size, ~crc32Update(0xffffffff, bytes, p, size) >>> 0);
      status = this.checksum ? rxChecksumStatus(bytes, p, size, patchAt >= 0) : 0;
    } else if (b === MEM_CROSSES_END) {
      const s = this.stage(data, len, size, patchAt, patchValue);
      const r = dma.write(addr, s.subarray(0, total), false);
      if (r !== DMA_OK) return r === DMA_NO_MASTER ? RING_NO_MASTER : RING_DMA_FAULT;
      status = this.checksum ? rxChecksumStatus(s, 0, size, patchAt >= 0) : 0;
    } else {
      return this.fault(b);
    }
    // the descriptor region may have been remapped by nothing in between: same view, same offset
    dv.setUint32(o + 4, 0, true);
    dv.setUint32(o, ((opts1 & DESC_EOR) | DESC_FS | DESC_LS | match | status | total) >>> 0, true);
    this.advance(opts1);
    return RING_OK;
  }

  private advance(opts1: number): void {
    this.index = (opts1 & DESC_EOR) !== 0 || this.index + 1 >= RING_MAX_DESCRIPTORS ? 0 : this.index + 1;
  }

  private fault(code: number): number {
    if (code === DMA_NO_MASTER) return RING_NO_MASTER;
    this.dma.abort();
    return RING_DMA_FAULT;
  }

  /** The frame with padding, patch and FCS in scratch (one metered copy). */
  private stage(data: Uint8Array, len: number, size: number, patchAt: number, patchValue: number): Uint8Array {
    const s = this.scratch;
    s.set(data, 0);
    this.dma.memory.dma.copied(len);
    if (size > len) s.fill(0, len, size);
    if (patchAt >= 0) {
      s[patchAt] = patchValue >>> 8;
      s[patchAt + 1] = patchValue & 0xff;
    }
    writeLe32(s, size, ~crc32Update(0xffffffff, s, 0, size) >>> 0);
    return s;
  }

  /** A frame over several buffers: only when every descriptor it needs is the chip's. */
  private putSpanning(data: Uint8Array, len: number, size: number, total: number, match: number, patchAt: number, patchValue: number): number {
    const dma = this.dma;
    const mem = dma.memory;
    let idx = this.index;
    let room = 0;
    let n = 0;
    while (room < total) {
      if (n === this.spanOpts.length) return RING_FULL;
      const d = dma.locate(this.base + idx * DESC_SIZE, DESC_SIZE);
      if (d < 0) return this.fault(d);
      const dv = mem.region(d).view;
      const o = mem.lastOffset;
      const opts1 = dv.getUint32(o, true);
      if ((opts1 & DESC_OWN) === 0 || (opts1 & RX_LEN_MASK) === 0) return RING_FULL;
      this.spanOpts[n] = opts1;
      this.spanAddr[n] = dv.getUint32(o + 8, true) + dv.getUint32(o + 12, true) * 0x100000000;
      room += opts1 & RX_LEN_MASK;
      n++;
      idx = (opts1 & DESC_EOR) !== 0 || idx + 1 >= RING_MAX_DESCRIPTORS ? 0 : idx + 1;
    }
    const s = this.stage(data, len, size, patchAt, patchValue);
    const status = this.checksum ? rxChecksumStatus(s, 0, size, patchAt >= 0) : 0;
    let done = 0;
    for (let k = 0; k < n; k++) {
      const opts1 = this.spanOpts[k];
      const chunk = Math.min(opts1 & RX_LEN_MASK, total - done);
      const r = dma.write(this.spanAddr[k], s.subarray(done, done + chunk), false);
      if (r !== DMA_OK) return r === DMA_NO_MASTER ? RING_NO_MASTER : RING_DMA_FAULT;
      done += chunk;
      const last = k === n - 1;
      const v = ((opts1 & DESC_EOR) | (k === 0 ? DESC_FS : 0) | (last ? DESC_LS | match | status | total : opts1 & RX_LEN_MASK)) >>> 0;
      const d = dma.locate(this.base + this.index * DESC_SIZE, DESC_SIZE);
      if (d < 0) return this.fault(d);
      const dv = mem.region(d).view;
      dv.setUint32(mem.lastOffset + 4, 0, true);
      dv.setUint32(mem.lastOffset, v, true);
      this.advance(opts1);
    }
    return RING_OK;
  }
}

/** rx-filter.ts's C-mode header bits → the C+ descriptor's MAR/PAM/BAR. */
function matchBits(accept: number): number {
  return (accept & RXS_MAR ? RX_MAR : 0) | (accept & RXS_PAM ? RX_PAM : 0) | (accept & RXS_BAR ? RX_BAR : 0);
}

function writeLe32(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = v >>> 24;
}
