/**
 * Capture writers checked by real readers: files written here are read back with tcpdump and
 * tshark, which must report the right frame count, addresses, interfaces and directions.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { testIf } from '../helpers/env';
import { plainFrame, VNET_F_NEEDS_CSUM, GSO_TCPV4, type Frame } from '../../src/link/frame';
import { Meter } from '../../src/meter/meter';
import {
  CaptureWriteError,
  DIRECTION_INBOUND,
  DIRECTION_OUTBOUND,
  PcapWriter,
  PcapngWriter,
  nanosHiLo,
  openCapture,
} from '../../src/meter/pcap';
import { PcapTap } from '../../src/meter/pcap-tap';
import { LoopbackPair } from '../../src/link/loopback-pair';

// ---- a tiny hand-made Ethernet / IPv4 / UDP / TCP builder (RFC 791, 768, 793) ----

function mac(s: string): number[] {
  return s.split(':').map((h) => parseInt(h, 16));
}
function ip(s: string): number[] {
  return s.split('.').map((d) => parseInt(d, 10));
}
function sum16(b: Uint8Array, from: number, to: number, acc = 0): number {
  for (let i = from; i < to; i += 2) acc += (b[i] << 8) | (i + 1 < to ? b[i + 1] : 0);
  return acc;
}
function fold(acc: number): number {
  while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
  return acc;
}

interface Ends {
  srcMac?: string;
  dstMac?: string;
  src: string;
  dst: string;
  sport: number;
  dport: number;
}

/** Ethernet II + IPv4 (20 bytes, DF, TTL 64) + an L4 header of `l4Len` bytes + payload. */
function ipv4Frame(e: Ends, proto: number, l4: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + 20 + l4.length);
  f.set(mac(e.dstMac ?? '52:55:0a:00:02:02'), 0);
  f.set(mac(e.srcMac ?? '52:54:00:12:34:56'), 6);
  f[12] = 0x08;
  f[13] = 0x00;
  const iph = 14;
  const total = 20 + l4.length;
  f[iph] = 0x45;
  f[iph + 2] = total >> 8;
  f[iph + 3] = total & 0xff;
  f[iph + 4] = 0x12;
  f[iph + 5] = 0x34;
  f[iph + 6] = 0x40; // DF
  f[iph + 8] = 64;
  f[iph + 9] = proto;
  f.set(ip(e.src), iph + 12);
  f.set(ip(e.dst), iph + 16);
  const c = 0xffff ^ fold(sum16(f, iph, iph + 20));
  f[iph + 10] = c >> 8;
  f[iph + 11] = c & 0xff;
  f.set(l4, iph + 20);
  return f;
}

function pseudoSum(f: Uint8Array, proto: number, l4len: number): number {
  return sum16(f, 26, 34) + proto + l4len;
}

function udpFrame(e: Ends, payload: Uint8Array): Uint8Array {
  const l4 = new Uint8Array(8 + payload.length);
  l4[0] = e.sport >> 8;
  l4[1] = e.sport & 0xff;
  l4[2] = e.dport >> 8;
  l4[3] = e.dport & 0xff;
  l4[4] = l4.length >> 8;
  l4[5] = l4.length & 0xff;
  l4.set(payload, 8);
  const f = ipv4Frame(e, 17, l4);
  let c = 0xffff ^ fold(sum16(f, 34, f.length, pseudoSum(f, 17, l4.length)));
  if (c === 0) c = 0xffff;
  f[40] = c >> 8;
  f[41] = c & 0xff;
  return f;
}

/** A TSO super-frame as a virtio guest hands it over: checksum field = pseudo-header sum only. */
function tsoFrame(e: Ends, payloadLen: number): Frame {
  const l4 = new Uint8Array(20 + payloadLen);
  l4[0] = e.sport >> 8;
  l4[1] = e.sport & 0xff;
  l4[2] = e.dport >> 8;
  l4[3] = e.dport & 0xff;
  l4[7] = 1; // seq 1
  l4[12] = 0x50; // data offset 5
  l4[13] = 0x18; // PSH ACK
  l4[14] = 0xff;
  l4[15] = 0xff;
  for (let i = 20; i < l4.length; i++) l4[i] = i & 0xff;
  const data = ipv4Frame(e, 6, l4);
  const ps = fold(pseudoSum(data, 6, l4.length));
  data[34 + 16] = ps >> 8;
  data[34 + 17] = ps & 0xff;
  const frame = plainFrame(data);
  frame.flags = VNET_F_NEEDS_CSUM;
  frame.gsoType = GSO_TCPV4;
  frame.gsoSize = 1448;
  frame.hdrLen = 54;
  frame.csumStart = 34;
  frame.csumOffset = 16;
  return frame;
}

