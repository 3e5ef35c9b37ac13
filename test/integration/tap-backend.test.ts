/**
 * TapBackend against the real kernel, in the bridged test network (a namespace with a bridge,
 * the tap created inside it by TapBackend and enslaved, the host side 10.0.3.1):
 *
 *  - one hand-built ~64 KiB TSO frame with a partial checksum, on a TCP connection the test
 *    plays by hand, is ONE write to the tap and the receiving socket gets all of its data;
 *  - a real guest kernel (another namespace behind the netns transport) on the segment: ping
 *    both ways, TCP both ways; its TSO frames reach the tap whole; the bridge side's GSO frames
 *    come back as one Frame when the guest-side offloads are on and already segmented and
 *    checksummed when they are off;
 *  - backpressure: a receiver that says it is full pauses reading, the kernel queues and then
 *    drops (its tx_dropped), usernet reads nothing more until 'rx-unblocked';
 *  - a frame the kernel refuses is dropped alone and counted; the rest of its batch goes out;
 *  - attaching to a persistent tap; the tap is gone after close and the namespace after the test.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { testIf } from '../helpers/env';
import { withSandbox, type Sandbox } from '../helpers/netns';
import { noBridgedNamespacesLeft, withBridgedNet, type BridgedNetwork } from '../helpers/bridged-net';
import { TapBackend, bridgeToTap, tapOffloadMask } from '../../src/backends/tap';
import type { RxBackpressure } from '../../src/link/port';
import { NetnsTapPort } from '../../src/transports/netns-tap';
import { GSO_NONE, GSO_TCPV4, VNET_F_NEEDS_CSUM, plainFrame, type Frame } from '../../src/link/frame';
import type { FrameHandler, Port } from '../../src/link/port';
import { Meter } from '../../src/meter/meter';
import { NO_OFFLOADS, type NetOffloads } from '../../src/devices/virtio/net-offloads';
import { TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 } from '../../src/native/constants';

const test = testIf('root', 'netns', 'tun');

const TSO: Readonly<NetOffloads> = { ...NO_OFFLOADS, guestCsum: true, guestTso4: true, guestTso6: true, guestEcn: true, hostCsum: true, hostTso4: true, hostTso6: true, mergeableRx: true };
const GUEST_MAC = [0x52, 0x54, 0x00, 0xaa, 0x00, 0x10];
const GUEST_IP = [10, 0, 3, 10];
const HOST_IP = [10, 0, 3, 1];

function sum16(buf: Uint8Array, off: number, len: number, acc = 0): number {
  for (let i = 0; i + 1 < len; i += 2) acc += (buf[off + i] << 8) | buf[off + i + 1];
  if (len & 1) acc += buf[off + len - 1] << 8;
  return acc;
}
function fold(acc: number): number {
  while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
  return acc;
}

/** guest → host TCP/IPv4 frame; `partial`: leave only the pseudo-header sum (NEEDS_CSUM). */
function tcpFrame(hostMac: number[], sport: number, dport: number, seq: number, ack: number, flags: number, payload: Uint8Array, opts: number[] = [], partial = false): Buffer {
  const hl = 20 + opts.length;
  const l4len = hl + payload.length;
  const b = Buffer.alloc(14 + 20 + l4len);
  b.set(hostMac, 0);
  b.set(GUEST_MAC, 6);
  b.writeUInt16BE(0x0800, 12);
  b[14] = 0x45;
  b.writeUInt16BE(20 + l4len, 16);
  b.writeUInt16BE(0x4000, 20);
  b[22] = 64;
  b[23] = 6;
  b.set(GUEST_IP, 26);
  b.set(HOST_IP, 30);
  b.writeUInt16BE(0xffff - fold(sum16(b, 14, 20)), 24);
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
  const ps = sum16(Buffer.from([...GUEST_IP, ...HOST_IP, 0, 6, l4len >> 8, l4len & 0xff]), 0, 12);
  b.writeUInt16BE(partial ? fold(ps) : 0xffff - fold(sum16(b, t, l4len, ps)), t + 16);
  return b;
}

