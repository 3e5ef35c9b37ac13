/**
 * TcpEmitter: builds the TCP segments usernet sends to the guest, straight into the frames of
 * GuestOutput (no intermediate buffer).
 *
 * Header layout we write (RFC 9293 §3.1) and options (each block 4-byte aligned, as Linux
 * lays them out, so the guest's fast path parses them):
 *   SYN / SYN-ACK   MSS (RFC 9293 §3.7.1) · SACK-permitted (RFC 2018 §2) · timestamps
 *                   (RFC 7323 §3) · window scale (RFC 7323 §2) — the last three only when the
 *                   guest offered them (or, on our own SYN, always offered)
 *   other segments  timestamps when negotiated; SACK blocks (RFC 2018 §3) on ACKs while we hold
 *                   out-of-order data (at most 3 blocks next to timestamps, 4 without)
 *
 * Payload comes from the host socket's `peek` into the frame's payload area: with a native
 * MSG_PEEK that is the only copy; with the Node adapter it is the second (ring → frame).
 *
 * Checksums and segmentation (virtio 1.x §5.1.6.2): when the guest takes TSO super-frames
 * (`out.tsoOffload`), one frame carries up to 64 KiB as GSO_TCPV4/6 with gsoSize = the
 * segment payload size and VNET_F_NEEDS_CSUM (the checksum field holds the pseudo-header sum,
 * csumStart/csumOffset point at it) — the guest's kernel cuts it into MSS segments. With
 * checksum offload only, frames are MSS-sized with partial checksums; without either, every
 * frame gets a full checksum here.
 */
import { GSO_NONE, GSO_TCPV4, GSO_TCPV6, VNET_F_NEEDS_CSUM } from '../../link/frame';
import type { Stage } from '../../meter/meter';
import { onesSum } from '../../wire/checksum';
import type { Family, GuestOutput, OutFrame } from './context';

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;

export const IPPROTO_TCP = 6;
export const TCP_HEADER_LEN = 20;
/** NOP NOP TS: the timestamp option block on every segment once negotiated. */
export const TS_BLOCK_LEN = 12;
/** What our frames carry as TTL / hop limit. */
export const OUR_TTL = 64;

/** What the emitter needs to know about a connection (implemented by TcpConnection). */
export interface TcpEndpoint {
  readonly family: Family;
  /** The guest's address and port (our frames' destination). */
  readonly guestAddr: Uint8Array;
  readonly guestPort: number;
  /** The remote address and port as the guest sees it (our frames' source). */
  readonly remoteAddr: Uint8Array;
  readonly remotePort: number;
  /** Pseudo-header sum of the two addresses (+ protocol), computed once per connection. */
  readonly addrSum: number;
  rcvNxt: number;
  tsOk: boolean;
  tsRecent: number;
  sackOk: boolean;
  /** Our timestamp clock for this connection (RFC 7323 §5.4: per-connection offset). */
  tsNow(): number;
  /** The window field to put in the next segment (scaled; records the advertised edge). */
  windowField(syn: boolean): number;
  /** SACK blocks to report (pairs of sequence numbers) into `out`; returns the count. */
  sackBlocks(out: Uint32Array, max: number): number;
  /** Copy payload `offset` bytes past SND.UNA into `dst` (see HostSocket.peek). */
  peekPayload(offset: number, dst: Uint8Array, dstOff: number, len: number): number;
}

/** Our SYN/SYN-ACK options. */
export interface SynOptions {
  mss: number;
  sackPermitted: boolean;
  timestamps: boolean;
  /** Window scale shift to announce, or -1 for none. */
  windowScale: number;
}

/** Sum of both addresses and the protocol: the constant part of the pseudo header. */
export function addressSum(src: Uint8Array, dst: Uint8Array): number {
  return onesSum(src, 0, src.length, onesSum(dst, 0, dst.length, IPPROTO_TCP));
}

function fold16(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 8) & 0xff;
  b[o + 1] = v & 0xff;
}

function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 24) & 0xff;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

export class TcpEmitter {
  private readonly sack = new Uint32Array(8);
  /** Frames we could not begin (output pool exhausted). */
  poolMisses = 0;

  constructor(
    private readonly out: GuestOutput,
    private readonly stage: Stage,
    /** Is this remote address (guest view) translated on the host side? (meter rewrites) */
    private readonly translated: (remoteAddr: Uint8Array) => boolean = () => false,
  ) {}

