/**
 * ICMPv6 (RFC 4443) and Neighbor Discovery (RFC 4861):
 *
 *    0 type  1 code  2-3 checksum (over an IPv6 pseudo header, RFC 4443 §2.3, RFC 8200 §8.1)
 *    echo request/reply (128/129, §4.1-4.2):   4-5 identifier, 6-7 sequence, 8.. data
 *    destination unreachable (1, §3.1),
 *    time exceeded (3, §3.3):                  4-7 unused, 8.. as much of the offending packet
 *                                              as fits in the minimum MTU of 1280
 *    packet too big (2, §3.2):                 4-7 MTU, 8.. quoted packet
 *    parameter problem (4, §3.4):              4-7 pointer, 8.. quoted packet
 *    router solicitation (133, RFC 4861 §4.1): 4-7 reserved, options at 8
 *    router advertisement (134, §4.2):         4 cur hop limit, 5 flags (M 0x80, O 0x40),
 *                                              6-7 router lifetime, 8-11 reachable time,
 *                                              12-15 retrans timer, options at 16
 *    neighbor solicitation (135, §4.3):        4-7 reserved, 8-23 target, options at 24
 *    neighbor advertisement (136, §4.4):       4 flags (R 0x80, S 0x40, O 0x20), 8-23 target,
 *                                              options at 24
 *    redirect (137, §4.5):                     8-23 target, 24-39 destination, options at 40
 *
 * NDP options (RFC 4861 §4.6) are type, length in 8-byte units (never 0), data: source/target
 * link-layer address (1/2; 6 bytes of MAC on Ethernet, RFC 2464 §6), prefix information (3,
 * §4.6.2), MTU (5, §4.6.4), nonce (14, RFC 3971 §5.3.2; Linux puts one in its duplicate
 * address detection solicitations, RFC 7527) and recursive DNS servers (25, RFC 8106 §5.1).
 * `NdpOptionReader` walks them without allocating; `Icmpv6Repr` parses the known ones (others
 * are skipped, as §4.6 asks, and are not re-emitted) and remembers their order so a parsed
 * message re-emits exactly.
 *
 * Wrap an `Icmpv6Packet` over exactly the ICMPv6 message: the checksum covers `byteLength` bytes.
 * Checksum routines take the IPv6 source and destination (16-byte arrays) for the pseudo header.
 */
import { writableBytes } from './address';
import { onesSum, pseudoHeaderSumV6 } from './checksum';
import { wireError, type WireError } from './error';
import {
  assignFields,
  copyField,
  fieldEquals,
  get16,
  get32,
  needRoom,
  placePayload,
  put16,
  put32,
  WireView,
  type FieldsOf,
} from './view';
import { IP_PROTO_ICMPV6 } from './ipv4';
import type { Stage } from '../meter/meter';

export const ICMPV6_HEADER_LEN = 8;

export const ICMPV6_DEST_UNREACHABLE = 1;
export const ICMPV6_PACKET_TOO_BIG = 2;
export const ICMPV6_TIME_EXCEEDED = 3;
export const ICMPV6_PARAMETER_PROBLEM = 4;
export const ICMPV6_ECHO_REQUEST = 128;
export const ICMPV6_ECHO_REPLY = 129;
export const ICMPV6_MLD_QUERY = 130;
export const ICMPV6_MLD_REPORT = 131;
export const ICMPV6_MLD_DONE = 132;
export const ICMPV6_ROUTER_SOLICITATION = 133;
export const ICMPV6_ROUTER_ADVERTISEMENT = 134;
export const ICMPV6_NEIGHBOR_SOLICITATION = 135;
export const ICMPV6_NEIGHBOR_ADVERTISEMENT = 136;
export const ICMPV6_REDIRECT = 137;
export const ICMPV6_MLDV2_REPORT = 143;

/** Destination unreachable codes (RFC 4443 §3.1). */
export const ICMPV6_NO_ROUTE = 0;
export const ICMPV6_ADMIN_PROHIBITED = 1;
export const ICMPV6_BEYOND_SCOPE = 2;
export const ICMPV6_ADDRESS_UNREACHABLE = 3;
export const ICMPV6_PORT_UNREACHABLE = 4;
/** Time exceeded codes (§3.3). */
export const ICMPV6_HOP_LIMIT_EXCEEDED = 0;
export const ICMPV6_REASSEMBLY_TIME_EXCEEDED = 1;
/** Parameter problem codes (§3.4). */
export const ICMPV6_ERRONEOUS_HEADER = 0;
export const ICMPV6_UNRECOGNIZED_NEXT_HEADER = 1;
export const ICMPV6_UNRECOGNIZED_OPTION = 2;

