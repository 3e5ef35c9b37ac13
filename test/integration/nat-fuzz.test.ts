/**
 * Fuzz: random and mutated frames injected into the NAT stack for a while, next to a live
 * transfer. The stack runs in this process (createNatStack), joined to a real netns tap whose
 * kernel downloads a file with curl through the gateway; between the tap's batches we push
 * batches of junk into the stack's `send`:
 *  - random bytes of random length (0..2000),
 *  - frames with a valid Ethernet header and random ARP / IPv4 / IPv6 bodies,
 *  - IPv4 with a valid header checksum and random transport (TCP/UDP/ICMP) headers, flags,
 *    lengths, fragments, options and checksums,
 *  - copies of the guest's own recent frames with bytes flipped, truncated or extended,
 *  - any of the above with random virtio offload metadata (GSO type/size, NEEDS_CSUM offsets).
 * Nothing may throw out of `send`, no exception may escape to the process, and the transfer
 * must complete with the right sha256.
 *
 * Containment: every frame that parses as IPv4 is re-addressed to the gateway (which the stack
 * maps to the host's 127.0.0.1), so no junk reaches beyond loopback; DNS goes to a closed
 * loopback port (`dnsUpstream`) and nothing is sent to the DNS address.
 *
 * Seeded (FUZZ_SEED, default fixed); FUZZ_SECONDS (default 10) sets the duration.
 */
import { testIf } from '../helpers/env';
import { withSandbox } from '../helpers/netns';
import { expectedSha256, freePort, startBlobServer } from '../helpers/host-servers';
import { NetnsTapPort } from '../../src/transports/netns-tap';
import { createNatStack } from '../../src/backends/nat';
import { natConfig } from '../../src/backends/nat/config';
import { configureNetns } from '../../src/cli/netns-configure';
import { SeededRandom } from '../../src/link/fault';
import { GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, type Frame } from '../../src/link/frame';
import { Meter } from '../../src/meter/meter';

const test = testIf('root', 'netns', 'tun', 'cmd:curl');

const SECONDS = Number(process.env.FUZZ_SECONDS ?? 10);
const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed);
const GW_MAC = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
const GW = [10, 0, 2, 2];
const GUEST = [10, 0, 2, 15];

function csum(b: Uint8Array, off: number, len: number): number {
  let s = 0;
  for (let i = 0; i + 1 < len; i += 2) s += (b[off + i] << 8) | b[off + i + 1];
  if (len & 1) s += b[off + len - 1] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return 0xffff - s;
}

class JunkFactory {
  private readonly samples: Uint8Array[] = [];
  constructor(
    private readonly rng: SeededRandom,
    private readonly guestMac: Uint8Array,
  ) {}

  /** Keep (a copy of) some real guest frames to mutate later. */
  observe(frames: readonly Frame[]): void {
    for (const f of frames) {
      if (this.samples.length < 64) this.samples.push(Uint8Array.from(f.data.subarray(0, Math.min(f.data.length, 2048))));
      else if (this.rng.below(50) === 0) this.samples[this.rng.below(64)] = Uint8Array.from(f.data.subarray(0, Math.min(f.data.length, 2048)));
    }
  }

