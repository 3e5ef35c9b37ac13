/**
 * Micro benchmarks (benny): the per-packet work every path does — checksums, parsing and
 * emitting a TCP/IPv4 frame, and building Frame batches — reported as ops/s (and bytes/s where
 * bytes are the point), printed as a table and written to bench/results/micro.json and .md.
 * Numbers here are for comparing versions of usernet on one machine, not against the anchors
 * (that is the system matrix's job).
 */
import b from 'benny';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { internetChecksum, pseudoHeaderSumV4, onesSum } from '../src/wire/checksum';
import { EthernetFrame, EthernetRepr, ETHERTYPE_IPV4 } from '../src/wire/ethernet';
import { Ipv4Packet, Ipv4Repr, IP_PROTO_TCP } from '../src/wire/ipv4';
import { TcpSegment, TcpRepr, TCP_ACK, TCP_PSH, parseTcpOptions, TcpOptionsRepr } from '../src/wire/tcp';
import { parseIpv4 } from '../src/wire/address';
import { plainFrame, resetFrame, type Frame } from '../src/link/frame';

const resultsDir = path.resolve(__dirname, '..', '..', 'bench', 'results');

interface Row {
  name: string;
  ops: number;
  margin: number;
  bytesPerOp: number;
}
const rows: Row[] = [];

function record(bytesPerOp: Record<string, number>) {
  return b.complete((summary) => {
    for (const r of summary.results) rows.push({ name: `${summary.name}: ${r.name}`, ops: r.ops, margin: r.margin, bytesPerOp: bytesPerOp[r.name] ?? 0 });
  });
}

const SRC = parseIpv4('10.0.2.15');
const DST = parseIpv4('10.0.2.2');
const PAYLOAD = 1448;

/** A TCP/IPv4 data frame with timestamps, as the kernel sends at MTU 1500. */
function buildFrame(buf: Uint8Array): number {
  const eth = new EthernetFrame().wrap(buf);
  new EthernetRepr({ dst: new Uint8Array([0x52, 0x55, 10, 0, 2, 2]), src: new Uint8Array([0x52, 0x54, 0, 0x12, 0x34, 0x56]), etherType: ETHERTYPE_IPV4 }).emit(eth);
  const tcpRepr = new TcpRepr({ srcPort: 40123, dstPort: 5201, seq: 1000, ack: 2000, flags: TCP_ACK | TCP_PSH, window: 502 });
  tcpRepr.options.hasTimestamps = true;
  tcpRepr.options.tsVal = 123456;
  tcpRepr.options.tsEcr = 654321;
  const l4 = tcpRepr.headerLength + PAYLOAD;
  const ip = new Ipv4Packet().wrap(buf, 14, 20 + l4);
  new Ipv4Repr({ src: SRC, dst: DST, protocol: IP_PROTO_TCP, ttl: 64, payloadLength: l4, dontFragment: true }).emit(ip);
  const seg = new TcpSegment().wrap(buf, 34, l4);
  tcpRepr.emit(seg);
  for (let i = 0; i < PAYLOAD; i++) buf[34 + tcpRepr.headerLength + i] = i & 0xff;
  seg.fillChecksumV4(SRC, DST);
  return 14 + 20 + l4;
}

