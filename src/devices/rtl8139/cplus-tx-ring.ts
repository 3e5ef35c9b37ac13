/**
 * CplusTxRing: transmission in RTL8139C+ "C+ mode" (datasheet v1.6 §9.1 "Transmit descriptor";
 * TNPDS 0x20 / THPDS 0x28, TPPoll 0xD9). The driver fills 16-byte descriptors in guest memory —
 * opts1 (OWN, EOR, FS, LS, LargeSend + MSS in bits 26-16, or IPCS/UDPCS/TCPCS; buffer length in
 * bits 15-0), opts2 (TxVlanTag + TCI), a 64-bit buffer address — sets OWN and writes TPPoll. The
 * chip walks from its index while descriptors are its own: a frame is the buffers from an FS
 * descriptor to the next LS descriptor (8139cp hands fragments over first and the FS descriptor
 * last, so a frame is whole once its FS descriptor is the chip's). After EOR the walk goes back
 * to the ring base. Each consumed descriptor is written back once the frame has left
 * (`complete`), so the driver cannot reuse a buffer while it is still being read: OWN clear,
 * EOR/FS/LS and the length kept, bits 27-16 holding status (TxError on a failed frame) instead of
 * the LargeSend/MSS/checksum request that shared them.
 *
 * Frames are collected into a batch: a frame whose one buffer lies in one guest RAM region is
 * handed on as a *view* of guest memory; a frame over several buffers (8139cp's scatter-gather:
 * TSO super-frames are header + page fragments), over two regions, or with a VLAN tag to insert
 * is gathered into a staging area (one metered copy per buffer, `device.dma.tx`). The batch stops
 * early when staging is nearly full (TX_MORE: hand the batch on, complete, walk again).
 *
 * Offloads become Frame metadata with virtio-net meaning (link/frame.ts), so a backend treats
 * them as it treats a virtio-net guest's:
 *   LargeSend, MSS m → GSO_TCPV4, gsoSize m, NEEDS_CSUM at the TCP checksum (IPv4 + TCP only;
 *                      anything else cannot be segmented: dropped, 'tx-largesend-not-tcp4')
 *   TCPCS / UDPCS   → NEEDS_CSUM at the TCP / UDP checksum of an IPv4 frame
 *   IPCS            → nothing: the chip would fill the IPv4 header checksum; Linux has filled it.
 * NEEDS_CSUM means, as for virtio, that the checksum field holds the pseudo-header sum — what
 * Linux leaves there for a CHECKSUM_PARTIAL skb, which is all 8139cp ever asks the chip to sum.
 *
 * Guest garbage, counted on stage `guest.tx` and never thrown: a descriptor ring outside guest
 * memory stops the walk with a master abort (TX_FAULT: PCI error); a buffer outside memory drops
 * its frame with TxError on the LS descriptor and a master abort; a descriptor without FS outside
 * a frame, or an FS inside one, drops the fragments before it; frames under 14 bytes, over
 * TX_MAX_FRAME, or over MAX_PIECES buffers are dropped with their descriptors completed; a ring
 * without EOR wraps after RING_MAX_DESCRIPTORS.
 */
import { GSO_TCPV4, VNET_F_NEEDS_CSUM, plainFrame, resetFrame, type Frame } from '../../link/frame';
import { logOnce } from '../../log';
import type { Stage } from '../../meter/meter';
import { MEM_CROSSES_END } from '../memory';
import { DMA_NO_MASTER, type BusMaster } from '../pci/bus-master';
import {
  DESC_EOR,
  DESC_FS,
  DESC_LS,
  DESC_OWN,
  DESC_SIZE,
  RING_MAX_DESCRIPTORS,
  TX_ES,
  TX_LEN_MASK,
  TX_LGSEN,
  TX_MSS_MASK,
  TX_MSS_SHIFT,
  TX_TAGC,
  TX_TCPCS,
  TX_UDPCS,
} from './cplus-registers';

