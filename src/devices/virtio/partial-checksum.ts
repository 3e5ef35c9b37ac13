/**
 * Completing a partial checksum (virtio 1.x §5.1.6.2: VIRTIO_NET_HDR_F_NEEDS_CSUM means "the
 * checksum from csum_start to the end of the packet is still to be computed and stored at
 * csum_start + csum_offset"; the field already holds the pseudo-header sum). The virtio-net
 * device uses it only as a fallback, when a backend hands it such a frame for a guest that did
 * not negotiate GUEST_CSUM. Arithmetic per RFC 1071; like Linux's skb_checksum_help, a result of
 * 0 is sent as 0xffff (RFC 768: 0 means "no checksum" for UDP, and is equivalent for TCP).
 */

/** One's-complement sum of data[start..end) as a 32-bit accumulator (not folded). */
export function onesSum(data: Uint8Array, start: number, end: number): number {
  let sum = 0;
  let i = start;
  const even = end - ((end - start) & 1);
  for (; i < even; i += 2) {
    sum += (data[i] << 8) | data[i + 1];
    if (sum > 0x7fffffff) sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (i < end) sum += data[i] << 8;
  return sum;
}

/**
 * The 16-bit value to store at csumStart + csumOffset of `data` (big-endian on the wire), or -1
 * when the offsets do not fit the frame.
 */
export function completeChecksum(data: Uint8Array, csumStart: number, csumOffset: number): number {
  if (csumStart + csumOffset + 2 > data.length) return -1;
  let sum = onesSum(data, csumStart, data.length);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const folded = ~sum & 0xffff;
  return folded === 0 ? 0xffff : folded;
}
