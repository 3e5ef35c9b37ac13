/**
 * Port forwarding: a host client connects to the forwarder's listener; the TCP module opens the
 * connection towards the scripted guest (SYN from the gateway), and bytes flow both ways.
 */
import test from 'ava';
import net from 'node:net';
import { PortForwarder, type UdpForwarding } from '../../src/backends/nat/forward';
import type { HostForward } from '../../src/backends/nat/config';
import { TcpState } from '../../src/backends/nat/tcp-connection';
import { ACK, FIN, GuestConn, makeHarness, PSH, RST, SYN, until, type Harness, type SentSegment } from './nat-tcp-harness';

/** Answer the module's SYN like a guest listening on `port` would. */
async function guestAccept(h: Harness, guestPort: number, iss = 900_000): Promise<{ g: GuestConn; syn: SentSegment }> {
  const syn = await h.out.waitFor((s) => s.dstPort === guestPort && (s.flags & (SYN | ACK)) === SYN);
  const g = new GuestConn(h, guestPort, syn.srcPort, iss, syn.dst, syn.src);
  g.rcv = (syn.seq + 1) >>> 0;
  g.markNow();
  g.send({ flags: SYN | ACK, seq: iss, mss: 1460, sackPermitted: true, windowScale: 7, ts: [42, syn.ts ? syn.ts[0] : 0] });
  g.nxt = (iss + 1) >>> 0;
  return { g, syn };
}

test('a host connection to a forwarded port becomes a connection to the guest, both ways', async (t) => {
  const h = makeHarness();
  const fwd = new PortForwarder({ ctx: h.ctx, tcp: h.tcp });
  try {
    const rule = await fwd.add({ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 0, guestAddress: '', guestPort: 8080 });
    t.true(rule.hostPort > 0);
    t.deepEqual(fwd.list(), [rule]);
    const client = net.connect(rule.hostPort, '127.0.0.1');
    const received: Buffer[] = [];
    client.on('data', (d) => received.push(d));
    await new Promise((r) => client.once('connect', r));
    client.write('GET / HTTP/1.0\r\n\r\n');

    const { g, syn } = await guestAccept(h, 8080);
    t.is(syn.src, '10.0.2.2', 'from the gateway');
    t.is(syn.dst, '10.0.2.15', 'to the first lease');
    t.truthy(syn.mss);
    t.true(syn.sackPermitted);
    t.truthy(syn.ts);
    t.true(syn.checksumOk);
    // Our ACK of the guest's SYN-ACK, then the client's request.
    const req = await g.receive(18);
    t.is(req.toString(), 'GET / HTTP/1.0\r\n\r\n');
    g.data('HTTP/1.0 200 OK\r\n\r\nhello');
    await until(() => Buffer.concat(received).toString() === 'HTTP/1.0 200 OK\r\n\r\nhello', 5000, 'reply at the client');
    // The guest closes; the client sees the end and closes too.
    const ended = new Promise((r) => client.once('end', r));
    g.send({ flags: FIN | ACK });
    g.nxt += 1;
    await ended;
    g.markNow();
    client.end();
    const fin = await g.waitFor((s) => (s.flags & FIN) !== 0);
    g.rcv = (fin.seq + 1) >>> 0;
    g.send({ flags: ACK });
    await until(() => h.tcp.size === 0 || [...h.tcp.connections()][0].state === TcpState.TimeWait);
    t.pass();
  } finally {
    await fwd.close();
    await h.close();
  }
});

test('a guest that refuses a forwarded connection resets the host client', async (t) => {
  const h = makeHarness();
  const fwd = new PortForwarder({ ctx: h.ctx, tcp: h.tcp });
  try {
    const rule = await fwd.add({ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 0, guestAddress: '10.0.2.15', guestPort: 2222 });
    const client = net.connect(rule.hostPort, '127.0.0.1');
    const outcome = new Promise<string>((r) => {
      client.once('error', (e: NodeJS.ErrnoException) => r(e.code ?? 'error'));
      client.once('end', () => r('end'));
    });
    const syn = await h.out.waitFor((s) => s.dstPort === 2222 && (s.flags & SYN) !== 0);
    const g = new GuestConn(h, 2222, syn.srcPort, 0, syn.dst, syn.src);
    g.send({ flags: RST | ACK, seq: 0, ack: (syn.seq + 1) >>> 0 });
    t.is(await outcome, 'ECONNRESET');
    t.is(h.tcp.size, 0);
  } finally {
    await fwd.close();
    await h.close();
  }
});

test('forwards are added, listed and removed at run time; duplicates are refused; UDP goes to the UDP module', async (t) => {
  const h = makeHarness();
  const udpRules: HostForward[] = [];
  const udp: UdpForwarding = {
    async addForward(rule) {
      udpRules.push({ ...rule, hostPort: rule.hostPort || 5353 });
    },
    async removeForward(addr, port) {
      const i = udpRules.findIndex((r) => r.hostAddress === addr && r.hostPort === port);
      if (i < 0) return false;
      udpRules.splice(i, 1);
      return true;
    },
    listForwards: () => udpRules.map((r) => ({ ...r })),
  };
  const fwd = new PortForwarder({ ctx: h.ctx, tcp: h.tcp, udp });
  try {
    const a = await fwd.add({ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 0, guestAddress: '', guestPort: 22 });
    await t.throwsAsync(fwd.add({ ...a }), { code: 'EADDRINUSE' });
    const u = await fwd.add({ protocol: 'udp', hostAddress: '127.0.0.1', hostPort: 0, guestAddress: '', guestPort: 53 });
    t.is(u.hostPort, 5353);
    t.is(fwd.list().length, 2);
    t.true(await fwd.remove('tcp', '127.0.0.1', a.hostPort));
    t.false(await fwd.remove('tcp', '127.0.0.1', a.hostPort));
    t.true(await fwd.remove('udp', '127.0.0.1', 5353));
    t.deepEqual(fwd.list(), []);
    // The listener is gone: connecting is refused.
    const err = await new Promise<string>((r) => net.connect(a.hostPort, '127.0.0.1').once('error', (e: NodeJS.ErrnoException) => r(e.code ?? '')));
    t.is(err, 'ECONNREFUSED');
  } finally {
    await fwd.close();
    await h.close();
  }
});

test('host data waits for the guest handshake (pauseOnConnect), then flows with back-pressure', async (t) => {
  const h = makeHarness();
  const fwd = new PortForwarder({ ctx: h.ctx, tcp: h.tcp });
  try {
    const rule = await fwd.add({ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 0, guestAddress: '', guestPort: 9000 });
    const client = net.connect(rule.hostPort, '127.0.0.1');
    const payload = Buffer.alloc(400_000);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 5) & 0xff;
    client.write(payload);
    const { g } = await guestAccept(h, 9000);
    const got = await g.receive(payload.length, true, 20_000);
    t.true(got.equals(payload));
    const c = [...h.tcp.connections()][0];
    t.is(c.stats.bytesToGuest, payload.length);
    client.destroy();
    g.send({ flags: ACK | PSH, payload: 'x' });
  } finally {
    await fwd.close();
    await h.close();
  }
});