async function main(): Promise<void> {
  const big = new Uint8Array(65536).map((_, i) => (i * 7) & 0xff);
  const mtu = big.subarray(0, 1500);

  await b.suite(
    'checksum',
    b.add('internetChecksum 1500 B', () => {
      internetChecksum(mtu, 0, mtu.length);
    }),
    b.add('internetChecksum 64 KiB', () => {
      internetChecksum(big, 0, big.length);
    }),
    b.add('pseudo-header + onesSum 1480 B', () => {
      onesSum(mtu, 20, 1480, pseudoHeaderSumV4(SRC, DST, IP_PROTO_TCP, 1480));
    }),
    b.cycle(),
    record({ 'internetChecksum 1500 B': 1500, 'internetChecksum 64 KiB': 65536, 'pseudo-header + onesSum 1480 B': 1480 }),
  );

  const frameBuf = new Uint8Array(2048);
  const frameLen = buildFrame(frameBuf);
  const frame = frameBuf.subarray(0, frameLen);
  const eth = new EthernetFrame();
  const ip = new Ipv4Packet();
  const seg = new TcpSegment();
  const opts = new TcpOptionsRepr();
  const ipRepr = new Ipv4Repr();
  const tcpRepr = new TcpRepr();
  const out = new Uint8Array(2048);
  const outEth = new EthernetFrame();
  const outIp = new Ipv4Packet();
  const outSeg = new TcpSegment();
  const ethRepr = new EthernetRepr();

  await b.suite(
    'tcp/ipv4 frame',
    b.add('parse views + options (no checksum)', () => {
      eth.wrap(frame);
      if (eth.check()) throw new Error('eth');
      ip.wrap(frame, 14, frame.length - 14);
      if (ip.check()) throw new Error('ip');
      seg.wrap(frame, 14 + ip.headerLength, ip.payloadLength);
      if (seg.check()) throw new Error('tcp');
      parseTcpOptions(seg, opts);
    }),
    b.add('parse + verify checksums', () => {
      ip.wrap(frame, 14, frame.length - 14);
      ip.check();
      ip.verifyChecksum();
      seg.wrap(frame, 34, ip.payloadLength);
      seg.check();
      seg.verifyChecksumV4(ip.src, ip.dst);
    }),
    b.add('parse Reprs', () => {
      eth.wrap(frame);
      EthernetRepr.parse(eth, ethRepr);
      ip.wrap(frame, 14, frame.length - 14);
      Ipv4Repr.parse(ip, ipRepr);
      seg.wrap(frame, 34, ipRepr.payloadLength);
      TcpRepr.parse(seg, tcpRepr);
    }),
    b.add('emit headers + checksum', () => {
      outEth.wrap(out);
      ethRepr.emit(outEth);
      outIp.wrap(out, 14, 20 + ipRepr.payloadLength);
      ipRepr.emit(outIp);
      outSeg.wrap(out, 34, ipRepr.payloadLength);
      tcpRepr.emit(outSeg);
      outSeg.fillChecksumV4(ipRepr.src, ipRepr.dst);
    }),
    b.cycle(),
    record({}),
  );

  const pool: Frame[] = Array.from({ length: 64 }, () => plainFrame(frame));
  const batch: Frame[] = [];
  const sink = (frames: readonly Frame[]): number => frames.length;
  let total = 0;
  await b.suite(
    'frame batching',
    b.add('batch of 64 pooled frames (reset + push + deliver)', () => {
      batch.length = 0;
      for (let i = 0; i < 64; i++) batch.push(resetFrame(pool[i], frame));
      total += sink(batch);
    }),
    b.add('batch of 64 fresh frames (allocating)', () => {
      const fresh: Frame[] = [];
      for (let i = 0; i < 64; i++) fresh.push(plainFrame(frame));
      total += sink(fresh);
    }),
    b.cycle(),
    record({}),
  );
  if (total < 0) console.log(total);

  const lines = [
    '| benchmark | ops/s | ± % | throughput |',
    '|---|---:|---:|---:|',
    ...rows.map((r) => `| ${r.name} | ${Math.round(r.ops).toLocaleString('en-US')} | ${r.margin.toFixed(2)} | ${r.bytesPerOp ? ((r.ops * r.bytesPerOp) / 1e9).toFixed(2) + ' GB/s' : ''} |`),
  ];
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(path.join(resultsDir, 'micro.json'), JSON.stringify({ date: new Date().toISOString(), node: process.version, rows }, null, 2));
  writeFileSync(path.join(resultsDir, 'micro.md'), lines.join('\n') + '\n');
  console.log('\n' + lines.join('\n'));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
