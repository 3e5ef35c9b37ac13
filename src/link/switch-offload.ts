/**
 * OffloadAdapter: what a Switch does when a frame carries an offload the port it is forwarded to
 * cannot take — a virtio guest with TSO talking to QEMU's rtl8139 over a stream socket, say.
 * Ports that accept the offload get the frame as it is (the common case, no work at all); for
 * the others the adapter does in software what the NIC would have done in hardware, into its
 * own arena (every byte copied is metered):
 *
 *   NEEDS_CSUM, no GSO  → one copy with the checksum completed (virtio 1.x §5.1.6.2: the field
 *                         holds the pseudo-header sum; sum from csum_start to the end, store at
 *                         csum_start + csum_offset; RFC 1071; 0 is stored as 0xffff, RFC 768).
 *   GSO_TCPV4 / TCPV6   → segmented as the Linux GSO path does (net/ipv4/tcp_offload.c
 *                         tcp_gso_segment): gso_size payload bytes per segment, headers copied,
 *                         sequence numbers advanced, FIN and PSH only on the last segment, CWR
 *                         only on the first (RFC 3168 §6.1.2), IPv4 total length / ID (+k) /
 *                         header checksum and IPv6 payload length rewritten, TCP checksums
 *                         computed in full (RFC 9293 §3.1).
 *   GSO_UDP (UFO)       → would need IP fragmentation: dropped and counted (`ufo-unsupported`).
 *
 * Frames that cannot be parsed as what their metadata claims (wrong ethertype, IPv6 extension
 * headers, offsets beyond the frame) are dropped and counted, never thrown.
 *
 * Lifetime: output frames are views into the arena, valid until `reset()`, which the switch
 * calls after the batch went out. When the arena cannot hold more, `adapt` says ARENA_FULL and
 * the switch sends what it has, resets, and asks again. One adapter per dispatch depth (a port
 * that sends back into the switch from inside its send gets a fresh one).
 */
import { GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, VNET_F_NEEDS_CSUM, type Frame } from './frame';
import type { NetOffloads } from '../devices/virtio/net-offloads';
import { copyBytes, type Stage } from '../meter/meter';
import { onesSum, pseudoHeaderSumV4, pseudoHeaderSumV6 } from '../wire/checksum';

export const ADAPT_AS_IS = 0;
export const ADAPT_DONE = 1;
export const ADAPT_DROPPED = 2;
export const ADAPT_ARENA_FULL = 3;

const EMPTY = new Uint8Array(0);