/** Walked up to a descriptor that is not the chip's. */
export const TX_IDLE = 0;
/** Stopped with work left (batch or staging full): hand the batch on, complete, walk again. */
export const TX_MORE = 1;
/** The descriptor ring is not guest memory (or bus mastering is off): the walk stopped. */
export const TX_FAULT = 2;

/** Largest frame gathered: a 64 KiB TSO super-frame with its Ethernet and VLAN headers. */
export const TX_MAX_FRAME = 65535 + 18;
const MAX_PIECES = 64;
const MAX_BATCH = 256;
const STAGING = 1024 * 1024;

export class CplusTxRing {
  /** TNPDS / THPDS: ring base (guest physical, 64 bit as a number). */
  base = 0;
  /** The chip's next descriptor. */
  index = 0;
  /** A buffer was not guest memory since the last `takeAborts` (the device raises PCI error). */
  aborted = false;
  // descriptors consumed by the current batch, written back by complete()
  private readonly doneAddr = new Float64Array(RING_MAX_DESCRIPTORS);
  private readonly doneOpts = new Uint32Array(RING_MAX_DESCRIPTORS);
  private doneCount = 0;
  // the frame being assembled
  private readonly pieceAddr = new Float64Array(MAX_PIECES);
  private readonly pieceLen = new Uint32Array(MAX_PIECES);
  private pieces = 0;
  private frameBytes = 0;
  private firstOpts1 = 0;
  private firstOpts2 = 0;
  private readonly frames: Frame[] = [];
  private used = 0;
  private readonly staging = new Uint8Array(STAGING);

  constructor(
    private readonly dma: BusMaster,
    private readonly stage: Stage,
    /** Where gathers are metered (`device.dma.tx`). */
    private readonly gatherStage: Stage,
    private readonly name: string,
  ) {}

  reset(): void {
    this.index = 0;
    this.pieces = 0;
  }

  /** Descriptors consumed and not yet written back. */
  get pending(): number {
    return this.doneCount;
  }

  /** Append the frames the driver has handed over to `out`. Returns TX_IDLE, TX_MORE or TX_FAULT. */
  collect(out: Frame[]): number {
    const dma = this.dma;
    const mem = dma.memory;
    let frameStart = this.index;
    let frameDone = this.doneCount;
    this.pieces = 0;
    for (let walked = 0; walked < RING_MAX_DESCRIPTORS; walked++) {
      if (this.doneCount === RING_MAX_DESCRIPTORS) break;
      const at = this.base + this.index * DESC_SIZE;
      const d = dma.locate(at, DESC_SIZE);
      if (d < 0) {
        if (d !== DMA_NO_MASTER) dma.abort();
        if (this.stage.dropped(d === DMA_NO_MASTER ? 'tx-no-bus-master' : 'tx-ring-outside-memory')) {
          logOnce('rtl8139cp-tx-ring', `${this.name}: TX descriptor 0x${at.toString(16)} is not guest memory (master abort)`);
        }
        this.rewind(frameStart, frameDone);
        return TX_FAULT;
      }
      const dv = mem.region(d).view;
      const o = mem.lastOffset;
      const opts1 = dv.getUint32(o, true);
      if ((opts1 & DESC_OWN) === 0) break;
      if ((opts1 & DESC_FS) !== 0) {
        if (this.pieces > 0) this.stage.dropped('tx-no-last-fragment');
        this.pieces = 0;
        this.frameBytes = 0;
        this.firstOpts1 = opts1;
        this.firstOpts2 = dv.getUint32(o + 4, true);
        frameStart = this.index;
        frameDone = this.doneCount;
      } else if (this.pieces === 0) {
        this.stage.dropped('tx-no-first-fragment');
        this.consume(at, opts1);
        frameStart = this.index;
        frameDone = this.doneCount;
        continue;
      }
      const len = opts1 & TX_LEN_MASK;
      if (this.pieces < MAX_PIECES) {
        this.pieceAddr[this.pieces] = dv.getUint32(o + 8, true) + dv.getUint32(o + 12, true) * 0x100000000;
        this.pieceLen[this.pieces] = len;
      }
      this.pieces++;
      this.frameBytes += len;
      this.consume(at, opts1);
      if ((opts1 & DESC_LS) === 0) continue;
      this.finishFrame(out);
      this.pieces = 0;
      frameStart = this.index;
      frameDone = this.doneCount;
      if (out.length >= MAX_BATCH || this.used + TX_MAX_FRAME > STAGING) return TX_MORE;
    }
    // a frame whose LS descriptor is not the chip's yet stays with the driver for now
    this.rewind(frameStart, frameDone);
    return TX_IDLE;
  }