  get mtu(): number {
    return this.out.mtu;
  }

  get tso(): boolean {
    return this.out.tsoOffload;
  }

  get available(): number {
    return this.out.available;
  }

  /** Largest payload one frame may carry, given the header length (GSO: whole segments). */
  maxPayload(headerLen: number, mss: number): number {
    if (!this.out.tsoOffload) return mss;
    const room = Math.min(this.out.maxL4Length, 65535 - 60) - headerLen;
    return Math.max(mss, Math.floor(room / mss) * mss);
  }

  /** Options length of a non-SYN segment of this connection (with `sacks` SACK blocks). */
  optionsLength(c: TcpEndpoint, sacks: number): number {
    return (c.tsOk ? TS_BLOCK_LEN : 0) + (sacks > 0 ? 4 + 8 * sacks : 0);
  }

  /**
   * A data or control segment. `len` payload bytes are peeked from the host side at
   * `hostOffset`; `mss` is the segment size for GSO. Returns false when no frame was available.
   */
  segment(c: TcpEndpoint, flags: number, seq: number, len: number, hostOffset: number, mss: number, withSack: boolean): boolean {
    const sacks = withSack && c.sackOk ? c.sackBlocks(this.sack, c.tsOk ? 3 : 4) : 0;
    const hdr = TCP_HEADER_LEN + this.optionsLength(c, sacks);
    const o = this.out.begin(c.family, c.remoteAddr, c.guestAddr, IPPROTO_TCP, OUR_TTL, hdr + len);
    if (!o) {
      this.poolMisses++;
      this.stage.dropped('out-pool-empty');
      return false;
    }
    const b = o.buf;
    const t = o.l4Offset;
    if (len > 0) {
      const got = c.peekPayload(hostOffset, b, t + hdr, len);
      if (got !== len) {
        // The host side holds less than it said: never send garbage.
        this.out.abort(o);
        this.stage.dropped('peek-short');
        return false;
      }
    }
    this.writeHeader(b, t, c, seq, flags, hdr, c.windowField(false));
    let p = t + TCP_HEADER_LEN;
    if (c.tsOk) p = this.writeTimestamps(b, p, c);
    if (sacks > 0) {
      b[p] = 1;
      b[p + 1] = 1;
      b[p + 2] = 5;
      b[p + 3] = 2 + 8 * sacks;
      p += 4;
      for (let i = 0; i < sacks; i++) {
        put32(b, p, this.sack[2 * i]);
        put32(b, p + 4, this.sack[2 * i + 1]);
        p += 8;
      }
    }
    this.finish(o, c, hdr, len, mss);
    return true;
  }

  /** Our SYN (port forwarding) or SYN-ACK. */
  syn(c: TcpEndpoint, flags: number, seq: number, opts: SynOptions): boolean {
    let optLen = 4;
    if (opts.sackPermitted || opts.timestamps) optLen += opts.timestamps ? 12 : 4;
    if (opts.windowScale >= 0) optLen += 4;
    const hdr = TCP_HEADER_LEN + optLen;
    const o = this.out.begin(c.family, c.remoteAddr, c.guestAddr, IPPROTO_TCP, OUR_TTL, hdr);
    if (!o) {
      this.poolMisses++;
      this.stage.dropped('out-pool-empty');
      return false;
    }
    const b = o.buf;
    const t = o.l4Offset;
    this.writeHeader(b, t, c, seq, flags, hdr, c.windowField(true));
    let p = t + TCP_HEADER_LEN;
    b[p] = 2;
    b[p + 1] = 4;
    put16(b, p + 2, Math.min(opts.mss, 0xffff));
    p += 4;
    if (opts.timestamps) {
      if (opts.sackPermitted) {
        b[p] = 4;
        b[p + 1] = 2;
      } else {
        b[p] = 1;
        b[p + 1] = 1;
      }
      b[p + 2] = 8;
      b[p + 3] = 10;
      put32(b, p + 4, c.tsNow());
      put32(b, p + 8, (flags & TCP_ACK) !== 0 ? c.tsRecent : 0);
      p += 12;
    } else if (opts.sackPermitted) {
      b[p] = 1;
      b[p + 1] = 1;
      b[p + 2] = 4;
      b[p + 3] = 2;
      p += 4;
    }
    if (opts.windowScale >= 0) {
      b[p] = 1;
      b[p + 1] = 3;
      b[p + 2] = 3;
      b[p + 3] = opts.windowScale;
    }
    this.finish(o, c, hdr, 0, 0);
    return true;
  }

