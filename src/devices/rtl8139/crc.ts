/**
 * The two CRCs an Ethernet MAC computes (IEEE 802.3 §3.2.9):
 *
 * - `frameCheckSequence`: the FCS the RTL8139 appends after each received frame in its RX ring
 *   (CRC-32, generator 0x04C11DB7, initial value all ones, bits taken least significant first —
 *   the "reflected" table form with 0xEDB88320 — and the result complemented; stored least
 *   significant byte first, as it travels on the wire). Table driven, four bytes per step
 *   ("slicing by 4"), since it runs over every byte the guest receives.
 *
 * - `etherCrc`: the same CRC register *without* the final complement, kept most significant bit
 *   first, whose top 6 bits index the 64-bit multicast hash filter MAR0-7 (RTL8139 datasheet,
 *   MAR: "the hash table … uses the 6 most significant bits of the CRC of the destination
 *   address"). This is the value Linux's `ether_crc()` returns and 8139too's set_rx_mode uses.
 */

const POLY_REFLECTED = 0xedb88320;
const POLY = 0x04c11db7;

const T0 = new Uint32Array(256);
const T1 = new Uint32Array(256);
const T2 = new Uint32Array(256);
const T3 = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? POLY_REFLECTED ^ (c >>> 1) : c >>> 1;
  T0[n] = c >>> 0;
}
for (let n = 0; n < 256; n++) {
  T1[n] = (T0[T0[n] & 0xff] ^ (T0[n] >>> 8)) >>> 0;
  T2[n] = (T0[T1[n] & 0xff] ^ (T1[n] >>> 8)) >>> 0;
  T3[n] = (T0[T2[n] & 0xff] ^ (T2[n] >>> 8)) >>> 0;
}

/** Continue a reflected CRC-32 register (pass 0xffffffff to start) over data[off, off+len). */
export function crc32Update(crc: number, data: Uint8Array, off: number, len: number): number {
  let c = crc >>> 0;
  let i = off;
  const end = off + len;
  const end4 = end - 3;
  for (; i < end4; i += 4) {
    c ^= data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24);
    c = T3[c & 0xff] ^ T2[(c >>> 8) & 0xff] ^ T1[(c >>> 16) & 0xff] ^ T0[c >>> 24];
  }
  for (; i < end; i++) c = T0[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return c >>> 0;
}

/** The Ethernet FCS of data[off, off+len) as the 32-bit value sent least significant byte first. */
export function frameCheckSequence(data: Uint8Array, off = 0, len = data.length - off): number {
  return ~crc32Update(0xffffffff, data, off, len) >>> 0;
}

/** Linux ether_crc(): MSB-first CRC register over the bytes (each taken LSB first), no complement. */
export function etherCrc(data: Uint8Array, off = 0, len = 6): number {
  let crc = -1;
  for (let i = off; i < off + len; i++) {
    let b = data[i];
    for (let k = 0; k < 8; k++, b >>>= 1) crc = (crc << 1) ^ ((crc < 0 ? 1 : 0) ^ (b & 1) ? POLY : 0);
  }
  return crc >>> 0;
}

/** The MAR0-7 bit (0..63) a multicast destination hashes to. */
export function multicastHashBit(dst: Uint8Array, off = 0): number {
  return etherCrc(dst, off, 6) >>> 26;
}
