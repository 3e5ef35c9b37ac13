/**
 * RxRing: the RTL8139's receive buffer — one contiguous ring in guest memory at RBSTART, 8, 16,
 * 32 or 64 KiB long (RCR.RBLEN), into which the chip DMAs each received frame behind a 4-byte
 * header (datasheet §6.2 "Receive Buffer", Linux 8139too rtl8139_rx):
 *
 *   +0  u16 LE status (ROK, FAE, CRC, LONG, RUNT, ISE, BAR, PAM, MAR)
 *   +2  u16 LE length of the frame *including* its 4-byte CRC
 *   +4  the frame (padded with zeros to 60 bytes, the minimum Ethernet frame without CRC)
 *   +4+n  the CRC-32 FCS (crc.ts)
 *   then padding to the next multiple of 4.
 *
 * Two pointers: CBR (write offset, register 0x3A, read-only) and the read offset R the driver
 * advances through CAPR (0x38) — written and read *16 less* than the real offset ("CAPR = R - 16";
 * 8139too writes `cur_rx - 16`). The ring is empty when CBR == R (CR.BUFE reads 1).
 *
 * Space: an entry needs align4(4 + size + 4) bytes, and must leave CBR short of R — if the write
 * pointer caught up with the read pointer the full ring would look empty. (QEMU's check,
 * `size + 8 >= avail`, can let the aligned entry reach R exactly; this one cannot.)
 *
 * Wrap (RCR.WRAP, Linux "RxNoWrap"): with WRAP set and a ring shorter than 64 KiB the chip writes
 * an entry that crosses the end linearly past it, into the slack the driver allocates after the
 * ring (8139too: 16 + 2048 bytes); the next entry starts at the wrapped offset. With WRAP clear
 * (or a 64 KiB ring, where WRAP is not allowed) an entry is split: the rest continues at offset 0.
 *
 * DMA: the common case (one guest region holds the whole entry) copies the frame once, straight
 * into guest memory, and computes the FCS over what landed there; an entry split by the ring end
 * or by a region boundary is staged in a scratch buffer first (two metered copies).
 */
import { MEM_CROSSES_END } from '../memory';
import { DMA_NO_MASTER, type BusMaster } from '../pci/bus-master';
import { crc32Update } from './crc';
import { RCR_RBLEN_MASK, RCR_RBLEN_SHIFT, RCR_WRAP } from './registers';

export const RING_OK = 0;
export const RING_FULL = 1;
/** DMA failed: no bus master, or RBSTART not in guest memory (master abort). */
export const RING_NO_MASTER = 2;
export const RING_DMA_FAULT = 3;

/** Minimum frame length without CRC (IEEE 802.3 minFrameSize 64 − 4). */
export const ETH_ZLEN = 60;
/** Largest frame (without CRC) this ring takes: 8139too resets its receiver beyond 1536 + 4. */
export const RX_MAX_FRAME = 1536;

const SCRATCH = 4 + RX_MAX_FRAME + 4 + 4;

export class RxRing {
  base = 0;
  length = 8192;
  /** RCR.WRAP on a ring shorter than 64 KiB. */
  linearWrap = false;
  /** CBR: where the next entry goes. */
  writeOffset = 0;
  /** R: where the driver will read next (CAPR + 16). */
  readOffset = 0;
  private readonly scratch = new Uint8Array(SCRATCH);
  private readonly scratchView = new DataView(this.scratch.buffer);

  constructor(private readonly dma: BusMaster) {}

  /** Apply RCR: ring length and wrap mode. A changed length restarts the ring. */
  configure(rcr: number): void {
    const length = 8192 << ((rcr & RCR_RBLEN_MASK) >>> RCR_RBLEN_SHIFT);
    this.linearWrap = (rcr & RCR_WRAP) !== 0 && length < 65536;
    if (length !== this.length) {
      this.length = length;
      this.reset();
    }
  }

  reset(): void {
    this.writeOffset = 0;
    this.readOffset = 0;
  }