  /** Write back every consumed descriptor (OWN clear), after the batch has been handed on. */
  complete(): void {
    const dma = this.dma;
    const mem = dma.memory;
    for (let k = 0; k < this.doneCount; k++) {
      const d = dma.locate(this.doneAddr[k], 4);
      if (d >= 0) mem.region(d).view.setUint32(mem.lastOffset, this.doneOpts[k], true);
    }
    this.doneCount = 0;
    this.used = 0;
  }

  private consume(at: number, opts1: number): void {
    this.doneAddr[this.doneCount] = at;
    // the status dword replaces the command bits (LargeSend/MSS/checksum requests share bits
    // 27-16 with the status: leaving them would read as TxError etc. to the driver)
    this.doneOpts[this.doneCount] = (opts1 & (DESC_EOR | DESC_FS | DESC_LS | TX_LEN_MASK)) >>> 0;
    this.doneCount++;
    this.index = (opts1 & DESC_EOR) !== 0 || this.index + 1 >= RING_MAX_DESCRIPTORS ? 0 : this.index + 1;
  }

  private rewind(index: number, doneCount: number): void {
    this.index = index;
    this.doneCount = doneCount;
    this.pieces = 0;
  }

  /** The frame of pieces[0..pieces) is complete: view or gather it, add its offload metadata. */
  private finishFrame(out: Frame[]): void {
    const total = this.frameBytes;
    const opts2 = this.firstOpts2;
    const tag = (opts2 & TX_TAGC) !== 0;
    if (total < 14) return void this.stage.dropped('tx-runt');
    if (total > TX_MAX_FRAME || this.pieces > MAX_PIECES) {
      if (this.stage.dropped('tx-frame-too-long')) logOnce('rtl8139cp-tx-long', `${this.name}: guest queued a ${total}-byte frame in ${this.pieces} buffers`);
      return;
    }
    const dma = this.dma;
    let data: Uint8Array | null = null;
    if (this.pieces === 1 && !tag) {
      const r = dma.locate(this.pieceAddr[0], total);
      if (r >= 0) {
        const off = dma.memory.lastOffset;
        data = dma.memory.region(r).bytes.subarray(off, off + total);
      } else if (r === DMA_NO_MASTER) {
        return void this.stage.dropped('tx-no-bus-master');
      } else if (r !== MEM_CROSSES_END) {
        this.dma.abort();
        return this.bufferFault();
      }
    }
    if (data === null) {
      const base = this.used;
      let at = base;
      for (let k = 0; k < this.pieces; k++) {
        const len = this.pieceLen[k];
        if (tag && k === 0 && len >= 12) {
          // 802.1Q: the tag goes after the source address; opts2 holds the TCI byte-swapped
          if (!this.gather(this.pieceAddr[0], 12, at)) return this.bufferFault();
          this.staging[at + 12] = 0x81;
          this.staging[at + 13] = 0x00;
          this.staging[at + 14] = opts2 & 0xff;
          this.staging[at + 15] = (opts2 >>> 8) & 0xff;
          if (len > 12 && !this.gather(this.pieceAddr[0] + 12, len - 12, at + 16)) return this.bufferFault();
          at += len + 4;
          continue;
        }
        if (len > 0 && !this.gather(this.pieceAddr[k], len, at)) return this.bufferFault();
        at += len;
      }
      this.used = (at + 7) & ~7;
      data = this.staging.subarray(base, at);
    }
    const n = out.length;
    let f = this.frames[n];
    if (f === undefined) f = this.frames[n] = plainFrame(data);
    else resetFrame(f, data);
    if (!this.offloads(f)) return;
    this.stage.pass(1, data.length);
    out.push(f);
  }

