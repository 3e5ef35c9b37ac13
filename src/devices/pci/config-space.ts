/**
 * PciConfigSpace: the 256-byte configuration header of a conventional PCI function (PCI Local Bus
 * Specification 3.0 §6.1, header type 0), with the behaviour of each byte: read-only, read/write,
 * or write-1-to-clear.
 *
 * Every byte has a write mask and a write-1-to-clear mask; a write stores `(old & ~wmask) |
 * (new & wmask)` and then clears `new & w1c`. That single rule gives all of §6.2:
 *   - Command (0x04): I/O space, memory space, bus master, parity, SERR#, INTx disable writable.
 *   - Status (0x06): error bits 8 and 11-15 write-1-to-clear; Capabilities List (bit 4) and the
 *     device-timing bits read-only; Interrupt Status (bit 3) reflects the function's INTx line and
 *     is filled in at read time by the owner (`intxStatus`).
 *   - Cache Line Size, Latency Timer, Interrupt Line writable; IDs, class, revision, Interrupt Pin,
 *     Min_Gnt/Max_Lat read-only.
 *   - BARs (§6.2.5.1): the write mask of a BAR is its address bits, `~(size - 1)` above the type
 *     bits, so the sizing protocol falls out: software writes all ones, reads back
 *     `~(size - 1) | type`, and the type bits (bit 0 = I/O; bits 2:1 = 00 32-bit memory, bit 3
 *     prefetchable) can never change. Unimplemented BARs and the expansion ROM BAR are all
 *     read-only zero ("not implemented").
 * Capabilities (§6.7): a list starting at Capabilities Pointer (0x34), each entry [ID, next, …]
 * with its own masks. `powerManagementCapability` (PCI PM 1.2 §3.2) and `msiCapability` (§6.8.1)
 * build the two this project uses.
 *
 * Reads and writes take any offset and length inside the 256 bytes (the vfio-user client reads
 * the whole header at once and writes 1, 2 or 4 bytes); values are little endian (§6.1).
 */

export const PCI_CONFIG_SIZE = 256;

// Header offsets (§6.1)
export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_STATUS = 0x06;
export const PCI_REVISION_ID = 0x08;
export const PCI_CLASS_PROG = 0x09;
export const PCI_CACHE_LINE_SIZE = 0x0c;
export const PCI_LATENCY_TIMER = 0x0d;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_BASE_ADDRESS_0 = 0x10;
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c;
export const PCI_SUBSYSTEM_ID = 0x2e;
export const PCI_ROM_ADDRESS = 0x30;
export const PCI_CAPABILITY_LIST = 0x34;
export const PCI_INTERRUPT_LINE = 0x3c;
export const PCI_INTERRUPT_PIN = 0x3d;
export const PCI_MIN_GNT = 0x3e;
export const PCI_MAX_LAT = 0x3f;

// Command bits (§6.2.2)
export const PCI_COMMAND_IO = 0x0001;
export const PCI_COMMAND_MEMORY = 0x0002;
export const PCI_COMMAND_MASTER = 0x0004;
export const PCI_COMMAND_PARITY = 0x0040;
export const PCI_COMMAND_SERR = 0x0100;
export const PCI_COMMAND_INTX_DISABLE = 0x0400;
const COMMAND_WRITABLE =
  PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_PARITY | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE;

// Status bits (§6.2.3)
export const PCI_STATUS_INTERRUPT = 0x0008;
export const PCI_STATUS_CAP_LIST = 0x0010;
export const PCI_STATUS_FAST_BACK = 0x0080;
export const PCI_STATUS_PARITY = 0x0100;
export const PCI_STATUS_DEVSEL_MEDIUM = 0x0200;
export const PCI_STATUS_SIG_TARGET_ABORT = 0x0800;
export const PCI_STATUS_REC_TARGET_ABORT = 0x1000;
export const PCI_STATUS_REC_MASTER_ABORT = 0x2000;
export const PCI_STATUS_SIG_SYSTEM_ERROR = 0x4000;
export const PCI_STATUS_DETECTED_PARITY = 0x8000;
const STATUS_W1C =
  PCI_STATUS_PARITY |
  PCI_STATUS_SIG_TARGET_ABORT |
  PCI_STATUS_REC_TARGET_ABORT |
  PCI_STATUS_REC_MASTER_ABORT |
  PCI_STATUS_SIG_SYSTEM_ERROR |
  PCI_STATUS_DETECTED_PARITY;