function knownFrames(n: number): Frame[] {
  const out: Frame[] = [];
  for (let i = 0; i < n; i++) {
    out.push(
      plainFrame(
        udpFrame(
          { src: '10.0.2.15', dst: `10.0.2.${3 + i}`, sport: 40000 + i, dport: 53 },
          new TextEncoder().encode(`hello ${i} `.repeat(i + 1)),
        ),
      ),
    );
  }
  return out;
}

// ---- running the readers ----

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}
function run(cmd: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}
/** stderr of a reader minus the harmless notices (tshark as root; tcpdump's "reading from"). */
function complaints(stderr: string): string {
  return stderr
    .split('\n')
    .filter((l) => l.trim() !== '' && !/running as user "root"|reading from file|^\s*$/i.test(l))
    .join('\n');
}
function lines(s: string): string[] {
  return s.split('\n').filter((l) => l.trim() !== '');
}

function tmp(): { dir: string; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'usernet-pcap-'));
  return { dir, done: () => rmSync(dir, { recursive: true, force: true }) };
}

const withReaders = testIf('cmd:tcpdump', 'cmd:tshark');

withReaders('classic pcap of known UDP frames reads back in tcpdump and tshark', async (t) => {
  const { dir, done } = tmp();
  t.teardown(done);
  const meter = new Meter();
  const file = join(dir, 'udp.pcap');
  const w = await PcapWriter.open(file, { meter });
  const frames = knownFrames(5);
  w.write(w.addInterface('guest'), DIRECTION_OUTBOUND, frames.slice(0, 2));
  w.write(0, DIRECTION_INBOUND, frames.slice(2));
  await w.close();

  const td = await run('tcpdump', ['-r', file, '-nn']);
  t.is(td.code, 0, td.stderr);
  t.is(complaints(td.stderr), '');
  const tdl = lines(td.stdout);
  t.is(tdl.length, 5);
  for (let i = 0; i < 5; i++) {
    t.regex(tdl[i], new RegExp(`IP 10\\.0\\.2\\.15\\.${40000 + i} > 10\\.0\\.2\\.${3 + i}\\.53: `));
  }
  t.regex(td.stderr, /link-type EN10MB/);
  t.regex(td.stderr, /snapshot length 262144/);

  const ts = await run('tshark', ['-r', file, '-T', 'fields', '-e', 'eth.src', '-e', 'ip.src', '-e', 'ip.dst', '-e', 'udp.srcport', '-e', 'frame.time_epoch', '-o', 'udp.check_checksum:TRUE', '-e', 'udp.checksum.status']);
  t.is(ts.code, 0, ts.stderr);
  t.is(complaints(ts.stderr), '');
  const rows = lines(ts.stdout).map((l) => l.split('\t'));
  t.is(rows.length, 5);
  const now = Date.now() / 1000;
  rows.forEach((r, i) => {
    t.deepEqual(r.slice(0, 4), ['52:54:00:12:34:56', '10.0.2.15', `10.0.2.${3 + i}`, String(40000 + i)]);
    t.true(Math.abs(Number(r[4]) - now) < 120, `timestamp ${r[4]} is the wall clock`);
    t.is(r[5], '1', 'our hand-made UDP checksum is good (1 = Good)');
  });

  const s = meter.stage('pcap.write').snapshot();
  t.is(s.frames, 5);
  t.is(s.copies, 5, 'one metered copy per frame');
  t.is(s.bytesCopied, frames.reduce((a, f) => a + f.data.length, 0));
  t.is(w.stats().written, statSync(file).size);
});

