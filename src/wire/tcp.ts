/**
 * TCP segments (RFC 9293 §3.1):
 *
 *    0-1 source port   2-3 destination port   4-7 sequence number   8-11 acknowledgment number
 *    12  data offset(4, in 32-bit words) reserved(4)   13 flags CWR ECE URG ACK PSH RST SYN FIN
 *    14-15 window   16-17 checksum (pseudo header + header + data)   18-19 urgent pointer
 *    20..  options (data offset*4 - 20 bytes), then data
 *
 * Options (RFC 9293 §3.2): End of Option List (0) and No-Operation (1) are one byte; the others
 * are kind, length, data. Modelled: MSS (2, length 4, RFC 9293 §3.7.1), window scale (3, length
 * 3, RFC 7323 §2; shifts above 14 are treated as 14, §2.3), SACK-permitted (4, length 2, RFC 2018
 * §2), SACK (5, length 2 + 8n, n = 1..4, RFC 2018 §3) and timestamps (8, length 10, RFC 7323 §3).
 * Unknown kinds are skipped by their length. A wrong length for a known kind is 'bad-option'.
 *
 * `parseTcpOptions` fills a caller-owned `TcpOptionsRepr` (SACK blocks in its reused
 * Uint32Array): no allocation per segment. `emitTcpOptions` writes the layout Linux uses (MSS;
 * SACK-permitted folded into the timestamp word, or NOP NOP TS; NOP NOP SACK-permitted without
 * timestamps; NOP window scale; NOP NOP SACK blocks), so Linux's segments re-emit byte for byte.
 *
 * Sequence numbers compare modulo 2^32 (RFC 9293 §3.4): seqLt(a, b) is "a before b" when the two
 * are less than 2^31 apart. All sequence/ack values are uint32 numbers (>>> 0).
 *
 * The ACK flag getter is `ackFlag` because `ack` is the acknowledgment number.
 */
import { onesSum, pseudoHeaderSumV4, pseudoHeaderSumV6 } from './checksum';
import { wireError, type WireError } from './error';
import { IP_PROTO_TCP } from './ipv4';
import { assignFields, get16, get32, needRoom, put16, put32, WireView, type FieldsOf } from './view';

export const TCP_HEADER_LEN = 20;
export const TCP_MAX_HEADER_LEN = 60;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;

export const TCP_OPT_END = 0;
export const TCP_OPT_NOP = 1;
export const TCP_OPT_MSS = 2;
export const TCP_OPT_WINDOW_SCALE = 3;
export const TCP_OPT_SACK_PERMITTED = 4;
export const TCP_OPT_SACK = 5;
export const TCP_OPT_TIMESTAMPS = 8;

/** Largest window shift (RFC 7323 §2.3). */
export const TCP_MAX_WINDOW_SCALE = 14;
/** `TcpOptionsRepr.windowScale` when the option is absent. */
export const TCP_NO_WINDOW_SCALE = -1;
export const TCP_MAX_SACK_BLOCKS = 4;

const E_TRUNCATED = wireError('truncated', 'tcp', 'segment shorter than its header');
const E_DATA_OFFSET = wireError('bad-header-length', 'tcp', 'data offset below 5');
const E_OPTION = wireError('bad-option', 'tcp', 'malformed option');

/* ---------------------------------------------------------------- sequence numbers */

/** a < b in sequence space. */
export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}
export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}
export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}
export function seqGe(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}
/** a + n modulo 2^32 (n may be negative). */
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}
/** The signed distance a - b (an int32: positive when a is after b). */
export function seqSub(a: number, b: number): number {
  return (a - b) | 0;
}

/* ---------------------------------------------------------------- the view */