// BAR type bits (§6.2.5.1)
export const PCI_BASE_ADDRESS_SPACE_IO = 0x01;
export const PCI_BASE_ADDRESS_MEM_PREFETCH = 0x08;

export const PCI_CAP_ID_PM = 0x01;
export const PCI_CAP_ID_MSI = 0x05;

export interface PciIdentity {
  vendorId: number;
  deviceId: number;
  revision: number;
  /** 24 bits: base class, sub-class, programming interface (0x020000 = Ethernet controller). */
  classCode: number;
  subsystemVendorId: number;
  subsystemId: number;
  /** 0 = no INTx; 1..4 = INTA#..INTD#. */
  interruptPin: number;
  /** Min_Gnt / Max_Lat in 1/4 µs units (§6.2.4), informational. */
  minGrant?: number;
  maxLatency?: number;
}

export type PciBarKind = 'io' | 'mem32';

export interface PciBarSpec {
  /** BAR number 0..5. */
  index: number;
  kind: PciBarKind;
  /** Size in bytes: a power of two, ≥ 4 for I/O and ≥ 16 for memory. */
  size: number;
  prefetchable?: boolean;
}

export interface PciCapabilitySpec {
  id: number;
  /** Where it sits (dword aligned, ≥ 0x40). */
  offset: number;
  /** The capability's bytes after the ID and next-pointer bytes (initial values). */
  body: readonly number[];
  /** Writable bits of `body`, byte by byte (missing = read-only). */
  writeMask?: readonly number[];
  /** Write-1-to-clear bits of `body`, byte by byte. */
  w1cMask?: readonly number[];
}

/**
 * PCI Power Management capability (PCI Bus Power Management Interface 1.2 §3.2): PMC with
 * version 1.1 (value 2) and D1/D2 support, no PME# (this model never wakes the system);
 * PMCSR with the PowerState field writable and PME_Status write-1-to-clear.
 */
export function powerManagementCapability(offset: number, pmc = 0x0602): PciCapabilitySpec {
  return {
    id: PCI_CAP_ID_PM,
    offset,
    // PMC (2), PMCSR (2), PMCSR_BSE (1), Data (1)
    body: [pmc & 0xff, pmc >>> 8, 0x00, 0x00, 0x00, 0x00],
    writeMask: [0, 0, 0x03, 0x00, 0, 0],
    w1cMask: [0, 0, 0, 0x80, 0, 0],
  };
}

/**
 * MSI capability, 32-bit message address, one vector (PCI 3.0 §6.8.1): Message Control (enable
 * bit writable, Multiple Message Enable writable but only one vector is capable), Message Address,
 * Message Data. QEMU emulates MSI for a vfio-user device itself and hands the server one eventfd
 * per vector; the fields here only have to hold what software writes.
 */
export function msiCapability(offset: number): PciCapabilitySpec {
  return {
    id: PCI_CAP_ID_MSI,
    offset,
    // Message Control (2), Message Address (4), Message Data (2)
    body: [0x00, 0x00, 0, 0, 0, 0, 0, 0],
    writeMask: [0x71, 0x00, 0xfc, 0xff, 0xff, 0xff, 0xff, 0xff],
  };
}

/** Write mask of a BAR of `spec` (address bits above the size; type bits read-only). */
export function barWriteMask(spec: PciBarSpec): number {
  const typeBits = spec.kind === 'io' ? 0x3 : 0xf;
  return ~(spec.size - 1) & ~typeBits & 0xffffffff;
}

