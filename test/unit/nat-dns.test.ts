import test from 'ava';
import dgram from 'node:dgram';
import type { AddressInfo } from 'node:net';
import * as dnsPacket from 'dns-packet';
import { Guest, udpFrame, type Received } from './nat-guest';

function query(id: number, name: string, type: dnsPacket.RecordType): Uint8Array {
  return dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }] });
}

const fromDns = (r: Received) => r.ip?.src === '10.0.2.3' && r.udp?.srcPort === 53;

/** dns-packet decodes `rcode` but its types leave it out. */
function answerOf(r: Received): dnsPacket.Packet & { rcode: string } {
  return dnsPacket.decode(Buffer.from(r.udp!.payload)) as unknown as dnsPacket.Packet & { rcode: string };
}

/** A nameserver on 127.0.0.1 that answers every question with `reply`, recording what it got. */
async function upstream(reply: (q: dnsPacket.Packet) => dnsPacket.Packet | null): Promise<{ port: number; seen: dnsPacket.Packet[]; close(): void }> {
  const sock = dgram.createSocket('udp4');
  const seen: dnsPacket.Packet[] = [];
  sock.on('message', (msg, rinfo) => {
    const q = dnsPacket.decode(msg);
    seen.push(q);
    const r = reply(q);
    if (r) sock.send(dnsPacket.encode(r), rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  return { port: (sock.address() as AddressInfo).port, seen, close: () => sock.close() };
}

test('static names, host.usernet.internal and localhost are answered at the DNS address', async (t) => {
  const g = new Guest({ config: { dnsHosts: { 'files.test': '10.0.2.2', 'v6.test': '2001:db8::1' } } });
  try {
    g.send(udpFrame({ dst: '10.0.2.3', srcPort: 40000, dstPort: 53, payload: query(1, 'files.test', 'A') }));
    const r1 = await g.waitFor(fromDns);
    t.true(r1.ip!.headerChecksumOk && r1.udp!.checksumOk);
    t.is(r1.ip!.dst, '10.0.2.15');
    t.is(r1.udp!.dstPort, 40000);
    const a1 = answerOf(r1);
    t.is(a1.id, 1);
    t.is(a1.type, 'response');
    t.is(a1.rcode, 'NOERROR');
    t.deepEqual(a1.answers!.map((a) => [a.type, (a as { data: string }).data]), [['A', '10.0.2.2']]);

    g.send(udpFrame({ dst: '10.0.2.3', srcPort: 40001, dstPort: 53, payload: query(2, 'Host.Usernet.Internal.', 'A') }));
    const a2 = answerOf(await g.waitFor(fromDns));
    t.is(a2.id, 2);
    t.deepEqual(a2.answers!.map((a) => (a as { data: string }).data), ['10.0.2.2']);

    g.send(udpFrame({ dst: '10.0.2.3', srcPort: 40002, dstPort: 53, payload: query(3, 'files.test', 'AAAA') }));
    const a3 = answerOf(await g.waitFor(fromDns));
    t.is(a3.rcode, 'NOERROR');
    t.deepEqual(a3.answers, []);

    g.send(udpFrame({ dst: '10.0.2.3', srcPort: 40003, dstPort: 53, payload: query(4, 'v6.test', 'AAAA') }));
    t.deepEqual(answerOf(await g.waitFor(fromDns)).answers!.map((a) => (a as { data: string }).data), ['2001:db8::1']);

    // localhost through the host's own resolver (getaddrinfo: /etc/hosts).
    g.send(udpFrame({ dst: '10.0.2.3', srcPort: 40004, dstPort: 53, payload: query(5, 'localhost', 'A') }));
    const a5 = answerOf(await g.waitFor(fromDns));
    t.is(a5.id, 5);
    t.true(a5.answers!.some((a) => (a as { data: string }).data === '127.0.0.1'));
  } finally {
    await g.close();
  }
});

test('what the host resolver cannot answer is forwarded upstream with a fresh id, the answer comes back with the guest id', async (t) => {
  const up = await upstream((q) => ({
    type: 'response',
    id: q.id,
    flags: dnsPacket.RECURSION_AVAILABLE | (q.questions![0].name === 'nowhere.test' ? 3 : 0),
    questions: q.questions,
    answers: q.questions![0].type === 'MX' ? [{ type: 'MX', name: q.questions![0].name, ttl: 30, data: { preference: 10, exchange: 'mx.example' } }] : [],
  }));
  const g = new Guest({
    config: { dnsUpstream: [`127.0.0.1:${up.port}`] },
    dnsLookup: async () => {
      throw Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' });
    },
  });
  try {
    g.send(udpFrame({ dst: '10.0.2.3', srcPort: 41000, dstPort: 53, payload: query(0x4242, 'example.test', 'MX') }));
    const r = await g.waitFor(fromDns);
    const a = answerOf(r);
    t.is(a.id, 0x4242);
    t.is(r.udp!.dstPort, 41000);
    t.is((a.answers![0] as { data: { exchange: string } }).data.exchange, 'mx.example');
    t.is(up.seen.length, 1);
    t.is(up.seen[0].questions![0].name, 'example.test');

    g.send(udpFrame({ dst: '10.0.2.3', srcPort: 41001, dstPort: 53, payload: query(7, 'nowhere.test', 'A') }));
    const nx = answerOf(await g.waitFor(fromDns));
    t.is(nx.id, 7);
    t.is(nx.rcode, 'NXDOMAIN');
    t.is(g.stack.dns.pending, 0);
  } finally {
    up.close();
    await g.close();
  }
});

test('an upstream that never answers ends in SERVFAIL; no upstream at all too', async (t) => {
  const silent = await upstream(() => null);
  const g = new Guest({ config: { dnsUpstream: [`127.0.0.1:${silent.port}`] }, dnsTimeoutMs: 50 });
  try {
    g.send(udpFrame({ dst: '10.0.2.3', srcPort: 42000, dstPort: 53, payload: query(9, 'example.test', 'TXT') }));
    const a = answerOf(await g.waitFor(fromDns));
    t.is(a.id, 9);
    t.is(a.rcode, 'SERVFAIL');
    t.is(a.questions![0].name, 'example.test');
    t.true(silent.seen.length >= 2); // retried
  } finally {
    silent.close();
    await g.close();
  }
  const none = new Guest();
  try {
    none.send(udpFrame({ dst: '10.0.2.3', srcPort: 42001, dstPort: 53, payload: query(10, 'example.test', 'TXT') }));
    t.is(answerOf(await none.waitFor(fromDns)).rcode, 'SERVFAIL');
  } finally {
    await none.close();
  }
});

test('malformed queries are counted; UDP to another port of the DNS address is refused', async (t) => {
  const g = new Guest();
  try {
    g.send(udpFrame({ dst: '10.0.2.3', srcPort: 43000, dstPort: 53, payload: new Uint8Array([1, 2, 3]) }));
    g.send(udpFrame({ dst: '10.0.2.3', srcPort: 43000, dstPort: 53, payload: new Uint8Array(40).fill(0xff) }));
    t.deepEqual(await g.collect(fromDns, 30), []);
    t.is(g.meter.stage('nat.dns').drops, 2);
    g.send(udpFrame({ dst: '10.0.2.3', srcPort: 43001, dstPort: 5353, payload: new Uint8Array(10) }));
    const r = await g.waitFor((x) => x.icmp?.type === 3);
    t.is(r.icmp!.code, 3);
    t.is(r.ip!.src, '10.0.2.3');
  } finally {
    await g.close();
  }
});
