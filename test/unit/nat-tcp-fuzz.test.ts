/**
 * Hostile input for the TCP module: random and mutated segments (random flags, sequence and
 * acknowledgment numbers, options, lengths) thrown at it — alone and into a live connection
 * that keeps moving data meanwhile. Nothing may throw, and the live transfer must complete.
 */
import test from 'ava';
import fc from 'fast-check';
import { ACK, buildGuestPacket, GuestConn, ip, makeHarness, PSH, TestServer } from './nat-tcp-harness';

const segmentArb = fc.record({
  flags: fc.integer({ min: 0, max: 255 }),
  seq: fc.integer({ min: 0, max: 0xffffffff }),
  ack: fc.integer({ min: 0, max: 0xffffffff }),
  window: fc.integer({ min: 0, max: 0xffff }),
  payload: fc.uint8Array({ maxLength: 200 }),
  rawOptions: fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 40 }),
  srcPort: fc.integer({ min: 0, max: 65535 }),
  dstPort: fc.integer({ min: 0, max: 65535 }),
  badChecksum: fc.boolean(),
  trusted: fc.boolean(),
});

test('random segments never throw and leave no half-open garbage behind a closed port', async (t) => {
  const h = makeHarness({ connectTimeoutMs: 200 });
  try {
    fc.assert(
      fc.property(segmentArb, (s) => {
        const pkt = buildGuestPacket(ip('10.0.2.15'), s.srcPort, ip('10.0.2.77'), s.dstPort, {
          flags: s.flags,
          seq: s.seq,
          ack: s.ack,
          window: s.window,
          payload: s.payload,
          rawOptions: s.rawOptions,
          badChecksum: s.badChecksum,
          trusted: s.trusted,
        });
        h.tcp.input(pkt);
        return true;
      }),
      { numRuns: 3000 },
    );
    // Truncated and corrupt headers straight into input.
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 80 }), fc.integer({ min: 0, max: 80 }), (bytes, cut) => {
        const pkt = buildGuestPacket(ip('10.0.2.15'), 1234, ip('10.0.2.2'), 80, { flags: ACK, seq: 1, payload: bytes });
        pkt.l4Length = Math.min(pkt.l4Length, cut);
        pkt.frame.data[pkt.l4Offset + 12] = bytes[0] ?? 0xff;
        h.tcp.input(pkt);
        return true;
      }),
      { numRuns: 2000 },
    );
    t.is(h.tcp.size, 0, 'destinations the policy refuses never make flows');
  } finally {
    await h.close();
  }
});

test('a live transfer completes while mutated segments hit the same connection', async (t) => {
  const down = Buffer.alloc(300_000);
  for (let i = 0; i < down.length; i++) down[i] = (i * 11) & 0xff;
  const server = new TestServer((s) => s.write(down));
  const sp = await server.listen();
  const h = makeHarness();
  const g = new GuestConn(h, 45000, sp);
  try {
    await g.connect();
    const rng = fc.sample(segmentArb, 400);
    let i = 0;
    // Interleave hostile segments on the same 4-tuple with the real exchange. Segments with a
    // bad checksum carry anything; valid ones are old (before RCV.NXT, acknowledging before
    // SND.UNA) — an in-window forgery would be accepted by any TCP, so it cannot be "noise".
    const noise = setInterval(() => {
      for (let k = 0; k < 20 && i < rng.length; k++, i++) {
        const s = rng[i];
        const seq = s.badChecksum ? s.seq : (g.nxt - 200_000 - (s.seq % 100_000)) >>> 0;
        const ack = s.badChecksum ? s.ack : (g.rcv - 2_000_000 - (s.ack % 100_000)) >>> 0;
        h.tcp.input(
          buildGuestPacket(g.src, g.srcPort, g.dst, g.dstPort, {
            flags: s.flags,
            seq,
            ack,
            window: s.window,
            payload: s.payload,
            rawOptions: s.rawOptions,
            badChecksum: s.badChecksum,
          }),
        );
      }
    }, 1);
    const got = await g.receive(down.length, true, 30_000);
    clearInterval(noise);
    t.true(got.equals(down));
    g.data('still alive', ACK | PSH);
    await new Promise((r) => setTimeout(r, 50));
    t.true(server.data().toString().endsWith('still alive'));
  } finally {
    await h.close();
    await server.close();
  }
});
