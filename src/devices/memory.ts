/**
 * GuestMemory: the guest's RAM as a small set of mapped regions, and the only way a device model
 * touches it. Each region is what a VMM hands out for DMA: the guest physical range it covers,
 * the VMM's own user address of that range (vhost-user's ring addresses are VMM virtual addresses,
 * see the vhost-user spec "Memory region description" and "SET_VRING_ADDR"), and the bytes — an
 * external ArrayBuffer from the native mmap of the region's fd, or a plain ArrayBuffer in tests.
 *
 * Two address spaces can be translated:
 *   - 'gpa'   guest physical (descriptor addresses, virtio 1.x §2.7.5), against [gpa, gpa+size)
 *   - 'uaddr' VMM user virtual (vhost-user ring addresses), against [uaddr, uaddr+size)
 *
 * A translation either yields a region index and an offset inside that region's bytes, or an
 * error value (a negative number, or a `MemoryError` for the convenience calls) — never an
 * exception: an address the guest made up must not be able to kill the process. A range that
 * runs past the end of its region is an error here; callers that allow a buffer to straddle two
 * regions (virtio descriptors may: vhost-user spec, "a buffer may cross regions") split it with
 * `regionAt` + `regionEnd` themselves.
 *
 * Hot paths use `find(space, addr, len)` (no allocation: returns an index, the offset is read from
 * `lastOffset`) and the region's `bytes`/`view` directly. Every byte copied into or out of guest
 * memory goes through `copyIn`/`copyOut` or is reported with `dma.copied(n)` (stage `device.dma`).
 *
 * Addresses are JavaScript numbers: exact up to 2^53, far above any guest's RAM; a descriptor
 * address above that cannot match a region and fails translation.
 */
import { globalMeter, type Meter, type Stage } from '../meter/meter';
import { DEVICE_DMA } from '../meter/stages';

export type AddressSpace = 'gpa' | 'uaddr';

export interface MemoryRegionInfo {
  /** Guest physical address of the first byte. */
  gpa: number;
  /** Length in bytes. */
  size: number;
  /** The VMM's user virtual address of the first byte (vhost-user); equal to gpa when unused. */
  uaddr: number;
  /** Offset into the mapped object where the region starts (informational once mapped). */
  mmapOffset: number;
}

export interface MemoryRegion extends Readonly<MemoryRegionInfo> {
  /** The region's bytes: index 0 is the byte at `gpa`. */
  readonly bytes: Uint8Array;
  /** A DataView over `bytes`, for little-endian field reads (descriptor tables). */
  readonly view: DataView;
  /** Called when the region is removed from the memory (unmap), if it owns a mapping. */
  readonly release?: () => void;
}

/** Why a translation failed. */
export const MEM_OUTSIDE = -1;
export const MEM_CROSSES_END = -2;

export class MemoryError extends Error {
  readonly code: 'EFAULT';
  constructor(
    message: string,
    readonly address: number,
    readonly length: number,
  ) {
    super(message);
    this.name = 'MemoryError';
    this.code = 'EFAULT';
  }
}

/** Build a region over `buffer` (from byte `byteOffset`), e.g. for tests or after an mmap. */
export function makeRegion(
  info: MemoryRegionInfo,
  buffer: ArrayBufferLike,
  byteOffset = 0,
  release?: () => void,
): MemoryRegion {
  if (byteOffset + info.size > buffer.byteLength) {
    throw new RangeError(`region of ${info.size} bytes at offset ${byteOffset} exceeds its buffer (${buffer.byteLength})`);
  }
  return {
    gpa: info.gpa,
    size: info.size,
    uaddr: info.uaddr,
    mmapOffset: info.mmapOffset,
    bytes: new Uint8Array(buffer, byteOffset, info.size),
    view: new DataView(buffer, byteOffset, info.size),
    release,
  };
}

export class GuestMemory {
  private regionList: MemoryRegion[] = [];
  /** Index of the region the last successful `find` hit (tried first next time). */
  private hint = 0;
  /** Offset inside the region found by the last successful `find`. */
  lastOffset = 0;
  /** Stage counting the copies into and out of guest memory. */
  readonly dma: Stage;
  /** Bumped on every `setRegions`; views built from an older generation are stale. */
  generation = 0;

