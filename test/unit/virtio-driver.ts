/**
 * A minimal virtio split-ring *driver* for unit tests: it lays out a descriptor table, an
 * available ring and a used ring in a GuestMemory made of plain ArrayBuffers, posts chains by
 * hand and reads back what the device used — the role the guest kernel plays in real life.
 */
import { GuestMemory, makeRegion, type MemoryRegion } from '../../src/devices/memory';
import type { RingAddresses } from '../../src/devices/virtio/split-ring';
import type { Meter } from '../../src/meter/meter';

export interface Seg {
  /** Guest physical address; default: allocated from the buffer area. */
  addr?: number;
  /** Bytes to place there (readable segment). */
  data?: Uint8Array;
  /** Length (default data.length). */
  len?: number;
  write?: boolean;
}

export interface ChainOpts {
  /** Put the segments in an indirect table. */
  indirect?: boolean;
  /** Do not publish avail.idx yet. */
  hold?: boolean;
}

export const DESC = 0x1000;
export const AVAIL = 0x9000;
export const USED = 0xa000;
export const BUFFERS = 0x20000;

export class TestDriver {
  readonly mem: GuestMemory;
  availIdx = 0;
  lastUsed = 0;
  private nextDesc = 0;
  private nextBuf: number;
  private readonly bufEnd: number;

  /**
   * One driver = one queue of size `q` whose rings live at `base` + DESC/AVAIL/USED. Several
   * drivers (RX and TX) can share one memory by passing it in.
   */
  constructor(
    readonly q = 256,
    opts: { memory?: GuestMemory; memSize?: number; base?: number; meter?: Meter } = {},
  ) {
    this.mem = opts.memory ?? GuestMemory.plain(opts.memSize ?? 4 << 20, opts.meter);
    this.base = opts.base ?? 0;
    this.nextBuf = this.base + BUFFERS;
    this.bufEnd = this.base + BUFFERS + 0x100000 * 1.5;
  }

  readonly base: number;

  get ring(): RingAddresses {
    return { desc: this.base + DESC, avail: this.base + AVAIL, used: this.base + USED, space: 'gpa' };
  }

  private dv(addr: number): { v: DataView; off: number } {
    const i = this.mem.find('gpa', addr, 1);
    if (i < 0) throw new Error(`test driver: 0x${addr.toString(16)} outside memory`);
    return { v: this.mem.region(i).view, off: this.mem.lastOffset };
  }

  w16(addr: number, v: number): void {
    const { v: d, off } = this.dv(addr);
    d.setUint16(off, v, true);
  }
  r16(addr: number): number {
    const { v: d, off } = this.dv(addr);
    return d.getUint16(off, true);
  }
  r32(addr: number): number {
    const { v: d, off } = this.dv(addr);
    return d.getUint32(off, true);
  }

  write(addr: number, data: Uint8Array): void {
    let done = 0;
    while (done < data.length) {
      const room = this.mem.bytesToRegionEnd('gpa', addr + done);
      if (room < 0) throw new Error(`test driver: 0x${(addr + done).toString(16)} outside memory`);
      const n = Math.min(room, data.length - done);
      const v = this.mem.view('gpa', addr + done, n);
      if (!(v instanceof Uint8Array)) throw v;
      v.set(data.subarray(done, done + n));
      done += n;
    }
  }

  read(addr: number, len: number): Uint8Array {
    const v = this.mem.view('gpa', addr, len);
    if (!(v instanceof Uint8Array)) throw v;
    return v.slice();
  }

  /** A fresh buffer area of `len` bytes (16-aligned). */
  alloc(len: number): number {
    let at = this.nextBuf;
    if (at + len > this.bufEnd) at = this.base + BUFFERS;
    this.nextBuf = (at + len + 15) & ~15;
    return at;
  }

  /** Write descriptor `i` of a table at `table`. */
  writeDesc(table: number, i: number, addr: number, len: number, flags: number, next: number): void {
    const { v, off } = this.dv(table + 16 * i);
    v.setUint32(off, addr % 4294967296, true);
    v.setUint32(off + 4, Math.floor(addr / 4294967296), true);
    v.setUint32(off + 8, len, true);
    v.setUint16(off + 12, flags, true);
    v.setUint16(off + 14, next, true);
  }

  /** Lay the segments out as a chain (or an indirect table) and make it available. Returns head. */
  addChain(segs: Seg[], opts: ChainOpts = {}): number {
    const placed = segs.map((s) => {
      const len = s.len ?? s.data?.length ?? 0;
      const addr = s.addr ?? this.alloc(len);
      if (s.data) this.write(addr, s.data);
      return { addr, len, write: !!s.write };
    });
    let head: number;
    if (opts.indirect) {
      const table = this.alloc(16 * placed.length);
      placed.forEach((p, i) => this.writeDesc(table, i, p.addr, p.len, (p.write ? 2 : 0) | (i < placed.length - 1 ? 1 : 0), i + 1));
      head = this.takeDesc();
      this.writeDesc(this.base + DESC, head, table, 16 * placed.length, 4, 0);
    } else {
      const ids = placed.map(() => this.takeDesc());
      placed.forEach((p, i) =>
        this.writeDesc(this.base + DESC, ids[i], p.addr, p.len, (p.write ? 2 : 0) | (i < placed.length - 1 ? 1 : 0), ids[i + 1] ?? 0),
      );
      head = ids[0];
    }
    this.w16(this.base + AVAIL + 4 + 2 * (this.availIdx % this.q), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    if (!opts.hold) this.publish();
    return head;
  }

  takeDesc(): number {
    const i = this.nextDesc;
    this.nextDesc = (this.nextDesc + 1) % this.q;
    return i;
  }

  /** Make avail.idx = our count. */
  publish(): void {
    this.w16(this.base + AVAIL + 2, this.availIdx);
  }

  /** Start both indices at `idx` (wrap-around tests): avail.idx and used.idx. */
  startAt(idx: number): void {
    this.availIdx = idx & 0xffff;
    this.lastUsed = idx & 0xffff;
    this.publish();
    this.w16(this.base + USED + 2, idx & 0xffff);
  }

  get usedIdx(): number {
    return this.r16(this.base + USED + 2);
  }
  get usedFlags(): number {
    return this.r16(this.base + USED);
  }
  get availEvent(): number {
    return this.r16(this.base + USED + 4 + 8 * this.q);
  }
  set usedEvent(v: number) {
    this.w16(this.base + AVAIL + 4 + 2 * this.q, v);
  }
  set availFlags(v: number) {
    this.w16(this.base + AVAIL, v);
  }

  /** Used elements published since the last call. */
  takeUsed(): Array<{ id: number; len: number }> {
    const out: Array<{ id: number; len: number }> = [];
    const idx = this.usedIdx;
    while (this.lastUsed !== idx) {
      const slot = this.lastUsed % this.q;
      out.push({ id: this.r32(this.base + USED + 4 + 8 * slot), len: this.r32(this.base + USED + 8 + 8 * slot) });
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }
}

/** Memory of several plain regions: [gpa, size] pairs (uaddr = gpa + 0x7f0000000000). */
export function multiRegionMemory(ranges: Array<[number, number]>, meter?: Meter): GuestMemory {
  const regions: MemoryRegion[] = ranges.map(([gpa, size]) =>
    makeRegion({ gpa, size, uaddr: gpa + 0x7f0000000000, mmapOffset: 0 }, new ArrayBuffer(size)),
  );
  return new GuestMemory(regions, meter);
}
