/**
 * ICMP for IPv4 (RFC 792), the messages usernet sends, answers or translates:
 *
 *    0 type  1 code  2-3 checksum (over the whole ICMP message, no pseudo header)
 *    4-7 "rest of header", by type:
 *        echo request/reply (8/0):       identifier(16) sequence(16), then the echo data
 *        destination unreachable (3):    unused(16) next-hop MTU(16) for code 4 "fragmentation
 *                                        needed and DF set" (RFC 1191 §4), zero otherwise
 *        time exceeded (11):             unused
 *        parameter problem (12):         pointer(8) unused(24)
 *    8.. data: the echo data, or for errors the offending datagram's IP header and at least 8
 *        bytes of its payload (RFC 792; RFC 1812 §4.3.2.3 allows as much as fits in 576 bytes).
 *
 * Wrap an `Icmpv4Packet` over exactly the ICMP message (the IP payload): the checksum covers
 * `byteLength` bytes. `Icmpv4Repr` models the four message kinds above (other types parse as
 * 'unsupported'); its `data` is a view into the parsed buffer, not a copy.
 */
import { internetChecksum, onesSum } from './checksum';
import { wireError, type WireError } from './error';
import { assignFields, get16, get32, needRoom, placePayload, put16, put32, WireView, type FieldsOf } from './view';
import type { Stage } from '../meter/meter';

export const ICMPV4_HEADER_LEN = 8;

export const ICMPV4_ECHO_REPLY = 0;
export const ICMPV4_DEST_UNREACHABLE = 3;
export const ICMPV4_REDIRECT = 5;
export const ICMPV4_ECHO_REQUEST = 8;
export const ICMPV4_TIME_EXCEEDED = 11;
export const ICMPV4_PARAMETER_PROBLEM = 12;

/** Destination unreachable codes (RFC 792; RFC 1812 §5.2.7.1). */
export const ICMPV4_NET_UNREACHABLE = 0;
export const ICMPV4_HOST_UNREACHABLE = 1;
export const ICMPV4_PROTOCOL_UNREACHABLE = 2;
export const ICMPV4_PORT_UNREACHABLE = 3;
export const ICMPV4_FRAGMENTATION_NEEDED = 4;
export const ICMPV4_SOURCE_ROUTE_FAILED = 5;
export const ICMPV4_NET_PROHIBITED = 9;
export const ICMPV4_HOST_PROHIBITED = 10;
export const ICMPV4_ADMIN_PROHIBITED = 13;

/** Time exceeded codes. */
export const ICMPV4_TTL_EXCEEDED = 0;
export const ICMPV4_REASSEMBLY_TIME_EXCEEDED = 1;

const E_TRUNCATED = wireError('truncated', 'icmpv4', 'message shorter than 8 bytes');
const E_UNSUPPORTED = wireError('unsupported', 'icmpv4', 'message type not modelled');

/** True for the error messages (which quote a datagram) among the types above. */
export function isIcmpv4Error(type: number): boolean {
  return type === ICMPV4_DEST_UNREACHABLE || type === ICMPV4_TIME_EXCEEDED || type === ICMPV4_PARAMETER_PROBLEM || type === ICMPV4_REDIRECT;
}