  constructor(regions: readonly MemoryRegion[] = [], meter: Meter = globalMeter) {
    this.dma = meter.stage(DEVICE_DMA);
    this.setRegions(regions);
  }

  /** A single region of `size` bytes at guest physical 0 (uaddr = gpa), over a plain ArrayBuffer. */
  static plain(size: number, meter?: Meter): GuestMemory {
    return new GuestMemory([makeRegion({ gpa: 0, size, uaddr: 0, mmapOffset: 0 }, new ArrayBuffer(size))], meter);
  }

  get regions(): readonly MemoryRegion[] {
    return this.regionList;
  }

  /** Replace every region (vhost-user SET_MEM_TABLE); the old ones are released. */
  setRegions(regions: readonly MemoryRegion[]): void {
    const old = this.regionList;
    this.regionList = regions.slice();
    this.hint = 0;
    this.generation++;
    for (const r of old) if (!this.regionList.includes(r)) r.release?.();
  }

  /** Drop every region (connection gone). */
  clear(): void {
    this.setRegions([]);
  }

  /**
   * The region holding [addr, addr+len) in `space`: its index, with the offset of `addr` in its
   * bytes left in `lastOffset`. MEM_OUTSIDE when no region holds `addr`, MEM_CROSSES_END when
   * the range runs past the end of the region that holds its start.
   */
  find(space: AddressSpace, addr: number, len: number): number {
    const list = this.regionList;
    const n = list.length;
    if (n === 0) return MEM_OUTSIDE;
    const h = this.hint < n ? this.hint : 0;
    for (let k = 0; k < n; k++) {
      const i = k === 0 ? h : k <= h ? k - 1 : k;
      const r = list[i];
      const base = space === 'gpa' ? r.gpa : r.uaddr;
      const off = addr - base;
      if (off >= 0 && off < r.size) {
        if (len > r.size - off) return MEM_CROSSES_END;
        this.hint = i;
        this.lastOffset = off;
        return i;
      }
    }
    return MEM_OUTSIDE;
  }

  /** The region at `index` (as returned by `find`). */
  region(index: number): MemoryRegion {
    return this.regionList[index];
  }

  /** Bytes from `addr` (in `space`) to the end of its region, or -1 when no region holds it. */
  bytesToRegionEnd(space: AddressSpace, addr: number): number {
    const i = this.find(space, addr, 0);
    if (i < 0) return -1;
    return this.regionList[i].size - this.lastOffset;
  }

  /** A view of [addr, addr+len) in `space`, or a MemoryError. Allocates: not for per-packet use. */
  view(space: AddressSpace, addr: number, len: number): Uint8Array | MemoryError {
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(len) || len < 0) {
      return new MemoryError(`bad range ${addr}+${len}`, addr, len);
    }
    const i = this.find(space, addr, len);
    if (i === MEM_OUTSIDE) return new MemoryError(`${space} 0x${addr.toString(16)} is outside guest memory`, addr, len);
    if (i === MEM_CROSSES_END) {
      return new MemoryError(`${space} 0x${addr.toString(16)}+${len} crosses the end of its region`, addr, len);
    }
    const off = this.lastOffset;
    return this.regionList[i].bytes.subarray(off, off + len);
  }

  /** Copy `src` into guest memory at `addr` (metered). Returns a MemoryError or null. */
  copyIn(space: AddressSpace, addr: number, src: Uint8Array): MemoryError | null {
    const dst = this.view(space, addr, src.length);
    if (dst instanceof MemoryError) return dst;
    dst.set(src);
    this.dma.copied(src.length);
    return null;
  }

  /** Copy `len` bytes of guest memory at `addr` out into `dst` at `dstOffset` (metered). */
  copyOut(space: AddressSpace, addr: number, len: number, dst: Uint8Array, dstOffset = 0): MemoryError | null {
    const src = this.view(space, addr, len);
    if (src instanceof MemoryError) return src;
    if (dstOffset + len > dst.length) return new MemoryError(`destination too small for ${len} bytes`, addr, len);
    dst.set(src, dstOffset);
    this.dma.copied(len);
    return null;
  }
}