withReaders('pcapng: two taps share one writer, with interface names and directions', async (t) => {
  const { dir, done } = tmp();
  t.teardown(done);
  const meter = new Meter();
  const file = join(dir, 'two.pcapng');
  const w = await PcapngWriter.open(file, { meter });
  const pair = new LoopbackPair({ meter });
  const guest = new PcapTap(pair.a, w, { name: 'guest' });
  const host = new PcapTap(pair.b, w, { name: 'host' });
  t.deepEqual(w.interfaces(), ['guest', 'host']);

  const frames = knownFrames(3);
  const arrived = new Promise<number>((resolve) => host.onReceive((fs) => resolve(fs.length)));
  guest.send(frames);
  t.is(await arrived, 3);
  await Promise.all([guest.close(), host.close()]);
  await w.close();

  const ts = await run('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.interface_name', '-e', 'frame.packet_flags_direction', '-e', 'ip.dst', '-e', 'frame.time_epoch']);
  t.is(ts.code, 0, ts.stderr);
  t.is(complaints(ts.stderr), '');
  const rows = lines(ts.stdout).map((l) => l.split('\t'));
  t.is(rows.length, 6);
  // sent on the guest tap (outbound = 0x2), then received at the host tap (inbound = 0x1)
  for (let i = 0; i < 3; i++) {
    t.is(rows[i][0], 'guest');
    t.is(Number(rows[i][1]), 2);
    t.is(rows[i][2], `10.0.2.${3 + i}`);
    t.is(rows[3 + i][0], 'host');
    t.is(Number(rows[3 + i][1]), 1);
    t.is(rows[3 + i][2], `10.0.2.${3 + i}`);
  }
  t.true(Math.abs(Number(rows[0][3]) - Date.now() / 1000) < 120);
  t.true(Number(rows[3][3]) >= Number(rows[0][3]), 'one time line across interfaces');

  const td = await run('tcpdump', ['-r', file, '-nn']);
  t.is(td.code, 0, td.stderr);
  t.is(complaints(td.stderr), '');
  t.is(lines(td.stdout).length, 6);

  const names = await run('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.interface_name']);
  t.deepEqual([...new Set(lines(names.stdout))], ['guest', 'host']);
});

withReaders('a TSO super-frame with a partial checksum is captured whole, as it is', async (t) => {
  const { dir, done } = tmp();
  t.teardown(done);
  const file = join(dir, 'tso.pcapng');
  const w = await openCapture(file, { meter: new Meter() });
  t.is(w.format, 'pcapng');
  const f = tsoFrame({ src: '10.0.2.15', dst: '192.0.2.7', sport: 5201, dport: 40001 }, 62000);
  const before = Buffer.from(f.data);
  w.write(w.addInterface('virtio'), DIRECTION_OUTBOUND, [f]);
  await w.close();
  t.true(Buffer.from(f.data).equals(before), 'the frame is not touched');

  const ts = await run('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.len', '-e', 'frame.cap_len', '-e', 'tcp.srcport', '-e', 'tcp.len']);
  t.is(ts.code, 0, ts.stderr);
  t.is(complaints(ts.stderr), '');
  t.deepEqual(lines(ts.stdout).map((l) => l.split('\t')), [[String(f.data.length), String(f.data.length), '5201', '62000']]);
});

withReaders('frames beyond the snaplen are truncated, orig_len kept', async (t) => {
  const { dir, done } = tmp();
  t.teardown(done);
  for (const format of ['pcap', 'pcapng'] as const) {
    const file = join(dir, `snap.${format}`);
    const w = await openCapture(file, { format, snaplen: 60, meter: new Meter() });
    const frames = knownFrames(4);
    w.write(w.addInterface('x'), DIRECTION_INBOUND, frames);
    await w.close();
    const ts = await run('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.len', '-e', 'frame.cap_len', '-e', 'ip.src']);
    t.is(ts.code, 0, ts.stderr);
    t.is(complaints(ts.stderr), '');
    const rows = lines(ts.stdout).map((l) => l.split('\t'));
    t.deepEqual(
      rows.map((r) => [Number(r[0]), Number(r[1]), r[2]]),
      frames.map((f) => [f.data.length, Math.min(60, f.data.length), '10.0.2.15']),
      format,
    );
  }
});

