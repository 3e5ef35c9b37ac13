/**
 * IPv6 headers (RFC 8200 §3): a fixed 40-byte header,
 *
 *    0-3    version(4) traffic class(8) flow label(20)
 *    4-5    payload length (everything after these 40 bytes, extension headers included)
 *    6      next header   7 hop limit   8-23 source   24-39 destination
 *
 * followed by a chain of extension headers (RFC 8200 §4) before the upper-layer header.
 * `upperLayer()` walks the chain: hop-by-hop options (only allowed first, §4.3), routing (§4.4),
 * fragment (§4.5), destination options (§4.6) and the authentication header (RFC 4302 §2, whose
 * length counts 4-byte units). A fragment header is reported (offset, M flag, identification);
 * behind a non-first fragment there is no upper-layer header, only fragment data, so the walk
 * stops there. ESP (50) and No Next Header (59) are returned as the "protocol".
 *
 * Jumbograms (payload length 0 with a Jumbo Payload option, RFC 2675) are not supported: a
 * zero payload length means an empty payload. Addresses are 16-byte Uint8Arrays.
 */
import { writableBytes } from './address';
import { wireError, type WireError } from './error';
import { assignFields, copyField, fieldEquals, get16, get32, needRoom, put16, WireView, type FieldsOf } from './view';

export const IPV6_HEADER_LEN = 40;

/** Extension header numbers (RFC 8200 §4.1; IANA "IPv6 Extension Header Types"). */
export const IPV6_HOP_BY_HOP = 0;
export const IPV6_ROUTING = 43;
export const IPV6_FRAGMENT = 44;
export const IPV6_ESP = 50;
export const IPV6_AUTH = 51;
export const IPV6_NO_NEXT_HEADER = 59;
export const IPV6_DEST_OPTIONS = 60;

/** Extension headers walked before giving up (a real chain has a handful). */
const MAX_EXTENSION_HEADERS = 16;

const E_TRUNCATED = wireError('truncated', 'ipv6', 'buffer shorter than the header');
const E_VERSION = wireError('bad-version', 'ipv6', 'version is not 6');
const E_PAYLOAD_LONG = wireError('truncated', 'ipv6', 'payload length beyond the buffer');
const E_EXT_TRUNCATED = wireError('truncated', 'ipv6', 'extension header beyond the payload');
const E_HOP_BY_HOP = wireError('bad-option', 'ipv6', 'hop-by-hop options header not first');
const E_TOO_MANY = wireError('unsupported', 'ipv6', 'too many extension headers');

/** Where the upper layer starts, as found by `Ipv6Packet.upperLayer()`. One per view, reused. */
export class Ipv6UpperLayer {
  /** Next header value of the last header walked: 6, 17, 58, ... (or 50, 59). */
  protocol = 0;
  /** Absolute offset of the upper-layer header (or of fragment data, see `fragmentOffset`). */
  offset = 0;
  /** Bytes from `offset` to the end of the IPv6 payload. */
  length = 0;
  /** A fragment header was crossed. */
  fragment = false;
  /** Its offset in bytes; non-zero means `offset` points at fragment data, not a header. */
  fragmentOffset = 0;
  moreFragments = false;
  fragmentId = 0;
  /** Absolute offset of the fragment header itself (-1 without one). */
  fragmentHeaderOffset = -1;
}

export class Ipv6Packet extends WireView {
  private readonly upper = new Ipv6UpperLayer();

  check(): WireError | null {
    if (!this.inBuffer() || this.byteLength < IPV6_HEADER_LEN) return E_TRUNCATED;
    if (this.buffer[this.offset] >>> 4 !== 6) return E_VERSION;
    if (IPV6_HEADER_LEN + get16(this.buffer, this.offset + 4) > this.byteLength) return E_PAYLOAD_LONG;
    return null;
  }

  /** Validate the fixed header alone (a packet quoted, cut short, in an ICMPv6 error). */
  checkHeader(): WireError | null {
    if (!this.inBuffer() || this.byteLength < IPV6_HEADER_LEN) return E_TRUNCATED;
    if (this.buffer[this.offset] >>> 4 !== 6) return E_VERSION;
    return null;
  }

  get version(): number {
    return this.buffer[this.offset] >>> 4;
  }

  get trafficClass(): number {
    return (get16(this.buffer, this.offset) >>> 4) & 0xff;
  }
  set trafficClass(v: number) {
    const b = this.buffer;
    const o = this.offset;
    b[o] = (b[o] & 0xf0) | ((v >>> 4) & 0x0f);
    b[o + 1] = ((v & 0x0f) << 4) | (b[o + 1] & 0x0f);
  }

  get flowLabel(): number {
    return get32(this.buffer, this.offset) & 0xfffff;
  }
  set flowLabel(v: number) {
    const b = this.buffer;
    const o = this.offset;
    b[o + 1] = (b[o + 1] & 0xf0) | ((v >>> 16) & 0x0f);
    b[o + 2] = v >>> 8;
    b[o + 3] = v;
  }

  get payloadLength(): number {
    return get16(this.buffer, this.offset + 4);
  }
  set payloadLength(v: number) {
    put16(this.buffer, this.offset + 4, v);
  }

  /** The first next-header value (the fixed header's). */
  get nextHeader(): number {
    return this.buffer[this.offset + 6];
  }
  set nextHeader(v: number) {
    this.buffer[this.offset + 6] = v;
  }

  get hopLimit(): number {
    return this.buffer[this.offset + 7];
  }
  set hopLimit(v: number) {
    this.buffer[this.offset + 7] = v;
  }

