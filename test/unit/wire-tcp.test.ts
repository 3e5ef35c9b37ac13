/**
 * TCP details (src/wire/tcp.ts): sequence arithmetic modulo 2^32 (RFC 9293 §3.4), option parsing
 * edge cases (RFC 9293 §3.2, RFC 7323, RFC 2018), and the Linux option layout on emit.
 */
import test from 'ava';
import * as fc from 'fast-check';
import {
  emitTcpOptions,
  parseTcpOptionsAt,
  seqAdd,
  seqGe,
  seqGt,
  seqLe,
  seqLt,
  seqSub,
  TcpOptionsRepr,
  TcpRepr,
  TcpSegment,
  TCP_ACK,
  TCP_SYN,
  WireError,
} from '../../src/wire';

test('sequence comparisons wrap at 2^32', (t) => {
  t.true(seqLt(0xfffffff0, 0x10));
  t.true(seqGt(0x10, 0xfffffff0));
  t.true(seqLe(5, 5) && seqGe(5, 5));
  t.false(seqLt(5, 5));
  t.is(seqAdd(0xffffffff, 1), 0);
  t.is(seqAdd(0, -1), 0xffffffff);
  t.is(seqSub(0x10, 0xfffffff0), 0x20);
  t.is(seqSub(0xfffffff0, 0x10), -0x20);
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 1, max: 0x7fffffff }), (a, n) => {
      const b = seqAdd(a, n);
      return seqLt(a, b) && seqGt(b, a) && seqSub(b, a) === n && !seqLt(b, a);
    }),
  );
});

function opts(hex: string): TcpOptionsRepr | WireError {
  const b = Buffer.from(hex.replace(/ /g, ''), 'hex');
  const out = new TcpOptionsRepr();
  return parseTcpOptionsAt(b, 0, b.length, out) ?? out;
}

test('option parsing: known kinds, unknown kinds skipped, END stops, bad lengths refused', (t) => {
  const linuxSyn = opts('020405b4 0402080a 00000001 00000000 01030307');
  if (linuxSyn instanceof WireError) return t.fail(linuxSyn.message);
  t.is(linuxSyn.mss, 1460);
  t.true(linuxSyn.sackPermitted);
  t.true(linuxSyn.hasTimestamps);
  t.is(linuxSyn.tsVal, 1);
  t.is(linuxSyn.windowScale, 7);

  const unknown = opts('1e06aabbccdd 0101 020405b4 00 ffffffff');
  if (unknown instanceof WireError) return t.fail(unknown.message);
  t.is(unknown.mss, 1460, 'kind 30 skipped by its length; junk after END ignored');

  const bigShift = opts('01030320');
  t.is((bigShift as TcpOptionsRepr).windowScale, 14, 'RFC 7323 §2.3: shifts above 14 count as 14');

  const sack = opts('0101050a 00000010 00000020');
  t.is((sack as TcpOptionsRepr).sackCount, 1);

  for (const bad of ['0203', '020305b4', '0401', '0500', '050a000000010000', '080a00000001', '02', '1e01', '1e00', '1e09aabb']) {
    const r = opts(bad);
    t.true(r instanceof WireError && r.code === 'bad-option', bad);
  }
});

test('emitTcpOptions writes Linux’s layout', (t) => {
  const o = new TcpOptionsRepr({ mss: 1460, sackPermitted: true, hasTimestamps: true, tsVal: 1, tsEcr: 0, windowScale: 7 });
  const b = new Uint8Array(40);
  t.is(emitTcpOptions(o, b, 0), 20);
  t.is(Buffer.from(b.subarray(0, 20)).toString('hex'), '020405b40402080a000000010000000001030307');
  const noTs = new TcpOptionsRepr({ mss: 1460, sackPermitted: true, windowScale: 7 });
  t.is(Buffer.from(b.subarray(0, emitTcpOptions(noTs, b, 0))).toString('hex'), '020405b40101040201030307');
  const ack = new TcpOptionsRepr({ hasTimestamps: true, tsVal: 2, tsEcr: 3 });
  ack.addSackBlock(100, 200);
  t.is(Buffer.from(b.subarray(0, emitTcpOptions(ack, b, 0))).toString('hex'), '0101080a00000002000000030101050a00000064000000c8');
});

test('segment view: flags, header length, payload, SYN/FIN sequence space', (t) => {
  const r = new TcpRepr({ srcPort: 1234, dstPort: 80, seq: 0xfffffffe, ack: 0, flags: TCP_SYN | TCP_ACK, window: 65535 });
  r.options.mss = 1400;
  const buf = new Uint8Array(r.headerLength + 3);
  const s = new TcpSegment().wrap(buf);
  t.is(r.emit(s), 24);
  t.is(s.check(), null);
  t.true(s.syn && s.ackFlag);
  t.false(s.fin || s.rst || s.psh || s.urg || s.ece || s.cwr);
  t.is(s.dataOffset, 24);
  t.is(s.payloadOffset, 24);
  t.is(s.payloadLength, 3);
  t.is(s.segmentLength, 4);
  t.is(s.options.length, 4);
  buf[12] = 0x40; // data offset 4 words: below the minimum
  t.is(s.check()?.code, 'bad-header-length');
  buf[12] = 0xf0; // 60 bytes: beyond the 27-byte segment
  t.is(s.check()?.code, 'truncated');
  t.true(TcpRepr.parse(s) instanceof WireError);
});
