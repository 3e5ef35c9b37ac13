/**
 * The netns transport against the real kernel, without the NAT stack: the test plays the
 * "gateway" itself with hand-built frames.
 *  - an ICMP echo request written to the tap is answered by the namespace's kernel;
 *  - the kernel's TCP hands the port TSO super-frames (GSO_TCPV4, NEEDS_CSUM, longer than the
 *    MTU) because the tap offers TSO;
 *  - a GSO super-frame with a partial checksum written to the tap is segmented and checksummed
 *    by the kernel and arrives intact in a socket in the namespace;
 *  - the meter counts tap.read / tap.write; closing the port removes the device.
 */
import { createHash } from 'node:crypto';
import { testIf } from '../helpers/env';
import { withSandbox } from '../helpers/netns';
import { NetnsTapPort, resolveNetns } from '../../src/transports/netns-tap';
import { GSO_NONE, GSO_TCPV4, VNET_F_NEEDS_CSUM, plainFrame, type Frame } from '../../src/link/frame';
import { Meter } from '../../src/meter/meter';
import { configureNetns } from '../../src/cli/netns-configure';

const test = testIf('root', 'netns', 'tun');

const GW_MAC = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
const GW_IP = [10, 0, 2, 2];
const GUEST_IP = [10, 0, 2, 15];

