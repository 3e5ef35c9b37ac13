/**
 * UDP (RFC 768): 0-1 source port, 2-3 destination port, 4-5 length (header + data), 6-7
 * checksum, then data. The checksum covers a pseudo header (IPv4: RFC 768; IPv6: RFC 8200
 * §8.1), the header and the data. Over IPv4 a zero checksum means "none was computed" and is
 * accepted; a computed zero is sent as 0xffff. Over IPv6 the checksum is mandatory (RFC 8200
 * §8.1), so zero fails verification.
 *
 * Wrap a `UdpDatagram` over the IP payload; `check()` requires 8 <= length field <= the wrapped
 * length (the UDP length, not the IP length, bounds the data: RFC 768).
 */
import { onesSum, pseudoHeaderSumV4, pseudoHeaderSumV6 } from './checksum';
import { wireError, type WireError } from './error';
import { IP_PROTO_UDP } from './ipv4';
import { assignFields, get16, needRoom, put16, WireView, type FieldsOf } from './view';

export const UDP_HEADER_LEN = 8;

const E_TRUNCATED = wireError('truncated', 'udp', 'datagram shorter than 8 bytes');
const E_LENGTH_SHORT = wireError('bad-length', 'udp', 'length field below 8');
const E_LENGTH_LONG = wireError('truncated', 'udp', 'length field beyond the IP payload');

export class UdpDatagram extends WireView {
  check(): WireError | null {
    if (!this.inBuffer() || this.byteLength < UDP_HEADER_LEN) return E_TRUNCATED;
    const len = get16(this.buffer, this.offset + 4);
    if (len < UDP_HEADER_LEN) return E_LENGTH_SHORT;
    if (len > this.byteLength) return E_LENGTH_LONG;
    return null;
  }

  get srcPort(): number {
    return get16(this.buffer, this.offset);
  }
  set srcPort(v: number) {
    put16(this.buffer, this.offset, v);
  }

  get dstPort(): number {
    return get16(this.buffer, this.offset + 2);
  }
  set dstPort(v: number) {
    put16(this.buffer, this.offset + 2, v);
  }

  /** The length field: header plus data (the wrapped span is `byteLength`). */
  get length(): number {
    return get16(this.buffer, this.offset + 4);
  }
  set length(v: number) {
    put16(this.buffer, this.offset + 4, v);
  }

  get checksum(): number {
    return get16(this.buffer, this.offset + 6);
  }
  set checksum(v: number) {
    put16(this.buffer, this.offset + 6, v);
  }

  /** Absolute offset of the data. */
  get payloadOffset(): number {
    return this.offset + UDP_HEADER_LEN;
  }

  get payloadLength(): number {
    return get16(this.buffer, this.offset + 4) - UDP_HEADER_LEN;
  }

  payload(): Uint8Array {
    return this.buffer.subarray(this.offset + UDP_HEADER_LEN, this.offset + get16(this.buffer, this.offset + 4));
  }

  /** True when the checksum is right, or absent (zero) as IPv4 allows. */
  verifyChecksumV4(src: number, dst: number): boolean {
    if (this.checksum === 0) return true;
    const len = get16(this.buffer, this.offset + 4);
    return onesSum(this.buffer, this.offset, len, pseudoHeaderSumV4(src, dst, IP_PROTO_UDP, len)) === 0xffff;
  }

  fillChecksumV4(src: number, dst: number): void {
    const len = get16(this.buffer, this.offset + 4);
    this.checksum = 0;
    const c = ~onesSum(this.buffer, this.offset, len, pseudoHeaderSumV4(src, dst, IP_PROTO_UDP, len)) & 0xffff;
    this.checksum = c === 0 ? 0xffff : c;
  }

  verifyChecksumV6(src: Uint8Array, dst: Uint8Array): boolean {
    if (this.checksum === 0) return false;
    const len = get16(this.buffer, this.offset + 4);
    return onesSum(this.buffer, this.offset, len, pseudoHeaderSumV6(src, dst, IP_PROTO_UDP, len)) === 0xffff;
  }

  fillChecksumV6(src: Uint8Array, dst: Uint8Array): void {
    const len = get16(this.buffer, this.offset + 4);
    this.checksum = 0;
    const c = ~onesSum(this.buffer, this.offset, len, pseudoHeaderSumV6(src, dst, IP_PROTO_UDP, len)) & 0xffff;
    this.checksum = c === 0 ? 0xffff : c;
  }
}

export class UdpRepr {
  srcPort = 0;
  dstPort = 0;
  /** Data bytes after the 8-byte header. */
  payloadLength = 0;

  constructor(init?: Partial<FieldsOf<UdpRepr>>) {
    assignFields(this, init);
  }

  /** Parse the header (runs `check()`; does not verify the checksum). */
  static parse(u: UdpDatagram, out?: UdpRepr): UdpRepr | WireError {
    const err = u.check();
    if (err) return err;
    const r = out ?? new UdpRepr();
    r.srcPort = u.srcPort;
    r.dstPort = u.dstPort;
    r.payloadLength = u.payloadLength;
    return r;
  }

  get headerLength(): number {
    return UDP_HEADER_LEN;
  }

  /**
   * Write the header with checksum 0; returns 8. Put the data in place, then call the view's
   * `fillChecksumV4`/`fillChecksumV6` (or leave 0 over IPv4 to send none).
   */
  emit(u: UdpDatagram): number {
    needRoom(u, UDP_HEADER_LEN, 'udp');
    const b = u.buffer;
    const o = u.offset;
    put16(b, o, this.srcPort);
    put16(b, o + 2, this.dstPort);
    put16(b, o + 4, UDP_HEADER_LEN + this.payloadLength);
    put16(b, o + 6, 0);
    return UDP_HEADER_LEN;
  }
}