  private bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.rng.below(256);
    return b;
  }

  private eth(len: number, type: number): Uint8Array {
    const b = this.bytes(Math.max(len, 14));
    b.set(this.rng.below(8) === 0 ? [0xff, 0xff, 0xff, 0xff, 0xff, 0xff] : GW_MAC, 0);
    b.set(this.guestMac, 6);
    b[12] = type >> 8;
    b[13] = type & 0xff;
    return b;
  }

  private ipv4(): Uint8Array {
    const optWords = this.rng.below(6) === 0 ? this.rng.below(11) : 0;
    const ihl = 20 + optWords * 4;
    const l4 = this.rng.below(6) === 0 ? this.rng.below(1500) : 20 + this.rng.below(200);
    const b = this.eth(14 + ihl + l4, 0x0800);
    b[14] = this.rng.below(10) === 0 ? this.rng.below(256) : 0x40 | (ihl / 4);
    const total = this.rng.below(8) === 0 ? this.rng.below(65536) : ihl + l4;
    b[16] = total >> 8;
    b[17] = total & 0xff;
    const frag = this.rng.below(8) === 0 ? this.rng.below(65536) : 0x4000;
    b[20] = frag >> 8;
    b[21] = frag & 0xff;
    b[22] = this.rng.below(6) === 0 ? this.rng.below(3) : 64;
    b[23] = [6, 17, 1, this.rng.below(256)][this.rng.below(4)];
    b.set(GUEST, 26);
    b.set(GW, 30);
    const t = 14 + ihl;
    if (b[23] === 6 && l4 >= 20) {
      b[t + 12] = this.rng.below(4) === 0 ? this.rng.below(256) : (5 + this.rng.below(11)) << 4;
      b[t + 13] = this.rng.below(4) === 0 ? 0x02 : this.rng.below(256);
    }
    if (b[23] === 17 && l4 >= 8) {
      const ul = this.rng.below(4) === 0 ? this.rng.below(65536) : l4;
      b[t + 4] = ul >> 8;
      b[t + 5] = ul & 0xff;
      if (b[t + 2] === 0 && b[t + 3] === 53) b[t + 3] = 54; // never a DNS query
    }
    if (b[23] === 1 && l4 >= 8 && this.rng.below(2) === 0) b[t] = 8; // echo request
    if (this.rng.below(4) !== 0) {
      b[24] = b[25] = 0;
      const c = csum(b, 14, ihl);
      b[24] = c >> 8;
      b[25] = c & 0xff;
    }
    return b;
  }

  private mutate(src: Uint8Array): Uint8Array {
    let b: Uint8Array = Uint8Array.from(src);
    const k = this.rng.below(4);
    if (k === 0 && b.length > 1) b = b.subarray(0, this.rng.below(b.length));
    else if (k === 1) {
      const e = new Uint8Array(b.length + 1 + this.rng.below(300));
      e.set(b);
      e.set(this.bytes(e.length - b.length), b.length);
      b = e;
    }
    const flips = 1 + this.rng.below(8);
    for (let i = 0; i < flips && b.length > 0; i++) b[this.rng.below(b.length)] ^= 1 + this.rng.below(255);
    return b;
  }

  next(): Frame {
    let data: Uint8Array;
    switch (this.rng.below(6)) {
      case 0:
        data = this.bytes(this.rng.below(2000));
        break;
      case 1:
        data = this.eth(14 + this.rng.below(200), [0x0806, 0x86dd, this.rng.below(65536)][this.rng.below(3)]);
        if (data[12] === 0x08 && data[13] === 0x06 && data.length >= 42) data.set([0, 1, 8, 0, 6, 4, 0, 1 + this.rng.below(2)], 14);
        break;
      case 2:
      case 3:
        data = this.ipv4();
        break;
      default:
        data = this.samples.length ? this.mutate(this.samples[this.rng.below(this.samples.length)]) : this.ipv4();
    }
    contain(data);
    const f: Frame = { data, flags: 0, gsoType: GSO_NONE, gsoSize: 0, hdrLen: 0, csumStart: 0, csumOffset: 0 };
    if (this.rng.below(4) === 0) {
      f.flags = [VNET_F_NEEDS_CSUM, VNET_F_DATA_VALID, this.rng.below(256)][this.rng.below(3)];
      f.gsoType = [GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4, this.rng.below(256)][this.rng.below(6)];
      f.gsoSize = this.rng.below(4) === 0 ? 0 : this.rng.below(65536);
      f.hdrLen = this.rng.below(65536);
      f.csumStart = this.rng.below(4) === 0 ? this.rng.below(65536) : 34;
      f.csumOffset = this.rng.below(4) === 0 ? this.rng.below(65536) : [6, 16][this.rng.below(2)];
    }
    return f;
  }
}

/** The host port of the live transfer: junk never joins that connection (see `contain`). */
let livePort = -1;

