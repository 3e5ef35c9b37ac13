/**
 * vhost-user wire format (QEMU docs/interop/vhost-user.rst, "Message Specification"): every
 * message is a 12-byte header — request u32, flags u32 (bits 0–1 version = 1, 0x4 REPLY,
 * 0x8 NEED_REPLY), size u32 — then `size` bytes of payload, all in host byte order (little
 * endian here). File descriptors travel as SCM_RIGHTS with the header. Replies carry flags
 * exactly 0x5 (version 1 | REPLY) and the request's id.
 *
 * This file only names things and decodes/encodes payloads; the state machine is in
 * vhost-user-connection.ts.
 */

export const VHOST_USER_HDR_SIZE = 12;
export const VHOST_USER_VERSION = 0x1;
export const VHOST_USER_REPLY_MASK = 0x4;
export const VHOST_USER_NEED_REPLY_MASK = 0x8;
/** Largest payload accepted: config (12 + 256) is the biggest a net back-end sees; mem table 8 + 8·32. */
export const VHOST_USER_MAX_PAYLOAD = 4096;
/** VHOST_MEMORY_BASELINE_NREGIONS. */
export const VHOST_USER_MAX_REGIONS = 8;
/** Vring file payload: bit 8 = no fd (poll instead). */
export const VHOST_USER_VRING_NOFD_MASK = 0x100;
export const VHOST_USER_VRING_IDX_MASK = 0xff;

export enum Req {
  GET_FEATURES = 1,
  SET_FEATURES = 2,
  SET_OWNER = 3,
  RESET_OWNER = 4,
  SET_MEM_TABLE = 5,
  SET_LOG_BASE = 6,
  SET_LOG_FD = 7,
  SET_VRING_NUM = 8,
  SET_VRING_ADDR = 9,
  SET_VRING_BASE = 10,
  GET_VRING_BASE = 11,
  SET_VRING_KICK = 12,
  SET_VRING_CALL = 13,
  SET_VRING_ERR = 14,
  GET_PROTOCOL_FEATURES = 15,
  SET_PROTOCOL_FEATURES = 16,
  GET_QUEUE_NUM = 17,
  SET_VRING_ENABLE = 18,
  SEND_RARP = 19,
  NET_SET_MTU = 20,
  SET_BACKEND_REQ_FD = 21,
  IOTLB_MSG = 22,
  SET_VRING_ENDIAN = 23,
  GET_CONFIG = 24,
  SET_CONFIG = 25,
  RESET_DEVICE = 34,
  GET_MAX_MEM_SLOTS = 36,
  ADD_MEM_REG = 37,
  REM_MEM_REG = 38,
  SET_STATUS = 39,
  GET_STATUS = 40,
}

const NAMES: Record<number, string> = {
  1: 'GET_FEATURES',
  2: 'SET_FEATURES',
  3: 'SET_OWNER',
  4: 'RESET_OWNER',
  5: 'SET_MEM_TABLE',
  6: 'SET_LOG_BASE',
  7: 'SET_LOG_FD',
  8: 'SET_VRING_NUM',
  9: 'SET_VRING_ADDR',
  10: 'SET_VRING_BASE',
  11: 'GET_VRING_BASE',
  12: 'SET_VRING_KICK',
  13: 'SET_VRING_CALL',
  14: 'SET_VRING_ERR',
  15: 'GET_PROTOCOL_FEATURES',
  16: 'SET_PROTOCOL_FEATURES',
  17: 'GET_QUEUE_NUM',
  18: 'SET_VRING_ENABLE',
  19: 'SEND_RARP',
  20: 'NET_SET_MTU',
  21: 'SET_BACKEND_REQ_FD',
  22: 'IOTLB_MSG',
  23: 'SET_VRING_ENDIAN',
  24: 'GET_CONFIG',
  25: 'SET_CONFIG',
  26: 'CREATE_CRYPTO_SESSION',
  27: 'CLOSE_CRYPTO_SESSION',
  28: 'POSTCOPY_ADVISE',
  29: 'POSTCOPY_LISTEN',
  30: 'POSTCOPY_END',
  31: 'GET_INFLIGHT_FD',
  32: 'SET_INFLIGHT_FD',
  33: 'GPU_SET_SOCKET',
  34: 'RESET_DEVICE',
  35: 'VRING_KICK',
  36: 'GET_MAX_MEM_SLOTS',
  37: 'ADD_MEM_REG',
  38: 'REM_MEM_REG',
  39: 'SET_STATUS',
  40: 'GET_STATUS',
};

