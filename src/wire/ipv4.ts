/**
 * IPv4 headers (RFC 791 §3.1):
 *
 *    0      version(4) IHL(4)      1  DSCP(6) ECN(2) (RFC 2474, RFC 3168)   2-3  total length
 *    4-5    identification         6-7  flags(3: 0, DF, MF) fragment offset(13, in 8-byte units)
 *    8      TTL   9 protocol   10-11 header checksum   12-15 source   16-19 destination
 *    20..   options (IHL*4 - 20 bytes, RFC 791 §3.1 "Options"), then the payload
 *
 * `check()` validates version, IHL >= 5, the header inside the buffer, and total length between
 * the header length and the buffer (a buffer longer than total length is Ethernet padding and
 * is ignored: `payloadLength` comes from total length); `checkHeader()` is the variant for a
 * datagram quoted (cut short) in an ICMP error. Checksums are not part of `check()`;
 * `verifyChecksum()` is separate because an offloaded frame may carry a valid-by-contract one.
 *
 * Fragments (RFC 791 §2.3, §3.2): `fragmentOffset` is in BYTES here (the field times 8);
 * a packet is a fragment when `moreFragments` or `fragmentOffset !== 0`.
 *
 * Options are walked without allocation by `Ipv4OptionReader` (type-length-value, except the
 * one-byte End of Option List and No Operation, RFC 791 §3.1). `Ipv4Repr` carries the option
 * bytes verbatim (`options`, a view), so it covers the whole header and re-emits it exactly.
 */
import { internetChecksum, onesSum } from './checksum';
import { wireError, type WireError } from './error';
import { assignFields, get16, get32, needRoom, put16, put32, WireView, type FieldsOf } from './view';

export const IPV4_HEADER_LEN = 20;
export const IPV4_MAX_HEADER_LEN = 60;

export const IP_PROTO_HOPOPT = 0;
export const IP_PROTO_ICMP = 1;
export const IP_PROTO_TCP = 6;
export const IP_PROTO_UDP = 17;
export const IP_PROTO_ICMPV6 = 58;

/** Option types (RFC 791 §3.1; the IANA "IP Option Numbers" registry). */
export const IPV4_OPT_END = 0;
export const IPV4_OPT_NOP = 1;
export const IPV4_OPT_RECORD_ROUTE = 7;
export const IPV4_OPT_TIMESTAMP = 68;
export const IPV4_OPT_LOOSE_SOURCE_ROUTE = 131;
export const IPV4_OPT_STRICT_SOURCE_ROUTE = 137;
export const IPV4_OPT_ROUTER_ALERT = 148;

const E_TRUNCATED = wireError('truncated', 'ipv4', 'buffer shorter than the header');
const E_VERSION = wireError('bad-version', 'ipv4', 'version is not 4');
const E_IHL = wireError('bad-header-length', 'ipv4', 'IHL below 5');
const E_TOTAL_SHORT = wireError('bad-length', 'ipv4', 'total length below the header length');
const E_TOTAL_LONG = wireError('truncated', 'ipv4', 'total length beyond the buffer');
const E_OPTION = wireError('bad-option', 'ipv4', 'malformed option');

export class Ipv4Packet extends WireView {
  check(): WireError | null {
    if (!this.inBuffer() || this.byteLength < IPV4_HEADER_LEN) return E_TRUNCATED;
    const b = this.buffer;
    const o = this.offset;
    if (b[o] >>> 4 !== 4) return E_VERSION;
    const hl = (b[o] & 0x0f) << 2;
    if (hl < IPV4_HEADER_LEN) return E_IHL;
    if (hl > this.byteLength) return E_TRUNCATED;
    const total = get16(b, o + 2);
    if (total < hl) return E_TOTAL_SHORT;
    if (total > this.byteLength) return E_TOTAL_LONG;
    return null;
  }

  /**
   * Validate the header alone, not total length against the buffer: for the datagram quoted
   * in an ICMP error, which is usually cut short (RFC 792; RFC 1812 §4.3.2.3). After a null
   * result the header accessors are in bounds; payload accessors are not.
   */
  checkHeader(): WireError | null {
    if (!this.inBuffer() || this.byteLength < IPV4_HEADER_LEN) return E_TRUNCATED;
    const b = this.buffer;
    const o = this.offset;
    if (b[o] >>> 4 !== 4) return E_VERSION;
    const hl = (b[o] & 0x0f) << 2;
    if (hl < IPV4_HEADER_LEN) return E_IHL;
    if (hl > this.byteLength) return E_TRUNCATED;
    if (get16(b, o + 2) < hl) return E_TOTAL_SHORT;
    return null;
  }