/** Neighbor advertisement flags (byte 4). */
export const NDP_NA_ROUTER = 0x80;
export const NDP_NA_SOLICITED = 0x40;
export const NDP_NA_OVERRIDE = 0x20;
/** Router advertisement flags (byte 5). */
export const NDP_RA_MANAGED = 0x80;
export const NDP_RA_OTHER = 0x40;
/** Prefix information flags. */
export const NDP_PREFIX_ON_LINK = 0x80;
export const NDP_PREFIX_AUTONOMOUS = 0x40;

/** NDP option types. */
export const NDP_OPT_SOURCE_LL_ADDR = 1;
export const NDP_OPT_TARGET_LL_ADDR = 2;
export const NDP_OPT_PREFIX_INFO = 3;
export const NDP_OPT_REDIRECTED_HEADER = 4;
export const NDP_OPT_MTU = 5;
export const NDP_OPT_NONCE = 14;
export const NDP_OPT_RDNSS = 25;

const E_TRUNCATED = wireError('truncated', 'icmpv6', 'message shorter than its fixed part');
const E_UNSUPPORTED = wireError('unsupported', 'icmpv6', 'message type not modelled');
const E_OPTION = wireError('bad-option', 'icmpv6', 'malformed NDP option');

/** Offset (from the message start) of the NDP options for `type`, or -1. */
export function ndpOptionsStart(type: number): number {
  switch (type) {
    case ICMPV6_ROUTER_SOLICITATION:
      return 8;
    case ICMPV6_ROUTER_ADVERTISEMENT:
      return 16;
    case ICMPV6_NEIGHBOR_SOLICITATION:
    case ICMPV6_NEIGHBOR_ADVERTISEMENT:
      return 24;
    case ICMPV6_REDIRECT:
      return 40;
    default:
      return -1;
  }
}

/** Error messages are types 0-127 (RFC 4443 §2.1). */
export function isIcmpv6Error(type: number): boolean {
  return type < 128;
}

export class Icmpv6Packet extends WireView {
  check(): WireError | null {
    if (!this.inBuffer() || this.byteLength < ICMPV6_HEADER_LEN) return E_TRUNCATED;
    const start = ndpOptionsStart(this.buffer[this.offset]);
    if (start > this.byteLength) return E_TRUNCATED;
    return null;
  }

  get type(): number {
    return this.buffer[this.offset];
  }
  set type(v: number) {
    this.buffer[this.offset] = v;
  }

  get code(): number {
    return this.buffer[this.offset + 1];
  }
  set code(v: number) {
    this.buffer[this.offset + 1] = v;
  }

  get checksum(): number {
    return get16(this.buffer, this.offset + 2);
  }
  set checksum(v: number) {
    put16(this.buffer, this.offset + 2, v);
  }

  get identifier(): number {
    return get16(this.buffer, this.offset + 4);
  }
  set identifier(v: number) {
    put16(this.buffer, this.offset + 4, v);
  }

  get sequence(): number {
    return get16(this.buffer, this.offset + 6);
  }
  set sequence(v: number) {
    put16(this.buffer, this.offset + 6, v);
  }

  /** Bytes 4-7 as one uint32. */
  get restOfHeader(): number {
    return get32(this.buffer, this.offset + 4);
  }
  set restOfHeader(v: number) {
    put32(this.buffer, this.offset + 4, v);
  }

  /** Packet too big: the MTU of the next-hop link. */
  get mtu(): number {
    return get32(this.buffer, this.offset + 4);
  }
  set mtu(v: number) {
    put32(this.buffer, this.offset + 4, v);
  }

  /** Parameter problem: offset of the error in the quoted packet. */
  get pointer(): number {
    return get32(this.buffer, this.offset + 4);
  }

  /** NS/NA/redirect target address (a view). */
  get targetAddress(): Uint8Array {
    return this.buffer.subarray(this.offset + 8, this.offset + 24);
  }
  set targetAddress(a: Uint8Array) {
    copyField(a, 0, this.buffer, this.offset + 8, 16);
  }

