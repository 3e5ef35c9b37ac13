/**
 * NAT behaviour knobs and timers required by RFC 4787 / RFC 5382 (issue 8): the defaults
 * (UDP mapping timeout ≥ 2 min, REQ-5; TCP established idle timeout ≥ 2 h 4 min, RFC 5382
 * REQ-5; address-dependent UDP filtering; forwarded connections from the gateway), the CLI
 * flags that change them, UDP mappings refreshed by outbound traffic only (RFC 4787 REQ-6),
 * the TCP idle timeout on an injected clock, and a guest keep-alive probe turning on the host
 * socket's keep-alive with the idle time the guest showed.
 */
import test from 'ava';
import dgram from 'node:dgram';
import type { AddressInfo } from 'node:net';
import { natConfig } from '../../src/backends/nat/config';
import { DEFAULT_TCP_TIMINGS } from '../../src/backends/nat/tcp';
import { TcpState } from '../../src/backends/nat/tcp-connection';
import { fdHostSocketsAvailable } from '../../src/backends/nat/tcp-host-fd';
import { buildNatConfig } from '../../src/cli/nat-options';
import { Guest, udpFrame } from './nat-guest';
import { ACK, GuestConn, makeHarness, TestServer } from './nat-tcp-harness';

test('defaults: UDP timeout ≥ 120 s, TCP idle ≥ 2 h 4 min, address-dependent filtering, forwards from the gateway', (t) => {
  const c = natConfig();
  t.true(c.udpTimeout >= 120, 'RFC 4787 REQ-5');
  t.true(DEFAULT_TCP_TIMINGS.idleTimeoutMs >= (2 * 60 + 4) * 60_000, 'RFC 5382 REQ-5');
  t.is(c.udpFiltering, 'address-dependent');
  t.is(c.forwardSource, 'gateway');
});

test('--udp-filtering and --forward-source set the config; bad values are EINVAL', (t) => {
  const c = buildNatConfig({ udpFiltering: 'address-and-port-dependent', forwardSource: 'client' });
  t.is(c.udpFiltering, 'address-and-port-dependent');
  t.is(c.forwardSource, 'client');
  t.is(buildNatConfig({ udpFiltering: 'endpoint-independent' }).udpFiltering, 'endpoint-independent');
  t.throws(() => buildNatConfig({ udpFiltering: 'full-cone' }), { code: 'EINVAL', message: /--udp-filtering/ });
  t.throws(() => buildNatConfig({ forwardSource: 'router' }), { code: 'EINVAL', message: /--forward-source/ });
});

const payload = (s: string): Uint8Array => new Uint8Array(Buffer.from(s));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function quietServer(): Promise<{ sock: dgram.Socket; port: number; from: () => number }> {
  const sock = dgram.createSocket('udp4');
  let from = 0;
  sock.on('message', (_d, r) => (from = r.port));
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  return { sock, port: (sock.address() as AddressInfo).port, from: () => from };
}

test('UDP mappings are refreshed by outbound traffic only (RFC 4787 REQ-6)', async (t) => {
  const srv = await quietServer();
  const g = new Guest({ config: { udpTimeout: 1 } });
  try {
    // inbound every 200 ms does not keep the mapping
    g.send(udpFrame({ dst: '10.0.2.2', srcPort: 5100, dstPort: srv.port, payload: payload('x') }));
    for (let i = 0; i < 50 && srv.from() === 0; i++) await sleep(20);
    const mapped = srv.from();
    t.not(mapped, 0);
    for (let i = 0; i < 25 && g.stack.udp.size > 0; i++) {
      srv.sock.send('in', mapped, '127.0.0.1');
      await sleep(200);
    }
    t.is(g.stack.udp.size, 0, 'expired although the peer kept sending');
    // outbound every 200 ms keeps it over several timeouts
    const expiredBefore = g.stack.udp.flows.stats.expired;
    for (let i = 0; i < 15; i++) {
      g.send(udpFrame({ dst: '10.0.2.2', srcPort: 5101, dstPort: srv.port, payload: payload('o') }));
      await sleep(200);
    }
    t.is(g.stack.udp.size, 1);
    t.is(g.stack.udp.flows.stats.expired, expiredBefore);
  } finally {
    srv.sock.close();
    await g.close();
  }
});

const kinds: ('node' | 'fd')[] = fdHostSocketsAvailable() ? ['node', 'fd'] : ['node'];
let nextPort = 43100;

for (const kind of kinds) {
  test(`[${kind}] an established connection lives through 2 h 3 min idle and ends after 2 h 4 min (injected clock)`, async (t) => {
    let now = 1_000;
    const server = new TestServer();
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind, now: () => now });
    const g = new GuestConn(h, nextPort++, sp);
    try {
      await g.connect();
      const c = [...h.tcp.connections()][0];
      t.is(c.state, TcpState.Established);
      now += (2 * 60 + 3) * 60_000;
      h.tcp.wheel.advance();
      t.is(c.state, TcpState.Established);
      now += 61_000;
      h.tcp.wheel.advance();
      t.is(c.state, TcpState.Closed);
      t.is(h.ctx.meter.stage('nat.tcp.tx').dropReasons.get('idle-timeout'), 1);
    } finally {
      await h.close();
      await server.close();
    }
  });

  test(`[${kind}] a guest keep-alive probe turns on the host socket's keep-alive with the guest's idle time`, async (t) => {
    let now = 1_000;
    const server = new TestServer();
    const sp = await server.listen();
    const h = makeHarness({ hostSockets: kind, now: () => now });
    const g = new GuestConn(h, nextPort++, sp);
    try {
      await g.connect();
      const c = [...h.tcp.connections()][0];
      t.is(c.hostKeepAliveS, 0);
      now += 30_000; // the guest's TCP_KEEPIDLE
      g.markNow();
      g.send({ flags: ACK, seq: g.nxt - 1 });
      await g.waitFor((s) => (s.flags & ACK) !== 0);
      t.is(c.hostKeepAliveS, 30);
      t.is(c.state, TcpState.Established);
    } finally {
      await h.close();
      await server.close();
    }
  });
}