export class Icmpv4Packet extends WireView {
  check(): WireError | null {
    if (!this.inBuffer() || this.byteLength < ICMPV4_HEADER_LEN) return E_TRUNCATED;
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

  /** Echo identifier (bytes 4-5). */
  get identifier(): number {
    return get16(this.buffer, this.offset + 4);
  }
  set identifier(v: number) {
    put16(this.buffer, this.offset + 4, v);
  }

  /** Echo sequence number (bytes 6-7). */
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

  /** Destination unreachable / fragmentation needed: next-hop MTU (bytes 6-7, RFC 1191 §4). */
  get nextHopMtu(): number {
    return get16(this.buffer, this.offset + 6);
  }
  set nextHopMtu(v: number) {
    put16(this.buffer, this.offset + 6, v);
  }

  /** Parameter problem: the octet where the problem is (byte 4). */
  get pointer(): number {
    return this.buffer[this.offset + 4];
  }

  /** Redirect: the gateway address (bytes 4-7). */
  get gateway(): number {
    return get32(this.buffer, this.offset + 4);
  }

  /** Absolute offset of the data (echo data or the quoted datagram). */
  get payloadOffset(): number {
    return this.offset + ICMPV4_HEADER_LEN;
  }

  get payloadLength(): number {
    return this.byteLength - ICMPV4_HEADER_LEN;
  }

  /** The data as a view (allocates the view object). */
  payload(): Uint8Array {
    return this.buffer.subarray(this.offset + ICMPV4_HEADER_LEN, this.offset + this.byteLength);
  }

  verifyChecksum(): boolean {
    return onesSum(this.buffer, this.offset, this.byteLength) === 0xffff;
  }

  fillChecksum(): void {
    this.checksum = 0;
    this.checksum = internetChecksum(this.buffer, this.offset, this.byteLength);
  }
}

export class Icmpv4Repr {
  type = ICMPV4_ECHO_REQUEST;
  code = 0;
  /** Echo only. */
  identifier = 0;
  sequence = 0;
  /** Destination unreachable only (meaningful with code 4). */
  nextHopMtu = 0;
  /** Parameter problem only. */
  pointer = 0;
  /** Echo data, or the quoted datagram of an error: a view, copied into place by `emit`. */
  data: Uint8Array = new Uint8Array(0);

  constructor(init?: Partial<FieldsOf<Icmpv4Repr>>) {
    assignFields(this, init);
  }

  /** Parse a message (runs `check()`; does not verify the checksum). */
  static parse(p: Icmpv4Packet, out?: Icmpv4Repr): Icmpv4Repr | WireError {
    const err = p.check();
    if (err) return err;
    const type = p.type;
    if (
      type !== ICMPV4_ECHO_REQUEST &&
      type !== ICMPV4_ECHO_REPLY &&
      type !== ICMPV4_DEST_UNREACHABLE &&
      type !== ICMPV4_TIME_EXCEEDED &&
      type !== ICMPV4_PARAMETER_PROBLEM
    ) {
      return E_UNSUPPORTED;
    }
    const r = out ?? new Icmpv4Repr();
    r.type = type;
    r.code = p.code;
    const echo = type === ICMPV4_ECHO_REQUEST || type === ICMPV4_ECHO_REPLY;
    r.identifier = echo ? p.identifier : 0;
    r.sequence = echo ? p.sequence : 0;
    r.nextHopMtu = type === ICMPV4_DEST_UNREACHABLE ? p.nextHopMtu : 0;
    r.pointer = type === ICMPV4_PARAMETER_PROBLEM ? p.pointer : 0;
    r.data = p.payload();
    return r;
  }

  /** Header plus data. */
  get bufferLength(): number {
    return ICMPV4_HEADER_LEN + this.data.length;
  }

  /**
   * Write the message (header, data — copied into place unless already there, counted in
   * `stage` — and checksum); returns its length.
   */
  emit(p: Icmpv4Packet, stage?: Stage): number {
    const len = this.bufferLength;
    needRoom(p, len, 'icmpv4');
    const b = p.buffer;
    const o = p.offset;
    placePayload(this.data, b, o + ICMPV4_HEADER_LEN, stage);
    b[o] = this.type;
    b[o + 1] = this.code;
    put16(b, o + 2, 0);
    switch (this.type) {
      case ICMPV4_ECHO_REQUEST:
      case ICMPV4_ECHO_REPLY:
        put16(b, o + 4, this.identifier);
        put16(b, o + 6, this.sequence);
        break;
      case ICMPV4_DEST_UNREACHABLE:
        put32(b, o + 4, this.nextHopMtu & 0xffff);
        break;
      case ICMPV4_PARAMETER_PROBLEM:
        put32(b, o + 4, (this.pointer & 0xff) * 0x1000000);
        break;
      default:
        put32(b, o + 4, 0);
    }
    put16(b, o + 2, internetChecksum(b, o, len));
    return len;
  }
}
