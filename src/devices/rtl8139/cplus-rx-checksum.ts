/**
 * The RTL8139C+ receive checksum check (datasheet v1.6 §9.2, RX descriptor status: PID1-0, IPF,
 * UDPF, TCPF; enabled by C+CR.RxChkSum): the chip classifies each received frame and verifies
 * the IPv4 header checksum (RFC 791 §3.1) and the TCP (RFC 9293 §3.1) or UDP (RFC 768) checksum
 * over the pseudo header. Linux 8139cp trusts a frame (CHECKSUM_UNNECESSARY) when PID says TCP or
 * UDP and the matching fail bit is clear — which spares a TCG guest the checksum loop.
 *
 *   not IPv4 (or a tag the chip does not parse) → PID 0, nothing checked
 *   IPv4 fragment, or neither TCP nor UDP        → PID 3 (IP), IPF from the header checksum
 *   IPv4 TCP / UDP                              → PID 1 / 2, IPF, TCPF / UDPF
 * A UDP checksum of 0 means "none" and passes. `l4Known` says the device itself just completed
 * the L4 checksum (a NEEDS_CSUM frame from the backend): it is right by construction, so the
 * bytes are not summed a second time.
 */
import { internetChecksum, onesSum, pseudoHeaderSumV4 } from '../../wire/checksum';
import { RX_IPF, RX_PID_IP, RX_PID_SHIFT, RX_PID_TCP, RX_PID_UDP, RX_TCPF, RX_UDPF } from './cplus-registers';

const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;

/** Status bits for the frame in b[off, off+len) (FCS excluded). */
export function rxChecksumStatus(b: Uint8Array, off: number, len: number, l4Known: boolean): number {
  let l3 = off + 14;
  let type = (b[off + 12] << 8) | b[off + 13];
  if (type === 0x8100 && len >= 18) {
    type = (b[off + 16] << 8) | b[off + 17];
    l3 += 4;
  }
  if (type !== 0x0800 || l3 + 20 > off + len || b[l3] >>> 4 !== 4) return 0;
  const ihl = (b[l3] & 0x0f) * 4;
  const total = (b[l3 + 2] << 8) | b[l3 + 3];
  if (ihl < 20 || total < ihl || l3 + total > off + len) return (RX_PID_IP << RX_PID_SHIFT) | RX_IPF;
  const ipBad = internetChecksum(b, l3, ihl) !== 0 ? RX_IPF : 0;
  const fragment = (((b[l3 + 6] << 8) | b[l3 + 7]) & 0x3fff) !== 0;
  const proto = b[l3 + 9];
  if (fragment || (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP)) return (RX_PID_IP << RX_PID_SHIFT) | ipBad;
  const l4 = l3 + ihl;
  const l4len = total - ihl;
  const tcp = proto === IPPROTO_TCP;
  const status = ((tcp ? RX_PID_TCP : RX_PID_UDP) << RX_PID_SHIFT) | ipBad;
  if (l4Known) return status;
  const fail = tcp ? RX_TCPF : RX_UDPF;
  if (l4len < (tcp ? 20 : 8)) return status | fail;
  if (!tcp && b[l4 + 6] === 0 && b[l4 + 7] === 0) return status;
  const src = ((b[l3 + 12] << 24) | (b[l3 + 13] << 16) | (b[l3 + 14] << 8) | b[l3 + 15]) >>> 0;
  const dst = ((b[l3 + 16] << 24) | (b[l3 + 17] << 16) | (b[l3 + 18] << 8) | b[l3 + 19]) >>> 0;
  const sum = onesSum(b, l4, l4len, pseudoHeaderSumV4(src, dst, proto, l4len));
  return sum === 0xffff ? status : status | fail;
}
