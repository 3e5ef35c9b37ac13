/**
 * Address policy of the virtual network, in one place: which guest destinations the stack
 * answers itself, where the others really go on the host, and how a host address is shown to
 * the guest on the way back.
 *
 *   virtual network   config.network/prefixLength (QEMU default 10.0.2.0/24)
 *   gateway           config.gateway (10.0.2.2): answered locally (ARP, ICMP echo, DHCP server
 *                     id); TCP/UDP to it reach the host's 127.0.0.1 unless hostLoopback is off
 *   DNS address       config.dns (10.0.2.3): UDP 53 answered by dns.ts; TCP 53 goes to the
 *                     first upstream nameserver that listens on port 53 (DNS over TCP is only
 *                     used after a truncated UDP answer, RFC 7766); anything else is refused
 *   other addresses   inside the virtual network: refused (nothing lives there but guests, and
 *                     guest-to-guest traffic is the switch's business, not the NAT's)
 *   martians          0/8, 127/8, 224/4 (multicast), 240/4 (reserved, broadcast) — and for IPv6
 *                     ::, ::1, ff00::/8, fe80::/10, ::ffff:0:0/96 — are refused (RFC 1812
 *                     §5.3.7, RFC 4291 §2.5): a guest must not reach the host's loopback except
 *                     through the gateway address, which the user can switch off.
 *   anything else     itself.
 *
 * Replies travel the other way (`guestSource4`): 127.0.0.1 shows up as the gateway (when
 * hostLoopback is on), addresses the guest could not tell from its own network are dropped.
 */
import ipaddr from 'ipaddr.js';
import { ipv4ToString, ipv6ToString, parseIpv4, readIpv4, tryParseIpv4, writeIpv4 } from '../../wire/address';
import type { NatConfig } from './config';
import type { Family } from './context';

export const LOOPBACK4 = 0x7f000001;
export const NOT_REPRESENTABLE = -1;

export { readIpv4, writeIpv4 };

export function ipv4Bytes(n: number): Uint8Array {
  const a = new Uint8Array(4);
  writeIpv4(a, 0, n);
  return a;
}

/** 0/8, 127/8, 224/4 and 240/4: never a destination of routed guest traffic. */
export function isMartian4(n: number): boolean {
  const top = n >>> 24;
  return top === 0 || top === 127 || top >= 224;
}

export class AddressPolicy {
  private readonly source4 = new Uint8Array(4);
  private readonly source6 = new Uint8Array(16);
  readonly gateway: number;
  readonly dns: number;
  readonly network: number;
  readonly mask: number;
  readonly broadcast: number;
  readonly dhcpStart: number;
  readonly gatewayBytes: Uint8Array;
  readonly dnsBytes: Uint8Array;
  readonly hostLoopback: boolean;
  /** Where guest TCP to DNS:53 goes (an upstream listening on port 53), or null. */
  dnsTcpUpstream: string | null = null;

  constructor(config: NatConfig) {
    this.mask = config.prefixLength === 0 ? 0 : (0xffffffff << (32 - config.prefixLength)) >>> 0;
    this.network = (parseIpv4(config.network) & this.mask) >>> 0;
    this.broadcast = (this.network | ~this.mask) >>> 0;
    this.gateway = parseIpv4(config.gateway);
    this.dns = parseIpv4(config.dns);
    this.dhcpStart = parseIpv4(config.dhcpStart);
    this.gatewayBytes = ipv4Bytes(this.gateway);
    this.dnsBytes = ipv4Bytes(this.dns);
    this.hostLoopback = config.hostLoopback;
    for (const [what, n] of [
      ['gateway', this.gateway],
      ['dns', this.dns],
      ['dhcpStart', this.dhcpStart],
    ] as const) {
      if (!this.inNetwork4(n) || n === this.network || n === this.broadcast) {
        throw Object.assign(new Error(`${what} ${ipv4ToString(n)} is not a host address of ${config.network}/${config.prefixLength}`), {
          code: 'EINVAL',
        });
      }
    }
  }