/** The read-only type bits of a BAR of `spec`. */
export function barTypeBits(spec: PciBarSpec): number {
  if (spec.kind === 'io') return PCI_BASE_ADDRESS_SPACE_IO;
  return spec.prefetchable ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

export class PciConfigSpace {
  readonly bytes = new Uint8Array(PCI_CONFIG_SIZE);
  private readonly view = new DataView(this.bytes.buffer);
  private readonly writeMask = new Uint8Array(PCI_CONFIG_SIZE);
  private readonly w1cMask = new Uint8Array(PCI_CONFIG_SIZE);
  /** The power-on contents, restored by `reset`. */
  private readonly initial: Uint8Array;
  /** Set by the owner: the function's INTx line, shown as Status bit 3. */
  intxStatus = false;
  /** Called after any write that touched the Command register, with its new value. */
  onCommandWrite: ((command: number) => void) | null = null;

  constructor(
    readonly identity: PciIdentity,
    readonly bars: readonly PciBarSpec[],
    readonly capabilities: readonly PciCapabilitySpec[] = [],
  ) {
    const v = this.view;
    v.setUint16(PCI_VENDOR_ID, identity.vendorId, true);
    v.setUint16(PCI_DEVICE_ID, identity.deviceId, true);
    v.setUint8(PCI_REVISION_ID, identity.revision);
    v.setUint8(PCI_CLASS_PROG, identity.classCode & 0xff);
    v.setUint16(PCI_CLASS_PROG + 1, (identity.classCode >>> 8) & 0xffff, true);
    v.setUint8(PCI_HEADER_TYPE, 0x00);
    v.setUint16(PCI_SUBSYSTEM_VENDOR_ID, identity.subsystemVendorId, true);
    v.setUint16(PCI_SUBSYSTEM_ID, identity.subsystemId, true);
    v.setUint8(PCI_INTERRUPT_PIN, identity.interruptPin);
    v.setUint8(PCI_MIN_GNT, identity.minGrant ?? 0);
    v.setUint8(PCI_MAX_LAT, identity.maxLatency ?? 0);
    v.setUint16(PCI_STATUS, PCI_STATUS_FAST_BACK | PCI_STATUS_DEVSEL_MEDIUM | (capabilities.length > 0 ? PCI_STATUS_CAP_LIST : 0), true);

    this.setMask16(PCI_COMMAND, COMMAND_WRITABLE, 0);
    this.setMask16(PCI_STATUS, 0, STATUS_W1C);
    this.writeMask[PCI_CACHE_LINE_SIZE] = 0xff;
    this.writeMask[PCI_LATENCY_TIMER] = 0xff;
    this.writeMask[PCI_INTERRUPT_LINE] = 0xff;

    const seen = new Set<number>();
    for (const bar of bars) {
      if (!Number.isInteger(bar.index) || bar.index < 0 || bar.index > 5 || seen.has(bar.index)) {
        throw new RangeError(`bad BAR index ${bar.index}`);
      }
      seen.add(bar.index);
      if (!isPowerOfTwo(bar.size) || bar.size < (bar.kind === 'io' ? 4 : 16) || (bar.kind === 'io' && bar.size > 256)) {
        throw new RangeError(`BAR${bar.index}: bad size ${bar.size}`);
      }
      const off = PCI_BASE_ADDRESS_0 + 4 * bar.index;
      v.setUint32(off, barTypeBits(bar), true);
      const m = barWriteMask(bar);
      for (let i = 0; i < 4; i++) this.writeMask[off + i] = (m >>> (8 * i)) & 0xff;
    }

    // capabilities, linked in the order given
    let prevNext = PCI_CAPABILITY_LIST;
    for (const cap of capabilities) {
      const end = cap.offset + 2 + cap.body.length;
      if (cap.offset < 0x40 || cap.offset % 4 !== 0 || end > PCI_CONFIG_SIZE) throw new RangeError(`capability at 0x${cap.offset.toString(16)} does not fit`);
      this.bytes[prevNext] = cap.offset;
      this.bytes[cap.offset] = cap.id;
      this.bytes[cap.offset + 1] = 0;
      for (let i = 0; i < cap.body.length; i++) {
        this.bytes[cap.offset + 2 + i] = cap.body[i];
        this.writeMask[cap.offset + 2 + i] = cap.writeMask?.[i] ?? 0;
        this.w1cMask[cap.offset + 2 + i] = cap.w1cMask?.[i] ?? 0;
      }
      prevNext = cap.offset + 1;
    }
    this.initial = this.bytes.slice();
  }

  private setMask16(off: number, wmask: number, w1c: number): void {
    this.writeMask[off] = wmask & 0xff;
    this.writeMask[off + 1] = wmask >>> 8;
    this.w1cMask[off] = w1c & 0xff;
    this.w1cMask[off + 1] = w1c >>> 8;
  }

  get command(): number {
    return this.view.getUint16(PCI_COMMAND, true);
  }

  get status(): number {
    return this.view.getUint16(PCI_STATUS, true) | (this.intxStatus ? PCI_STATUS_INTERRUPT : 0);
  }

  get busMaster(): boolean {
    return (this.command & PCI_COMMAND_MASTER) !== 0;
  }

  get intxDisabled(): boolean {
    return (this.command & PCI_COMMAND_INTX_DISABLE) !== 0;
  }

  /** Set status bits the function reports (e.g. Received Master Abort after a failed DMA). */
  setStatusBits(bits: number): void {
    this.view.setUint16(PCI_STATUS, this.view.getUint16(PCI_STATUS, true) | (bits & STATUS_W1C), true);
  }

  /** Offset of the capability with `id`, or 0. */
  findCapability(id: number): number {
    let off = this.bytes[PCI_CAPABILITY_LIST];
    for (let n = 0; off !== 0 && n < 48; n++) {
      if (this.bytes[off] === id) return off;
      off = this.bytes[off + 1];
    }
    return 0;
  }

  /** Copy `dst.length` bytes starting at `offset` into `dst`. False when out of range. */
  readInto(offset: number, dst: Uint8Array): boolean {
    if (!Number.isInteger(offset) || offset < 0 || offset + dst.length > PCI_CONFIG_SIZE) return false;
    dst.set(this.bytes.subarray(offset, offset + dst.length));
    // Interrupt Status is live, not stored
    const s = PCI_STATUS - offset;
    if (s >= 0 && s < dst.length && this.intxStatus) dst[s] |= PCI_STATUS_INTERRUPT;
    return true;
  }

  /** A little-endian value of 1, 2 or 4 bytes (tests, and the device's own use). */
  read(offset: number, size: 1 | 2 | 4): number {
    const tmp = new Uint8Array(size);
    if (!this.readInto(offset, tmp)) return 0xffffffff >>> (32 - 8 * size);
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = (v * 256) + tmp[i];
    return v;
  }

  /** Apply a write of `src` at `offset` through the masks. False when out of range. */
  write(offset: number, src: Uint8Array): boolean {
    if (!Number.isInteger(offset) || offset < 0 || offset + src.length > PCI_CONFIG_SIZE) return false;
    let commandTouched = false;
    for (let i = 0; i < src.length; i++) {
      const at = offset + i;
      const wm = this.writeMask[at];
      const w1c = this.w1cMask[at];
      const val = src[i];
      this.bytes[at] = ((this.bytes[at] & ~wm) | (val & wm)) & ~(val & w1c) & 0xff;
      if (at === PCI_COMMAND || at === PCI_COMMAND + 1) commandTouched = true;
    }
    if (commandTouched) this.onCommandWrite?.(this.command);
    return true;
  }

  /** Write a little-endian value of 1, 2 or 4 bytes. */
  writeValue(offset: number, size: 1 | 2 | 4, value: number): boolean {
    const tmp = new Uint8Array(size);
    for (let i = 0; i < size; i++) tmp[i] = (value >>> (8 * i)) & 0xff;
    return this.write(offset, tmp);
  }

  /**
   * Function reset (as after RST#, PCI 3.0 §6.2.2): Command cleared, error status cleared,
   * capabilities back to their power-on values. BAR addresses and the Interrupt Line keep what
   * software wrote (a VMM re-programs them; vfio-pci writes the BARs itself after a reset).
   */
  reset(): void {
    const keep = new Set<number>([PCI_CACHE_LINE_SIZE, PCI_LATENCY_TIMER, PCI_INTERRUPT_LINE]);
    for (let i = 0; i < 6; i++) for (let b = 0; b < 4; b++) keep.add(PCI_BASE_ADDRESS_0 + 4 * i + b);
    for (let i = 0; i < PCI_CONFIG_SIZE; i++) if (!keep.has(i)) this.bytes[i] = this.initial[i];
    this.onCommandWrite?.(this.command);
  }
}