export class TcpSegment extends WireView {
  check(): WireError | null {
    if (!this.inBuffer() || this.byteLength < TCP_HEADER_LEN) return E_TRUNCATED;
    const hl = (this.buffer[this.offset + 12] >>> 4) << 2;
    if (hl < TCP_HEADER_LEN) return E_DATA_OFFSET;
    if (hl > this.byteLength) return E_TRUNCATED;
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

  get seq(): number {
    return get32(this.buffer, this.offset + 4);
  }
  set seq(v: number) {
    put32(this.buffer, this.offset + 4, v);
  }

  /** The acknowledgment number (the flag is `ackFlag`). */
  get ack(): number {
    return get32(this.buffer, this.offset + 8);
  }
  set ack(v: number) {
    put32(this.buffer, this.offset + 8, v);
  }

  /** Header length in bytes (data offset * 4). */
  get dataOffset(): number {
    return (this.buffer[this.offset + 12] >>> 4) << 2;
  }
  set dataOffset(bytes: number) {
    const i = this.offset + 12;
    this.buffer[i] = ((bytes >>> 2) << 4) | (this.buffer[i] & 0x0f);
  }

  get headerLength(): number {
    return this.dataOffset;
  }

  /** The flags byte (TCP_FIN ... TCP_CWR). */
  get flags(): number {
    return this.buffer[this.offset + 13];
  }
  set flags(v: number) {
    this.buffer[this.offset + 13] = v;
  }

  get fin(): boolean {
    return (this.buffer[this.offset + 13] & TCP_FIN) !== 0;
  }
  get syn(): boolean {
    return (this.buffer[this.offset + 13] & TCP_SYN) !== 0;
  }
  get rst(): boolean {
    return (this.buffer[this.offset + 13] & TCP_RST) !== 0;
  }
  get psh(): boolean {
    return (this.buffer[this.offset + 13] & TCP_PSH) !== 0;
  }
  get ackFlag(): boolean {
    return (this.buffer[this.offset + 13] & TCP_ACK) !== 0;
  }
  get urg(): boolean {
    return (this.buffer[this.offset + 13] & TCP_URG) !== 0;
  }
  get ece(): boolean {
    return (this.buffer[this.offset + 13] & TCP_ECE) !== 0;
  }
  get cwr(): boolean {
    return (this.buffer[this.offset + 13] & TCP_CWR) !== 0;
  }

  get window(): number {
    return get16(this.buffer, this.offset + 14);
  }
  set window(v: number) {
    put16(this.buffer, this.offset + 14, v);
  }

  get checksum(): number {
    return get16(this.buffer, this.offset + 16);
  }
  set checksum(v: number) {
    put16(this.buffer, this.offset + 16, v);
  }

  get urgent(): number {
    return get16(this.buffer, this.offset + 18);
  }
  set urgent(v: number) {
    put16(this.buffer, this.offset + 18, v);
  }

  /** The option bytes (a view). */
  get options(): Uint8Array {
    return this.buffer.subarray(this.offset + TCP_HEADER_LEN, this.offset + this.dataOffset);
  }

  /** Absolute offset of the data. */
  get payloadOffset(): number {
    return this.offset + this.dataOffset;
  }

  /** Data bytes: the wrapped span (the IP payload) minus the header. */
  get payloadLength(): number {
    return this.byteLength - this.dataOffset;
  }

  payload(): Uint8Array {
    return this.buffer.subarray(this.offset + this.dataOffset, this.offset + this.byteLength);
  }

  /** Sequence space the segment occupies: data, plus one each for SYN and FIN. */
  get segmentLength(): number {
    const f = this.buffer[this.offset + 13];
    return this.payloadLength + (f & TCP_SYN ? 1 : 0) + (f & TCP_FIN ? 1 : 0);
  }

  verifyChecksumV4(src: number, dst: number): boolean {
    const len = this.byteLength;
    return onesSum(this.buffer, this.offset, len, pseudoHeaderSumV4(src, dst, IP_PROTO_TCP, len)) === 0xffff;
  }

  fillChecksumV4(src: number, dst: number): void {
    const len = this.byteLength;
    this.checksum = 0;
    this.checksum = ~onesSum(this.buffer, this.offset, len, pseudoHeaderSumV4(src, dst, IP_PROTO_TCP, len)) & 0xffff;
  }

  verifyChecksumV6(src: Uint8Array, dst: Uint8Array): boolean {
    const len = this.byteLength;
    return onesSum(this.buffer, this.offset, len, pseudoHeaderSumV6(src, dst, IP_PROTO_TCP, len)) === 0xffff;
  }

  fillChecksumV6(src: Uint8Array, dst: Uint8Array): void {
    const len = this.byteLength;
    this.checksum = 0;
    this.checksum = ~onesSum(this.buffer, this.offset, len, pseudoHeaderSumV6(src, dst, IP_PROTO_TCP, len)) & 0xffff;
  }
}

/* ---------------------------------------------------------------- options */

/** The options of one segment; reuse one per stage (`parseTcpOptions` resets it). */
export class TcpOptionsRepr {
  /** 0 when absent. */
  mss = 0;
  /** Shift count 0..14, or TCP_NO_WINDOW_SCALE (-1) when absent. */
  windowScale = TCP_NO_WINDOW_SCALE;
  sackPermitted = false;
  /** Up to 4 blocks as [left0, right0, left1, right1, ...]; `sackCount` are valid. */
  readonly sackBlocks = new Uint32Array(2 * TCP_MAX_SACK_BLOCKS);
  sackCount = 0;
  hasTimestamps = false;
  tsVal = 0;
  tsEcr = 0;