  inNetwork4(n: number): boolean {
    return ((n & this.mask) >>> 0) === this.network;
  }

  /** The gateway or the DNS address: addresses the stack itself answers for. */
  isOurs4(n: number): boolean {
    return n === this.gateway || n === this.dns;
  }

  /** Limited or directed broadcast of the virtual network. */
  isBroadcast4(n: number): boolean {
    return n === 0xffffffff || n === this.broadcast;
  }

  /**
   * A source address a guest may use: inside the network, not ours, not the network or
   * broadcast address. (0.0.0.0 is allowed only for DHCP; the stack checks that itself.)
   */
  isGuestSource4(n: number): boolean {
    return this.inNetwork4(n) && !this.isOurs4(n) && n !== this.network && n !== this.broadcast;
  }

  /** See NatContext.hostAddressFor. Allocates a string: call it once per flow, not per packet. */
  hostAddressFor(family: Family, dst: Uint8Array): string | null {
    if (family === 4) return this.hostAddressFor4(readIpv4(dst));
    return this.hostAddressFor6(dst);
  }

  hostAddressFor4(n: number): string | null {
    if (n === this.gateway) return this.hostLoopback ? '127.0.0.1' : null;
    if (n === this.dns) return this.dnsTcpUpstream;
    if (this.inNetwork4(n) || isMartian4(n)) return null;
    return ipv4ToString(n);
  }

  hostAddressFor6(a: Uint8Array): string | null {
    if (a.length !== 16) return null;
    if (a[0] === 0xff) return null; // multicast
    if (a[0] === 0xfe && (a[1] & 0xc0) === 0x80) return null; // link-local
    let zeros = 0;
    while (zeros < 15 && a[zeros] === 0) zeros++;
    if (zeros === 15 && a[15] <= 1) return null; // :: and ::1
    if (zeros === 10 && a[10] === 0xff && a[11] === 0xff) return null; // v4-mapped
    return ipv6ToString(a);
  }

  /**
   * The address a host peer's packet shows to the guest: loopback → the gateway (when
   * hostLoopback), an address the guest could confuse with its own network → NOT_REPRESENTABLE.
   */
  guestSource4(hostAddress: number): number {
    if (hostAddress === LOOPBACK4) return this.hostLoopback ? this.gateway : NOT_REPRESENTABLE;
    if (this.inNetwork4(hostAddress) || isMartian4(hostAddress)) return NOT_REPRESENTABLE;
    return hostAddress;
  }

  /**
   * `guestSource4` for either family, as address bytes in the policy's own scratch array (no
   * allocation; valid until the next call), or null when the guest cannot be shown `from`.
   */
  guestSource(family: Family, from: Uint8Array): Uint8Array | null {
    if (family === 4) {
      const g = this.guestSource4(readIpv4(from));
      if (g === NOT_REPRESENTABLE) return null;
      writeIpv4(this.source4, 0, g);
      return this.source4;
    }
    if (this.hostAddressFor6(from) === null) return null;
    this.source6.set(from.subarray(0, 16));
    return this.source6;
  }
}

/** Address text → bytes (4 or 16), or null when it is not of `family`. Not for hot paths. */
export function addressBytes(text: string, family: Family): Uint8Array | null {
  if (family === 4) {
    const n = ipv4Number(text);
    if (Number.isNaN(n)) return null;
    const b = new Uint8Array(4);
    writeIpv4(b, 0, n);
    return b;
  }
  try {
    const a = ipaddr.parse(text);
    if (a.kind() !== 'ipv6') return null;
    return Uint8Array.from(a.toByteArray());
  } catch {
    return null;
  }
}

/** Dotted quad → number (NaN when malformed). */
export function ipv4Number(text: string): number {
  return tryParseIpv4(text) ?? NaN;
}
