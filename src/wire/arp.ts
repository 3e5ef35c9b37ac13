/**
 * ARP (RFC 826), as used by IPv4 over Ethernet only (hardware type 1, protocol type 0x0800,
 * hardware length 6, protocol length 4: a 28-byte packet). `check()` accepts only that pairing
 * (anything else is 'unsupported'), so the fixed-offset accessors below are always in bounds.
 * Gratuitous ARP (RFC 5227 §3) is an ordinary request or reply whose sender and target IP match.
 */
import { writableBytes } from './address';
import { wireError, type WireError } from './error';
import {
  assignFields,
  copyField,
  fieldEquals,
  get16,
  get32,
  needRoom,
  put16,
  put32,
  WireView,
  type FieldsOf,
} from './view';

export const ARP_PACKET_LEN = 28;
export const ARP_HTYPE_ETHERNET = 1;
export const ARP_PTYPE_IPV4 = 0x0800;
export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;

const E_TRUNCATED = wireError('truncated', 'arp', 'packet shorter than 28 bytes');
const E_UNSUPPORTED = wireError('unsupported', 'arp', 'not IPv4 over Ethernet');

export class ArpPacket extends WireView {
  check(): WireError | null {
    if (!this.inBuffer() || this.byteLength < 8) return E_TRUNCATED;
    const b = this.buffer;
    const o = this.offset;
    if (get16(b, o) !== ARP_HTYPE_ETHERNET || get16(b, o + 2) !== ARP_PTYPE_IPV4 || b[o + 4] !== 6 || b[o + 5] !== 4) {
      return E_UNSUPPORTED;
    }
    if (this.byteLength < ARP_PACKET_LEN) return E_TRUNCATED;
    return null;
  }

  get hardwareType(): number {
    return get16(this.buffer, this.offset);
  }
  get protocolType(): number {
    return get16(this.buffer, this.offset + 2);
  }
  get hardwareLength(): number {
    return this.buffer[this.offset + 4];
  }
  get protocolLength(): number {
    return this.buffer[this.offset + 5];
  }

  get operation(): number {
    return get16(this.buffer, this.offset + 6);
  }
  set operation(v: number) {
    put16(this.buffer, this.offset + 6, v);
  }

  /** Sender hardware address (a view). */
  get senderMac(): Uint8Array {
    return this.buffer.subarray(this.offset + 8, this.offset + 14);
  }
  set senderMac(mac: Uint8Array) {
    copyField(mac, 0, this.buffer, this.offset + 8, 6);
  }

  get senderIp(): number {
    return get32(this.buffer, this.offset + 14);
  }
  set senderIp(v: number) {
    put32(this.buffer, this.offset + 14, v);
  }

  /** Target hardware address (a view). */
  get targetMac(): Uint8Array {
    return this.buffer.subarray(this.offset + 18, this.offset + 24);
  }
  set targetMac(mac: Uint8Array) {
    copyField(mac, 0, this.buffer, this.offset + 18, 6);
  }

  get targetIp(): number {
    return get32(this.buffer, this.offset + 24);
  }
  set targetIp(v: number) {
    put32(this.buffer, this.offset + 24, v);
  }

  copySenderMac(out: Uint8Array, outOffset = 0): void {
    copyField(this.buffer, this.offset + 8, out, outOffset, 6);
  }

  copyTargetMac(out: Uint8Array, outOffset = 0): void {
    copyField(this.buffer, this.offset + 18, out, outOffset, 6);
  }

  senderMacEquals(mac: Uint8Array): boolean {
    return fieldEquals(this.buffer, this.offset + 8, mac, 0, 6);
  }
}

export class ArpRepr {
  operation = ARP_REQUEST;
  senderMac: Uint8Array = new Uint8Array(6);
  senderIp = 0;
  targetMac: Uint8Array = new Uint8Array(6);
  targetIp = 0;

  constructor(init?: Partial<FieldsOf<ArpRepr>>) {
    assignFields(this, init);
  }

  static parse(p: ArpPacket, out?: ArpRepr): ArpRepr | WireError {
    const err = p.check();
    if (err) return err;
    const r = out ?? new ArpRepr();
    r.senderMac = writableBytes(r.senderMac, 6);
    r.targetMac = writableBytes(r.targetMac, 6);
    r.operation = p.operation;
    p.copySenderMac(r.senderMac);
    r.senderIp = p.senderIp;
    p.copyTargetMac(r.targetMac);
    r.targetIp = p.targetIp;
    return r;
  }

  get bufferLength(): number {
    return ARP_PACKET_LEN;
  }

  /** Write all 28 bytes; returns 28. */
  emit(p: ArpPacket): number {
    needRoom(p, ARP_PACKET_LEN, 'arp');
    const b = p.buffer;
    const o = p.offset;
    put16(b, o, ARP_HTYPE_ETHERNET);
    put16(b, o + 2, ARP_PTYPE_IPV4);
    b[o + 4] = 6;
    b[o + 5] = 4;
    p.operation = this.operation;
    p.senderMac = this.senderMac;
    p.senderIp = this.senderIp;
    p.targetMac = this.targetMac;
    p.targetIp = this.targetIp;
    return ARP_PACKET_LEN;
  }
}