  /** Copy [addr, addr+len) of guest memory to staging[at..] (one metered copy; split at region ends). */
  private gather(addr: number, len: number, at: number): boolean {
    if (!this.dma.enabled) return false;
    const mem = this.dma.memory;
    let done = 0;
    while (done < len) {
      const i = mem.find('gpa', addr + done, 1);
      if (i < 0) {
        this.dma.abort();
        return false;
      }
      const r = mem.region(i);
      const off = mem.lastOffset;
      const n = Math.min(len - done, r.size - off);
      this.staging.set(r.bytes.subarray(off, off + n), at + done);
      done += n;
    }
    this.gatherStage.copied(len);
    return true;
  }

  /** A buffer was not guest memory (the master abort is recorded): TxError on the LS descriptor. */
  private bufferFault(): void {
    if (!this.dma.enabled) return void this.stage.dropped('tx-no-bus-master');
    this.aborted = true;
    this.doneOpts[this.doneCount - 1] |= TX_ES;
    if (this.stage.dropped('tx-dma-outside-memory')) logOnce('rtl8139cp-tx-dma', `${this.name}: a TX buffer is not guest memory (master abort)`);
  }

  /** opts1 offload requests → Frame metadata. False: the frame cannot be sent (counted). */
  private offloads(f: Frame): boolean {
    const opts1 = this.firstOpts1;
    const lgsen = (opts1 & TX_LGSEN) !== 0;
    const l4csum = (opts1 & (TX_TCPCS | TX_UDPCS)) !== 0;
    if (!lgsen && !l4csum) return true; // IPCS alone: see the file comment
    const b = f.data;
    let l3 = 14;
    let type = (b[12] << 8) | b[13];
    if (type === 0x8100 && b.length >= 18) {
      type = (b[16] << 8) | b[17];
      l3 = 18;
    }
    const ipv4 = type === 0x0800 && b.length >= l3 + 20 && b[l3] >>> 4 === 4;
    const ihl = ipv4 ? (b[l3] & 0x0f) * 4 : 0;
    const proto = ipv4 ? b[l3 + 9] : 0;
    const l4 = l3 + ihl;
    if (lgsen) {
      const mss = (opts1 >>> TX_MSS_SHIFT) & TX_MSS_MASK;
      if (!ipv4 || ihl < 20 || proto !== 6 || b.length < l4 + 20 || mss === 0) {
        if (this.stage.dropped('tx-largesend-not-tcp4')) logOnce('rtl8139cp-lgsen', `${this.name}: LargeSend on a frame that is not IPv4/TCP (or MSS 0): dropped`);
        return false;
      }
      f.gsoType = GSO_TCPV4;
      f.gsoSize = mss;
      f.hdrLen = l4 + (b[l4 + 12] >>> 4) * 4;
      f.flags = VNET_F_NEEDS_CSUM;
      f.csumStart = l4;
      f.csumOffset = 16;
      return true;
    }
    const tcp = (opts1 & TX_TCPCS) !== 0;
    if (ipv4 && ihl >= 20 && proto === (tcp ? 6 : 17) && b.length >= l4 + (tcp ? 20 : 8)) {
      f.flags = VNET_F_NEEDS_CSUM;
      f.csumStart = l4;
      f.csumOffset = tcp ? 16 : 6;
    }
    return true;
  }
}