/**
 * Whatever parses as IPv4 goes to the gateway (→ the host's loopback) and never to DNS. TCP/UDP
 * junk aimed at the live transfer's server port is moved to the next port: a mutated copy of
 * the guest's own segment with a flipped RST or FIN bit and an offload flag that vouches for its
 * checksum is indistinguishable from the real guest ending the connection (RFC 5961 accepts a
 * RST at exactly RCV.NXT), so it would test the fuzzer, not the stack.
 */
function contain(b: Uint8Array): void {
  if (b.length >= 34 && b[12] === 0x08 && b[13] === 0x00) {
    b[30] = GW[0];
    b[31] = GW[1];
    b[32] = GW[2];
    b[33] = GW[3];
    const t = 14 + (b[14] & 0x0f) * 4;
    if ((b[23] === 6 || b[23] === 17) && b.length >= t + 4 && ((b[t + 2] << 8) | b[t + 3]) === livePort) b[t + 3] ^= 1;
  }
  // IPv6 and ARP are answered locally (or dropped); nothing leaves for them
}

test(`random and mutated frames for ${SECONDS} s while a transfer runs: no exception escapes, the transfer completes`, async (t) => {
  const server = await startBlobServer();
  t.teardown(() => server.close());
  livePort = server.port;
  const deadDns = await freePort();
  await withSandbox(async (sb) => {
    const ns = await sb.netns('fuzz');
    const meter = new Meter();
    const port = NetnsTapPort.open({ netns: ns, meter });
    sb.defer(() => port.close());
    const stack = createNatStack({ config: natConfig({ mtu: 65520, dnsUpstream: [`127.0.0.1:${deadDns}`] }), meter, checksumOffload: true, tsoOffload: true });
    sb.defer(() => stack.close());
    const conf = await configureNetns({ netnsPath: port.netns.path, netnsName: ns, ifName: port.ifName, address: '10.0.2.15', prefixLength: 24, gateway: '10.0.2.2', dns: '10.0.2.3', mtu: 65520 });
    sb.defer(() => conf.undo());
    const mac = Uint8Array.from((await sb.must(['cat', '/sys/class/net/tap0/address'], ns)).trim().split(':').map((h) => parseInt(h, 16)));

    const rng = new SeededRandom(SEED);
    const junk = new JunkFactory(rng, mac);
    let thrown = 0;
    let firstThrow = '';
    const safeSend = (frames: readonly Frame[]): void => {
      try {
        stack.send(frames);
      } catch (err) {
        if (thrown++ === 0) firstThrow = (err as Error).stack ?? String(err);
      }
    };
    port.onReceive((frames) => {
      junk.observe(frames);
      safeSend(frames);
    });
    stack.onReceive((frames) => port.send(frames));

    const SIZE = 64 * 1024 * 1024;
    const transfer = sb.exec(ns, ['bash', '-o', 'pipefail', '-c', `curl -sS --fail --max-time 180 --limit-rate ${Math.floor(SIZE / (SECONDS + 2))} http://10.0.2.2:${server.port}/blob/${SIZE} | sha256sum`], 200_000);
    let injected = 0;
    const until = Date.now() + SECONDS * 1000;
    const batch: Frame[] = [];
    while (Date.now() < until) {
      batch.length = 0;
      for (let i = 0; i < 32; i++) batch.push(junk.next());
      injected += batch.length;
      safeSend(batch);
      await new Promise((r) => setImmediate(r));
    }
    const r = await transfer;
    t.is(thrown, 0, firstThrow);
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout.split(' ')[0], expectedSha256(SIZE));
    const drops = meter.snapshot().reduce((n, s) => n + s.drops, 0);
    t.log(`injected ${injected} junk frames (seed ${SEED}); ${drops} drops counted across stages`);
    t.true(drops > 0, 'junk was counted as dropped somewhere');
    // still serving after the storm: a fresh connection works
    const again = await sb.exec(ns, ['bash', '-o', 'pipefail', '-c', `curl -sS --fail --max-time 30 http://10.0.2.2:${server.port}/blob/1000000 | sha256sum`], 60_000);
    t.is(again.code, 0, again.stderr);
    t.is(again.stdout.split(' ')[0], expectedSha256(1000000));
  });
});
