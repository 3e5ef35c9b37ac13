/**
 * The test helper that reads captures (test/helpers/pcap-reader.ts): classic pcap as tcpdump
 * writes it, and pcapng built here block by block (SHB, IDB with if_tsresol, EPB, SPB).
 */
import test from 'ava';
import * as path from 'node:path';
import { parseCapture, readCapture } from '../helpers/pcap-reader';

test('classic pcap: the fixtures tcpdump wrote', (t) => {
  const recs = readCapture(path.join(__dirname, '..', 'fixtures', 'wire', 'arp.pcap'));
  t.is(recs.length, 2);
  t.is(recs[0].linkType, 1);
  t.is(recs[0].data.length, 42);
  t.is(recs[0].originalLength, 42);
  t.true(recs[1].timestamp >= recs[0].timestamp);
});

function block(type: number, body: Buffer): Buffer {
  const padded = Buffer.concat([body, Buffer.alloc((4 - (body.length % 4)) % 4)]);
  const len = padded.length + 12;
  const head = Buffer.alloc(8);
  head.writeUInt32LE(type, 0);
  head.writeUInt32LE(len, 4);
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(len, 0);
  return Buffer.concat([head, padded, tail]);
}

test('pcapng: enhanced and simple packet blocks, nanosecond timestamps, truncation', (t) => {
  const shb = Buffer.alloc(16);
  shb.writeUInt32LE(0x1a2b3c4d, 0);
  shb.writeUInt16LE(1, 4);
  shb.writeBigInt64LE(-1n, 8);
  const idb = Buffer.alloc(8 + 8 + 4);
  idb.writeUInt16LE(1, 0); // Ethernet
  idb.writeUInt32LE(65535, 4);
  idb.writeUInt16LE(9, 8); // if_tsresol
  idb.writeUInt16LE(1, 10);
  idb[12] = 9; // 10^-9
  const pkt = Buffer.from('ffffffffffff020000000102080600', 'hex');
  const epb = Buffer.alloc(20);
  const ts = 1_700_000_000_123_456_789n;
  epb.writeUInt32LE(0, 0);
  epb.writeUInt32LE(Number(ts >> 32n), 4);
  epb.writeUInt32LE(Number(ts & 0xffffffffn), 8);
  epb.writeUInt32LE(pkt.length - 5, 12);
  epb.writeUInt32LE(pkt.length, 16);
  const spb = Buffer.alloc(4);
  spb.writeUInt32LE(pkt.length, 0);
  const file = Buffer.concat([
    block(0x0a0d0d0a, shb),
    block(1, idb),
    block(6, Buffer.concat([epb, pkt.subarray(0, pkt.length - 5)])),
    block(3, Buffer.concat([spb, pkt])),
  ]);
  const recs = parseCapture(new Uint8Array(file));
  t.is(recs.length, 2);
  t.is(recs[0].linkType, 1);
  t.is(recs[0].data.length, pkt.length - 5);
  t.is(recs[0].originalLength, pkt.length);
  t.is(Math.round(recs[0].timestamp), 1_700_000_000);
  t.is(Buffer.from(recs[1].data).toString('hex'), pkt.toString('hex'));
});
