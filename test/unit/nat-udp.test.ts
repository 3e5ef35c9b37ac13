import test from 'ava';
import dgram from 'node:dgram';
import type { AddressInfo } from 'node:net';
import { internetChecksum, onesSum } from '../../src/wire/checksum';
import { ipv4ToString, parseIpv4 } from '../../src/wire/address';
import { VNET_F_NEEDS_CSUM } from '../../src/link/frame';
import { arpFrame, Guest, GW_MAC, udpFrame, type Received } from './nat-guest';

interface Server {
  port: number;
  got: { data: Buffer; port: number; address: string }[];
  sock: dgram.Socket;
  close(): void;
}

/** A UDP server on 127.0.0.1 that echoes (or stays quiet) and records senders. */
async function server(echo = true): Promise<Server> {
  const sock = dgram.createSocket('udp4');
  const got: Server['got'] = [];
  sock.on('message', (data, rinfo) => {
    got.push({ data, port: rinfo.port, address: rinfo.address });
    if (echo) sock.send(data, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  return { port: (sock.address() as AddressInfo).port, got, sock, close: () => sock.close() };
}

async function until(cond: () => boolean, ms = 4000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const payload = (s: string) => new Uint8Array(Buffer.from(s));

test('UDP to the gateway reaches a server on 127.0.0.1; the reply comes back with correct checksums', async (t) => {
  const srv = await server();
  const g = new Guest();
  try {
    g.send(udpFrame({ dst: '10.0.2.2', srcPort: 5000, dstPort: srv.port, payload: payload('hello'), ttl: 64 }));
    const r = await g.waitFor((x) => x.udp?.dstPort === 5000);
    t.is(srv.got[0].data.toString(), 'hello');
    t.is(srv.got[0].address, '127.0.0.1');
    t.is(r.ip!.src, '10.0.2.2');
    t.is(r.ip!.dst, '10.0.2.15');
    t.is(r.ethDst, '52:54:00:12:34:56');
    t.is(r.udp!.srcPort, srv.port);
    t.is(Buffer.from(r.udp!.payload).toString(), 'hello');
    t.true(r.ip!.headerChecksumOk);
    t.true(r.udp!.checksumOk);
    t.not(r.frame.flags & VNET_F_NEEDS_CSUM, VNET_F_NEEDS_CSUM);
    t.is(g.stack.udp.size, 1);
  } finally {
    srv.close();
    await g.close();
  }
});

test('endpoint-independent mapping: one host port for every destination of a guest port', async (t) => {
  const a = await server();
  const b = await server();
  const g = new Guest();
  try {
    g.send(udpFrame({ dst: '10.0.2.2', srcPort: 5001, dstPort: a.port, payload: payload('a') }));
    g.send(udpFrame({ dst: '10.0.2.2', srcPort: 5001, dstPort: b.port, payload: payload('b') }));
    g.send(udpFrame({ dst: '10.0.2.2', srcPort: 5002, dstPort: a.port, payload: payload('c') }));
    await until(() => a.got.length === 2 && b.got.length === 1);
    t.is(a.got[0].port, b.got[0].port);
    t.not(a.got[1].port, a.got[0].port);
    t.is(g.stack.udp.size, 2);
  } finally {
    a.close();
    b.close();
    await g.close();
  }
});

test('address-and-port-dependent filtering lets only contacted endpoints in', async (t) => {
  const a = await server(false);
  const stranger = await server(false);
  const g = new Guest({ config: { udpFiltering: 'address-and-port-dependent' } });
  try {
    g.send(udpFrame({ dst: '10.0.2.2', srcPort: 5003, dstPort: a.port, payload: payload('x') }));
    await until(() => a.got.length === 1);
    const mapped = a.got[0].port;
    stranger.sock.send('intruder', mapped, '127.0.0.1');
    a.sock.send('welcome', mapped, '127.0.0.1');
    const r = await g.waitFor((x) => x.udp?.dstPort === 5003);
    t.is(Buffer.from(r.udp!.payload).toString(), 'welcome');
    await until(() => (g.meter.stage('nat.udp.rx').dropReasons.get('filtered') ?? 0) === 1);
    t.deepEqual((await g.collect((x) => x.udp?.dstPort === 5003, 30)).map((x) => Buffer.from(x.udp!.payload).toString()), []);
  } finally {
    a.close();
    stranger.close();
    await g.close();
  }
});

test('UDP to a closed loopback port: ICMP port unreachable quoting the guest datagram', async (t) => {
  const closed = await server();
  const port = closed.port;
  closed.close();
  const g = new Guest();
  try {
    const sent = udpFrame({ dst: '10.0.2.2', srcPort: 5004, dstPort: port, payload: payload('anyone there?'), ttl: 33, id: 0x7777 });
    g.send(sent);
    const r = await g.waitFor((x) => x.icmp?.type === 3);
    t.is(r.icmp!.code, 3);
    t.true(r.icmp!.checksumOk);
    t.true(r.ip!.headerChecksumOk);
    t.is(r.ip!.src, '10.0.2.2');
    t.is(r.ip!.dst, '10.0.2.15');
    // The quote is the guest's own datagram: IP header + UDP header + data as it sent them.
    const q = r.icmp!.body;
    const orig = sent.subarray(14);
    t.deepEqual([...q.subarray(12, 20)], [...orig.subarray(12, 20)]); // addresses
    t.is(q[8], 33); // TTL as sent
    t.is((q[4] << 8) | q[5], 0x7777);
    t.deepEqual([...q.subarray(20, 28)], [...orig.subarray(20, 28)]); // UDP header incl. checksum
    t.is(Buffer.from(q.subarray(28)).toString(), 'anyone there?');
    t.is(internetChecksum(q, 0, 20), 0);
  } finally {
    await g.close();
  }
});

test('a reply larger than the guest MTU arrives as IPv4 fragments that reassemble to a valid datagram', async (t) => {
  const big = Buffer.alloc(4000);
  for (let i = 0; i < big.length; i++) big[i] = i & 0xff;
  const srv = await server(false);
  const g = new Guest({ config: { mtu: 1500 } });
  try {
    g.send(udpFrame({ dst: '10.0.2.2', srcPort: 5005, dstPort: srv.port, payload: payload('go') }));
    await until(() => srv.got.length === 1);
    srv.sock.send(big, srv.got[0].port, '127.0.0.1');
    const frags: Received[] = [];
    while (!frags.some((f) => !f.ip!.moreFragments)) frags.push(await g.waitFor((x) => x.ip?.protocol === 17 && x.ip.dst === '10.0.2.15'));
    t.true(frags.length >= 3);
    for (const f of frags) {
      t.true(f.ip!.headerChecksumOk);
      t.true(f.data.length - 14 <= 1500);
    }
    const ids = new Set(frags.map((f) => f.ip!.identification));
    t.is(ids.size, 1);
    const whole = new Uint8Array(8 + big.length);
    for (const f of frags) whole.set(f.ip!.payload, f.ip!.fragmentOffset);
    t.is((whole[4] << 8) | whole[5], 8 + big.length);
    const pseudo = onesSum(new Uint8Array([10, 0, 2, 2, 10, 0, 2, 15]), 0, 8) + 17 + whole.length;
    t.is(internetChecksum(whole, 0, whole.length, pseudo), 0);
    t.deepEqual(Buffer.from(whole.subarray(8)), big);
  } finally {
    srv.close();
    await g.close();
  }
});

test('with checksum offload the guest gets NEEDS_CSUM frames with the pseudo-header sum in place', async (t) => {
  const srv = await server();
  const g = new Guest({ checksumOffload: true });
  try {
    g.send(udpFrame({ dst: '10.0.2.2', srcPort: 5006, dstPort: srv.port, payload: payload('offload') }));
    const r = await g.waitFor((x) => x.udp?.dstPort === 5006);
    t.is(r.frame.flags & VNET_F_NEEDS_CSUM, VNET_F_NEEDS_CSUM);
    t.is(r.frame.csumStart, 34);
    t.is(r.frame.csumOffset, 6);
    // Finish it as the guest NIC would: checksum over [csumStart, end) with the field's seed.
    const d = Uint8Array.from(r.data);
    const c = internetChecksum(d, 34, d.length - 34);
    d[40] = c >>> 8;
    d[41] = c & 0xff;
    const pseudo = onesSum(d, 26, 8) + 17 + (d.length - 34);
    t.is(internetChecksum(d, 34, d.length - 34, pseudo), 0);
  } finally {
    srv.close();
    await g.close();
  }
});

test('UDP port forward: host client → guest port and back; list and remove', async (t) => {
  const g = new Guest();
  const client = dgram.createSocket('udp4');
  try {
    await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
    const rule = await g.stack.addHostForward({ protocol: 'udp', hostAddress: '127.0.0.1', hostPort: 0, guestAddress: '', guestPort: 7000 });
    t.true(rule.hostPort > 0);
    t.is(rule.guestAddress, '10.0.2.15');
    t.deepEqual(g.stack.hostForwards(), [rule]);
    const cport = (client.address() as AddressInfo).port;
    client.send('ping', rule.hostPort, '127.0.0.1');
    // The guest has not said a word yet: the gateway asks for its MAC first (its TCP would drop
    // a unicast packet in a broadcast frame) and sends the datagram once it knows.
    const ask = await g.waitFor((x) => x.arp?.operation === 1);
    t.is(ask.ethDst, 'ff:ff:ff:ff:ff:ff');
    t.is(ipv4ToString(ask.arp!.targetIp), '10.0.2.15');
    t.is(ipv4ToString(ask.arp!.senderIp), '10.0.2.2');
    g.send(arpFrame({ op: 2, senderIp: '10.0.2.15', targetIp: '10.0.2.2', dstMac: GW_MAC }));
    const r = await g.waitFor((x) => x.udp?.dstPort === 7000);
    t.is(r.ethDst, '52:54:00:12:34:56');
    t.is(r.ip!.src, '10.0.2.2'); // the host's loopback shows as the gateway
    t.is(r.udp!.srcPort, cport);
    t.is(Buffer.from(r.udp!.payload).toString(), 'ping');
    const answered = new Promise<Buffer>((resolve) => client.once('message', (m) => resolve(m)));
    g.send(udpFrame({ dst: '10.0.2.2', srcPort: 7000, dstPort: cport, payload: payload('pong') }));
    t.is((await answered).toString(), 'pong');
    t.true(await g.stack.removeHostForward({ protocol: 'udp', hostAddress: '127.0.0.1', hostPort: rule.hostPort }));
    t.deepEqual(g.stack.hostForwards(), []);
    t.false(await g.stack.removeHostForward({ protocol: 'udp', hostAddress: '127.0.0.1', hostPort: rule.hostPort }));
  } finally {
    client.close();
    await g.close();
  }
});

test('mappings expire after udpTimeout without outbound traffic', async (t) => {
  const srv = await server();
  const g = new Guest({ config: { udpTimeout: 1 } });
  try {
    g.send(udpFrame({ dst: '10.0.2.2', srcPort: 5007, dstPort: srv.port, payload: payload('x') }));
    await g.waitFor((x) => x.udp?.dstPort === 5007);
    t.is(g.stack.udp.size, 1);
    await until(() => g.stack.udp.size === 0, 8000);
    t.is(g.stack.udp.flows.stats.expired, 1);
  } finally {
    srv.close();
    await g.close();
  }
});

test('bad UDP from the guest is counted and dropped', async (t) => {
  const g = new Guest();
  try {
    const f = udpFrame({ dst: '10.0.2.2', srcPort: 5008, dstPort: 9, payload: payload('zzz') });
    const badSum = Uint8Array.from(f);
    badSum[40] ^= 0xff;
    const badLen = Uint8Array.from(f);
    badLen[38] = 0xff; // UDP length beyond the datagram
    g.send(badSum, badLen);
    t.is(g.drops('nat.udp.tx')['bad-checksum'], 1);
    t.is(g.drops('nat.local')['bad-udp'], 1); // to the gateway: checked on the local path first
    t.is(g.stack.udp.size, 0);
    t.is(parseIpv4('10.0.2.2'), 0x0a000202);
  } finally {
    await g.close();
  }
});