  copyTargetAddress(out: Uint8Array, outOffset = 0): void {
    copyField(this.buffer, this.offset + 8, out, outOffset, 16);
  }

  targetAddressEquals(a: Uint8Array): boolean {
    return fieldEquals(this.buffer, this.offset + 8, a, 0, 16);
  }

  /** Redirect: the destination address (a view). */
  get redirectDestination(): Uint8Array {
    return this.buffer.subarray(this.offset + 24, this.offset + 40);
  }

  /** NA flags byte (NDP_NA_*). */
  get naFlags(): number {
    return this.buffer[this.offset + 4];
  }
  set naFlags(v: number) {
    this.buffer[this.offset + 4] = v;
  }

  get curHopLimit(): number {
    return this.buffer[this.offset + 4];
  }

  /** RA flags byte (NDP_RA_*, preference bits). */
  get raFlags(): number {
    return this.buffer[this.offset + 5];
  }

  get routerLifetime(): number {
    return get16(this.buffer, this.offset + 6);
  }

  get reachableTime(): number {
    return get32(this.buffer, this.offset + 8);
  }

  get retransTimer(): number {
    return get32(this.buffer, this.offset + 12);
  }

  /** Absolute offset of the NDP options, or -1 for a non-NDP type. */
  get ndpOptionsOffset(): number {
    const start = ndpOptionsStart(this.type);
    return start < 0 ? -1 : this.offset + start;
  }

  /** Absolute offset of the data after the 8-byte header (echo data, quoted packet). */
  get payloadOffset(): number {
    return this.offset + ICMPV6_HEADER_LEN;
  }

  get payloadLength(): number {
    return this.byteLength - ICMPV6_HEADER_LEN;
  }

  payload(): Uint8Array {
    return this.buffer.subarray(this.offset + ICMPV6_HEADER_LEN, this.offset + this.byteLength);
  }

  verifyChecksum(src: Uint8Array, dst: Uint8Array): boolean {
    const pseudo = pseudoHeaderSumV6(src, dst, IP_PROTO_ICMPV6, this.byteLength);
    return onesSum(this.buffer, this.offset, this.byteLength, pseudo) === 0xffff;
  }

  fillChecksum(src: Uint8Array, dst: Uint8Array): void {
    this.checksum = 0;
    const pseudo = pseudoHeaderSumV6(src, dst, IP_PROTO_ICMPV6, this.byteLength);
    this.checksum = ~onesSum(this.buffer, this.offset, this.byteLength, pseudo) & 0xffff;
  }
}

/**
 * Walks NDP options without allocating:
 *
 *     for (r.reset(p); r.next(); ) if (r.type === NDP_OPT_SOURCE_LL_ADDR) mac at r.dataOffset
 *     if (r.error) drop   // RFC 4861 §4.6: a zero-length option invalidates the packet
 */
export class NdpOptionReader {
  type = 0;
  /** Whole option length in bytes (8 × the length field). */
  length = 0;
  /** Absolute offset of the option's data (after type and length). */
  dataOffset = 0;
  error: WireError | null = null;
  private buf: Uint8Array = new Uint8Array(0);
  private pos = 0;
  private end = 0;

  reset(p: Icmpv6Packet): this {
    const start = p.ndpOptionsOffset;
    return this.resetAt(p.buffer, start < 0 ? p.offset + p.byteLength : start, p.offset + p.byteLength);
  }

  resetAt(buf: Uint8Array, start: number, end: number): this {
    this.buf = buf;
    this.pos = start;
    this.end = end;
    this.error = null;
    this.type = this.length = this.dataOffset = 0;
    return this;
  }

  get dataLength(): number {
    return this.length - 2;
  }

  next(): boolean {
    if (this.pos >= this.end) return false;
    const len = this.pos + 2 <= this.end ? this.buf[this.pos + 1] << 3 : 0;
    if (len === 0 || this.pos + len > this.end) {
      this.error = E_OPTION;
      this.pos = this.end;
      return false;
    }
    this.type = this.buf[this.pos];
    this.length = len;
    this.dataOffset = this.pos + 2;
    this.pos += len;
    return true;
  }
}

