import { EventEmitter } from 'node:events';
import test from 'ava';
import fc from 'fast-check';
import { plainFrame, VNET_F_DATA_VALID, type Frame } from '../../src/link/frame';
import { Meter } from '../../src/meter/meter';
import { GuestOutputQueue } from '../../src/backends/nat/guest-output';
import { createNatStack } from '../../src/backends/nat';
import { parseMac } from '../../src/wire/address';
import { Ipv4Packet } from '../../src/wire/ipv4';
import { Guest, GW_MAC, ipv4Frame, udpFrame, arpFrame, echoFrame } from './nat-guest';

function ipv6Frame(): Uint8Array {
  const b = new Uint8Array(14 + 40 + 8);
  b.set(GW_MAC, 0);
  b.set([0x52, 0x54, 0, 0x12, 0x34, 0x56], 6);
  b[12] = 0x86;
  b[13] = 0xdd;
  b[14] = 0x60;
  b[19] = 8; // payload length
  b[20] = 17;
  b[21] = 64;
  return b;
}

test('malformed frames are counted by reason and never throw', (t) => {
  const g = new Guest();
  try {
    const good = udpFrame({ dst: '10.0.2.2', srcPort: 1000, dstPort: 9, payload: new Uint8Array(4) });
    const badIpSum = Uint8Array.from(good);
    badIpSum[24] ^= 0x55;
    const shortTotal = Uint8Array.from(good);
    shortTotal[16] = 0x10; // total length 4096 > frame
    const badVersion = Uint8Array.from(good);
    badVersion[14] = 0x65;
    const fragment = ipv4Frame({ dst: '10.0.2.2', protocol: 17, dontFragment: false }, new Uint8Array(12));
    fragment[20] |= 0x20; // more fragments, with 12 bytes of data: not a multiple of 8
    new Ipv4Packet().wrap(fragment, 14).fillChecksum();
    const spoofed = udpFrame({ src: '192.168.9.9', dst: '10.0.2.2', srcPort: 1, dstPort: 9, payload: new Uint8Array(1) });
    const notOurs = udpFrame({ dst: '10.0.2.2', dstMac: parseMac('02:00:00:00:00:01'), srcPort: 1, dstPort: 9, payload: new Uint8Array(1) });
    g.send(new Uint8Array(5), good.subarray(0, 20), badIpSum, shortTotal, badVersion, fragment, spoofed, notOurs, ipv6Frame());
    const d = { ...g.drops('nat.parse.tx'), ...g.drops('nat.ip.tx') };
    t.is(d.runt, 1);
    t.is(d['bad-truncated'], 2); // the cut frame, and a total length beyond the frame
    t.is(d['bad-checksum'], 1);
    t.is(d['bad-bad-version'], 1);
    t.is(g.drops('nat.ip.reassembly')['fragment-bad-length'], 1, 'a fragment goes to reassembly, which refuses this one');
    t.is(d['bad-source'], 1);
    t.is(d['not-for-us'], 1);
    t.is(d['ipv6-unsupported'], 1);
  } finally {
    void g.close();
  }
});

test('a frame the frontend marked DATA_VALID skips the IP header checksum', (t) => {
  const g = new Guest();
  try {
    const f = echoFrame({ dst: '10.0.2.3', ident: 1, seq: 1 });
    f[24] ^= 0xff;
    g.stack.send([{ ...plainFrame(f), flags: VNET_F_DATA_VALID }]);
    t.false('bad-checksum' in g.drops('nat.ip.tx'));
    t.is(g.meter.stage('nat.local').frames, 1); // answered
  } finally {
    void g.close();
  }
});