  get version(): number {
    return this.buffer[this.offset] >>> 4;
  }

  /** Header length in bytes (IHL * 4). */
  get headerLength(): number {
    return (this.buffer[this.offset] & 0x0f) << 2;
  }
  /** Sets version 4 and IHL = bytes / 4. */
  set headerLength(bytes: number) {
    this.buffer[this.offset] = 0x40 | ((bytes >>> 2) & 0x0f);
  }

  get dscpEcn(): number {
    return this.buffer[this.offset + 1];
  }
  set dscpEcn(v: number) {
    this.buffer[this.offset + 1] = v;
  }

  get dscp(): number {
    return this.buffer[this.offset + 1] >>> 2;
  }

  get ecn(): number {
    return this.buffer[this.offset + 1] & 3;
  }

  get totalLength(): number {
    return get16(this.buffer, this.offset + 2);
  }
  set totalLength(v: number) {
    put16(this.buffer, this.offset + 2, v);
  }

  get identification(): number {
    return get16(this.buffer, this.offset + 4);
  }
  set identification(v: number) {
    put16(this.buffer, this.offset + 4, v);
  }

  get dontFragment(): boolean {
    return (this.buffer[this.offset + 6] & 0x40) !== 0;
  }
  set dontFragment(v: boolean) {
    const i = this.offset + 6;
    this.buffer[i] = v ? this.buffer[i] | 0x40 : this.buffer[i] & ~0x40;
  }

  get moreFragments(): boolean {
    return (this.buffer[this.offset + 6] & 0x20) !== 0;
  }
  set moreFragments(v: boolean) {
    const i = this.offset + 6;
    this.buffer[i] = v ? this.buffer[i] | 0x20 : this.buffer[i] & ~0x20;
  }

  /** Fragment offset in bytes (the 13-bit field times 8). */
  get fragmentOffset(): number {
    return (get16(this.buffer, this.offset + 6) & 0x1fff) << 3;
  }
  set fragmentOffset(bytes: number) {
    const i = this.offset + 6;
    put16(this.buffer, i, (get16(this.buffer, i) & 0xe000) | ((bytes >>> 3) & 0x1fff));
  }

  /** More fragments, or a non-zero offset. */
  get isFragment(): boolean {
    return (get16(this.buffer, this.offset + 6) & 0x3fff) !== 0;
  }

  get ttl(): number {
    return this.buffer[this.offset + 8];
  }
  set ttl(v: number) {
    this.buffer[this.offset + 8] = v;
  }

  get protocol(): number {
    return this.buffer[this.offset + 9];
  }
  set protocol(v: number) {
    this.buffer[this.offset + 9] = v;
  }

  get checksum(): number {
    return get16(this.buffer, this.offset + 10);
  }
  set checksum(v: number) {
    put16(this.buffer, this.offset + 10, v);
  }

  get src(): number {
    return get32(this.buffer, this.offset + 12);
  }
  set src(v: number) {
    put32(this.buffer, this.offset + 12, v);
  }

  get dst(): number {
    return get32(this.buffer, this.offset + 16);
  }
  set dst(v: number) {
    put32(this.buffer, this.offset + 16, v);
  }

  /** The option bytes (a view; empty without options). */
  get options(): Uint8Array {
    return this.buffer.subarray(this.offset + IPV4_HEADER_LEN, this.offset + this.headerLength);
  }

  /** Absolute offset of the payload in `buffer`. */
  get payloadOffset(): number {
    return this.offset + this.headerLength;
  }

  /** Payload bytes per total length (excludes Ethernet padding). */
  get payloadLength(): number {
    return this.totalLength - this.headerLength;
  }

  /** The payload as a view (allocates the view object). */
  payload(): Uint8Array {
    return this.buffer.subarray(this.payloadOffset, this.offset + this.totalLength);
  }

  /** True when the header checksum is right (the header sums to 0xffff). */
  verifyChecksum(): boolean {
    return onesSum(this.buffer, this.offset, this.headerLength) === 0xffff;
  }

  /** Compute and store the header checksum. */
  fillChecksum(): void {
    this.checksum = 0;
    this.checksum = internetChecksum(this.buffer, this.offset, this.headerLength);
  }
}

/**
 * Walks the options of an Ipv4Packet without allocating:
 *
 *     for (r.reset(ip); r.next(); ) if (r.type === IPV4_OPT_RECORD_ROUTE) ... r.dataOffset ...
 *     if (r.error) ...   // malformed list
 *
 * NOP and End of Option List are consumed silently; the walk stops at End of Option List.
 */