export class NdpPrefixInfo {
  prefixLength = 64;
  /** NDP_PREFIX_ON_LINK | NDP_PREFIX_AUTONOMOUS ... */
  flags = NDP_PREFIX_ON_LINK | NDP_PREFIX_AUTONOMOUS;
  /** Seconds; 0xffffffff is infinity. */
  validLifetime = 0;
  preferredLifetime = 0;
  prefix: Uint8Array = new Uint8Array(16);

  constructor(init?: Partial<FieldsOf<NdpPrefixInfo>>) {
    assignFields(this, init);
  }
}

export class NdpRdnss {
  /** Seconds. */
  lifetime = 0;
  servers: Uint8Array[] = [];

  constructor(init?: Partial<FieldsOf<NdpRdnss>>) {
    assignFields(this, init);
  }
}

const SUPPORTED = new Set([
  ICMPV6_DEST_UNREACHABLE,
  ICMPV6_PACKET_TOO_BIG,
  ICMPV6_TIME_EXCEEDED,
  ICMPV6_PARAMETER_PROBLEM,
  ICMPV6_ECHO_REQUEST,
  ICMPV6_ECHO_REPLY,
  ICMPV6_ROUTER_SOLICITATION,
  ICMPV6_ROUTER_ADVERTISEMENT,
  ICMPV6_NEIGHBOR_SOLICITATION,
  ICMPV6_NEIGHBOR_ADVERTISEMENT,
]);

export class Icmpv6Repr {
  type = ICMPV6_ECHO_REQUEST;
  code = 0;
  /** Echo. */
  identifier = 0;
  sequence = 0;
  /** Packet too big. */
  mtu = 0;
  /** Parameter problem. */
  pointer = 0;
  /** Echo data, or the quoted packet of an error: a view, copied into place by `emit`. */
  data: Uint8Array = new Uint8Array(0);

  /** NS/NA target. */
  targetAddress: Uint8Array = new Uint8Array(16);
  /** NA flags (NDP_NA_*). */
  naFlags = 0;
  /** RA fields. */
  curHopLimit = 0;
  raFlags = 0;
  routerLifetime = 0;
  reachableTime = 0;
  retransTimer = 0;

  /** NDP options (null / empty when absent). */
  sourceLinkAddress: Uint8Array | null = null;
  targetLinkAddress: Uint8Array | null = null;
  linkMtu: number | null = null;
  prefixes: NdpPrefixInfo[] = [];
  rdnss: NdpRdnss | null = null;
  /** Nonce option bytes (RFC 3971 §5.3.2; enhanced DAD, RFC 7527), usually 6. */
  nonce: Uint8Array | null = null;
  /**
   * The option types in the order parse met them (one entry per option, so a prefix appears
   * once per NdpPrefixInfo). `emit` follows it when set; otherwise SLLA, TLLA, MTU, prefixes,
   * RDNSS, nonce.
   */
  optionOrder: number[] | null = null;

  constructor(init?: Partial<FieldsOf<Icmpv6Repr>>) {
    assignFields(this, init);
  }

