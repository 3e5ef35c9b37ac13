/**
 * tap through the addon inside a namespace this test makes: the device appears there (and not
 * in the host namespace), the ioctls answer, and frames move both ways with a virtio net header
 * in front — an ICMP echo request written with writeFrames is answered by the namespace's
 * kernel and read back with readFrames. With TUN_F_CSUM the kernel hands over a TCP SYN with
 * its checksum left to us (VIRTIO_NET_HDR_F_NEEDS_CSUM), which is what offload negotiation is
 * for.
 */
import { testIf } from '../helpers/env';
import { withSandbox } from '../helpers/netns';
import * as native from '../../src/native';

const test = testIf('root', 'netns', 'tun');

const VNET = 12;
const OUR_MAC = [0x02, 0, 0, 0, 0, 0x02];

function checksum(b: Uint8Array, start: number, end: number): number {
  let sum = 0;
  for (let i = start; i < end; i += 2) sum += (b[i] << 8) | (i + 1 < end ? b[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function echoRequest(dstMac: number[], src: number[], dst: number[], id: number, seq: number): Uint8Array {
  const payload = Buffer.from('usernet tap test');
  const f = new Uint8Array(14 + 20 + 8 + payload.length);
  f.set(dstMac, 0);
  f.set(OUR_MAC, 6);
  f[12] = 0x08; // IPv4
  const ip = 14;
  f[ip] = 0x45;
  const total = 20 + 8 + payload.length;
  f[ip + 2] = total >> 8;
  f[ip + 3] = total & 0xff;
  f[ip + 8] = 64; // TTL
  f[ip + 9] = 1; // ICMP
  f.set(src, ip + 12);
  f.set(dst, ip + 16);
  const c = checksum(f, ip, ip + 20);
  f[ip + 10] = c >> 8;
  f[ip + 11] = c & 0xff;
  const icmp = ip + 20;
  f[icmp] = 8;
  f[icmp + 4] = id >> 8;
  f[icmp + 5] = id & 0xff;
  f[icmp + 6] = seq >> 8;
  f[icmp + 7] = seq & 0xff;
  f.set(payload, icmp + 8);
  const ic = checksum(f, icmp, f.length);
  f[icmp + 2] = ic >> 8;
  f[icmp + 3] = ic & 0xff;
  return f;
}

/** Resolve with readFrames batches until `match` accepts a frame (its slot view is returned). */
function readUntil(fd: native.OwnedFd, slab: native.FrameSlab, match: (frame: Uint8Array) => boolean): Promise<Uint8Array> {
  return new Promise((resolve) => {
    const w = new native.FdWatcher(fd, () => {
      const n = slab.read(fd);
      for (let i = 0; i < n; i++) {
        const f = slab.frame(i);
        if (match(f)) {
          w.close();
          resolve(f);
          return;
        }
      }
    });
    w.start(native.POLL_READABLE);
  });
}

async function macOf(sb: { must: (argv: string[], ns?: string | null) => Promise<string> }, ns: string, dev: string): Promise<number[]> {
  const out = await sb.must(['ip', '-j', 'link', 'show', dev], ns);
  const mac = (JSON.parse(out) as { address: string }[])[0].address;
  return mac.split(':').map((h) => parseInt(h, 16));
}

test('a tap made inside a namespace answers the ioctls and exists only there', async (t) => {
  await withSandbox(async (sb) => {
    const ns = await sb.netns('tap');
    const tap = native.openTap({ netns: ns, vnetHdrSize: VNET });
    sb.defer(() => tap.fd.close());
    t.regex(tap.name, /^tap\d+$/, 'the kernel chose the name');
    t.is(tap.vnetHdrSize, VNET);
    t.is(native.tapGetVnetHdrSize(tap.fd), VNET);
    const want = native.IFF_TAP | native.IFF_NO_PI | native.IFF_VNET_HDR;
    t.is(tap.features & want, want);
    t.is(native.tapFeatures() & want, want, 'probe without a device');
    const info = native.tapInfo(tap.fd);
    t.is(info.name, tap.name);
    t.is(info.flags & want, want);
    t.notThrows(() => native.tapSetOffload(tap.fd, native.TUN_F_CSUM | native.TUN_F_TSO4 | native.TUN_F_TSO6));
    t.notThrows(() => native.tapSetOffload(tap.fd, 0));
    t.throws(() => native.tapSetOffload(tap.fd, 1 << 20), { code: 'EINVAL' });
    t.throws(() => native.tapSetVnetHdrSize(tap.fd, 4), { code: 'EINVAL' });
    t.is((await sb.exec(ns, ['ip', 'link', 'show', tap.name])).code, 0);
    // a named device; the same name again (no IFF_MULTI_QUEUE) is busy
    const named = native.openTap({ netns: ns, name: 'utest0' });
    sb.defer(() => named.fd.close());
    t.is(named.name, 'utest0');
    t.throws(() => native.tapOpen('utest0', want, ns), { code: 'EBUSY' });
    t.is((await sb.exec(null, ['ip', 'link', 'show', 'utest0'])).code !== 0, true, 'not in the host namespace');
    tap.fd.close();
    named.fd.close();
    // closing the fd removes a non-persistent tap
    t.not((await sb.exec(ns, ['ip', 'link', 'show', 'utest0'])).code, 0);
  });
});

test('an ICMP echo written as a frame with a vnet header is answered through the tap', async (t) => {
  await withSandbox(async (sb) => {
    const ns = await sb.netns('tap');
    const tap = native.openTap({ netns: ns, name: 'utap0', vnetHdrSize: VNET });
    sb.defer(() => tap.fd.close());
    await sb.must(['ip', 'addr', 'add', '10.77.0.1/24', 'dev', 'utap0'], ns);
    await sb.must(['ip', 'link', 'set', 'utap0', 'up'], ns);
    await sb.must(['ip', 'neigh', 'replace', '10.77.0.2', 'lladdr', '02:00:00:00:00:02', 'dev', 'utap0', 'nud', 'permanent'], ns);
    const tapMac = await macOf(sb, ns, 'utap0');

    const header = new Uint8Array(VNET); // no offloads: flags 0, GSO_NONE
    const frames = [1, 2, 3].map((seq) => echoRequest(tapMac, [10, 77, 0, 2], [10, 77, 0, 1], 0x4242, seq));
    const parts = frames.flatMap((f) => [header, f]);
    const status = new Int32Array(2);
    const slab = new native.FrameSlab(32, VNET + 2048);
    const replies: number[] = [];
    const done = readUntil(tap.fd, slab, (f) => {
      const e = f.subarray(VNET);
      if (e[12] === 0x08 && e[13] === 0 && e[14 + 9] === 1 && e[34] === 0) replies.push((e[40] << 8) | e[41]);
      return replies.length === 3;
    });
    t.is(native.writeFrames(tap.fd, parts, 2, 3, status), 3);
    t.deepEqual([...status], [0, 0]);
    const last = await done;
    t.deepEqual(replies.sort(), [1, 2, 3]);
    const eth = last.subarray(VNET);
    t.deepEqual([...eth.subarray(0, 6)], OUR_MAC, 'the reply is addressed to our MAC');
    t.deepEqual([...eth.subarray(26, 30)], [10, 77, 0, 1]);
    t.is(last[0] & 1, 0, 'no NEEDS_CSUM without TUN_F_CSUM: the kernel finished the checksum');
    t.is(last[1], 0, 'gso_type NONE');
  });
});

test('with TUN_F_CSUM the kernel leaves the TCP checksum to us (NEEDS_CSUM in the vnet header)', async (t) => {
  await withSandbox(async (sb) => {
    const ns = await sb.netns('tap');
    const tap = native.openTap({ netns: ns, name: 'utap1', vnetHdrSize: VNET, offload: native.TUN_F_CSUM });
    sb.defer(() => tap.fd.close());
    await sb.must(['ip', 'addr', 'add', '10.78.0.1/24', 'dev', 'utap1'], ns);
    await sb.must(['ip', 'link', 'set', 'utap1', 'up'], ns);
    await sb.must(['ip', 'neigh', 'replace', '10.78.0.2', 'lladdr', '02:00:00:00:00:02', 'dev', 'utap1', 'nud', 'permanent'], ns);
    const slab = new native.FrameSlab(32, VNET + 2048);
    const syn = readUntil(tap.fd, slab, (f) => {
      const e = f.subarray(VNET);
      return e[12] === 0x08 && e[14 + 9] === 6; // IPv4 / TCP
    });
    const conn = native.tcpConnect('10.78.0.2', 7777, { netns: ns });
    sb.defer(() => conn.close());
    const f = await syn;
    const flags = f[0];
    const csumStart = f[6] | (f[7] << 8);
    const csumOffset = f[8] | (f[9] << 8);
    t.is(flags & 1, 1, 'VIRTIO_NET_HDR_F_NEEDS_CSUM');
    t.is(csumStart, 14 + 20, 'checksum starts at the TCP header');
    t.is(csumOffset, 16, 'TCP checksum field offset');
    conn.close();
  });
});
