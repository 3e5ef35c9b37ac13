/**
 * The seams inside the NAT stack. The stack (stack.ts) parses each guest frame down to L3,
 * applies the gateway's own rules (ARP, TTL, fragments, addresses it answers for), and hands
 * each transport-layer packet to one protocol module (tcp.ts, udp.ts, icmp.ts) as a reused
 * `GuestPacket` description. Modules answer the guest through `GuestOutput`, which builds
 * Ethernet + IP headers into pooled buffers and delivers them to the guest in batches.
 *
 * Both address families go through the same code: an address is a `Uint8Array` of 4 or 16
 * bytes (a view into the packet while handling it; copied with `copyAddress` when kept).
 * Nothing here allocates per packet: `GuestPacket` is one object reused for every packet, and
 * output buffers come from a pool that is recycled once the guest-side Port returns.
 */
import type { Frame } from '../../link/frame';
import type { Meter } from '../../meter/meter';
import type { NatConfig } from './config';

export type Family = 4 | 6;

/** One transport-layer packet from the guest, valid only during the `input` call. */
export interface GuestPacket {
  family: Family;
  /** Source and destination addresses (4 or 16 bytes), views into the frame. */
  src: Uint8Array;
  dst: Uint8Array;
  /** IPv4 protocol / IPv6 upper-layer next header. */
  protocol: number;
  /** TTL / hop limit as the guest sent it. */
  ttl: number;
  /** IPv4 DF bit (IPv6: always true — routers never fragment). */
  dontFragment: boolean;
  /** DSCP/ECN byte (IPv4 TOS / IPv6 traffic class). */
  tos: number;
  /** The whole Ethernet frame, with its offload metadata. */
  frame: Frame;
  /** Offset of the IP header in frame.data. */
  l3Offset: number;
  /** Offset and length of the transport header + payload in frame.data. */
  l4Offset: number;
  l4Length: number;
  /**
   * True when the transport checksum need not be verified: the frame came with
   * VNET_F_NEEDS_CSUM (the guest left it for us — it is partial by design) or DATA_VALID.
   */
  checksumTrusted: boolean;
}

/** A protocol module of the NAT stack (TCP, UDP, ICMP). */
export interface ProtocolModule {
  /** Handle one guest packet addressed to this protocol. Must not throw. */
  input(pkt: GuestPacket): void;
  /** Drop every flow, close every host socket and timer. */
  close(): Promise<void>;
}

/** A frame being built towards the guest (from GuestOutput.begin). */
export interface OutFrame {
  /** The buffer; the transport header starts at `l4Offset`. */
  readonly buf: Uint8Array;
  readonly l4Offset: number;
  /** The Frame that will be delivered (its metadata may be set: GSO, NEEDS_CSUM). */
  readonly frame: Frame;
}

/**
 * Builds frames towards the guest. Usage per frame:
 *   const o = out.begin(family, src, dst, protocol, ttl, l4Length)   // eth + IP header written
 *   ... write the transport header + payload at o.buf[o.l4Offset ..] ...
 *   out.commit(o)            // IP checksum filled; queued for the next flush
 * Transport checksums are the module's job (see `checksumOffload`). Frames are flushed to the
 * guest port at the end of the current input batch, or on the next macrotask when produced by
 * host-socket events.
 */
export interface GuestOutput {
  /** Largest l4Length `begin` accepts (64 KiB super-frames minus headers). */
  readonly maxL4Length: number;
  /** The guest's MTU (what a non-GSO frame's IP packet may hold). */
  readonly mtu: number;
  /** The guest accepts frames with partial checksums (VNET_F_NEEDS_CSUM) and TSO super-frames. */
  readonly checksumOffload: boolean;
  readonly tsoOffload: boolean;
  /** Start a frame; returns null when the pool is exhausted (count and drop, or retry later). */
  begin(family: Family, src: Uint8Array, dst: Uint8Array, protocol: number, ttl: number, l4Length: number): OutFrame | null;
  /** Queue a finished frame for delivery. */
  commit(o: OutFrame): void;
  /** Abandon a frame from `begin` without sending it. */
  abort(o: OutFrame): void;
  /** Number of frames that can still be begun before the next flush (0 while the guest port is full). */
  readonly available: number;
  /** The guest port is full (RxBackpressure): bulk data should wait for `onGuestUnblocked`. */
  readonly guestBlocked?: boolean;
  onGuestUnblocked?(listener: () => void): void;
  /** Deliver queued frames to the guest now. */
  flush(): void;
}

/** What every protocol module gets from the stack. */
export interface NatContext {
  readonly config: NatConfig;
  readonly meter: Meter;
  readonly out: GuestOutput;
  /**
   * Where a guest destination really goes on the host: the gateway address maps to loopback
   * (unless `--no-host-loopback`), the DNS address to the DNS forwarder, anything else to
   * itself. Returns the host address as text for sockets, or null when the destination is
   * refused by policy (the module answers as the network would: RST / ICMP unreachable).
   */
  hostAddressFor(family: Family, dst: Uint8Array): string | null;
  /** Send an ICMP/ICMPv6 error to the guest quoting `pkt` (RFC 792 / RFC 4443 / RFC 5508). */
  icmpError(pkt: GuestPacket, type: number, code: number, info: number, from?: Uint8Array): void;
}

/** Copy an address view so it can be kept beyond the current packet (once per flow). */
export function copyAddress(a: Uint8Array): Uint8Array {
  return Uint8Array.prototype.slice.call(a) as Uint8Array;
}