  /** Parse a message (runs `check()`; does not verify the checksum). */
  static parse(p: Icmpv6Packet, out?: Icmpv6Repr): Icmpv6Repr | WireError {
    const err = p.check();
    if (err) return err;
    const type = p.type;
    if (!SUPPORTED.has(type)) return E_UNSUPPORTED;
    const r = out ?? new Icmpv6Repr();
    const b = p.buffer;
    const o = p.offset;
    r.type = type;
    r.code = p.code;
    r.identifier = r.sequence = r.mtu = r.pointer = 0;
    r.naFlags = r.curHopLimit = r.raFlags = r.routerLifetime = r.reachableTime = r.retransTimer = 0;
    r.sourceLinkAddress = r.targetLinkAddress = null;
    r.linkMtu = null;
    r.prefixes = [];
    r.rdnss = null;
    r.nonce = null;
    r.optionOrder = null;
    r.data = new Uint8Array(0);
    r.targetAddress = writableBytes(r.targetAddress, 16);
    r.targetAddress.fill(0);

    const optStart = ndpOptionsStart(type);
    if (optStart < 0) {
      if (type === ICMPV6_ECHO_REQUEST || type === ICMPV6_ECHO_REPLY) {
        r.identifier = p.identifier;
        r.sequence = p.sequence;
      } else if (type === ICMPV6_PACKET_TOO_BIG) {
        r.mtu = p.mtu;
      } else if (type === ICMPV6_PARAMETER_PROBLEM) {
        r.pointer = p.pointer;
      }
      r.data = p.payload();
      return r;
    }

    if (type === ICMPV6_ROUTER_ADVERTISEMENT) {
      r.curHopLimit = p.curHopLimit;
      r.raFlags = p.raFlags;
      r.routerLifetime = p.routerLifetime;
      r.reachableTime = p.reachableTime;
      r.retransTimer = p.retransTimer;
    } else if (type === ICMPV6_NEIGHBOR_SOLICITATION || type === ICMPV6_NEIGHBOR_ADVERTISEMENT) {
      p.copyTargetAddress(r.targetAddress);
      if (type === ICMPV6_NEIGHBOR_ADVERTISEMENT) r.naFlags = p.naFlags;
    }

    const order: number[] = [];
    const reader = new NdpOptionReader().resetAt(b, o + optStart, o + p.byteLength);
    while (reader.next()) {
      const at = reader.dataOffset;
      const units = reader.length >>> 3;
      switch (reader.type) {
        case NDP_OPT_SOURCE_LL_ADDR:
        case NDP_OPT_TARGET_LL_ADDR: {
          const mac = b.slice(at, at + 6);
          if (reader.type === NDP_OPT_SOURCE_LL_ADDR) r.sourceLinkAddress = mac;
          else r.targetLinkAddress = mac;
          break;
        }
        case NDP_OPT_PREFIX_INFO: {
          if (units !== 4) return E_OPTION;
          r.prefixes.push(
            new NdpPrefixInfo({
              prefixLength: b[at],
              flags: b[at + 1],
              validLifetime: get32(b, at + 2),
              preferredLifetime: get32(b, at + 6),
              prefix: b.slice(at + 14, at + 30),
            }),
          );
          break;
        }
        case NDP_OPT_MTU:
          if (units !== 1) return E_OPTION;
          r.linkMtu = get32(b, at + 2);
          break;
        case NDP_OPT_NONCE:
          r.nonce = b.slice(at, at + reader.dataLength);
          break;
        case NDP_OPT_RDNSS: {
          if (units < 3 || (units & 1) === 0) return E_OPTION;
          const servers: Uint8Array[] = [];
          for (let a = at + 6; a + 16 <= at + reader.dataLength; a += 16) servers.push(b.slice(a, a + 16));
          r.rdnss = new NdpRdnss({ lifetime: get32(b, at + 2), servers });
          break;
        }
        default:
          continue; // unknown: skipped (RFC 4861 §4.6), not remembered
      }
      order.push(reader.type);
    }
    if (reader.error) return reader.error;
    r.optionOrder = order;
    return r;
  }

  /**
   * The options emit writes, in order: `optionOrder` restricted to the options present, then
   * any present option it does not mention (default order SLLA, TLLA, MTU, prefixes, RDNSS).
   */
  private effectiveOrder(): number[] {
    const left = new Map<number, number>([
      [NDP_OPT_SOURCE_LL_ADDR, this.sourceLinkAddress ? 1 : 0],
      [NDP_OPT_TARGET_LL_ADDR, this.targetLinkAddress ? 1 : 0],
      [NDP_OPT_MTU, this.linkMtu !== null ? 1 : 0],
      [NDP_OPT_PREFIX_INFO, this.prefixes.length],
      [NDP_OPT_RDNSS, this.rdnss ? 1 : 0],
      [NDP_OPT_NONCE, this.nonce ? 1 : 0],
    ]);
    const order: number[] = [];
    for (const t of this.optionOrder ?? []) {
      const n = left.get(t) ?? 0;
      if (n > 0) {
        order.push(t);
        left.set(t, n - 1);
      }
    }
    for (const [t, n] of left) for (let i = 0; i < n; i++) order.push(t);
    return order;
  }

  private optionBytes(type: number): number {
    switch (type) {
      case NDP_OPT_PREFIX_INFO:
        return 32;
      case NDP_OPT_RDNSS:
        return 8 + 16 * (this.rdnss ? this.rdnss.servers.length : 0);
      case NDP_OPT_NONCE:
        return (2 + (this.nonce ? this.nonce.length : 0) + 7) & ~7;
      default:
        return 8; // link-layer addresses, MTU
    }
  }

