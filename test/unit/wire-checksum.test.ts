/**
 * The Internet checksum (src/wire/checksum.ts) against a plain reference implementation of
 * RFC 1071: odd lengths, every alignment of the underlying ArrayBuffer, all-0xff data, the
 * byte-pair/word-path boundary, chunk folding on big buffers, chaining with `initial`, pseudo
 * headers, and RFC 1624 incremental updates. The throughput is measured and logged (not asserted:
 * timings are not test results).
 */
import test from 'ava';
import * as fc from 'fast-check';
import {
  checksumAdjust16,
  checksumAdjust32,
  foldChecksum,
  internetChecksum,
  onesSum,
  parseIpv4,
  parseIpv6,
  pseudoHeaderSumV4,
  pseudoHeaderSumV6,
} from '../../src/wire';

/** RFC 1071 done the obvious way: 16-bit big-endian words, end-around carry at every step. */
function refSum(b: Uint8Array, off = 0, len = b.length - off): number {
  let s = 0;
  for (let i = 0; i < len; i += 2) {
    const w = (b[off + i] << 8) | (i + 1 < len ? b[off + i + 1] : 0);
    s += w;
    if (s > 0xffff) s = (s & 0xffff) + 1;
  }
  return s;
}

function refChecksum(b: Uint8Array, off = 0, len = b.length - off): number {
  return ~refSum(b, off, len) & 0xffff;
}

function randomBytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

test('RFC 1071 §3 numerical example', (t) => {
  const b = Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
  t.is(onesSum(b, 0, 8), 0xddf2);
  t.is(internetChecksum(b, 0, 8), 0x220d);
  t.is(foldChecksum(0x2ddf0), 0x220d, 'foldChecksum folds the carries itself');
});

test('a real IPv4 header checksums to the stored value, and to 0 with it in place', (t) => {
  const h = Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex');
  t.is(internetChecksum(h, 0, 20), 0xb861);
  h[10] = 0xb8;
  h[11] = 0x61;
  t.is(internetChecksum(h, 0, 20), 0);
  t.is(onesSum(h, 0, 20), 0xffff);
});

test('empty and one-byte blocks; odd lengths pad the last byte as a high byte', (t) => {
  const b = Uint8Array.from([0xab, 0xcd, 0xef]);
  t.is(onesSum(b, 0, 0), 0);
  t.is(internetChecksum(b, 0, 0), 0xffff);
  t.is(onesSum(b, 0, 1), 0xab00);
  t.is(onesSum(b, 1, 1), 0xcd00);
  t.is(onesSum(b, 0, 3), 0xabcd + 0xef00 - 0xffff);
  t.is(onesSum(b, 1, 2), 0xcdef);
});

test('all-0xff data sums to 0xffff (negative zero) at every length and alignment', (t) => {
  const ab = new ArrayBuffer(70000);
  new Uint8Array(ab).fill(0xff);
  for (const base of [0, 1, 2, 3]) {
    for (const len of [2, 3, 63, 64, 65, 66, 67, 1500, 65536, 65537]) {
      const view = new Uint8Array(ab, base, len + 4);
      const want = refSum(view, 1, len);
      t.is(onesSum(view, 1, len), want, `base ${base} len ${len}`);
      if (len % 2 === 0) t.is(internetChecksum(view, 1, len), 0);
    }
  }
});

test('every offset and length 0..300 at every buffer alignment matches the reference', (t) => {
  const data = randomBytes(700, 7);
  const ab = new ArrayBuffer(720);
  let cases = 0;
  for (const base of [0, 1, 2, 3, 5]) {
    const view = new Uint8Array(ab, base, 700);
    view.set(data);
    for (let off = 0; off < 9; off++) {
      for (let len = 0; len <= 300; len++) {
        if (onesSum(view, off, len) !== refSum(view, off, len)) {
          t.fail(`base ${base} off ${off} len ${len}`);
          return;
        }
        cases++;
      }
    }
  }
  t.pass(`${cases} cases`);
});

test('large blocks (chunk folding past 4 MiB) match the reference', (t) => {
  const big = randomBytes(9 * 1024 * 1024 + 3, 99);
  t.is(onesSum(big, 0, big.length), refSum(big));
  t.is(onesSum(big, 1, big.length - 1), refSum(big, 1));
  const ff = new Uint8Array(9 * 1024 * 1024).fill(0xff);
  t.is(onesSum(ff, 0, ff.length), 0xffff);
});

test('chaining with `initial` across blocks at even boundaries equals one pass', (t) => {
  const b = randomBytes(5000, 3);
  const whole = onesSum(b, 0, 5000);
  let s = 0;
  for (const [from, to] of [[0, 10], [10, 1500], [1500, 1502], [1502, 4999]] as const) s = onesSum(b, from, to - from, s);
  t.is(s, refSum(b, 0, 4999));
  t.is(onesSum(b, 4998, 2, onesSum(b, 0, 4998)), whole);
});