  /** Source address (a view). */
  get src(): Uint8Array {
    return this.buffer.subarray(this.offset + 8, this.offset + 24);
  }
  set src(a: Uint8Array) {
    copyField(a, 0, this.buffer, this.offset + 8, 16);
  }

  /** Destination address (a view). */
  get dst(): Uint8Array {
    return this.buffer.subarray(this.offset + 24, this.offset + 40);
  }
  set dst(a: Uint8Array) {
    copyField(a, 0, this.buffer, this.offset + 24, 16);
  }

  copySrc(out: Uint8Array, outOffset = 0): void {
    copyField(this.buffer, this.offset + 8, out, outOffset, 16);
  }

  copyDst(out: Uint8Array, outOffset = 0): void {
    copyField(this.buffer, this.offset + 24, out, outOffset, 16);
  }

  srcEquals(a: Uint8Array): boolean {
    return fieldEquals(this.buffer, this.offset + 8, a, 0, 16);
  }

  dstEquals(a: Uint8Array): boolean {
    return fieldEquals(this.buffer, this.offset + 24, a, 0, 16);
  }

  /** Absolute offset of the payload (the first extension header, if any). */
  get payloadOffset(): number {
    return this.offset + IPV6_HEADER_LEN;
  }

  /**
   * Walk the extension headers of a checked packet. Returns this view's one reused
   * Ipv6UpperLayer (valid until the next call) or a WireError for a malformed chain.
   */
  upperLayer(): Ipv6UpperLayer | WireError {
    const b = this.buffer;
    const r = this.upper;
    r.fragment = false;
    r.fragmentOffset = 0;
    r.moreFragments = false;
    r.fragmentId = 0;
    r.fragmentHeaderOffset = -1;
    // Clamped to the view so a quoted packet (checkHeader only, cut short) is walked safely.
    const end = Math.min(this.offset + IPV6_HEADER_LEN + this.payloadLength, this.offset + this.byteLength);
    let nh = b[this.offset + 6];
    let pos = this.offset + IPV6_HEADER_LEN;
    for (let n = 0; n < MAX_EXTENSION_HEADERS; n++) {
      switch (nh) {
        case IPV6_HOP_BY_HOP:
        case IPV6_ROUTING:
        case IPV6_DEST_OPTIONS:
        case IPV6_AUTH: {
          if (nh === IPV6_HOP_BY_HOP && n !== 0) return E_HOP_BY_HOP;
          if (pos + 2 > end) return E_EXT_TRUNCATED;
          const len = nh === IPV6_AUTH ? (b[pos + 1] + 2) << 2 : (b[pos + 1] + 1) << 3;
          if (pos + len > end) return E_EXT_TRUNCATED;
          nh = b[pos];
          pos += len;
          break;
        }
        case IPV6_FRAGMENT: {
          if (pos + 8 > end) return E_EXT_TRUNCATED;
          r.fragment = true;
          r.fragmentHeaderOffset = pos;
          r.fragmentOffset = get16(b, pos + 2) & 0xfff8;
          r.moreFragments = (b[pos + 3] & 1) === 1;
          r.fragmentId = get32(b, pos + 4);
          nh = b[pos];
          pos += 8;
          if (r.fragmentOffset !== 0) return this.found(nh, pos, end);
          break;
        }
        default:
          return this.found(nh, pos, end);
      }
    }
    return E_TOO_MANY;
  }

  private found(protocol: number, pos: number, end: number): Ipv6UpperLayer {
    const r = this.upper;
    r.protocol = protocol;
    r.offset = pos;
    r.length = end - pos;
    return r;
  }
}

export class Ipv6Repr {
  src: Uint8Array = new Uint8Array(16);
  dst: Uint8Array = new Uint8Array(16);
  /** The fixed header's next header (the first extension header's type when there is one). */
  nextHeader = 0;
  /** Bytes after the fixed header (extension headers included). */
  payloadLength = 0;
  hopLimit = 64;
  trafficClass = 0;
  flowLabel = 0;

  constructor(init?: Partial<FieldsOf<Ipv6Repr>>) {
    assignFields(this, init);
  }

  /** Parse the fixed header (runs `check()`; extension headers are `upperLayer()`'s business). */
  static parse(ip: Ipv6Packet, out?: Ipv6Repr): Ipv6Repr | WireError {
    const err = ip.check();
    if (err) return err;
    const r = out ?? new Ipv6Repr();
    r.src = writableBytes(r.src, 16);
    r.dst = writableBytes(r.dst, 16);
    ip.copySrc(r.src);
    ip.copyDst(r.dst);
    r.nextHeader = ip.nextHeader;
    r.payloadLength = ip.payloadLength;
    r.hopLimit = ip.hopLimit;
    r.trafficClass = ip.trafficClass;
    r.flowLabel = ip.flowLabel;
    return r;
  }

  get headerLength(): number {
    return IPV6_HEADER_LEN;
  }

  /** Write the 40-byte fixed header; returns 40. */
  emit(ip: Ipv6Packet): number {
    needRoom(ip, IPV6_HEADER_LEN, 'ipv6');
    const b = ip.buffer;
    const o = ip.offset;
    b[o] = 0x60 | ((this.trafficClass >>> 4) & 0x0f);
    b[o + 1] = ((this.trafficClass & 0x0f) << 4) | ((this.flowLabel >>> 16) & 0x0f);
    b[o + 2] = this.flowLabel >>> 8;
    b[o + 3] = this.flowLabel;
    put16(b, o + 4, this.payloadLength);
    b[o + 6] = this.nextHeader;
    b[o + 7] = this.hopLimit;
    copyField(this.src, 0, b, o + 8, 16);
    copyField(this.dst, 0, b, o + 24, 16);
    return IPV6_HEADER_LEN;
  }
}
