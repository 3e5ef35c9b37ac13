/**
 * Ipv4Reassembly: puts the guest's fragmented IPv4 datagrams back together before the NAT looks
 * at them (RFC 4787 REQ-14: a NAT MUST support receiving in-order and out-of-order fragments).
 * A guest fragments UDP it sends beyond its MTU (a 4 KiB NFS-over-UDP write, a DNS query with a
 * big EDNS payload, `ping -s 3000`), and after a "fragmentation needed" it fragments to the path
 * MTU learned. The host socket then sends the whole datagram, and the host kernel fragments it
 * again for the real path as needed.
 *
 * RFC 791 §3.2 "reassembly": fragments belong together when source, destination, protocol and
 * identification agree. Each datagram in progress has one buffer, grown up to the highest byte
 * seen, and the list of fragments received (offset, length); it is complete when the fragment
 * without More Fragments arrived and the received ranges cover [0, that end) without a hole
 * (RFC 815's hole list, kept as sorted ranges). The result is one frame: the Ethernet and IPv4
 * header of fragment 0 (its options: RFC 791 says the first fragment's), flags and offset
 * cleared, total length and header checksum rewritten, followed by the data.
 *
 * Hostile input (RFC 1858, the "ping of death", FragmentSmack): a datagram that would exceed
 * 65535 bytes is dropped; a fragment that overlaps data already received, other than an exact
 * duplicate, discards the whole datagram (as Linux does since 2018); inconsistent final
 * fragments (a second end, data beyond the end) discard it too; a datagram in more than
 * MAX_PIECES fragments is discarded (a 64 KiB datagram over a 1280-byte path takes 52; the limit
 * keeps the overlap check from going quadratic on a flood of 8-byte fragments); at most
 * `maxDatagrams` are in progress and `maxBytes` buffered, the oldest evicted first — also when a
 * buffer grows. A datagram not complete within
 * `timeoutMs` (30 s, Linux's ipfrag_time) is dropped, and when its first fragment had arrived
 * the guest gets ICMP Time Exceeded, code 1 "fragment reassembly time exceeded" (RFC 792,
 * RFC 1122 §3.3.2), quoting that fragment.
 *
 * Fragments are rare: this path allocates (a buffer per datagram, the finished frame). Every
 * byte copied into a buffer is counted in the stage given (`nat.ip.reassembly`), drops by reason.
 */
import type { Stage } from '../../meter/meter';
import { internetChecksum } from '../../wire/checksum';
import type { Ipv4Packet } from '../../wire/ipv4';

export interface ReassemblyOptions {
  timeoutMs?: number;
  maxDatagrams?: number;
  maxBytes?: number;
  now?: () => number;
}

/** Called when a datagram whose first fragment arrived timed out: its IP header + 8 bytes. */
export type ReassemblyExpired = (quote: Uint8Array) => void;

const IP_MAX = 65535;
/** Fragments one datagram may come in (see the file comment). */
const MAX_PIECES = 64;

interface Datagram {
  key: string;
  created: number;
  /** Bytes of the Ethernet + IPv4 header of fragment 0 (null until it arrives). */
  head: Uint8Array | null;
  /** Where the IPv4 header starts in `head`. */
  l3: number;
  data: Uint8Array;
  /** Received fragments as [offset, end) pairs, in arrival order (exact duplicates are ignored). */
  pieces: number[];
  /** Total data length, known once the last fragment (MF = 0) arrived; -1 before. */
  end: number;
  received: number;
}

export class Ipv4Reassembly {
  private readonly datagrams = new Map<string, Datagram>();
  private bytes = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly timeoutMs: number;
  private readonly maxDatagrams: number;
  private readonly maxBytes: number;
  private readonly now: () => number;

  constructor(
    private readonly stage: Stage,
    private readonly onExpired: ReassemblyExpired,
    opts: ReassemblyOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.maxDatagrams = opts.maxDatagrams ?? 64;
    this.maxBytes = opts.maxBytes ?? 1 << 20;
    this.now = opts.now ?? Date.now;
  }

  /** Datagrams in progress. */
  get pending(): number {
    return this.datagrams.size;
  }