  /**
   * A segment outside any connection (RST for an unknown flow, RFC 9293 §3.10.7.1), from
   * `src:srcPort` to the guest's `dst:dstPort`.
   */
  bare(family: Family, src: Uint8Array, srcPort: number, dst: Uint8Array, dstPort: number, seq: number, ack: number, flags: number): boolean {
    const o = this.out.begin(family, src, dst, IPPROTO_TCP, OUR_TTL, TCP_HEADER_LEN);
    if (!o) {
      this.poolMisses++;
      this.stage.dropped('out-pool-empty');
      return false;
    }
    const b = o.buf;
    const t = o.l4Offset;
    put16(b, t, srcPort);
    put16(b, t + 2, dstPort);
    put32(b, t + 4, seq);
    put32(b, t + 8, (flags & TCP_ACK) !== 0 ? ack : 0);
    b[t + 12] = (TCP_HEADER_LEN / 4) << 4;
    b[t + 13] = flags;
    put16(b, t + 14, 0);
    put16(b, t + 16, 0);
    put16(b, t + 18, 0);
    const sum = onesSum(b, t, TCP_HEADER_LEN, addressSum(src, dst) + TCP_HEADER_LEN);
    put16(b, t + 16, ~fold16(sum) & 0xffff);
    this.stage.pass(1, TCP_HEADER_LEN); // counted before commit: in this frame's trace journey
    this.out.commit(o);
    return true;
  }

  private writeHeader(b: Uint8Array, t: number, c: TcpEndpoint, seq: number, flags: number, hdr: number, window: number): void {
    put16(b, t, c.remotePort);
    put16(b, t + 2, c.guestPort);
    put32(b, t + 4, seq);
    put32(b, t + 8, (flags & TCP_ACK) !== 0 ? c.rcvNxt : 0);
    b[t + 12] = (hdr / 4) << 4;
    b[t + 13] = flags;
    put16(b, t + 14, window);
    put16(b, t + 16, 0);
    put16(b, t + 18, 0);
  }

  private writeTimestamps(b: Uint8Array, p: number, c: TcpEndpoint): number {
    b[p] = 1;
    b[p + 1] = 1;
    b[p + 2] = 8;
    b[p + 3] = 10;
    put32(b, p + 4, c.tsNow());
    put32(b, p + 8, c.tsRecent);
    return p + 12;
  }

  /** Checksum (full, or partial for the guest to finish), GSO metadata, commit. */
  private finish(o: OutFrame, c: TcpEndpoint, hdr: number, len: number, mss: number): void {
    const b = o.buf;
    const t = o.l4Offset;
    const l4len = hdr + len;
    const frame = o.frame;
    const gso = this.out.tsoOffload && len > mss && mss > 0;
    if (gso || this.out.checksumOffload) {
      // Partial checksum: the field holds the (uncomplemented) pseudo-header sum; the guest
      // (or its kernel's GSO) adds the segment and complements (virtio 1.x §5.1.6.2.1).
      put16(b, t + 16, fold16(c.addrSum + l4len));
      const frameStart = frame.data.byteOffset - b.byteOffset;
      frame.flags |= VNET_F_NEEDS_CSUM;
      frame.csumStart = t - frameStart;
      frame.csumOffset = 16;
      frame.hdrLen = t - frameStart + hdr;
      if (gso) {
        frame.gsoType = c.family === 4 ? GSO_TCPV4 : GSO_TCPV6;
        frame.gsoSize = mss;
      } else frame.gsoType = GSO_NONE;
    } else {
      const sum = onesSum(b, t, l4len, c.addrSum + l4len);
      put16(b, t + 16, ~fold16(sum) & 0xffff);
    }
    this.stage.pass(1, l4len); // counted before commit: in this frame's trace journey
    // payload crossing: the host socket's end ⇄ the guest's address and port (and loopback ⇄ the gateway)
    if (len > 0) this.stage.rewrote(this.translated(c.remoteAddr) ? 3 : 2);
    this.out.commit(o);
  }
}