/** True when a port accepting `acc` can take `f` unchanged. */
export function acceptsFrame(f: Frame, acc: Readonly<NetOffloads>): boolean {
  const gso = f.gsoType;
  if (gso !== GSO_NONE) {
    if ((gso & GSO_ECN) !== 0 && !acc.guestEcn) return false;
    const type = gso & ~GSO_ECN;
    return type === GSO_TCPV4 ? acc.guestTso4 : type === GSO_TCPV6 ? acc.guestTso6 : type === GSO_UDP ? acc.guestUfo : false;
  }
  return (f.flags & VNET_F_NEEDS_CSUM) === 0 || acc.guestCsum;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

export class OffloadAdapter {
  /** Reason of the last ADAPT_DROPPED. */
  lastDrop = '';
  private readonly arena: Uint8Array;
  private used = 0;
  private readonly pool: Frame[] = [];
  private poolUsed = 0;

  constructor(
    private readonly stage: Stage,
    arenaBytes = 1 << 20,
  ) {
    this.arena = new Uint8Array(arenaBytes);
  }

  /** Release every frame handed out since the last reset. */
  reset(): void {
    this.used = 0;
    for (let i = 0; i < this.poolUsed; i++) this.pool[i].data = EMPTY;
    this.poolUsed = 0;
  }

  /**
   * Push onto `out` what a port accepting `acc` should get for `f`: `f` itself (ADAPT_AS_IS),
   * adapted frames (ADAPT_DONE), nothing (ADAPT_DROPPED, reason in lastDrop; or
   * ADAPT_ARENA_FULL: reset and ask again).
   */
  adapt(f: Frame, acc: Readonly<NetOffloads>, out: Frame[]): number {
    if (acceptsFrame(f, acc)) {
      out.push(f);
      return ADAPT_AS_IS;
    }
    if (f.gsoType === GSO_NONE) return this.completeChecksum(f, out);
    const type = f.gsoType & ~GSO_ECN;
    if (type === GSO_TCPV4 || type === GSO_TCPV6) return this.segmentTcp(f, type === GSO_TCPV6, out);
    return this.drop(type === GSO_UDP ? 'ufo-unsupported' : 'gso-unknown');
  }

  private drop(reason: string): number {
    this.lastDrop = reason;
    return ADAPT_DROPPED;
  }

  private take(len: number): Uint8Array | null {
    if (len > this.arena.length - this.used) return null;
    const v = this.arena.subarray(this.used, this.used + len);
    this.used += len;
    return v;
  }

  private frame(data: Uint8Array): Frame {
    let f = this.pool[this.poolUsed];
    if (f === undefined) {
      f = { data: EMPTY, flags: 0, gsoType: GSO_NONE, gsoSize: 0, hdrLen: 0, csumStart: 0, csumOffset: 0 };
      this.pool.push(f);
    }
    this.poolUsed++;
    f.data = data;
    f.flags = 0;
    f.gsoType = GSO_NONE;
    f.gsoSize = 0;
    f.hdrLen = 0;
    f.csumStart = 0;
    f.csumOffset = 0;
    return f;
  }

  private completeChecksum(f: Frame, out: Frame[]): number {
    const src = f.data;
    const len = src.length;
    const at = f.csumStart + f.csumOffset;
    if (f.csumStart >= len || at + 2 > len) return this.drop('bad-csum-offsets');
    const copy = this.take(len);
    if (copy === null) return this.used === 0 ? this.drop('too-large') : ADAPT_ARENA_FULL;
    copyBytes(this.stage, src, copy, 0);
    let c = ~onesSum(copy, f.csumStart, len - f.csumStart) & 0xffff;
    if (c === 0) c = 0xffff;
    copy[at] = c >>> 8;
    copy[at + 1] = c & 0xff;
    this.stage.rewrote(1);
    out.push(this.frame(copy));
    return ADAPT_DONE;
  }

  private segmentTcp(f: Frame, v6: boolean, out: Frame[]): number {
    const d = f.data;
    const len = d.length;
    let l3 = 14;
    if (len < 14) return this.drop('gso-malformed');
    let ethertype = (d[12] << 8) | d[13];
    if (ethertype === 0x8100 && len >= 18) {
      ethertype = (d[16] << 8) | d[17];
      l3 = 18;
    }
    let l4: number;
    if (!v6) {
      if (ethertype !== 0x0800 || len < l3 + 20 || d[l3] >> 4 !== 4) return this.drop('gso-malformed');
      l4 = l3 + (d[l3] & 0x0f) * 4;
      if (d[l3 + 9] !== 6) return this.drop('gso-malformed');
    } else {
      if (ethertype !== 0x86dd || len < l3 + 40 || d[l3] >> 4 !== 6) return this.drop('gso-malformed');
      if (d[l3 + 6] !== 6) return this.drop('gso-ipv6-extension-headers');
      l4 = l3 + 40;
    }
    if (len < l4 + 20) return this.drop('gso-malformed');
    const thl = (d[l4 + 12] >> 4) * 4;
    const hdrs = l4 + thl;
    const mss = f.gsoSize;
    if (thl < 20 || hdrs > len || mss <= 0) return this.drop('gso-malformed');
    const payload = len - hdrs;
    const segments = payload === 0 ? 1 : Math.ceil(payload / mss);
    const need = segments * hdrs + payload;
    if (need > this.arena.length - this.used) return this.used === 0 && need > this.arena.length ? this.drop('too-large') : ADAPT_ARENA_FULL;
    const seq0 = ((d[l4 + 4] << 24) | (d[l4 + 5] << 16) | (d[l4 + 6] << 8) | d[l4 + 7]) >>> 0;
    const id0 = (d[l3 + 4] << 8) | d[l3 + 5];
    const flags0 = d[l4 + 13];
    const headers = d.subarray(0, hdrs);
    for (let k = 0; k < segments; k++) {
      const off = hdrs + k * mss;
      const n = Math.min(mss, payload - k * mss);
      const seg = this.take(hdrs + Math.max(n, 0))!;
      copyBytes(this.stage, headers, seg, 0);
      if (n > 0) copyBytes(this.stage, d.subarray(off, off + n), seg, hdrs);
      const l4len = thl + Math.max(n, 0);
      if (!v6) {
        const total = l4 - l3 + l4len;
        seg[l3 + 2] = total >>> 8;
        seg[l3 + 3] = total & 0xff;
        const id = (id0 + k) & 0xffff;
        seg[l3 + 4] = id >>> 8;
        seg[l3 + 5] = id & 0xff;
        seg[l3 + 10] = seg[l3 + 11] = 0;
        const ipc = ~onesSum(seg, l3, l4 - l3) & 0xffff;
        seg[l3 + 10] = ipc >>> 8;
        seg[l3 + 11] = ipc & 0xff;
      } else {
        seg[l3 + 4] = l4len >>> 8;
        seg[l3 + 5] = l4len & 0xff;
      }
      const seq = (seq0 + k * mss) >>> 0;
      seg[l4 + 4] = seq >>> 24;
      seg[l4 + 5] = (seq >>> 16) & 0xff;
      seg[l4 + 6] = (seq >>> 8) & 0xff;
      seg[l4 + 7] = seq & 0xff;
      let flags = flags0;
      if (k < segments - 1) flags &= ~0x09; // FIN, PSH: last segment only
      if (k > 0) flags &= ~0x80; // CWR: first segment only
      seg[l4 + 13] = flags;
      seg[l4 + 16] = seg[l4 + 17] = 0;
      const pseudo = v6
        ? pseudoHeaderSumV6(seg.subarray(l3 + 8, l3 + 24), seg.subarray(l3 + 24, l3 + 40), 6, l4len)
        : pseudoHeaderSumV4(
            ((seg[l3 + 12] << 24) | (seg[l3 + 13] << 16) | (seg[l3 + 14] << 8) | seg[l3 + 15]) >>> 0,
            ((seg[l3 + 16] << 24) | (seg[l3 + 17] << 16) | (seg[l3 + 18] << 8) | seg[l3 + 19]) >>> 0,
            6,
            l4len,
          );
      const tc = ~onesSum(seg, l4, l4len, fold(pseudo)) & 0xffff;
      seg[l4 + 16] = tc >>> 8;
      seg[l4 + 17] = tc & 0xff;
      this.stage.rewrote(v6 ? 4 : 7);
      out.push(this.frame(seg));
    }
    return ADAPT_DONE;
  }
}