  constructor(init?: Partial<FieldsOf<TcpOptionsRepr>>) {
    assignFields(this, init);
  }

  reset(): this {
    this.mss = 0;
    this.windowScale = TCP_NO_WINDOW_SCALE;
    this.sackPermitted = false;
    this.sackCount = 0;
    this.hasTimestamps = false;
    this.tsVal = 0;
    this.tsEcr = 0;
    return this;
  }

  copyFrom(o: TcpOptionsRepr): this {
    this.mss = o.mss;
    this.windowScale = o.windowScale;
    this.sackPermitted = o.sackPermitted;
    this.sackBlocks.set(o.sackBlocks);
    this.sackCount = o.sackCount;
    this.hasTimestamps = o.hasTimestamps;
    this.tsVal = o.tsVal;
    this.tsEcr = o.tsEcr;
    return this;
  }

  /** Append a SACK block (ignored past 4). */
  addSackBlock(left: number, right: number): void {
    if (this.sackCount >= TCP_MAX_SACK_BLOCKS) return;
    this.sackBlocks[2 * this.sackCount] = left;
    this.sackBlocks[2 * this.sackCount + 1] = right;
    this.sackCount++;
  }
}

/** Parse the options of a checked segment into `out` (reset first). */
export function parseTcpOptions(seg: TcpSegment, out: TcpOptionsRepr): WireError | null {
  return parseTcpOptionsAt(seg.buffer, seg.offset + TCP_HEADER_LEN, seg.offset + seg.dataOffset, out);
}

/** Parse the option bytes buf[start..end) into `out` (reset first). */
export function parseTcpOptionsAt(buf: Uint8Array, start: number, end: number, out: TcpOptionsRepr): WireError | null {
  out.reset();
  let i = start;
  while (i < end) {
    const kind = buf[i];
    if (kind === TCP_OPT_END) break;
    if (kind === TCP_OPT_NOP) {
      i++;
      continue;
    }
    if (i + 2 > end) return E_OPTION;
    const len = buf[i + 1];
    if (len < 2 || i + len > end) return E_OPTION;
    switch (kind) {
      case TCP_OPT_MSS:
        if (len !== 4) return E_OPTION;
        out.mss = get16(buf, i + 2);
        break;
      case TCP_OPT_WINDOW_SCALE: {
        if (len !== 3) return E_OPTION;
        const s = buf[i + 2];
        out.windowScale = s > TCP_MAX_WINDOW_SCALE ? TCP_MAX_WINDOW_SCALE : s;
        break;
      }
      case TCP_OPT_SACK_PERMITTED:
        if (len !== 2) return E_OPTION;
        out.sackPermitted = true;
        break;
      case TCP_OPT_SACK: {
        const n = (len - 2) >>> 3;
        if ((len - 2) % 8 !== 0 || n < 1 || n > TCP_MAX_SACK_BLOCKS) return E_OPTION;
        out.sackCount = 0;
        for (let k = 0; k < n; k++) out.addSackBlock(get32(buf, i + 2 + 8 * k), get32(buf, i + 6 + 8 * k));
        break;
      }
      case TCP_OPT_TIMESTAMPS:
        if (len !== 10) return E_OPTION;
        out.hasTimestamps = true;
        out.tsVal = get32(buf, i + 2);
        out.tsEcr = get32(buf, i + 6);
        break;
      default:
        break; // unknown kind: skipped by its length (RFC 9293 §3.2)
    }
    i += len;
  }
  return null;
}

/** Bytes `emitTcpOptions` will write for `o` (a multiple of 4). */
export function tcpOptionsLength(o: TcpOptionsRepr): number {
  let n = 0;
  if (o.mss > 0) n += 4;
  if (o.hasTimestamps) n += 12;
  else if (o.sackPermitted) n += 4;
  if (o.windowScale >= 0) n += 4;
  if (o.sackCount > 0) n += 4 + 8 * o.sackCount;
  return n;
}

/** Write `o` at buf[off..] in Linux's layout; returns the bytes written (a multiple of 4). */
export function emitTcpOptions(o: TcpOptionsRepr, buf: Uint8Array, off: number): number {
  let i = off;
  if (o.mss > 0) {
    buf[i] = TCP_OPT_MSS;
    buf[i + 1] = 4;
    put16(buf, i + 2, o.mss);
    i += 4;
  }
  if (o.hasTimestamps) {
    if (o.sackPermitted) {
      buf[i] = TCP_OPT_SACK_PERMITTED;
      buf[i + 1] = 2;
    } else {
      buf[i] = TCP_OPT_NOP;
      buf[i + 1] = TCP_OPT_NOP;
    }
    buf[i + 2] = TCP_OPT_TIMESTAMPS;
    buf[i + 3] = 10;
    put32(buf, i + 4, o.tsVal);
    put32(buf, i + 8, o.tsEcr);
    i += 12;
  } else if (o.sackPermitted) {
    buf[i] = TCP_OPT_NOP;
    buf[i + 1] = TCP_OPT_NOP;
    buf[i + 2] = TCP_OPT_SACK_PERMITTED;
    buf[i + 3] = 2;
    i += 4;
  }
  if (o.windowScale >= 0) {
    buf[i] = TCP_OPT_NOP;
    buf[i + 1] = TCP_OPT_WINDOW_SCALE;
    buf[i + 2] = 3;
    buf[i + 3] = o.windowScale;
    i += 4;
  }
  if (o.sackCount > 0) {
    const n = Math.min(o.sackCount, TCP_MAX_SACK_BLOCKS);
    buf[i] = TCP_OPT_NOP;
    buf[i + 1] = TCP_OPT_NOP;
    buf[i + 2] = TCP_OPT_SACK;
    buf[i + 3] = 2 + 8 * n;
    i += 4;
    for (let k = 0; k < n; k++) {
      put32(buf, i, o.sackBlocks[2 * k]);
      put32(buf, i + 4, o.sackBlocks[2 * k + 1]);
      i += 8;
    }
  }
  return i - off;
}

/* ---------------------------------------------------------------- the Repr */

export class TcpRepr {
  srcPort = 0;
  dstPort = 0;
  seq = 0;
  ack = 0;
  /** TCP_FIN | TCP_SYN | ... */
  flags = 0;
  /** The raw 16-bit window field (unscaled). */
  window = 0;
  urgent = 0;
  options: TcpOptionsRepr = new TcpOptionsRepr();
  /** Data bytes after the header (from the wrapped span on parse; informational on emit). */
  payloadLength = 0;

