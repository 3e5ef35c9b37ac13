/**
 * Ethernet II frames (IEEE 802.3-2018 §3.1.1; the EtherType registry of RFC 9542 §3): 6-byte
 * destination, 6-byte source, 2-byte EtherType, payload. What usernet sees never carries the
 * preamble or the FCS (taps and virtio strip both). VLAN tags (802.1Q, EtherType 0x8100) are not
 * parsed: the view simply reports 0x8100 and callers drop such frames.
 *
 * `EthernetFrame` is the re-pointable view; `EthernetRepr` the parsed header (its MACs are copies,
 * so a Repr outlives the buffer it came from).
 */
import { writableBytes } from './address';
import { wireError, type WireError } from './error';
import { assignFields, copyField, fieldEquals, get16, needRoom, put16, WireView, type FieldsOf } from './view';

export const ETHERNET_HEADER_LEN = 14;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERTYPE_IPV6 = 0x86dd;

const E_TRUNCATED = wireError('truncated', 'ethernet', 'frame shorter than 14 bytes');

export class EthernetFrame extends WireView {
  check(): WireError | null {
    if (!this.inBuffer() || this.byteLength < ETHERNET_HEADER_LEN) return E_TRUNCATED;
    return null;
  }

  /** Destination MAC (a view into the frame). */
  get dst(): Uint8Array {
    return this.buffer.subarray(this.offset, this.offset + 6);
  }
  set dst(mac: Uint8Array) {
    copyField(mac, 0, this.buffer, this.offset, 6);
  }

  /** Source MAC (a view into the frame). */
  get src(): Uint8Array {
    return this.buffer.subarray(this.offset + 6, this.offset + 12);
  }
  set src(mac: Uint8Array) {
    copyField(mac, 0, this.buffer, this.offset + 6, 6);
  }

  /** Copy the destination MAC into `out` (no allocation). */
  copyDst(out: Uint8Array, outOffset = 0): void {
    copyField(this.buffer, this.offset, out, outOffset, 6);
  }

  copySrc(out: Uint8Array, outOffset = 0): void {
    copyField(this.buffer, this.offset + 6, out, outOffset, 6);
  }

  dstEquals(mac: Uint8Array): boolean {
    return fieldEquals(this.buffer, this.offset, mac, 0, 6);
  }

  srcEquals(mac: Uint8Array): boolean {
    return fieldEquals(this.buffer, this.offset + 6, mac, 0, 6);
  }

  /** Group bit of the destination: multicast or broadcast. */
  get dstIsMulticast(): boolean {
    return (this.buffer[this.offset] & 1) === 1;
  }

  get dstIsBroadcast(): boolean {
    const b = this.buffer;
    const o = this.offset;
    return (b[o] & b[o + 1] & b[o + 2] & b[o + 3] & b[o + 4] & b[o + 5]) === 0xff;
  }

  get etherType(): number {
    return get16(this.buffer, this.offset + 12);
  }
  set etherType(v: number) {
    put16(this.buffer, this.offset + 12, v);
  }

  /** Absolute offset of the payload in `buffer`. */
  get payloadOffset(): number {
    return this.offset + ETHERNET_HEADER_LEN;
  }

  get payloadLength(): number {
    return this.byteLength - ETHERNET_HEADER_LEN;
  }

  /** The payload as a view (allocates the view object). */
  payload(): Uint8Array {
    return this.buffer.subarray(this.offset + ETHERNET_HEADER_LEN, this.offset + this.byteLength);
  }
}

export class EthernetRepr {
  dst: Uint8Array = new Uint8Array(6);
  src: Uint8Array = new Uint8Array(6);
  etherType = 0;

  constructor(init?: Partial<FieldsOf<EthernetRepr>>) {
    assignFields(this, init);
  }

  static parse(frame: EthernetFrame, out?: EthernetRepr): EthernetRepr | WireError {
    const err = frame.check();
    if (err) return err;
    const r = out ?? new EthernetRepr();
    r.dst = writableBytes(r.dst, 6);
    r.src = writableBytes(r.src, 6);
    frame.copyDst(r.dst);
    frame.copySrc(r.src);
    r.etherType = frame.etherType;
    return r;
  }

  get headerLength(): number {
    return ETHERNET_HEADER_LEN;
  }

  /** Write the 14-byte header; returns its length. */
  emit(frame: EthernetFrame): number {
    needRoom(frame, ETHERNET_HEADER_LEN, 'ethernet');
    frame.dst = this.dst;
    frame.src = this.src;
    frame.etherType = this.etherType;
    return ETHERNET_HEADER_LEN;
  }
}