/** A port that records what the tap hands it (copies, with the offload metadata). */
class Recorder extends EventEmitter implements Port, RxBackpressure {
  readonly name = 'recorder';
  frames: { data: Buffer; gsoType: number; gsoSize: number; flags: number }[] = [];
  batches = 0;
  rxBlocked = false;
  blockAfterFirstBatch = false;
  private waiter: (() => void) | null = null;
  send(frames: readonly Frame[]): void {
    this.batches++;
    for (const f of frames) this.frames.push({ data: Buffer.from(f.data), gsoType: f.gsoType, gsoSize: f.gsoSize, flags: f.flags });
    if (this.blockAfterFirstBatch) this.rxBlocked = true;
    this.waiter?.();
  }
  onReceive(_h: FrameHandler): void {}
  async close(): Promise<void> {}
  unblock(): void {
    this.rxBlocked = false;
    this.blockAfterFirstBatch = false;
    this.emit('rx-unblocked');
  }
  async waitFor<T>(pick: () => T | undefined, what: string, ms = 10_000): Promise<T> {
    const until = Date.now() + ms;
    for (;;) {
      const v = pick();
      if (v !== undefined) return v;
      if (Date.now() > until) throw new Error(`timed out waiting for ${what} (${this.frames.length} frames)`);
      await new Promise<void>((r) => {
        this.waiter = r;
        setTimeout(r, 50);
      });
    }
  }
}

/** A TCP sink in the namespace: prints "<bytes> <sha256>" when the peer closes. */
function sinkScript(addr: string, port: number): string {
  return `const h=require('crypto').createHash('sha256');let n=0;
    const s=require('net').createServer((c)=>{c.on('data',(d)=>{h.update(d);n+=d.length});c.on('end',()=>{console.log(n+' '+h.digest('hex'));process.exit(0)})});
    s.listen(${port},'${addr}',()=>console.log('listening'));`;
}

/** A TCP source: connects and writes `bytes` of a pattern, then ends; prints the sha256 sent. */
function sourceScript(addr: string, port: number, bytes: number): string {
  return `const b=Buffer.alloc(1<<20);for(let i=0;i<b.length;i++)b[i]=(i*31+7)&255;
    const h=require('crypto').createHash('sha256');let left=${bytes};
    const c=require('net').connect(${port},'${addr}',()=>{const go=()=>{while(left>0){const k=Math.min(left,b.length);const ch=b.subarray(0,k);h.update(ch);left-=k;if(!c.write(ch)){c.once('drain',go);return}}c.end();console.log(h.digest('hex'))};go()});
    c.on('error',(e)=>{console.error(e.message);process.exit(1)});`;
}

function patternSha(bytes: number): string {
  const b = Buffer.alloc(1 << 20);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + 7) & 255;
  const h = createHash('sha256');
  for (let left = bytes; left > 0; left -= b.length) h.update(b.subarray(0, Math.min(left, b.length)));
  return h.digest('hex');
}

