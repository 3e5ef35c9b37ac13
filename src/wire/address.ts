/**
 * Addresses as the views hand them out:
 * - IPv4: a uint32 number whose value is the address read big endian (10.0.2.15 === 0x0a00020f),
 *   always non-negative (`>>> 0`), so `===` and Map keys work.
 * - IPv6: a 16-byte Uint8Array, text per RFC 5952 (lower case, longest run of two or more zero
 *   groups as "::", the first run on a tie, IPv4-mapped addresses with a dotted quad tail).
 * - MAC: a 6-byte Uint8Array, text as aa:bb:cc:dd:ee:ff.
 * Parsing textual addresses is configuration work, not per-packet work: the parse* helpers
 * throw a WireError('bad-address') on malformed text (try* variants return null instead).
 * Also the few derived addresses NDP and ARP need (RFC 4291 §2.5.1 interface identifiers,
 * §2.7.1 solicited-node multicast, RFC 2464 §7 multicast MACs).
 */
import { WireError } from './error';

/** ff:ff:ff:ff:ff:ff. Shared: never write into it. */
export const BROADCAST_MAC: Uint8Array = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
/** The IPv6 unspecified address ::. Shared: never write into it. */
export const IPV6_UNSPECIFIED: Uint8Array = new Uint8Array(16);

/**
 * `a` if it can take `n` bytes and is not one of the shared constants above, else a new array:
 * Repr.parse(view, out) writes into out's arrays, which a caller may have set to a constant.
 */
export function writableBytes(a: Uint8Array, n: number): Uint8Array {
  return a.length >= n && a !== BROADCAST_MAC && a !== IPV6_UNSPECIFIED ? a : new Uint8Array(n);
}

/* ---------------------------------------------------------------- IPv4 */