  /** Whole message length: fixed part, data or options. */
  get bufferLength(): number {
    const start = ndpOptionsStart(this.type);
    if (start < 0) return ICMPV6_HEADER_LEN + this.data.length;
    let n = start;
    for (const t of this.effectiveOrder()) n += this.optionBytes(t);
    return n;
  }

  /**
   * Write the message and its checksum (over the pseudo header of `src`/`dst`); data is copied
   * into place unless already there, counted in `stage`. Returns the message length.
   */
  emit(p: Icmpv6Packet, src: Uint8Array, dst: Uint8Array, stage?: Stage): number {
    const len = this.bufferLength;
    needRoom(p, len, 'icmpv6');
    const b = p.buffer;
    const o = p.offset;
    const type = this.type;
    const optStart = ndpOptionsStart(type);
    if (optStart < 0) placePayload(this.data, b, o + ICMPV6_HEADER_LEN, stage);
    b[o] = type;
    b[o + 1] = this.code;
    put16(b, o + 2, 0);
    switch (type) {
      case ICMPV6_ECHO_REQUEST:
      case ICMPV6_ECHO_REPLY:
        put16(b, o + 4, this.identifier);
        put16(b, o + 6, this.sequence);
        break;
      case ICMPV6_PACKET_TOO_BIG:
        put32(b, o + 4, this.mtu);
        break;
      case ICMPV6_PARAMETER_PROBLEM:
        put32(b, o + 4, this.pointer);
        break;
      case ICMPV6_ROUTER_ADVERTISEMENT:
        b[o + 4] = this.curHopLimit;
        b[o + 5] = this.raFlags;
        put16(b, o + 6, this.routerLifetime);
        put32(b, o + 8, this.reachableTime);
        put32(b, o + 12, this.retransTimer);
        break;
      case ICMPV6_NEIGHBOR_SOLICITATION:
      case ICMPV6_NEIGHBOR_ADVERTISEMENT:
        put32(b, o + 4, type === ICMPV6_NEIGHBOR_ADVERTISEMENT ? (this.naFlags & 0xff) * 0x1000000 : 0);
        copyField(this.targetAddress, 0, b, o + 8, 16);
        break;
      default:
        put32(b, o + 4, 0);
    }
    if (optStart >= 0) {
      let at = o + optStart;
      let prefix = 0;
      for (const t of this.effectiveOrder()) {
        at = this.emitOption(t, b, at, t === NDP_OPT_PREFIX_INFO ? this.prefixes[prefix++] : null);
      }
    }
    const pseudo = pseudoHeaderSumV6(src, dst, IP_PROTO_ICMPV6, len);
    put16(b, o + 2, ~onesSum(b, o, len, pseudo) & 0xffff);
    return len;
  }

  private emitOption(type: number, b: Uint8Array, at: number, pi: NdpPrefixInfo | null): number {
    const n = this.optionBytes(type);
    b.fill(0, at, at + n);
    b[at] = type;
    b[at + 1] = n >>> 3;
    switch (type) {
      case NDP_OPT_SOURCE_LL_ADDR:
      case NDP_OPT_TARGET_LL_ADDR: {
        const mac = type === NDP_OPT_SOURCE_LL_ADDR ? this.sourceLinkAddress : this.targetLinkAddress;
        if (mac) copyField(mac, 0, b, at + 2, 6);
        break;
      }
      case NDP_OPT_MTU:
        put32(b, at + 4, this.linkMtu ?? 0);
        break;
      case NDP_OPT_PREFIX_INFO: {
        if (pi) {
          b[at + 2] = pi.prefixLength;
          b[at + 3] = pi.flags;
          put32(b, at + 4, pi.validLifetime);
          put32(b, at + 8, pi.preferredLifetime);
          copyField(pi.prefix, 0, b, at + 16, 16);
        }
        break;
      }
      case NDP_OPT_NONCE:
        if (this.nonce) copyField(this.nonce, 0, b, at + 2, this.nonce.length);
        break;
      case NDP_OPT_RDNSS: {
        const rd = this.rdnss;
        if (rd) {
          put32(b, at + 4, rd.lifetime);
          for (let i = 0; i < rd.servers.length; i++) copyField(rd.servers[i], 0, b, at + 8 + 16 * i, 16);
        }
        break;
      }
    }
    return at + n;
  }
}