async function startSink(sb: Sandbox, ns: string, addr: string, port: number): Promise<() => Promise<string>> {
  const child = sb.spawn(ns, [process.execPath, '-e', sinkScript(addr, port)]);
  let out = '';
  child.stdout?.setEncoding('utf8');
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('sink did not start')), 10_000);
    child.stdout?.on('data', (d: string) => {
      out += d;
      if (out.includes('listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return () =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`sink did not finish: ${out}`)), 60_000);
      const check = (): void => {
        const lines = out.split('\n').filter((l) => /^\d+ [0-9a-f]{64}$/.test(l));
        if (lines.length > 0) {
          clearTimeout(timer);
          resolve(lines[0]);
        }
      };
      child.stdout?.on('data', check);
      child.once('exit', check);
      check();
    });
}

/** A guest kernel: a namespace behind the netns transport, 10.0.3.10/24 on its tap0. */
async function guestKernel(sb: Sandbox, net: BridgedNetwork, gmeter: Meter): Promise<{ ns: string; port: NetnsTapPort }> {
  const ns = await sb.netns('guest');
  const port = NetnsTapPort.open({ netns: ns, meter: gmeter });
  sb.defer(() => port.close());
  await sb.must(['ip', '-n', ns, 'link', 'set', 'tap0', 'address', '52:54:00:aa:00:10']);
  await sb.must(['ip', '-n', ns, 'addr', 'add', net.guestAddress(0), 'dev', 'tap0']);
  await sb.must(['ip', '-n', ns, 'link', 'set', 'tap0', 'up']);
  return { ns, port };
}

test.serial('one ~64 KiB TSO frame with a partial checksum is one write, and the socket behind the bridge gets all of it', async (t) => {
  await withSandbox(async (sb) =>
    withBridgedNet(async (net) => {
      const meter = new Meter();
      const tap = await net.openTap({ meter });
      t.is(tap.offload, 0, 'no guest offloads yet: the kernel segments for us');
      t.is(tap.setGuestOffloads(TSO) & (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6), TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6);
      const rec = new Recorder();
      tap.onReceive((frames) => rec.send(frames));
      const hostMac = (await net.exec(['cat', `/sys/class/net/${net.bridge}/address`])).stdout.trim().split(':').map((h) => parseInt(h, 16));
      await net.exec(['ip', 'neigh', 'replace', '10.0.3.10', 'lladdr', '52:54:00:aa:00:10', 'dev', net.bridge, 'nud', 'permanent']);
      const done = await startSink(sb, net.netns, net.hostAddress, 7000);

      const ISN = 0x10000000;
      tap.send([plainFrame(tcpFrame(hostMac, 40000, 7000, ISN, 0, 0x02, new Uint8Array(0), [2, 4, 0x05, 0xb4, 1, 3, 3, 7]))]);
      const synAck = await rec.waitFor(() => rec.frames.find((f) => f.data[23] === 6 && (f.data[47] & 0x12) === 0x12), 'SYN-ACK');
      const serverIsn = synAck.data.readUInt32BE(38);
      const window = synAck.data.readUInt16BE(48); // not scaled in a SYN (RFC 7323 §2.2)
      tap.send([plainFrame(tcpFrame(hostMac, 40000, 7000, ISN + 1, serverIsn + 1, 0x10, new Uint8Array(0)))]);
      const size = Math.min(window, 65535 - 40);
      t.true(size > 60_000, `the receiver's window allows a ~64 KiB frame (${window})`);
      const payload = Buffer.alloc(size);
      for (let i = 0; i < size; i++) payload[i] = (i * 131 + 17) & 0xff;
      const big = plainFrame(tcpFrame(hostMac, 40000, 7000, ISN + 1, serverIsn + 1, 0x18, payload, [], true));
      big.flags = VNET_F_NEEDS_CSUM;
      big.gsoType = GSO_TCPV4;
      big.gsoSize = 1448;
      big.hdrLen = 54;
      big.csumStart = 34;
      big.csumOffset = 16;
      const writesBefore = meter.stage('tap.write').frames;
      tap.send([big]);
      t.is(meter.stage('tap.write').frames - writesBefore, 1, 'the super-frame was one write');
      // the ACK covering all of it, then FIN so the sink prints
      await rec.waitFor(() => rec.frames.find((f) => f.data[23] === 6 && f.data.readUInt32BE(42) === ISN + 1 + size), 'the ACK of all the data');
      tap.send([plainFrame(tcpFrame(hostMac, 40000, 7000, ISN + 1 + size, serverIsn + 1, 0x11, new Uint8Array(0)))]);
      t.is(await done(), `${size} ${createHash('sha256').update(payload).digest('hex')}`);
      const w = meter.stage('tap.write').snapshot();
      t.is(w.drops, 0);
      t.is(w.copies, w.frames, 'one (kernel) copy per frame, none in usernet');
      t.true(w.bytes >= size + 54);
      const ifName = tap.ifName;
      await tap.close();
      t.is(await tap.down, null);
      t.not((await net.exec(['ip', 'link', 'show', ifName])).code, 0, 'the tap is gone with its fd');
    }),
  );
  t.true(await noBridgedNamespacesLeft());
});

test.serial('a guest kernel on the segment: ping both ways, TCP both ways, GSO whole with offloads on and segmented with them off', async (t) => {
  await withSandbox(async (sb) =>
    withBridgedNet(async (net) => {
      const meter = new Meter();
      const gmeter = new Meter();
      const tap = await net.openTap({ meter });
      const guest = await guestKernel(sb, net, gmeter);
      // wire them, recording what crosses: guest → tap (the guest's TSO) and tap → guest
      let fromGuest = { gso: 0, largest: 0 };
      let toGuest = { gso: 0, largest: 0, partial: 0, frames: 0 };
      guest.port.onReceive((frames) => {
        for (const f of frames) {
          if (f.gsoType !== GSO_NONE) fromGuest.gso++;
          fromGuest.largest = Math.max(fromGuest.largest, f.data.length);
        }
        tap.send(frames);
      });
      tap.onReceive((frames) => {
        for (const f of frames) {
          toGuest.frames++;
          if (f.gsoType !== GSO_NONE) toGuest.gso++;
          if (f.flags & VNET_F_NEEDS_CSUM) toGuest.partial++;
          toGuest.largest = Math.max(toGuest.largest, f.data.length);
        }
        guest.port.send(frames);
      });
      // the netns transport is the guest NIC here: it takes every offload (a tap accepts GSO writes)
      tap.setGuestOffloads(TSO);
      t.is(tap.offload & tapOffloadMask(TSO), tapOffloadMask(TSO));

      const ping1 = await sb.exec(guest.ns, ['ping', '-c', '3', '-i', '0.2', '-W', '3', net.hostAddress]);
      t.is(ping1.code, 0, ping1.stdout + ping1.stderr);
      const ping2 = await net.exec(['ping', '-c', '3', '-i', '0.2', '-W', '3', net.guestIp(0)]);
      t.is(ping2.code, 0, ping2.stdout + ping2.stderr);

      // guest → host: 32 MiB; the guest's TSO super-frames are single tap writes
      const BYTES = 32 << 20;
      let done = await startSink(sb, net.netns, net.hostAddress, 7001);
      let src = await sb.exec(guest.ns, [process.execPath, '-e', sourceScript(net.hostAddress, 7001, BYTES)], 60_000);
      t.is(src.code, 0, src.stderr);
      t.is(await done(), `${BYTES} ${patternSha(BYTES)}`);
      t.true(fromGuest.gso > 0 && fromGuest.largest > 30_000, `guest TSO frames crossed whole (largest ${fromGuest.largest})`);
      const w = meter.stage('tap.write').snapshot();
      t.is(w.drops, 0);
      t.true(w.bytes / w.frames > 4000, `few writes for the data: ${w.frames} writes, ${w.bytes} B`);

      // host → guest with offloads on: the bridge side's GSO frames arrive as one Frame
      done = await startSink(sb, guest.ns, net.guestIp(0), 7002);
      src = await net.exec([process.execPath, '-e', sourceScript(net.guestIp(0), 7002, BYTES)], 60_000);
      t.is(src.code, 0, src.stderr);
      t.is(await done(), `${BYTES} ${patternSha(BYTES)}`);
      t.true(toGuest.gso > 0 && toGuest.largest > 1514, `GSO frames from the kernel (largest ${toGuest.largest}, ${toGuest.gso} GSO)`);
      t.true(toGuest.partial > 0, 'partial checksums passed through');

      // offloads off: the kernel segments and checksums before we read
      tap.setGuestOffloads(NO_OFFLOADS);
      t.is(tap.offload, 0);
      toGuest = { gso: 0, largest: 0, partial: 0, frames: 0 };
      fromGuest = { gso: 0, largest: 0 };
      done = await startSink(sb, guest.ns, net.guestIp(0), 7003);
      src = await net.exec([process.execPath, '-e', sourceScript(net.guestIp(0), 7003, 8 << 20)], 60_000);
      t.is(src.code, 0, src.stderr);
      t.is(await done(), `${8 << 20} ${patternSha(8 << 20)}`);
      t.is(toGuest.gso, 0);
      t.is(toGuest.partial, 0);
      t.true(toGuest.largest <= 1514, `largest ${toGuest.largest}`);
      t.true(toGuest.frames > 5000);
      const r = meter.stage('tap.read').snapshot();
      t.is(r.copies, r.frames);
      t.log(`tap.read ${r.frames} frames ${r.bytes} B; tap.write ${w.frames} frames ${w.bytes} B`);
    }),
  );
});

test.serial('a full receiver pauses reading: the kernel queues and drops (counted), usernet holds nothing; unblocking resumes', async (t) => {
  await withBridgedNet(async (net) => {
    const meter = new Meter();
    const tap = await net.openTap({ meter, batch: 16, burst: 1 });
    const rec = new Recorder();
    rec.blockAfterFirstBatch = true;
    bridgeToTap(rec, tap);
    t.false(tap.readingPaused);
    await net.exec(['ip', 'neigh', 'replace', '10.0.3.10', 'lladdr', '52:54:00:aa:00:10', 'dev', net.bridge, 'nud', 'permanent']);
    // 5000 datagrams towards the (silent) guest
    const flood = `const s=require('dgram').createSocket('udp4');const b=Buffer.alloc(1000);let n=0;
      const go=()=>{for(let i=0;i<100&&n<5000;i++,n++)s.send(b,9,'10.0.3.10');if(n<5000)setImmediate(go);else setTimeout(()=>process.exit(0),200)};go();`;
    const r = await net.exec([process.execPath, '-e', flood], 60_000);
    t.is(r.code, 0, r.stderr);
    await new Promise((res) => setTimeout(res, 300));
    t.true(tap.readingPaused, 'paused after the batch that filled the receiver');
    const readWhileBlocked = rec.frames.length;
    t.true(readWhileBlocked <= 16, `at most one batch read while blocked (${readWhileBlocked})`);
    const stats = await net.linkStats(tap.ifName);
    t.true((stats.tx_dropped ?? 0) > 0, `the kernel dropped at the tap: ${JSON.stringify(stats)}`);
    rec.unblock();
    await rec.waitFor(() => (rec.frames.length > readWhileBlocked + 100 ? true : undefined), 'reading to resume');
    t.false(tap.readingPaused);
    t.log(`read ${rec.frames.length} of 5000; kernel tx_dropped ${stats.tx_dropped}`);
  });
});

test.serial('a frame the kernel refuses is dropped alone and counted; the rest of the batch is written', async (t) => {
  await withBridgedNet(async (net) => {
    const meter = new Meter();
    const tap = await net.openTap({ meter });
    const rec = new Recorder();
    tap.onReceive((frames) => rec.send(frames));
    const bad = plainFrame(Buffer.alloc(60, 0x11));
    bad.flags = VNET_F_NEEDS_CSUM;
    bad.csumStart = 50_000; // beyond the frame: EINVAL from the tun driver
    bad.csumOffset = 16;
    const arp = Buffer.alloc(42);
    arp.fill(0xff, 0, 6);
    arp.set(GUEST_MAC, 6);
    arp.writeUInt16BE(0x0806, 12);
    arp.set([0, 1, 8, 0, 6, 4, 0, 1], 14);
    arp.set(GUEST_MAC, 22);
    arp.set(GUEST_IP, 28);
    arp.set(HOST_IP, 38);
    tap.send([bad, plainFrame(arp)]);
    const w = meter.stage('tap.write').snapshot();
    t.is(w.frames, 1);
    t.is(w.drops, 1);
    t.deepEqual(Object.keys(w.dropReasons), ['errno-22']);
    const reply = await rec.waitFor(() => rec.frames.find((f) => f.data.readUInt16BE(12) === 0x0806 && f.data.readUInt16BE(20) === 2), 'ARP reply');
    t.deepEqual([...reply.data.subarray(28, 32)], HOST_IP);
  });
});

test.serial('attaching to a persistent tap made for usernet; names and namespaces are checked', async (t) => {
  await withBridgedNet(async (net) => {
    await net.exec(['ip', 'tuntap', 'add', 'dev', 'ptap0', 'mode', 'tap', 'vnet_hdr']);
    const tap = TapBackend.open({ ifName: 'ptap0', netns: net.netns });
    t.is(tap.ifName, 'ptap0');
    t.is(tap.name, 'tap:ptap0');
    await tap.close();
    t.is((await net.exec(['ip', 'link', 'show', 'ptap0'])).code, 0, 'a persistent tap outlives its fd');
    t.throws(() => TapBackend.open({ ifName: 'a-name-much-too-long' }), { code: 'EINVAL' } as never);
    t.throws(() => TapBackend.open({ netns: `usernet-no-such-ns-${process.pid}` }), { code: 'ENOENT' } as never);
  }, { httpFileBytes: 0, iperfServers: 0 });
  t.true(await noBridgedNamespacesLeft());
});