withReaders('a disk that cannot keep up: records are dropped and counted, memory stays bounded', async (t) => {
  const { dir, done } = tmp();
  t.teardown(done);
  const meter = new Meter();
  const file = join(dir, 'flood.pcapng');
  const w = await PcapngWriter.open(file, { meter, snaplen: 2048, chunkBytes: 64 * 1024, maxBufferBytes: 256 * 1024 });
  const iface = w.addInterface('flood');
  const frame = plainFrame(udpFrame({ src: '10.0.2.15', dst: '10.0.2.2', sport: 1, dport: 9 }, new Uint8Array(1400)));
  const batch = Array.from({ length: 32 }, () => frame);
  // 10 MiB in one synchronous burst: the sink cannot write anything before it ends
  const total = 32 * 240;
  for (let i = 0; i < 240; i++) w.write(iface, DIRECTION_OUTBOUND, batch);
  const st = w.stats();
  t.true(st.dropped > 0);
  t.is(st.frames + st.dropped, total);
  t.true(st.frames * (frame.data.length + 44) <= (256 + 64) * 1024, 'no more than the bound (plus one chunk) was buffered');
  t.is(meter.stage('pcap.write').snapshot().dropReasons['disk-behind'], st.dropped);
  // after the disk caught up, records are taken again
  await w.flush();
  w.write(iface, DIRECTION_INBOUND, [frame]);
  await w.close();
  t.is(w.stats().frames, st.frames + 1);

  const ts = await run('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.number']);
  t.is(ts.code, 0, ts.stderr);
  t.is(complaints(ts.stderr), '');
  t.is(lines(ts.stdout).length, st.frames + 1);
});

test('a write error is counted, later records dropped, and close() rejects with a typed error', async (t) => {
  const w = await PcapWriter.open('/dev/full', { meter: new Meter(), chunkBytes: 300 * 1024 });
  const frames = knownFrames(3);
  w.write(0, DIRECTION_OUTBOUND, frames);
  await w.flush();
  t.is(w.stats().writeErrors, 1);
  w.write(0, DIRECTION_OUTBOUND, frames);
  t.is(w.stats().dropped, 3);
  const err = await t.throwsAsync(w.close());
  t.true(err instanceof CaptureWriteError);
  t.is((err as CaptureWriteError).code, 'ECAPTUREWRITE');
});

test('opening a capture in a missing directory rejects', async (t) => {
  await t.throwsAsync(PcapngWriter.open('/nonexistent-dir-usernet/x.pcapng'), { code: 'ENOENT' });
});

test('nanosHiLo splits sec*1e9+nsec exactly', (t) => {
  const out = { hi: 0, lo: 0 };
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 999_999_999 }), (sec, nsec) => {
      nanosHiLo(sec, nsec, out);
      const want = BigInt(sec) * 1_000_000_000n + BigInt(nsec);
      return BigInt(out.hi) === want >> 32n && BigInt(out.lo) === (want & 0xffffffffn);
    }),
  );
  t.pass();
});

test('PcapTap passes both directions through unchanged', async (t) => {
  const { dir, done } = tmp();
  t.teardown(done);
  const w = await PcapngWriter.open(join(dir, 't.pcapng'), { meter: new Meter() });
  const pair = new LoopbackPair({ meter: new Meter() });
  const tap = new PcapTap(pair.a, w, { ownsWriter: true });
  t.is(tap.name, 'loop.a');
  const frames = knownFrames(2);
  // frames are borrowed: keep copies of the bytes, not the Frame objects
  const back = new Promise<Uint8Array[]>((resolve) => tap.onReceive((fs) => resolve(fs.map((f) => f.data.slice()))));
  pair.b.onReceive((fs) => pair.b.send(fs)); // echo
  tap.send(frames);
  const echoed = await back;
  t.deepEqual(
    echoed.map((d) => Buffer.from(d).toString('hex')),
    frames.map((f) => Buffer.from(f.data).toString('hex')),
  );
  await tap.close();
  t.is(w.stats().frames, 4);
  await pair.close();
});
