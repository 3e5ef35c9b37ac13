/**
 * SoftwareOffload: what a NIC without offloads needs done to a Frame that still carries virtio-net
 * offload metadata (frame.ts) before it can go on the wire — an RTL8139 has no checksum or
 * segmentation offload, so the NIC model does in software what the kernel's
 * skb_checksum_help/skb_segment would have done:
 *
 *  - NEEDS_CSUM, no GSO: the checksum over data[csumStart..] is completed (virtio 1.x §5.1.6.2,
 *    partial-checksum.ts) and handed to the sink as a patch (offset + value) — the frame's bytes
 *    are borrowed, so they are not modified; the receive path writes the value as it copies.
 *  - GSO_TCPV4 / GSO_TCPV6 (± ECN): split into gsoSize-byte segments, each with copied headers:
 *    IPv4 total length, identification (+1 per segment), header checksum; IPv6 payload length;
 *    TCP sequence number advanced by the payload already sent, FIN/PSH only on the last segment,
 *    CWR only on the first (RFC 3168 §6.1.2); TCP checksum computed in full over the pseudo
 *    header (RFC 9293 §3.1, RFC 8200 §8.1).
 *  - GSO_UDP_L4 (UDP segmentation): the same with a UDP header per segment (length, checksum;
 *    a computed 0 is sent as 0xffff, RFC 768).
 *  - GSO_UDP (UFO, IPv4 fragmentation of one datagram) and anything unparsable (extension headers,
 *    non-IP, offsets past the end): dropped, counted by reason.
 *
 * Each segment is one metered copy (stage `device.segment`) into a scratch buffer that is reused
 * for the next segment once the sink has returned (the sink copies it on).
 */
import { GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4, VNET_F_NEEDS_CSUM, type Frame } from '../../link/frame';
import type { Stage } from '../../meter/meter';
import { foldChecksum, internetChecksum, onesSum } from '../../wire/checksum';
import { completeChecksum } from '../virtio/partial-checksum';

/** Receives one finished frame; `patchAt` ≥ 0 asks to store `patchValue` (BE16) there. */
export type SegmentSink = (data: Uint8Array, patchAt: number, patchValue: number) => void;

const ETH_P_IPV4 = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const ETH_P_VLAN = 0x8100;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;

export class SoftwareOffload {
  private readonly scratch: Uint8Array;

  constructor(
    private readonly stage: Stage,
    /** Largest frame (no CRC) a segment may be. */
    readonly maxFrame: number,
  ) {
    this.scratch = new Uint8Array(maxFrame);
  }

  /** True when the frame needs this treatment at all. */
  static needed(f: Frame): boolean {
    return f.gsoType !== GSO_NONE || (f.flags & VNET_F_NEEDS_CSUM) !== 0;
  }

  /**
   * Hand `f` to `sink` as plain frames. Returns how many frames were produced, or a negative
   * number when the frame was dropped (the reason is counted in the stage).
   */
  process(f: Frame, sink: SegmentSink): number {
    const data = f.data;
    if (f.gsoType === GSO_NONE) {
      const v = completeChecksum(data, f.csumStart, f.csumOffset);
      if (v < 0) return this.drop('rx-csum-offsets-outside-frame');
      sink(data, f.csumStart + f.csumOffset, v);
      return 1;
    }
    const type = f.gsoType & ~GSO_ECN;
    if (type === GSO_UDP) return this.drop('rx-ufo-not-supported');
    if (type !== GSO_TCPV4 && type !== GSO_TCPV6 && type !== GSO_UDP_L4) return this.drop('rx-gso-type-unknown');
    if (f.gsoSize <= 0) return this.drop('rx-gso-size-zero');

    // Ethernet (optionally one VLAN tag), then IP
    if (data.length < 14) return this.drop('rx-gso-malformed');
    let l3 = 14;
    let ethType = (data[12] << 8) | data[13];
    if (ethType === ETH_P_VLAN) {
      if (data.length < 18) return this.drop('rx-gso-malformed');
      ethType = (data[16] << 8) | data[17];
      l3 = 18;
    }
    let l4: number;
    let proto: number;
    const v4 = ethType === ETH_P_IPV4;
    if (v4) {
      if (data.length < l3 + 20) return this.drop('rx-gso-malformed');
      l4 = l3 + (data[l3] & 0x0f) * 4;
      proto = data[l3 + 9];
    } else if (ethType === ETH_P_IPV6) {
      l4 = l3 + 40;
      proto = data.length > l3 + 6 ? data[l3 + 6] : -1;
    } else {
      return this.drop('rx-gso-not-ip');
    }
    const tcp = type !== GSO_UDP_L4;
    if (proto !== (tcp ? IPPROTO_TCP : IPPROTO_UDP)) return this.drop('rx-gso-l4-mismatch');
    if (data.length < l4 + (tcp ? 20 : 8)) return this.drop('rx-gso-malformed');
    const hdrEnd = tcp ? l4 + (data[l4 + 12] >>> 4) * 4 : l4 + 8;
    if (hdrEnd > data.length || (tcp && hdrEnd < l4 + 20)) return this.drop('rx-gso-malformed');
    const mss = f.gsoSize;
    if (hdrEnd + mss > this.maxFrame) return this.drop('rx-gso-segment-too-big');

    const payload = data.length - hdrEnd;
    const s = this.scratch;
    const seq0 = tcp ? readU32(data, l4 + 4) : 0;
    const id0 = v4 ? (data[l3 + 4] << 8) | data[l3 + 5] : 0;
    let n = 0;
    for (let off = 0; off < payload || n === 0; off += mss) {
      const segLen = Math.min(mss, payload - off);
      const last = off + segLen >= payload;
      const len = hdrEnd + segLen;
      s.set(data.subarray(0, hdrEnd), 0);
      s.set(data.subarray(hdrEnd + off, hdrEnd + off + segLen), hdrEnd);
      this.stage.copied(len);
      const l4len = len - l4;
      if (v4) {
        writeU16(s, l3 + 2, len - l3);
        writeU16(s, l3 + 4, (id0 + n) & 0xffff);
        writeU16(s, l3 + 10, 0);
        writeU16(s, l3 + 10, internetChecksum(s, l3, l4 - l3));
      } else {
        writeU16(s, l3 + 4, len - l3 - 40);
      }
      const pseudo = (v4 ? onesSum(s, l3 + 12, 8) : onesSum(s, l3 + 8, 32)) + proto + l4len;
      if (tcp) {
        writeU32(s, l4 + 4, (seq0 + off) >>> 0);
        let flags = s[l4 + 13];
        if (!last) flags &= ~0x09; // FIN, PSH only on the last segment
        if (n > 0) flags &= ~0x80; // CWR only on the first
        s[l4 + 13] = flags;
        writeU16(s, l4 + 16, 0);
        writeU16(s, l4 + 16, foldChecksum(onesSum(s, l4, l4len, pseudo)));
      } else {
        writeU16(s, l4 + 4, l4len);
        writeU16(s, l4 + 6, 0);
        const c = foldChecksum(onesSum(s, l4, l4len, pseudo));
        writeU16(s, l4 + 6, c === 0 ? 0xffff : c);
      }
      sink(s.subarray(0, len), -1, 0);
      n++;
      if (last) break;
    }
    return n;
  }

  private drop(reason: string): number {
    this.stage.dropped(reason);
    return -1;
  }
}

function readU32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}

function writeU32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

function writeU16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 8) & 0xff;
  b[o + 1] = v & 0xff;
}