test('without a TCP module TCP gets protocol unreachable; unknown protocols admin-prohibited', async (t) => {
  const g = new Guest();
  try {
    g.send(ipv4Frame({ dst: '10.0.2.2', protocol: 6 }, new Uint8Array(20)));
    const r = await g.waitFor((x) => x.icmp?.type === 3);
    t.is(r.icmp!.code, 2);
    g.send(ipv4Frame({ dst: '10.1.2.3', protocol: 47 }, new Uint8Array(20)));
    const r2 = await g.waitFor((x) => x.icmp?.type === 3);
    t.is(r2.icmp!.code, 13);
  } finally {
    await g.close();
  }
});

test('ICMP errors are never sent about ICMP errors or to broadcast', async (t) => {
  const g = new Guest();
  try {
    // A Time Exceeded from the guest with TTL 1 to a routed address: no error about an error.
    const l4 = new Uint8Array(36);
    l4[0] = 11;
    g.send(ipv4Frame({ dst: '192.0.2.1', protocol: 1, ttl: 1 }, l4));
    t.deepEqual(await g.collect((x) => x.icmp !== undefined, 30), []);
  } finally {
    await g.close();
  }
});

test('createNatStack plugs in TCP and the forwarder; stats() summarises', async (t) => {
  const stack = createNatStack({ meter: new Meter(), resolvConf: '/nonexistent' });
  try {
    await stack.ready;
    t.truthy(stack.tcp);
    t.truthy(stack.forwarder);
    stack.setOffloads({ checksum: true, tso: true });
    t.true(stack.out.checksumOffload && stack.out.tsoOffload);
    stack.setOffloads(false, false);
    t.false(stack.out.checksumOffload);
    const s = stack.stats();
    t.deepEqual(s.flows, { tcp: 0, tcpHalfOpen: 0, udp: 0, icmp: 0 });
    t.is(s.guestBuffers.free, s.guestBuffers.total);
  } finally {
    await stack.close();
  }
});

test('fast-check: random and mutated frames into the stack never throw', async (t) => {
  const g = new Guest({ config: { dnsHosts: { 'x.test': '10.0.2.2' } } });
  const seeds = [
    udpFrame({ dst: '10.0.2.3', srcPort: 999, dstPort: 53, payload: new Uint8Array(30) }),
    udpFrame({ dst: '10.0.2.2', srcPort: 999, dstPort: 9, payload: new Uint8Array(10) }),
    udpFrame({ src: '0.0.0.0', dst: '255.255.255.255', srcPort: 68, dstPort: 67, payload: new Uint8Array(300) }),
    echoFrame({ dst: '10.0.2.3', ident: 1, seq: 2 }),
    arpFrame({ senderIp: '10.0.2.15', targetIp: '10.0.2.2' }),
    ipv4Frame({ dst: '10.0.2.2', protocol: 6 }, new Uint8Array(20)),
    ipv6Frame(),
  ];
  try {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ minLength: 0, maxLength: 200 }),
          fc
            .tuple(fc.constantFrom(...seeds), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), fc.nat())
            .map(([seed, flips, cut]) => {
              const f = Uint8Array.from(seed);
              for (const [i, v] of flips) f[i % f.length] = v;
              // Keep it addressed to us often enough to reach the deeper layers.
              if (cut % 3 === 0) f.set(GW_MAC, 0);
              return cut % 5 === 0 ? f.subarray(0, cut % (f.length + 1)) : f;
            }),
        ),
        (bytes) => {
          const frames: Frame[] = [plainFrame(bytes)];
          g.stack.send(frames);
          return true;
        },
      ),
      { numRuns: 3000 },
    );
    t.is(g.meter.stage('nat.parse.tx').dropReasons.get('internal-error'), undefined);
  } finally {
    await new Promise((r) => setTimeout(r, 50));
    await g.close();
  }
});