export class Ipv4OptionReader {
  /** The current option's type byte (copy bit, class and number; RFC 791 §3.1). */
  type = 0;
  /** The current option's whole length (type and length bytes included). */
  length = 0;
  /** Absolute offset of the current option's data (after its type and length bytes). */
  dataOffset = 0;
  /** Set when `next()` stopped on a malformed option. */
  error: WireError | null = null;
  private buf: Uint8Array = new Uint8Array(0);
  private pos = 0;
  private end = 0;

  /** Start at the first option of a checked packet. */
  reset(ip: Ipv4Packet): this {
    return this.resetAt(ip.buffer, ip.offset + IPV4_HEADER_LEN, ip.offset + ip.headerLength);
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

  /** Advance to the next option; false at the end of the list or on error (see `error`). */
  next(): boolean {
    const b = this.buf;
    while (this.pos < this.end) {
      const type = b[this.pos];
      if (type === IPV4_OPT_END) {
        this.pos = this.end;
        return false;
      }
      if (type === IPV4_OPT_NOP) {
        this.pos++;
        continue;
      }
      if (this.pos + 2 > this.end) break;
      const len = b[this.pos + 1];
      if (len < 2 || this.pos + len > this.end) break;
      this.type = type;
      this.length = len;
      this.dataOffset = this.pos + 2;
      this.pos += len;
      return true;
    }
    if (this.pos < this.end) {
      this.error = E_OPTION;
      this.pos = this.end;
    }
    return false;
  }
}

/** Validate an option list's TLV structure (not each option's own rules). */
export function checkIpv4Options(ip: Ipv4Packet, reader = new Ipv4OptionReader()): WireError | null {
  reader.reset(ip);
  while (reader.next());
  return reader.error;
}

export class Ipv4Repr {
  src = 0;
  dst = 0;
  protocol = 0;
  ttl = 64;
  /** Bytes after the header (this fragment's share when fragmented). */
  payloadLength = 0;
  dscpEcn = 0;
  identification = 0;
  dontFragment = false;
  moreFragments = false;
  /** In bytes; a multiple of 8. */
  fragmentOffset = 0;
  /** Raw option bytes (a view when parsed), or null. Emitted padded with zeros to 4 bytes. */
  options: Uint8Array | null = null;

  constructor(init?: Partial<FieldsOf<Ipv4Repr>>) {
    assignFields(this, init);
  }

  /** Parse a packet (runs `check()`; does not verify the checksum). */
  static parse(ip: Ipv4Packet, out?: Ipv4Repr): Ipv4Repr | WireError {
    const err = ip.check();
    if (err) return err;
    const r = out ?? new Ipv4Repr();
    r.src = ip.src;
    r.dst = ip.dst;
    r.protocol = ip.protocol;
    r.ttl = ip.ttl;
    r.payloadLength = ip.payloadLength;
    r.dscpEcn = ip.dscpEcn;
    r.identification = ip.identification;
    r.dontFragment = ip.dontFragment;
    r.moreFragments = ip.moreFragments;
    r.fragmentOffset = ip.fragmentOffset;
    r.options = ip.headerLength > IPV4_HEADER_LEN ? ip.options : null;
    return r;
  }

  /** 20, plus the options rounded up to 4. */
  get headerLength(): number {
    return IPV4_HEADER_LEN + (this.options ? (this.options.length + 3) & ~3 : 0);
  }

  /** Write the header, checksum included, into a view wrapped over room for it; returns its length. */
  emit(ip: Ipv4Packet): number {
    const hl = this.headerLength;
    if (hl > IPV4_MAX_HEADER_LEN) throw new RangeError(`ipv4: ${hl - IPV4_HEADER_LEN} bytes of options`);
    needRoom(ip, hl, 'ipv4');
    const b = ip.buffer;
    const o = ip.offset;
    b[o] = 0x40 | (hl >>> 2);
    b[o + 1] = this.dscpEcn;
    put16(b, o + 2, hl + this.payloadLength);
    put16(b, o + 4, this.identification);
    put16(b, o + 6, (this.dontFragment ? 0x4000 : 0) | (this.moreFragments ? 0x2000 : 0) | ((this.fragmentOffset >>> 3) & 0x1fff));
    b[o + 8] = this.ttl;
    b[o + 9] = this.protocol;
    put16(b, o + 10, 0);
    put32(b, o + 12, this.src);
    put32(b, o + 16, this.dst);
    const opts = this.options;
    if (opts) {
      b.set(opts, o + IPV4_HEADER_LEN); // header bytes, not payload: not metered
      b.fill(0, o + IPV4_HEADER_LEN + opts.length, o + hl);
    }
    put16(b, o + 10, internetChecksum(b, o, hl));
    return hl;
  }
}
