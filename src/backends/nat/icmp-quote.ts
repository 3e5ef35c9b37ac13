/**
 * The quoted packet of an ICMP error translated back to the guest (RFC 5508 REQ-3, REQ-5; RFC
 * 792): the host kernel tells us which of *our* datagrams an error was about, and the guest must
 * see its *own* — its addresses, TTL, IP identification, TOS and DF bit as it sent them, then
 * the start of its transport header and data. udp.ts and icmp.ts (echo) rebuild that quote the
 * same way and differ only in the transport header that follows (UDP ports and checksum; ICMP
 * identifier and checksum), so the IPv4 header is written here once.
 */
import { internetChecksum } from '../../wire/checksum';
import { IPV4_HLEN } from './guest-output';
import { writeIpv4 } from './policy';

/**
 * Write a 20-byte IPv4 header at the start of `q` for a guest packet of `totalLength` bytes
 * from `guest` (4 bytes) to `dst` (the guest-visible destination, as a number), with its
 * header checksum. The transport part follows at IPV4_HLEN and is the caller's.
 */
export function writeQuotedIpv4Header(
  q: Uint8Array,
  protocol: number,
  totalLength: number,
  tos: number,
  id: number,
  dontFragment: boolean,
  ttl: number,
  guest: Uint8Array,
  dst: number,
): void {
  q[0] = 0x45;
  q[1] = tos;
  q[2] = totalLength >>> 8;
  q[3] = totalLength & 0xff;
  q[4] = id >>> 8;
  q[5] = id & 0xff;
  q[6] = dontFragment ? 0x40 : 0;
  q[7] = 0;
  q[8] = ttl;
  q[9] = protocol;
  q[10] = q[11] = 0;
  q[12] = guest[0];
  q[13] = guest[1];
  q[14] = guest[2];
  q[15] = guest[3];
  writeIpv4(q, 16, dst);
  const c = internetChecksum(q, 0, IPV4_HLEN);
  q[10] = c >>> 8;
  q[11] = c & 0xff;
}
