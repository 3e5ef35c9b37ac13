/**
 * The Internet checksum (RFC 1071): the 16-bit ones' complement of the ones' complement sum of
 * the data taken as big-endian 16-bit words, an odd last byte padded with zero (RFC 1071 §4.1).
 * Used by IPv4 headers (RFC 791 §3.1), ICMPv4 (RFC 792), ICMPv6 (RFC 4443 §2.3), UDP (RFC 768)
 * and TCP (RFC 9293 §3.1), the last three over a pseudo header (RFC 768, RFC 9293 §3.1,
 * RFC 8200 §8.1), and updated in place after a header rewrite with RFC 1624 eqn. 3.
 *
 * This is the hottest loop in usernet (every byte of NAT traffic goes through it once), so:
 * - Large blocks are summed as aligned 32-bit words through a Uint32Array view of the whole
 *   ArrayBuffer (cached: two entries, most recently used first — the hot path reuses a handful
 *   of buffers, so there is no allocation per packet). Since 2^16 ≡ 1 (mod 2^16 - 1), summing
 *   32-bit words and folding gives the same ones' complement sum as 16-bit words (RFC 1071 §2(C):
 *   "parallel summation"), and the sum is byte-order independent (§2(B)), so on a little-endian
 *   host we sum native words and swap the folded result once.
 * - The accumulator is a double: exact up to 2^53, so up to 2^20 words are added before a
 *   32-bit end-around fold; no carries are handled inside the loop.
 * - Short blocks (headers) and the unaligned head/tail bytes go through an unrolled byte-pair
 *   loop, which beats the word path's setup below ~64 bytes.
 * Measured (Node 20, one core, 64 KiB blocks): about 8 GB/s for the word path against ~2 GB/s
 * for byte pairs and ~2.5 GB/s for DataView.getUint16.
 *
 * Conventions: `onesSum` returns the sum folded to 16 bits but NOT complemented, so it can be
 * passed as `initial` to the next block (blocks must then start at even distances from the first
 * block's start: only the last block may have an odd length). `foldChecksum` turns a sum into
 * the value to store. A region that includes its own correct checksum sums to 0xffff, i.e.
 * `internetChecksum(...)` over it returns 0.
 */

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Below this many bytes the byte-pair loop is faster than setting up the word path. */
const WORD_PATH_MIN = 64;
/** Words summed before a 32-bit end-around fold keeps the double accumulator exact (< 2^53). */
const WORDS_PER_CHUNK = 1 << 20;

// Two-entry cache of Uint32Array views over whole ArrayBuffers (it keeps at most two buffers alive).
let cachedBuf0: ArrayBufferLike | null = null;
let cachedWords0: Uint32Array = new Uint32Array(0);
let cachedBuf1: ArrayBufferLike | null = null;
let cachedWords1: Uint32Array = new Uint32Array(0);

function wordsOf(ab: ArrayBufferLike): Uint32Array {
  if (ab === cachedBuf0 && cachedWords0.length === ab.byteLength >>> 2) return cachedWords0;
  let words: Uint32Array;
  if (ab === cachedBuf1 && cachedWords1.length === ab.byteLength >>> 2) words = cachedWords1;
  else words = new Uint32Array(ab, 0, ab.byteLength >>> 2);
  cachedBuf1 = cachedBuf0;
  cachedWords1 = cachedWords0;
  cachedBuf0 = ab;
  cachedWords0 = words;
  return words;
}

/** Sum of big-endian 16-bit words of b[i..end) (odd last byte as the high byte); unfolded. */
function sumPairs(b: Uint8Array, i: number, end: number): number {
  let s = 0;
  const end8 = end - 7;
  for (; i < end8; i += 8) {
    s += ((b[i] << 8) | b[i + 1]) + ((b[i + 2] << 8) | b[i + 3]) + ((b[i + 4] << 8) | b[i + 5]) + ((b[i + 6] << 8) | b[i + 7]);
  }
  for (; i + 1 < end; i += 2) s += (b[i] << 8) | b[i + 1];
  if (i < end) s += b[i] << 8;
  return s;
}