test('guest output: pool exhaustion flushes early; a re-entrant handler is served after the running flush', (t) => {
  const meter = new Meter();
  const out = new GuestOutputQueue({ meter, gatewayMac: GW_MAC, mtu: 1500, poolSize: 8 });
  out.neighbors.learn4(0x0a00020f, new Uint8Array([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
  const src = new Uint8Array([10, 0, 2, 2]);
  const dst = new Uint8Array([10, 0, 2, 15]);
  const batches: number[] = [];
  let reenter = true;
  out.onDeliver((frames) => {
    batches.push(frames.length);
    if (reenter) {
      // A handler that answers straight back (a loopback): its frame goes out after this batch.
      reenter = false;
      out.commit(out.begin(4, src, dst, 17, 64, 8)!);
    }
  });
  const burst = (n: number): void => {
    out.hold();
    for (let i = 0; i < n; i++) {
      const o = out.begin(4, src, dst, 17, 64, 8);
      t.truthy(o);
      out.commit(o!);
    }
    out.release();
  };
  burst(3);
  t.deepEqual(batches, [3, 1]);
  burst(10); // more than the pool: flushed early once it runs dry
  t.deepEqual(batches, [3, 1, 8, 2]);
  t.is(out.available, 8);
  t.is(meter.stage('nat.output.rx').frames, 14);
});

test('guest output: a guest port that says it is full closes the data tap until it says rx-unblocked', (t) => {
  const meter = new Meter();
  const out = new GuestOutputQueue({ meter, gatewayMac: GW_MAC, mtu: 1500, poolSize: 8 });
  out.neighbors.learn4(0x0a00020f, new Uint8Array([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
  const port = Object.assign(new EventEmitter(), { rxBlocked: false });
  out.onDeliver(() => {
    port.rxBlocked = true; // this batch filled the port's ring: the next frames would queue there
  });
  let woken = 0;
  out.onGuestUnblocked(() => woken++);
  out.setPressure(port);
  t.is(out.available, 8);
  out.commit(out.begin(4, new Uint8Array([10, 0, 2, 2]), new Uint8Array([10, 0, 2, 15]), 17, 64, 8)!);
  out.flush();
  t.true(out.guestBlocked);
  t.is(out.available, 0, 'TCP data waits in the host sockets');
  t.truthy(out.begin(4, new Uint8Array([10, 0, 2, 2]), new Uint8Array([10, 0, 2, 15]), 17, 64, 8), 'control frames still go');
  port.rxBlocked = false;
  port.emit('rx-unblocked');
  t.false(out.guestBlocked);
  t.is(woken, 1);
  t.is(out.available, 7);
  out.setPressure(null);
  t.is(port.listenerCount('rx-unblocked'), 0);
});

test('guest output: frames to an unresolved guest wait for ARP, then leave with its MAC', async (t) => {
  const meter = new Meter();
  const out = new GuestOutputQueue({ meter, gatewayMac: GW_MAC, gatewayIp: 0x0a000202, mtu: 1500, poolSize: 8 });
  const seen: Uint8Array[] = [];
  out.onDeliver((frames) => frames.forEach((f) => seen.push(Uint8Array.from(f.data))));
  const src = new Uint8Array([10, 0, 2, 2]);
  out.commit(out.begin(4, src, new Uint8Array([10, 0, 2, 15]), 17, 64, 8)!);
  out.commit(out.begin(4, src, new Uint8Array([10, 0, 2, 15]), 17, 64, 8)!);
  out.flush();
  t.is(seen.length, 1); // one ARP request, not two
  t.is((seen[0][12] << 8) | seen[0][13], 0x0806);
  t.deepEqual([...seen[0].subarray(38, 42)], [10, 0, 2, 15]);
  t.deepEqual([...seen[0].subarray(28, 32)], [10, 0, 2, 2]);
  const mac = new Uint8Array([2, 0, 0, 0, 0, 9]);
  out.neighbors.learn4(0x0a00020f, mac);
  out.flush();
  t.is(seen.length, 3);
  t.deepEqual([...seen[1].subarray(0, 6)], [...mac]);
  t.is(out.available, 8);
  out.close();
});