export function requestName(id: number): string {
  return NAMES[id] ?? `request ${id}`;
}

/** Protocol feature bits (GET/SET_PROTOCOL_FEATURES). */
export const PROTOCOL_F_MQ = 0;
export const PROTOCOL_F_LOG_SHMFD = 1;
export const PROTOCOL_F_RARP = 2;
export const PROTOCOL_F_REPLY_ACK = 3;
export const PROTOCOL_F_NET_MTU = 4;
export const PROTOCOL_F_BACKEND_REQ = 5;
export const PROTOCOL_F_CONFIG = 9;
export const PROTOCOL_F_RESET_DEVICE = 13;
export const PROTOCOL_F_CONFIGURE_MEM_SLOTS = 15;
export const PROTOCOL_F_STATUS = 16;

/** A decoded header (reused object). */
export interface MessageHeader {
  request: number;
  flags: number;
  size: number;
}

export interface MemoryRegionDesc {
  gpa: number;
  size: number;
  uaddr: number;
  mmapOffset: number;
}

export interface VringAddr {
  index: number;
  flags: number;
  desc: number;
  used: number;
  avail: number;
  log: number;
}

/** A u64 field as a JS number, or -1 when it does not fit 2^53 (no real address does). */
export function u64(view: DataView, off: number): number {
  const lo = view.getUint32(off, true);
  const hi = view.getUint32(off + 4, true);
  if (hi >= 0x200000) return -1;
  return hi * 4294967296 + lo;
}

export function writeU64(view: DataView, off: number, v: bigint): void {
  view.setBigUint64(off, BigInt.asUintN(64, v), true);
}

/** SET_MEM_TABLE payload: nregions u32, padding u32, regions[] of 32 bytes. */
export function decodeMemTable(p: DataView): MemoryRegionDesc[] | string {
  if (p.byteLength < 8) return `memory table payload of ${p.byteLength} bytes is too short`;
  const n = p.getUint32(0, true);
  if (n === 0 || n > VHOST_USER_MAX_REGIONS) return `memory table with ${n} regions (1..${VHOST_USER_MAX_REGIONS})`;
  if (p.byteLength < 8 + 32 * n) return `memory table of ${n} regions in ${p.byteLength} bytes`;
  const out: MemoryRegionDesc[] = [];
  for (let i = 0; i < n; i++) {
    const o = 8 + 32 * i;
    const r = { gpa: u64(p, o), size: u64(p, o + 8), uaddr: u64(p, o + 16), mmapOffset: u64(p, o + 24) };
    if (r.gpa < 0 || r.size <= 0 || r.uaddr < 0 || r.mmapOffset < 0) return `memory region ${i} has an impossible address or size`;
    out.push(r);
  }
  return out;
}

/** SET_VRING_ADDR payload (40 bytes): index, flags, desc, used, avail, log. */
export function decodeVringAddr(p: DataView): VringAddr | string {
  if (p.byteLength < 40) return `vring address payload of ${p.byteLength} bytes`;
  const a = {
    index: p.getUint32(0, true),
    flags: p.getUint32(4, true),
    desc: u64(p, 8),
    used: u64(p, 16),
    avail: u64(p, 24),
    log: u64(p, 32),
  };
  if (a.desc < 0 || a.used < 0 || a.avail < 0) return 'vring address beyond 2^53';
  return a;
}
