/**
 * vfio-user wire format (QEMU docs/interop/vfio-user.rst, protocol version 0.0; hw/vfio-user/
 * protocol.h; region/IRQ indices and flag values from linux/vfio.h). All fields are in host byte
 * order (little endian here); every offset below counts from the start of the message, header
 * included.
 *
 * Header (16 bytes): message id u16 @0 (echoed in the reply), command u16 @2, size u32 @4 (the
 * whole message), flags u32 @8 (bits 0-3 type: 0 command, 1 reply; 0x10 NO_REPLY; 0x20 ERROR),
 * error u32 @12 (an errno, in error replies).
 */

export const HEADER_SIZE = 16;

export const Cmd = {
  VERSION: 1,
  DMA_MAP: 2,
  DMA_UNMAP: 3,
  DEVICE_GET_INFO: 4,
  DEVICE_GET_REGION_INFO: 5,
  DEVICE_GET_REGION_IO_FDS: 6,
  DEVICE_GET_IRQ_INFO: 7,
  DEVICE_SET_IRQS: 8,
  REGION_READ: 9,
  REGION_WRITE: 10,
  DMA_READ: 11,
  DMA_WRITE: 12,
  DEVICE_RESET: 13,
  DIRTY_PAGES: 14,
  REGION_WRITE_MULTI: 15,
  DEVICE_FEATURE: 16,
  MIG_DATA_READ: 17,
  MIG_DATA_WRITE: 18,
} as const;
export const CMD_COUNT = 19;

const NAMES: Record<number, string> = Object.fromEntries(Object.entries(Cmd).map(([k, v]) => [v, k]));

export function commandName(cmd: number): string {
  return NAMES[cmd] ?? `command ${cmd}`;
}

// header flags
export const TYPE_MASK = 0x0f;
export const TYPE_COMMAND = 0;
export const TYPE_REPLY = 1;
export const FLAG_NO_REPLY = 0x10;
export const FLAG_ERROR = 0x20;

// DMA_MAP / DMA_UNMAP
export const DMA_MAP_SIZE = HEADER_SIZE + 32;
export const DMA_UNMAP_SIZE = HEADER_SIZE + 24;
export const DMA_FLAG_READ = 1;
export const DMA_FLAG_WRITE = 2;
export const DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1;
export const DMA_UNMAP_FLAG_ALL = 2;

// DEVICE_GET_INFO
export const DEVICE_INFO_SIZE = HEADER_SIZE + 16;
export const DEVICE_FLAGS_RESET = 1;
export const DEVICE_FLAGS_PCI = 2;

// DEVICE_GET_REGION_INFO
export const REGION_INFO_SIZE = HEADER_SIZE + 32;
export const REGION_INFO_FLAG_READ = 1;
export const REGION_INFO_FLAG_WRITE = 2;
export const REGION_INFO_FLAG_MMAP = 4;
export const REGION_INFO_FLAG_CAPS = 8;

// DEVICE_GET_IRQ_INFO
export const IRQ_INFO_SIZE = HEADER_SIZE + 16;
export const IRQ_INFO_EVENTFD = 1;
export const IRQ_INFO_MASKABLE = 2;
export const IRQ_INFO_AUTOMASKED = 4;
export const IRQ_INFO_NORESIZE = 8;

// DEVICE_SET_IRQS
export const SET_IRQS_SIZE = HEADER_SIZE + 20;
export const IRQ_SET_DATA_NONE = 1;
export const IRQ_SET_DATA_BOOL = 2;
export const IRQ_SET_DATA_EVENTFD = 4;
export const IRQ_SET_DATA_MASK = 7;
export const IRQ_SET_ACTION_MASK = 8;
export const IRQ_SET_ACTION_UNMASK = 0x10;
export const IRQ_SET_ACTION_TRIGGER = 0x20;
export const IRQ_SET_ACTION_MASK_ALL = 0x38;

// IRQ indices (VFIO_PCI_*_IRQ_INDEX)
export const IRQ_INTX = 0;
export const IRQ_MSI = 1;
export const IRQ_MSIX = 2;
export const IRQ_ERR = 3;
export const IRQ_REQ = 4;
export const IRQ_COUNT = 5;

// REGION_READ / REGION_WRITE
export const REGION_ACCESS_SIZE = HEADER_SIZE + 16;

// REGION_WRITE_MULTI
export const WRITE_MULTI_ENTRY = 24;
export const WRITE_MULTI_DATA_MAX = 8;

/** The capabilities this server offers, trimmed to what the client proposed. */
export interface ServerCapabilities {
  max_msg_fds: number;
  max_data_xfer_size: number;
  pgsizes: number;
  max_dma_maps: number;
  write_multiple?: boolean;
}

/**
 * Read a u64 field as a JavaScript number; -1 when it does not fit exactly (above 2^53), which
 * the callers reject as EINVAL.
 */
export function readU64(v: DataView, off: number): number {
  const lo = v.getUint32(off, true);
  const hi = v.getUint32(off + 4, true);
  if (hi > 0x1fffff) return -1;
  return hi * 0x1_0000_0000 + lo;
}

export function writeU64(v: DataView, off: number, value: number): void {
  v.setUint32(off, value % 0x1_0000_0000, true);
  v.setUint32(off + 4, Math.floor(value / 0x1_0000_0000), true);
}