  /**
   * One fragment: `frame` holds it with its IPv4 header at `l3` (`ip` views it, already
   * validated). Returns the whole datagram as a new frame when this fragment completed it.
   */
  add(frame: Uint8Array, l3: number, ip: Ipv4Packet): Uint8Array | null {
    this.expire();
    const hlen = ip.headerLength;
    const offset = ip.fragmentOffset;
    const len = ip.totalLength - hlen;
    const last = !ip.moreFragments;
    const stop = offset + len;
    if (hlen + stop > IP_MAX) return this.refuse('fragment-too-big');
    if (!last && (len === 0 || len % 8 !== 0)) return this.refuse('fragment-bad-length');
    const key = `${ip.src >>> 0}/${ip.dst >>> 0}/${ip.protocol}/${ip.identification}`;
    let d = this.datagrams.get(key);
    if (!d) {
      this.makeRoom(stop);
      d = { key, created: this.now(), head: null, l3: 0, data: new Uint8Array(Math.max(stop, 1480)), pieces: [], end: -1, received: 0 };
      this.datagrams.set(key, d);
      this.bytes += d.data.length;
      this.arm();
    }
    // consistency: one end only, nothing beyond it
    if ((last && d.end >= 0 && d.end !== stop) || (d.end >= 0 && stop > d.end) || (last && d.received > 0 && this.highest(d) > stop)) {
      return this.discard(d, 'fragment-inconsistent-end');
    }
    if (d.pieces.length >= 2 * MAX_PIECES) return this.discard(d, 'fragment-too-many');
    for (let i = 0; i < d.pieces.length; i += 2) {
      const a = d.pieces[i];
      const b = d.pieces[i + 1];
      if (a === offset && b === stop) {
        this.stage.dropped('fragment-duplicate');
        return null;
      }
      if (offset < b && a < stop) return this.discard(d, 'fragment-overlap');
    }
    if (stop > d.data.length) {
      const grown = new Uint8Array(Math.min(IP_MAX, Math.max(stop, d.data.length * 2)));
      grown.set(d.data);
      this.stage.copied(d.received);
      this.bytes += grown.length - d.data.length;
      d.data = grown;
      this.evictOver(d);
    }
    d.data.set(frame.subarray(l3 + hlen, l3 + hlen + len), offset);
    this.stage.copied(len);
    d.pieces.push(offset, stop);
    d.received += len;
    if (offset === 0) {
      d.head = frame.slice(0, l3 + hlen);
      d.l3 = l3;
    }
    if (last) d.end = stop;
    if (d.end < 0 || d.head === null || d.received !== d.end) return null;
    return this.finish(d, l3);
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.datagrams.clear();
    this.bytes = 0;
  }

  private highest(d: Datagram): number {
    let h = 0;
    for (let i = 1; i < d.pieces.length; i += 2) h = Math.max(h, d.pieces[i]);
    return h;
  }

  private finish(d: Datagram, l3: number): Uint8Array {
    const head = d.head!;
    const hlen = head.length - l3;
    const out = new Uint8Array(head.length + d.end);
    out.set(head, 0);
    out.set(d.data.subarray(0, d.end), head.length);
    this.stage.copied(head.length + d.end);
    const total = hlen + d.end;
    out[l3 + 2] = total >>> 8;
    out[l3 + 3] = total & 0xff;
    out[l3 + 6] &= 0x40; // keep DF, clear MF and the offset
    out[l3 + 7] = 0;
    out[l3 + 10] = out[l3 + 11] = 0;
    const c = internetChecksum(out, l3, hlen);
    out[l3 + 10] = c >>> 8;
    out[l3 + 11] = c & 0xff;
    this.remove(d);
    this.stage.pass(1, total);
    return out;
  }

  private refuse(reason: string): null {
    this.stage.dropped(reason);
    return null;
  }

  private discard(d: Datagram, reason: string): null {
    this.remove(d);
    return this.refuse(reason);
  }

  private remove(d: Datagram): void {
    if (!this.datagrams.delete(d.key)) return;
    this.bytes -= d.data.length;
    if (this.datagrams.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  /** Evict the oldest datagrams until one more of `size` bytes fits. */
  private makeRoom(size: number): void {
    for (const d of this.datagrams.values()) {
      if (this.datagrams.size < this.maxDatagrams && this.bytes + Math.max(size, 1480) <= this.maxBytes) return;
      this.discard(d, 'fragment-evicted'); // Map iterates in insertion order: oldest first
    }
  }

  /** After `keep` grew: evict the oldest others while more than `maxBytes` is buffered. */
  private evictOver(keep: Datagram): void {
    for (const d of this.datagrams.values()) {
      if (this.bytes <= this.maxBytes) return;
      if (d !== keep) this.discard(d, 'fragment-evicted');
    }
  }

  private expire(): void {
    if (this.datagrams.size === 0) return;
    const limit = this.now() - this.timeoutMs;
    for (const d of this.datagrams.values()) {
      if (d.created > limit) break; // insertion order is creation order
      this.remove(d);
      this.stage.dropped('fragment-timeout');
      if (d.head !== null) {
        const ipHeader = d.head.subarray(d.l3);
        const quote = new Uint8Array(ipHeader.length + 8);
        quote.set(ipHeader, 0);
        quote.set(d.data.subarray(0, 8), ipHeader.length);
        this.onExpired(quote);
      }
    }
  }

  private arm(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.expire(), 1000);
    this.timer.unref();
  }
}