export function ipv4ToString(n: number): string {
  return `${(n >>> 24) & 0xff}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

export function tryParseIpv4(s: string): number | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const v = Number(p);
    if (v > 255) return null;
    n = n * 256 + v;
  }
  return n >>> 0;
}

export function parseIpv4(s: string): number {
  const n = tryParseIpv4(s);
  if (n === null) throw new WireError('bad-address', 'address', `not an IPv4 address: ${JSON.stringify(s)}`);
  return n;
}

/** Read 4 bytes at `off` as an IPv4 address number. */
export function readIpv4(b: Uint8Array, off = 0): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}

export function writeIpv4(b: Uint8Array, off: number, n: number): void {
  b[off] = n >>> 24;
  b[off + 1] = n >>> 16;
  b[off + 2] = n >>> 8;
  b[off + 3] = n;
}

/** The netmask with `prefix` leading ones (0..32). */
export function ipv4Mask(prefix: number): number {
  return prefix <= 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export function isIpv4Multicast(n: number): boolean {
  return n >>> 28 === 0xe; // 224.0.0.0/4 (RFC 5771)
}

export function isIpv4Loopback(n: number): boolean {
  return n >>> 24 === 127;
}

/** The Ethernet multicast MAC for an IPv4 group: 01:00:5e + low 23 bits (RFC 1112 §6.4). */
export function ipv4MulticastMac(group: number, out: Uint8Array = new Uint8Array(6)): Uint8Array {
  out[0] = 0x01;
  out[1] = 0x00;
  out[2] = 0x5e;
  out[3] = (group >>> 16) & 0x7f;
  out[4] = group >>> 8;
  out[5] = group;
  return out;
}

/* ---------------------------------------------------------------- IPv6 */

export function ipv6ToString(a: Uint8Array): string {
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((a[i] << 8) | a[i + 1]);
  // IPv4-mapped ::ffff:a.b.c.d (RFC 5952 §5).
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${a[12]}.${a[13]}.${a[14]}.${a[15]}`;
  }
  let bestStart = -1;
  let bestLen = 1; // a single zero group is not shortened (RFC 5952 §4.2.2)
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number): string => g.slice(from, to).map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`;
}

export function tryParseIpv6(s: string): Uint8Array | null {
  if (s.length < 2 || s.length > 45 || s.includes('%')) return null;
  let text = s;
  let tail: number | null = null;
  const lastColon = text.lastIndexOf(':');
  if (text.indexOf('.', lastColon) >= 0) {
    tail = tryParseIpv4(text.slice(lastColon + 1));
    if (tail === null) return null;
    text = text.slice(0, lastColon + 1) + '0:0';
  }
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const parseGroups = (h: string): number[] | null => {
    if (h === '') return [];
    const out: number[] = [];
    for (const p of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return null;
      out.push(parseInt(p, 16));
    }
    return out;
  };
  const left = parseGroups(halves[0]);
  const right = halves.length === 2 ? parseGroups(halves[1]) : [];
  if (!left || !right) return null;
  let groups: number[];
  if (halves.length === 2) {
    if (left.length + right.length > 7) return null;
    groups = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  } else {
    if (left.length !== 8) return null;
    groups = left;
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = groups[i] >>> 8;
    out[2 * i + 1] = groups[i] & 0xff;
  }
  if (tail !== null) writeIpv4(out, 12, tail);
  return out;
}

export function parseIpv6(s: string): Uint8Array {
  const a = tryParseIpv6(s);
  if (a === null) throw new WireError('bad-address', 'address', `not an IPv6 address: ${JSON.stringify(s)}`);
  return a;
}

export function ipv6Equals(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function isIpv6Unspecified(a: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== 0) return false;
  return true;
}

export function isIpv6Multicast(a: Uint8Array): boolean {
  return a[0] === 0xff; // ff00::/8 (RFC 4291 §2.7)
}

export function isIpv6LinkLocal(a: Uint8Array): boolean {
  return a[0] === 0xfe && (a[1] & 0xc0) === 0x80; // fe80::/10
}

/** fe80::/64 with the modified EUI-64 interface identifier of `mac` (RFC 4291 §2.5.1, App. A). */
export function ipv6LinkLocalFromMac(mac: Uint8Array, out: Uint8Array = new Uint8Array(16)): Uint8Array {
  out.fill(0);
  out[0] = 0xfe;
  out[1] = 0x80;
  out[8] = mac[0] ^ 0x02;
  out[9] = mac[1];
  out[10] = mac[2];
  out[11] = 0xff;
  out[12] = 0xfe;
  out[13] = mac[3];
  out[14] = mac[4];
  out[15] = mac[5];
  return out;
}

/** ff02::1:ffXX:XXXX for `addr` (RFC 4291 §2.7.1): where neighbour solicitations go. */
export function solicitedNodeMulticast(addr: Uint8Array, out: Uint8Array = new Uint8Array(16)): Uint8Array {
  out.fill(0);
  out[0] = 0xff;
  out[1] = 0x02;
  out[11] = 0x01;
  out[12] = 0xff;
  out[13] = addr[13];
  out[14] = addr[14];
  out[15] = addr[15];
  return out;
}

/** 33:33 + the low 32 bits of an IPv6 multicast group (RFC 2464 §7). */
export function ipv6MulticastMac(group: Uint8Array, out: Uint8Array = new Uint8Array(6)): Uint8Array {
  out[0] = 0x33;
  out[1] = 0x33;
  out[2] = group[12];
  out[3] = group[13];
  out[4] = group[14];
  out[5] = group[15];
  return out;
}

/* ---------------------------------------------------------------- MAC */

export function macToString(mac: Uint8Array): string {
  let s = '';
  for (let i = 0; i < 6; i++) s += (i ? ':' : '') + mac[i].toString(16).padStart(2, '0');
  return s;
}

export function tryParseMac(s: string): Uint8Array | null {
  const parts = s.split(/[:-]/);
  if (parts.length !== 6) return null;
  const out = new Uint8Array(6);
  for (let i = 0; i < 6; i++) {
    if (!/^[0-9a-fA-F]{1,2}$/.test(parts[i])) return null;
    out[i] = parseInt(parts[i], 16);
  }
  return out;
}

export function parseMac(s: string): Uint8Array {
  const m = tryParseMac(s);
  if (m === null) throw new WireError('bad-address', 'address', `not a MAC address: ${JSON.stringify(s)}`);
  return m;
}

export function macEquals(a: Uint8Array, b: Uint8Array): boolean {
  return a[0] === b[0] && a[1] === b[1] && a[2] === b[2] && a[3] === b[3] && a[4] === b[4] && a[5] === b[5];
}

export function isBroadcastMac(a: Uint8Array): boolean {
  return (a[0] & a[1] & a[2] & a[3] & a[4] & a[5]) === 0xff;
}

/** Group bit set (multicast or broadcast), IEEE 802-2014 §8.2. */
export function isMulticastMac(a: Uint8Array): boolean {
  return (a[0] & 1) === 1;
}
