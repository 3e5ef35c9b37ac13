/**
 * The TCP module driven segment by segment: a scripted guest (hand-built frames) on one side,
 * real TCP servers on 127.0.0.1 on the other (reached through the gateway address). Every test
 * runs with both host-socket implementations: Node sockets with rings, and native fds with
 * MSG_PEEK (when the addon and the kernel have it).
 */
import test from 'ava';
import { ACK, closedPort, FIN, GuestConn, makeHarness, PSH, RST, SYN, TestServer, until } from './nat-tcp-harness';
import { TcpState } from '../../src/backends/nat/tcp-connection';
import { fdHostSocketsAvailable } from '../../src/backends/nat/tcp-host-fd';

let nextPort = 40000;
function port(): number {
  return nextPort++;
}

const kinds: ('node' | 'fd')[] = fdHostSocketsAvailable() ? ['node', 'fd'] : ['node'];

for (const kind of kinds) {
  test(`[${kind}] handshake: the SYN-ACK comes after the host connect, with MSS, window scale, SACK and timestamps`, async (t) => {
    const server = new TestServer();
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind });
    const g = new GuestConn(h, port(), sp);
    try {
      g.markNow();
      g.send({ flags: SYN, seq: g.iss, ack: 0, mss: 1460, sackPermitted: true, windowScale: 7, ts: [555, 0] });
      const sa = await g.waitFor((s) => (s.flags & SYN) !== 0);
      t.is(sa.flags, SYN | ACK);
      t.is(sa.ack, g.iss + 1);
      t.is(sa.mss, 1500 - 40);
      t.true(sa.sackPermitted);
      t.truthy(sa.windowScale);
      t.deepEqual(sa.ts?.[1], 555, 'our SYN-ACK echoes the guest timestamp');
      t.true(sa.checksumOk);
      t.is(server.sockets.length, 1, 'the host connection exists before the guest is answered');
      const c = [...h.tcp.connections()][0];
      t.is(c.state, TcpState.SynReceived);
      g.nxt = g.iss + 1;
      g.rcv = sa.seq + 1;
      g.send({ flags: ACK });
      t.is(c.state, TcpState.Established);
      t.is(h.tcp.halfOpen, 0);
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] a retransmitted SYN while the host connect is pending is absorbed`, async (t) => {
    const h = makeHarness({ hostSockets: kind });
    // 192.0.2.1 (TEST-NET-1) never answers: the connect stays pending.
    const g = new GuestConn(h, port(), 9, 7000, '10.0.2.15', '192.0.2.1');
    try {
      g.send({ flags: SYN, seq: g.iss, ack: 0, mss: 1460 });
      g.send({ flags: SYN, seq: g.iss, ack: 0, mss: 1460 });
      g.send({ flags: SYN, seq: g.iss, ack: 0, mss: 1460 });
      t.is(h.tcp.size, 1);
      t.is(h.tcp.halfOpen, 1);
      t.is(g.sentToUs().length, 0, 'nothing is answered before the host connect completes');
      t.is(h.ctx.meter.stage('nat.tcp.tx').dropReasons.get('syn-retransmit-absorbed'), 2);
    } finally {
      await h.close();
    }
  });

  test(`[${kind}] connection refused on the host reaches the guest as RST`, async (t) => {
    const cp = await closedPort();
    const h = makeHarness({ hostSockets: kind });
    const g = new GuestConn(h, port(), cp);
    try {
      g.markNow();
      g.send({ flags: SYN, seq: g.iss, ack: 0, mss: 1460 });
      const rst = await g.waitFor((s) => (s.flags & RST) !== 0);
      t.is(rst.flags, RST | ACK);
      t.is(rst.ack, g.iss + 1);
      await until(() => h.tcp.size === 0);
      t.is(h.tcp.halfOpen, 0);
    } finally {
      await h.close();
    }
  });

  test(`[${kind}] a destination the policy refuses gets ICMP administratively prohibited; the gateway port a RST`, async (t) => {
    const h = makeHarness({ hostSockets: kind });
    try {
      const g = new GuestConn(h, port(), 80, 1, '10.0.2.15', '10.0.2.77');
      g.send({ flags: SYN, seq: 1, ack: 0 });
      t.is(h.ctx.icmpErrors.length, 1);
      t.deepEqual([h.ctx.icmpErrors[0].type, h.ctx.icmpErrors[0].code], [3, 13]);
      t.is(h.ctx.icmpErrors[0].quotedSrcPort, g.srcPort);
      t.is(h.tcp.size, 0);
    } finally {
      await h.close();
    }
  });

  test(`[${kind}] guest data is acknowledged once the host socket took it, and arrives in order`, async (t) => {
    const server = new TestServer();
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind });
    const g = new GuestConn(h, port(), sp);
    try {
      await g.connect();
      g.markNow();
      g.data('hello, ');
      g.data('world');
      const ack = await g.waitFor((s) => s.ack === g.nxt);
      t.is(ack.flags & ACK, ACK);
      t.true(ack.window > 0);
      await until(() => server.data().toString() === 'hello, world', 5000, 'server data');
      t.pass();
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] an out-of-order segment is queued (dup ACK with SACK) and delivered when the hole fills`, async (t) => {
    const server = new TestServer();
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind });
    const g = new GuestConn(h, port(), sp);
    try {
      await g.connect();
      const base = g.nxt;
      g.markNow();
      // Second segment first.
      g.send({ flags: ACK | PSH, seq: base + 5, payload: 'WORLD' });
      const dup = await g.waitFor((s) => s.sack.length > 0);
      t.is(dup.ack, base, 'duplicate ACK at the hole');
      t.deepEqual(dup.sack[0], [base + 5, base + 10]);
      await new Promise((r) => setTimeout(r, 50));
      t.is(server.data().length, 0, 'nothing reaches the host past a hole');
      g.markNow();
      g.send({ flags: ACK | PSH, seq: base, payload: 'HELLO' });
      g.nxt = base + 10;
      const ack = await g.waitFor((s) => s.ack === base + 10);
      t.is(ack.sack.length, 0);
      await until(() => server.data().toString() === 'HELLOWORLD', 5000, 'server data');
      const c = [...h.tcp.connections()][0];
      t.is(c.stats.outOfOrder, 1);
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] host data reaches the guest; a segment the guest never ACKs is retransmitted after the RTO`, async (t) => {
    const server = new TestServer((s) => s.write('0123456789'));
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind });
    const g = new GuestConn(h, port(), sp);
    try {
      await g.connect();
      const first = await g.waitFor((s) => s.payload.length > 0);
      t.is(first.payload.toString(), '0123456789');
      t.is(first.seq, g.rcv);
      // "Lose" it: do not ACK. The RTO brings it again.
      const again = await g.waitFor((s) => s.payload.length > 0 && s.seq === first.seq, h.out.sent.indexOf(first) + 1);
      t.is(again.payload.toString(), '0123456789');
      const c = [...h.tcp.connections()][0];
      t.true(c.stats.retransmits >= 1);
      t.true(c.stats.timeouts >= 1);
      g.rcv = first.seq + 10;
      g.send({ flags: ACK });
      t.is(c.sndUna, c.sndMax);
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] three duplicate ACKs trigger a fast retransmit of the first unacknowledged segment`, async (t) => {
    const big = Buffer.alloc(20_000, 7);
    const server = new TestServer((s) => s.write(big));
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind, rtoMinMs: 5000, rtoInitialMs: 5000 });
    const g = new GuestConn(h, port(), sp);
    try {
      await g.connect();
      const rcv0 = g.rcv;
      await until(() => g.sentToUs().filter((s) => s.payload.length > 0).length >= 4, 5000, 'data segments');
      const mark = g.markNow();
      // The first segment was "lost": ACK rcv0 three times (each after a later segment).
      for (let i = 0; i < 3; i++) g.send({ flags: ACK, ack: rcv0, sack: [[rcv0 + 1448 * (i + 1), rcv0 + 1448 * (i + 2)]] });
      const re = await g.waitFor((s) => s.seq === rcv0 && s.payload.length > 0, mark, 2000);
      t.true(re.payload.length > 0);
      const c = [...h.tcp.connections()][0];
      t.is(c.stats.fastRetransmits, 1);
      t.is(c.stats.timeouts, 0, 'no timeout was needed');
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] half-close: after the guest FIN the host can still send; the host FIN closes it (LAST_ACK)`, async (t) => {
    const server = new TestServer();
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind });
    const g = new GuestConn(h, port(), sp);
    try {
      await g.connect();
      const sock = await server.nextConnection();
      const ended = new Promise<void>((r) => sock.once('end', () => r()));
      g.data('request');
      g.markNow();
      g.send({ flags: FIN | ACK });
      g.nxt += 1;
      await g.waitFor((s) => s.ack === g.nxt);
      await ended;
      t.is(server.data().toString(), 'request');
      const c = [...h.tcp.connections()][0];
      t.is(c.state, TcpState.CloseWait);
      sock.write('reply after half-close');
      const got = await g.receive(22);
      t.is(got.toString(), 'reply after half-close');
      g.markNow();
      sock.end();
      const fin = await g.waitFor((s) => (s.flags & FIN) !== 0);
      t.is(c.state, TcpState.LastAck);
      g.rcv = fin.seq + fin.payload.length + 1;
      g.send({ flags: ACK });
      t.is(c.state, TcpState.Closed);
      t.is(h.tcp.size, 0);
      const totals = h.tcp.totals();
      t.is(totals.connectionsClosed, 1);
      t.is(totals.bytesFromGuest, 7);
      t.is(totals.bytesToGuest, 22);
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] host FIN first: FIN_WAIT_2 keeps carrying guest data, then TIME_WAIT answers a retransmitted FIN`, async (t) => {
    const server = new TestServer();
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind, timeWaitMs: 60_000 });
    const g = new GuestConn(h, port(), sp);
    try {
      await g.connect();
      const sock = await server.nextConnection();
      g.markNow();
      sock.end('bye');
      t.is((await g.receive(3)).toString(), 'bye');
      const fin = await g.waitFor((s) => (s.flags & FIN) !== 0);
      t.is((fin.seq + fin.payload.length) >>> 0, g.rcv, 'the FIN follows the last byte');
      g.rcv = (g.rcv + 1) >>> 0;
      g.send({ flags: ACK });
      const c = [...h.tcp.connections()][0];
      t.is(c.state, TcpState.FinWait2);
      g.data('still talking');
      await until(() => server.data().toString() === 'still talking', 5000, 'data in FIN_WAIT_2');
      g.markNow();
      g.send({ flags: FIN | ACK });
      g.nxt += 1;
      await g.waitFor((s) => s.ack === g.nxt);
      t.is(c.state, TcpState.TimeWait);
      // The ACK of our FIN was lost on the guest side: it sends FIN again.
      g.markNow();
      g.send({ flags: FIN | ACK, seq: g.nxt - 1 });
      const re = await g.waitFor((s) => s.ack === g.nxt && (s.flags & ACK) !== 0);
      t.is(re.flags & RST, 0);
      t.is(c.state, TcpState.TimeWait);
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] a guest RST resets the host socket; a host reset reaches the guest as RST`, async (t) => {
    const server = new TestServer();
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind });
    try {
      const g1 = new GuestConn(h, port(), sp);
      await g1.connect();
      const s1 = await server.nextConnection();
      const reset = new Promise<string>((r) => {
        s1.once('error', (e: NodeJS.ErrnoException) => r(e.code ?? 'error'));
        s1.once('end', () => r('end'));
      });
      g1.send({ flags: RST | ACK });
      t.is(await reset, 'ECONNRESET');

      const g2 = new GuestConn(h, port(), sp);
      await g2.connect();
      const s2 = await server.nextConnection();
      g2.markNow();
      s2.resetAndDestroy();
      const rst = await g2.waitFor((s) => (s.flags & RST) !== 0);
      t.is(rst.seq, g2.rcv);
      await until(() => h.tcp.size === 0);
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] a RST that is in the window but not exact gets a challenge ACK (RFC 5961)`, async (t) => {
    const server = new TestServer();
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind });
    const g = new GuestConn(h, port(), sp);
    try {
      await g.connect();
      g.markNow();
      g.send({ flags: RST, seq: g.nxt + 100 });
      const ch = await g.waitFor((s) => (s.flags & ACK) !== 0);
      t.is(ch.ack, g.nxt);
      const c = [...h.tcp.connections()][0];
      t.is(c.state, TcpState.Established);
      t.is(c.stats.challengeAcks, 1);
      g.markNow();
      g.send({ flags: SYN, seq: g.nxt + 5 });
      await g.waitFor((s) => s.ack === g.nxt);
      t.is(c.stats.challengeAcks, 2);
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] zero window: nothing is sent, the persist timer probes, data flows when the window opens`, async (t) => {
    const server = new TestServer();
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind });
    const g = new GuestConn(h, port(), sp);
    try {
      await g.connect();
      const sock = await server.nextConnection();
      g.window = 0;
      g.send({ flags: ACK });
      g.markNow();
      sock.write('waiting for a window');
      // A probe: an ACK with SEQ = SND.UNA - 1 and no data.
      const probe = await g.waitFor((s) => s.payload.length === 0 && s.seq === ((g.rcv - 1) >>> 0));
      t.is(probe.flags & ACK, ACK);
      t.is(g.sentToUs(g.mark).filter((s) => s.payload.length > 0).length, 0, 'no data into a zero window');
      const c = [...h.tcp.connections()][0];
      t.true(c.stats.zeroWindowProbes >= 1);
      t.true(c.stats.windowStalls >= 1);
      g.window = 65535;
      g.send({ flags: ACK });
      const got = await g.receive(20);
      t.is(got.toString(), 'waiting for a window');
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] a keep-alive probe from the guest is answered with an ACK`, async (t) => {
    const server = new TestServer();
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind });
    const g = new GuestConn(h, port(), sp);
    try {
      await g.connect();
      g.markNow();
      g.send({ flags: ACK, seq: g.nxt - 1 });
      const a = await g.waitFor((s) => (s.flags & ACK) !== 0);
      t.is(a.ack, g.nxt);
      t.is(h.ctx.meter.stage('nat.tcp.tx').dropReasons.get('keepalive-answered'), 1);
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] bad checksums and malformed options are counted and dropped; segments to unknown flows get RST`, async (t) => {
    const server = new TestServer();
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind });
    const g = new GuestConn(h, port(), sp);
    try {
      const stage = h.ctx.meter.stage('nat.tcp.tx');
      g.send({ flags: SYN, seq: 1, badChecksum: true });
      t.is(stage.dropReasons.get('bad-checksum'), 1);
      g.send({ flags: SYN, seq: 1, rawOptions: [2, 9, 0, 0] });
      t.is(stage.dropReasons.get('bad-option'), 1);
      g.send({ flags: SYN, seq: 1, rawOptions: [8, 1, 0, 0] });
      t.is(stage.dropReasons.get('bad-option'), 2);
      t.is(h.tcp.size, 0);
      g.markNow();
      g.send({ flags: ACK, seq: 5, ack: 77 });
      const rst = await g.waitFor((s) => (s.flags & RST) !== 0);
      t.is(rst.seq, 77);
      t.is(stage.dropReasons.get('no-flow'), 1);
      // A checksum vouched for by the frontend is not verified.
      g.send({ flags: RST, seq: 1, badChecksum: true, trusted: true });
      t.is(stage.dropReasons.get('rst-no-flow'), 1);
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] segments outside the window are answered with an ACK and dropped`, async (t) => {
    const server = new TestServer();
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind });
    const g = new GuestConn(h, port(), sp);
    try {
      await g.connect();
      g.markNow();
      g.send({ flags: ACK | PSH, seq: g.nxt + 10_000_000, payload: 'far away' });
      const a = await g.waitFor((s) => (s.flags & ACK) !== 0);
      t.is(a.ack, g.nxt);
      t.is(h.ctx.meter.stage('nat.tcp.tx').dropReasons.get('out-of-window'), 1);
      await new Promise((r) => setTimeout(r, 30));
      t.is(server.data().length, 0);
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] with TSO towards the guest, host data goes out as GSO super-frames with partial checksums`, async (t) => {
    const big = Buffer.alloc(200_000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
    const server = new TestServer((s) => s.write(big));
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind, mtu: 1500, csum: true, tso: true });
    const g = new GuestConn(h, port(), sp);
    g.window = 65535;
    g.windowScale = 7;
    try {
      await g.connect();
      const got = await g.receive(big.length);
      t.true(got.equals(big));
      const data = g.sentToUs().filter((s) => s.payload.length > 0);
      const gso = data.filter((s) => s.gsoType === 1);
      t.true(gso.length > 0, 'some frames are GSO');
      for (const s of gso) {
        t.true(s.partial);
        t.true(s.checksumOk);
        t.true(s.payload.length > s.gsoSize);
        t.is(s.gsoSize, 1460 - 12, 'segment size = MSS minus the timestamp option');
      }
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] a TSO super-frame from the guest goes to the host socket as one write`, async (t) => {
    const server = new TestServer();
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind, mtu: 65520 });
    const g = new GuestConn(h, port(), sp);
    try {
      await g.connect({ mss: 65480 });
      const chunk = Buffer.alloc(60_000, 0x41);
      const writes = h.ctx.meter.stage('host.tcp.write');
      const before = writes.frames;
      g.markNow();
      g.send({ flags: ACK | PSH, payload: chunk, gso: true });
      g.nxt += chunk.length;
      await g.waitFor((s) => s.ack === g.nxt);
      t.is(writes.frames - before, 1);
      await until(() => server.data().length === chunk.length, 5000, 'server data');
      t.is([...h.tcp.connections()][0].stats.gsoFromGuest, 1);
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] bulk both ways through the module: every byte arrives, in order`, async (t) => {
    const up = Buffer.alloc(300_000);
    for (let i = 0; i < up.length; i++) up[i] = (i * 7 + 3) & 0xff;
    const down = Buffer.alloc(500_000);
    for (let i = 0; i < down.length; i++) down[i] = (i * 13 + 1) & 0xff;
    const server = new TestServer((s) => s.write(down));
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind });
    const g = new GuestConn(h, port(), sp);
    try {
      const synAck = await g.connect();
      // Upload in MSS-sized segments, respecting the advertised window (unscaled in the SYN-ACK).
      let off = 0;
      const mss = 1448;
      while (off < up.length) {
        const last = g.sentToUs().filter((s) => (s.flags & ACK) !== 0).pop()!;
        const acked = last.ack;
        const wnd = last.flags & SYN ? last.window : last.window << (synAck.windowScale ?? 0);
        const inflight = (g.nxt - acked) >>> 0;
        if (inflight + mss > wnd) {
          await new Promise((r) => setTimeout(r, 1));
          continue;
        }
        const n = Math.min(mss, up.length - off);
        g.data(up.subarray(off, off + n));
        off += n;
      }
      const got = await g.receive(down.length);
      t.true(got.equals(down));
      await until(() => server.data().length === up.length, 10_000, 'upload');
      t.true(server.data().equals(up));
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] the half-open table is bounded`, async (t) => {
    const h = makeHarness({ hostSockets: kind, config: { maxHalfOpen: 3 } });
    try {
      for (let i = 0; i < 5; i++) {
        const g = new GuestConn(h, port(), 9, 1000 + i, '10.0.2.15', '192.0.2.1');
        g.send({ flags: SYN, seq: g.iss, ack: 0 });
      }
      t.is(h.tcp.halfOpen, 3);
      t.is(h.tcp.size, 3);
      t.is(h.ctx.meter.stage('nat.tcp.tx').dropReasons.get('half-open-full'), 2);
    } finally {
      await h.close();
    }
  });
}