test('two alternating buffers (checksum view cache) stay correct', (t) => {
  const a = randomBytes(4096, 11);
  const b = randomBytes(4096, 12);
  for (let i = 0; i < 5; i++) {
    t.is(onesSum(a, 0, 4096), refSum(a));
    t.is(onesSum(b, 0, 4096), refSum(b));
    const c = randomBytes(256, 13 + i); // a third buffer evicts one
    t.is(onesSum(c, 0, 256), refSum(c));
  }
});

test('a range outside the buffer is a programming error (throws RangeError)', (t) => {
  const b = new Uint8Array(10);
  t.throws(() => onesSum(b, 5, 6), { instanceOf: RangeError });
  t.throws(() => onesSum(b, -1, 2), { instanceOf: RangeError });
});

test('pseudo headers equal summing their bytes (RFC 768, RFC 8200 §8.1)', (t) => {
  const src = parseIpv4('10.0.2.15');
  const dst = parseIpv4('192.168.1.200');
  const v4 = Buffer.from('0a00020fc0a801c8' + '0011' + '05dc', 'hex');
  t.is(foldChecksum(pseudoHeaderSumV4(src, dst, 17, 1500)), refChecksum(v4));
  const s6 = parseIpv6('fd00::1');
  const d6 = parseIpv6('2001:db8::ffff:1');
  const v6 = Buffer.concat([s6, d6, Buffer.from('0001000c' + '0000003a', 'hex')]);
  t.is(foldChecksum(pseudoHeaderSumV6(s6, d6, 58, 65548)), refChecksum(v6));
});

test('RFC 1624 incremental update equals recomputation (property)', (t) => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 4, maxLength: 200 }).filter((a) => a.length % 2 === 0),
      fc.nat(),
      fc.integer({ min: 0, max: 0xffff }),
      (data, at, newWord) => {
        const k = (at % (data.length / 2)) * 2;
        const other = k === 0 ? 2 : 0;
        if (data[other] === 0 && data[other + 1] === 0) data[other] = 1; // not all zeros elsewhere
        const before = internetChecksum(data, 0, data.length);
        const oldWord = (data[k] << 8) | data[k + 1];
        data[k] = newWord >>> 8;
        data[k + 1] = newWord & 0xff;
        return checksumAdjust16(before, oldWord, newWord) === internetChecksum(data, 0, data.length);
      },
    ),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 8, maxLength: 120 }).filter((a) => a.length % 4 === 0),
      fc.nat(),
      fc.integer({ min: 0, max: 0xffffffff }),
      (data, at, newVal) => {
        const k = (at % (data.length / 4)) * 4;
        const other = k === 0 ? 4 : 0;
        if (data[other] === 0) data[other] = 0x45;
        const before = internetChecksum(data, 0, data.length);
        const oldVal = ((data[k] << 24) | (data[k + 1] << 16) | (data[k + 2] << 8) | data[k + 3]) >>> 0;
        data[k] = newVal >>> 24;
        data[k + 1] = newVal >>> 16;
        data[k + 2] = newVal >>> 8;
        data[k + 3] = newVal;
        return checksumAdjust32(before, oldVal, newVal) === internetChecksum(data, 0, data.length);
      },
    ),
    { numRuns: 2000 },
  );
  t.pass();
});

test('onesSum equals the reference on random blocks (property)', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 3000 }), fc.nat(3), fc.nat(), (data, base, initial) => {
      const ab = new ArrayBuffer(data.length + 4);
      const view = new Uint8Array(ab, base, data.length);
      view.set(data);
      const init = initial % 0x10000;
      const want = refSum(Uint8Array.from([init >>> 8, init & 0xff, ...data]));
      return onesSum(view, 0, data.length, init) === want || (want === 0xffff && init === 0xffff && onesSum(view, 0, data.length, init) === 0xffff);
    }),
    { numRuns: 500 },
  );
  t.pass();
});

test('throughput on 64 KiB blocks (logged, not asserted)', (t) => {
  const block = randomBytes(65536, 5);
  const ab = new ArrayBuffer(65536 + 8);
  const unaligned = new Uint8Array(ab, 1, 65536);
  unaligned.set(block);
  // Best of five rounds after a warm-up: the machine is shared, the best round is the code's.
  const rate = (buf: Uint8Array, off: number, len: number): number => {
    let x = 0;
    const rounds = Math.max(200, Math.floor((64 << 20) / len));
    for (let i = 0; i < rounds; i++) x += onesSum(buf, off, len); // warm up
    let best = 0;
    for (let k = 0; k < 5; k++) {
      const start = process.hrtime.bigint();
      for (let i = 0; i < rounds; i++) x += onesSum(buf, off, len);
      best = Math.max(best, (len * rounds) / Number(process.hrtime.bigint() - start)); // bytes/ns = GB/s
    }
    t.true(x > 0);
    return best;
  };
  const aligned = rate(block, 0, 65536);
  const odd = rate(unaligned, 0, 65535);
  const header = rate(block, 0, 40);
  t.log(`onesSum: ${aligned.toFixed(2)} GB/s aligned 64 KiB, ${odd.toFixed(2)} GB/s unaligned odd 64 KiB, ${header.toFixed(2)} GB/s on 40-byte headers`);
});