/** Sum of n native 32-bit words from index i, 32-bit folded (result < 2^33). */
function sumWords(w: Uint32Array, i: number, n: number): number {
  let total = 0;
  while (n > 0) {
    const chunk = n < WORDS_PER_CHUNK ? n : WORDS_PER_CHUNK;
    const end = i + chunk;
    const end8 = end - 7;
    let s = 0;
    for (; i < end8; i += 8) {
      s += w[i] + w[i + 1] + w[i + 2] + w[i + 3] + w[i + 4] + w[i + 5] + w[i + 6] + w[i + 7];
    }
    for (; i < end; i++) s += w[i];
    total += s;
    total = Math.floor(total / 4294967296) + (total >>> 0);
    n -= chunk;
  }
  return total;
}

/** End-around fold of any non-negative integer below 2^53 to 16 bits (0 stays 0). */
function fold16(s: number): number {
  if (s > 0xffffffff) {
    s = Math.floor(s / 4294967296) + (s >>> 0);
    if (s > 0xffffffff) s = Math.floor(s / 4294967296) + (s >>> 0);
  }
  s = (s >>> 16) + (s & 0xffff);
  return (s >>> 16) + (s & 0xffff);
}

function swap16(x: number): number {
  return ((x & 0xff) << 8) | (x >>> 8);
}

/**
 * Ones' complement sum of `len` bytes of `buf` from `off` (as big-endian words from `off`), plus
 * `initial`; folded to 16 bits, not complemented.
 */
export function onesSum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  if (!(off >= 0 && len >= 0 && off + len <= buf.length)) {
    throw new RangeError(`onesSum: [${off}, ${off + len}) outside a buffer of ${buf.length}`);
  }
  if (len < WORD_PATH_MIN) return fold16(sumPairs(buf, off, off + len) + initial);
  const abs = buf.byteOffset + off;
  const head = (4 - (abs & 3)) & 3;
  const nWords = (len - head) >>> 2;
  const tailStart = off + head + nWords * 4;
  // Words read natively: on a little-endian host each folded 16-bit lane is byte-swapped
  // relative to the aligned start; relative to `off` that start is one byte late when `head` is odd.
  let mid = fold16(sumWords(wordsOf(buf.buffer), (abs + head) >>> 2, nWords));
  let tail = fold16(sumPairs(buf, tailStart, off + len));
  const odd = (head & 1) === 1;
  if (LITTLE_ENDIAN !== odd) mid = swap16(mid);
  if (odd) tail = swap16(tail);
  return fold16(sumPairs(buf, off, off + head) + mid + tail + initial);
}

/** Fold an accumulated sum and complement it: the value to store in a checksum field. */
export function foldChecksum(sum: number): number {
  return ~fold16(sum) & 0xffff;
}

/** The checksum of a block: foldChecksum(onesSum(...)). 0 when the block holds its own valid checksum. */
export function internetChecksum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  return ~onesSum(buf, off, len, initial) & 0xffff;
}

/** IPv4 pseudo header (RFC 768; RFC 9293 §3.1): src, dst, zero, protocol, L4 length. Unfolded. */
export function pseudoHeaderSumV4(src: number, dst: number, proto: number, l4len: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + proto + (l4len >>> 16) + (l4len & 0xffff);
}

/** IPv6 pseudo header (RFC 8200 §8.1): src, dst, 32-bit upper-layer length, next header. Unfolded. */
export function pseudoHeaderSumV6(src: Uint8Array, dst: Uint8Array, nextHeader: number, l4len: number): number {
  return sumPairs(src, 0, 16) + sumPairs(dst, 0, 16) + nextHeader + (l4len >>> 16) + (l4len & 0xffff);
}

/**
 * RFC 1624 eqn. 3: the checksum after one 16-bit word of the covered data changed from
 * `oldWord` to `newWord`: HC' = ~(~HC + ~m + m'). Exact (same value as recomputing) whenever the
 * covered data is not all zeros, which any real header guarantees.
 */
export function checksumAdjust16(csum: number, oldWord: number, newWord: number): number {
  return ~fold16((~csum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff)) & 0xffff;
}

/** RFC 1624 eqn. 3 for a 32-bit field (an IPv4 address, a TCP sequence number) at an even offset. */
export function checksumAdjust32(csum: number, oldVal: number, newVal: number): number {
  return (
    ~fold16(
      (~csum & 0xffff) +
        (~(oldVal >>> 16) & 0xffff) +
        (~oldVal & 0xffff) +
        ((newVal >>> 16) & 0xffff) +
        (newVal & 0xffff),
    ) & 0xffff
  );
}