  get capr(): number {
    return (this.readOffset - 16) & 0xffff;
  }

  set capr(value: number) {
    this.readOffset = ((value + 16) & 0xffff) % this.length;
  }

  get empty(): boolean {
    return this.writeOffset === this.readOffset;
  }

  /** Bytes the chip may still fill before reaching the read pointer. */
  get free(): number {
    if (this.writeOffset === this.readOffset) return this.length;
    return (this.readOffset - this.writeOffset + this.length) % this.length;
  }

  /** Whether an entry for a frame of `len` bytes fits now. */
  fits(len: number): boolean {
    const size = len < ETH_ZLEN ? ETH_ZLEN : len;
    return ((size + 8 + 3) & ~3) < this.free;
  }

  /**
   * Place one frame with header `status`. `patchAt` ≥ 0 stores the big-endian 16-bit
   * `patchValue` at that offset of the frame as it lands (a checksum completed on the way in:
   * the sender's bytes are only borrowed). Returns RING_* .
   */
  put(data: Uint8Array, status: number, patchAt = -1, patchValue = 0): number {
    const len = data.length;
    const size = len < ETH_ZLEN ? ETH_ZLEN : len;
    const total = size + 8;
    const need = (total + 3) & ~3;
    if (need >= this.free) return RING_FULL;
    const at = this.writeOffset;
    const header = (status & 0xffff) | ((size + 4) << 16);
    if (this.linearWrap || at + total <= this.length) {
      const i = this.dma.locate(this.base + at, total);
      if (i >= 0) {
        const mem = this.dma.memory;
        const bytes = mem.region(i).bytes;
        const o = mem.lastOffset;
        bytes.set(data, o + 4);
        mem.dma.copied(len);
        if (size > len) bytes.fill(0, o + 4 + len, o + 4 + size);
        if (patchAt >= 0) {
          bytes[o + 4 + patchAt] = patchValue >>> 8;
          bytes[o + 4 + patchAt + 1] = patchValue & 0xff;
        }
        const fcs = ~crc32Update(0xffffffff, bytes, o + 4, size) >>> 0;
        writeLe32(bytes, o + 4 + size, fcs);
        writeLe32(bytes, o, header);
        this.writeOffset = (at + need) % this.length;
        return RING_OK;
      }
      if (i === DMA_NO_MASTER) return RING_NO_MASTER;
      if (i !== MEM_CROSSES_END) {
        this.dma.abort();
        return RING_DMA_FAULT;
      }
    }
    return this.putStaged(data, len, size, total, need, header, patchAt, patchValue);
  }

  /** Build the entry in scratch, then write it in up to two pieces (ring end / region boundary). */
  private putStaged(
    data: Uint8Array,
    len: number,
    size: number,
    total: number,
    need: number,
    header: number,
    patchAt: number,
    patchValue: number,
  ): number {
    const s = this.scratch;
    s.set(data, 4);
    this.dma.memory.dma.copied(len);
    if (size > len) s.fill(0, 4 + len, 4 + size);
    if (patchAt >= 0) {
      s[4 + patchAt] = patchValue >>> 8;
      s[4 + patchAt + 1] = patchValue & 0xff;
    }
    this.scratchView.setUint32(0, header >>> 0, true);
    this.scratchView.setUint32(4 + size, ~crc32Update(0xffffffff, s, 4, size) >>> 0, true);
    const at = this.writeOffset;
    const first = this.linearWrap ? total : Math.min(total, this.length - at);
    let r = this.dma.write(this.base + at, s.subarray(0, first));
    if (r === 0 && first < total) r = this.dma.write(this.base, s.subarray(first, total), false);
    if (r !== 0) return r === DMA_NO_MASTER ? RING_NO_MASTER : RING_DMA_FAULT;
    this.writeOffset = (at + need) % this.length;
    return RING_OK;
  }
}

function writeLe32(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = v >>> 24;
}