  constructor(init?: Partial<FieldsOf<TcpRepr>>) {
    assignFields(this, init);
  }

  /** Parse header and options (runs `check()`; does not verify the checksum). */
  static parse(seg: TcpSegment, out?: TcpRepr): TcpRepr | WireError {
    const err = seg.check();
    if (err) return err;
    const r = out ?? new TcpRepr();
    const oerr = parseTcpOptions(seg, r.options);
    if (oerr) return oerr;
    r.srcPort = seg.srcPort;
    r.dstPort = seg.dstPort;
    r.seq = seg.seq;
    r.ack = seg.ack;
    r.flags = seg.flags;
    r.window = seg.window;
    r.urgent = seg.urgent;
    r.payloadLength = seg.payloadLength;
    return r;
  }

  get headerLength(): number {
    return TCP_HEADER_LEN + tcpOptionsLength(this.options);
  }

  /**
   * Write header and options with checksum 0; returns the header length. Put the data in
   * place, wrap the view over header + data, then `fillChecksumV4`/`V6`.
   */
  emit(seg: TcpSegment): number {
    const hl = this.headerLength;
    if (hl > TCP_MAX_HEADER_LEN) throw new RangeError(`tcp: ${hl - TCP_HEADER_LEN} bytes of options`);
    needRoom(seg, hl, 'tcp');
    const b = seg.buffer;
    const o = seg.offset;
    put16(b, o, this.srcPort);
    put16(b, o + 2, this.dstPort);
    put32(b, o + 4, this.seq);
    put32(b, o + 8, this.ack);
    b[o + 12] = (hl >>> 2) << 4;
    b[o + 13] = this.flags;
    put16(b, o + 14, this.window);
    put16(b, o + 16, 0);
    put16(b, o + 18, this.urgent);
    emitTcpOptions(this.options, b, o + TCP_HEADER_LEN);
    return hl;
  }
}