interface Captured {
  data: Buffer;
  flags: number;
  gsoType: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

function sum16(buf: Uint8Array, off: number, len: number, acc = 0): number {
  for (let i = 0; i + 1 < len; i += 2) acc += (buf[off + i] << 8) | buf[off + i + 1];
  if (len & 1) acc += buf[off + len - 1] << 8;
  return acc;
}
function fold(acc: number): number {
  while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
  return acc;
}

/** Ethernet + IPv4 header for gateway → guest; returns the buffer with l4 space. */
function ipFrame(guestMac: Uint8Array, proto: number, l4len: number): Buffer {
  const b = Buffer.alloc(14 + 20 + l4len);
  b.set(guestMac, 0);
  b.set(GW_MAC, 6);
  b.writeUInt16BE(0x0800, 12);
  b[14] = 0x45;
  b.writeUInt16BE(20 + l4len, 16);
  b.writeUInt16BE(0x4000, 20); // DF
  b[22] = 64;
  b[23] = proto;
  b.set(GW_IP, 26);
  b.set(GUEST_IP, 30);
  b.writeUInt16BE(0xffff - fold(sum16(b, 14, 20)), 24);
  return b;
}

function pseudo(l4len: number, proto: number): number {
  return sum16(Buffer.from([...GW_IP, ...GUEST_IP, 0, proto, l4len >> 8, l4len & 0xff]), 0, 12);
}

function tcpFrame(guestMac: Uint8Array, sport: number, dport: number, seq: number, ack: number, flags: number, payload: Uint8Array, opts: number[] = [], partial = false): Buffer {
  const hl = 20 + opts.length;
  const b = ipFrame(guestMac, 6, hl + payload.length);
  const t = 34;
  b.writeUInt16BE(sport, t);
  b.writeUInt16BE(dport, t + 2);
  b.writeUInt32BE(seq >>> 0, t + 4);
  b.writeUInt32BE(ack >>> 0, t + 8);
  b[t + 12] = (hl / 4) << 4;
  b[t + 13] = flags;
  b.writeUInt16BE(65535, t + 14);
  b.set(opts, t + 20);
  b.set(payload, t + hl);
  const ps = pseudo(hl + payload.length, 6);
  // partial: the pseudo-header sum only, left for whoever finishes the checksum (virtio NEEDS_CSUM)
  b.writeUInt16BE(partial ? fold(ps) : 0xffff - fold(sum16(b, t, hl + payload.length, ps)), t + 16);
  return b;
}

test('ICMP echo through the tap is answered by the namespace kernel; TSO both ways', async (t) => {
  await withSandbox(async (sb) => {
    const ns = await sb.netns('tap');
    t.deepEqual(resolveNetns(ns), { path: `/var/run/netns/${ns}`, name: ns });
    t.deepEqual(resolveNetns('1234'), { path: '/proc/1234/ns/net' });
    t.throws(() => resolveNetns('bad name!'), { code: 'EINVAL' } as never);
    const meter = new Meter();
    const port = NetnsTapPort.open({ netns: ns, meter });
    sb.defer(() => port.close());
    t.is(port.ifName, 'tap0');
    const conf = await configureNetns({ netnsPath: port.netns.path, netnsName: ns, ifName: 'tap0', address: '10.0.2.15', prefixLength: 24, gateway: '10.0.2.2', dns: '10.0.2.3', mtu: 1500 });
    sb.defer(() => conf.undo());
    await sb.must(['ip', 'neigh', 'replace', '10.0.2.2', 'lladdr', '52:55:0a:00:02:02', 'dev', 'tap0', 'nud', 'permanent'], ns);
    const routes = await sb.must(['ip', 'route', 'show'], ns);
    t.regex(routes, /default via 10\.0\.2\.2 dev tap0/);
    const mac = Buffer.from((await sb.must(['cat', '/sys/class/net/tap0/address'], ns)).trim().split(':').map((h) => parseInt(h, 16)));

    const got: Captured[] = [];
    let waiter: (() => void) | null = null;
    port.onReceive((frames: readonly Frame[]) => {
      for (const f of frames) {
        got.push({ data: Buffer.from(f.data), flags: f.flags, gsoType: f.gsoType, gsoSize: f.gsoSize, csumStart: f.csumStart, csumOffset: f.csumOffset });
      }
      waiter?.();
    });
    const waitFor = async (pred: (c: Captured) => boolean, what: string): Promise<Captured> => {
      for (let i = 0; i < 200; i++) {
        const c = got.find(pred);
        if (c) return c;
        await new Promise<void>((r) => {
          waiter = r;
          setTimeout(r, 50);
        });
      }
      throw new Error(`timed out waiting for ${what}; got ${got.length} frames`);
    };

    // --- ICMP echo: port → kernel → port
    const payload = Buffer.from('usernet netns-tap echo test payload');
    const icmp = ipFrame(mac, 1, 8 + payload.length);
    icmp[34] = 8;
    icmp.writeUInt16BE(0x1234, 38);
    icmp.writeUInt16BE(7, 40);
    payload.copy(icmp, 42);
    icmp.writeUInt16BE(0xffff - fold(sum16(icmp, 34, 8 + payload.length)), 36);
    port.send([plainFrame(icmp)]);
    const reply = await waitFor((c) => c.data.readUInt16BE(12) === 0x0800 && c.data[23] === 1 && c.data[34] === 0, 'echo reply');
    t.is(reply.data.readUInt16BE(38), 0x1234);
    t.is(reply.data.readUInt16BE(40), 7);
    t.true(reply.data.subarray(42).equals(payload));
    t.deepEqual([...reply.data.subarray(26, 30)], GUEST_IP);

    // --- TCP: the kernel connects to 10.0.2.2:7; we answer by hand
    const UP = 256 * 1024;
    const DOWN = 30_000;
    const down = Buffer.alloc(DOWN);
    for (let i = 0; i < DOWN; i++) down[i] = (i * 13) & 0xff;
    const client = sb.spawn(ns, [
      process.execPath,
      '-e',
      `const s = require('net').connect(7, '10.0.2.2', () => s.write(Buffer.alloc(${UP}, 0x61)));
       const h = require('crypto').createHash('sha256'); let n = 0;
       s.on('data', (d) => { h.update(d); n += d.length; if (n >= ${DOWN}) { console.log(n + ' ' + h.digest('hex')); s.destroy(); } });
       s.on('error', (e) => { console.log('error ' + e.code); });`,
    ]);
    let out = '';
    client.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const syn = await waitFor((c) => c.data[23] === 6 && (c.data[47] & 0x02) !== 0, 'SYN');
    const cport = syn.data.readUInt16BE(34);
    const isn = syn.data.readUInt32BE(38);
    const ISS = 1000;
    // SYN-ACK: MSS 1460, window scale 7
    port.send([plainFrame(tcpFrame(mac, 7, cport, ISS, isn + 1, 0x12, new Uint8Array(0), [2, 4, 0x05, 0xb4, 1, 3, 3, 7]))]);
    let acked = isn + 1;
    let superFrames = 0;
    let largest = 0;
    let sawNeedsCsum = false;
    const start = got.length;
    while (acked - (isn + 1) < UP) {
      await waitFor((c) => got.indexOf(c) >= start && c.data[23] === 6 && c.data.readUInt16BE(34) === cport && c.data.readUInt32BE(38) + (c.data.readUInt16BE(16) - 20 - (c.data[46] >> 4) * 4) > acked, 'data');
      for (const c of got.slice(start)) {
        if (c.data[23] !== 6 || c.data.readUInt16BE(34) !== cport) continue;
        const len = c.data.readUInt16BE(16) - 20 - (c.data[46] >> 4) * 4;
        const end = (c.data.readUInt32BE(38) + len) >>> 0;
        if (len > 0 && end > acked) acked = end;
        if (c.gsoType === GSO_TCPV4) superFrames++;
        if (c.flags & VNET_F_NEEDS_CSUM) sawNeedsCsum = true;
        largest = Math.max(largest, c.data.length);
      }
      got.splice(start);
      port.send([plainFrame(tcpFrame(mac, 7, cport, ISS + 1, acked, 0x10, new Uint8Array(0)))]);
    }
    t.true(superFrames > 0, 'the kernel sent GSO_TCPV4 super-frames');
    t.true(largest > 1514, `a frame longer than the MTU arrived (largest ${largest})`);
    t.true(sawNeedsCsum, 'frames came with NEEDS_CSUM');

    // one 30,000-byte GSO frame with a partial checksum towards the kernel
    const big = tcpFrame(mac, 7, cport, ISS + 1, acked, 0x18, down, [], true);
    const f = plainFrame(big);
    f.flags = VNET_F_NEEDS_CSUM;
    f.gsoType = GSO_TCPV4;
    f.gsoSize = 1448;
    f.hdrLen = 54;
    f.csumStart = 34;
    f.csumOffset = 16;
    port.send([f]);
    for (let i = 0; i < 100 && !out.includes('\n'); i++) await new Promise((r) => setTimeout(r, 50));
    t.is(out.trim(), `${DOWN} ${createHash('sha256').update(down).digest('hex')}`);
    t.not(f.gsoType, GSO_NONE);

    const read = meter.stage('netns.tap.read').snapshot();
    const write = meter.stage('netns.tap.write').snapshot();
    t.true(read.frames > 3 && read.bytes >= UP && read.copies === read.frames);
    t.true(write.frames >= 3 && write.bytes >= DOWN && write.drops === 0);

    await port.close();
    t.is(await port.down, null);
    const links = await sb.must(['ip', '-o', 'link', 'show'], ns);
    t.false(links.includes('tap0'), 'the device is gone with its fd');
  });
});

test('opening a tap in a namespace that does not exist fails cleanly', (t) => {
  t.throws(() => NetnsTapPort.open({ netns: 'usernet-no-such-ns-' + process.pid }), { code: 'ENOENT' } as never);
  t.throws(() => NetnsTapPort.open({ netns: 'x', ifName: 'a-name-much-too-long' }), { code: 'EINVAL' } as never);
});
