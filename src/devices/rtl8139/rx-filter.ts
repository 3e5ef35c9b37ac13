/**
 * The RTL8139's receive address filter (datasheet, RCR bits 0-3 and MAR0-7): which frames the
 * receiver takes, and the address-match bits it reports in the RX packet header.
 *
 *   broadcast (ff:ff:ff:ff:ff:ff)  accepted with AB                       → header BAR
 *   multicast (I/G bit set)        accepted with AM when its hash bit is   → header MAR
 *                                  set in MAR0-7 (6 MSBs of the CRC, crc.ts)
 *   unicast to IDR0-5              accepted with APM                      → header PAM
 *   any other unicast              accepted with AAP ("all physical")     → no match bit
 *
 * AAP widens only the physical (unicast) match, as the datasheet words it; a promiscuous driver
 * sets AB and AM as well (Linux 8139too does).
 */
import { multicastHashBit } from './crc';
import { RCR_AAP, RCR_AB, RCR_AM, RCR_APM, RXS_BAR, RXS_MAR, RXS_PAM, RXS_ROK } from './registers';

/** The header status for a frame whose destination starts at data[0], or 0 to reject it. */
export function rxAcceptStatus(data: Uint8Array, rcr: number, idr: Uint8Array, mar: Uint8Array): number {
  const d0 = data[0];
  if ((d0 & 1) !== 0) {
    if (d0 === 0xff && data[1] === 0xff && data[2] === 0xff && data[3] === 0xff && data[4] === 0xff && data[5] === 0xff) {
      return (rcr & RCR_AB) !== 0 ? RXS_ROK | RXS_BAR : 0;
    }
    if ((rcr & RCR_AM) === 0) return 0;
    const bit = multicastHashBit(data, 0);
    return (mar[bit >>> 3] & (1 << (bit & 7))) !== 0 ? RXS_ROK | RXS_MAR : 0;
  }
  if (
    d0 === idr[0] &&
    data[1] === idr[1] &&
    data[2] === idr[2] &&
    data[3] === idr[3] &&
    data[4] === idr[4] &&
    data[5] === idr[5]
  ) {
    if ((rcr & RCR_APM) !== 0) return RXS_ROK | RXS_PAM;
  }
  return (rcr & RCR_AAP) !== 0 ? RXS_ROK : 0;
}
