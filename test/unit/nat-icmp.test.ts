import test from 'ava';
import { testIf } from '../helpers/env';
import { withSandbox } from '../helpers/netns';
import { Guest, echoFrame, type Received } from './nat-guest';

const isReply = (id: number) => (r: Received) => r.icmp?.type === 0 && r.icmp.ident === id;

async function pingGateway(t: import('ava').ExecutionContext, g: Guest, ident: number): Promise<void> {
  const data = Uint8Array.from({ length: 56 }, (_, i) => (i * 7) & 0xff);
  g.send(echoFrame({ dst: '10.0.2.2', ident, seq: 1, data }));
  const r = await g.waitFor(isReply(ident));
  t.is(r.ip!.src, '10.0.2.2');
  t.is(r.ip!.dst, '10.0.2.15');
  t.true(r.ip!.headerChecksumOk);
  t.true(r.icmp!.checksumOk);
  t.is(r.icmp!.seq, 1);
  t.deepEqual([...r.icmp!.body], [...data]);
}

testIf('root')('ICMP echo to the gateway is answered by the host kernel (127.0.0.1), identifiers kept per guest', async (t) => {
  const g = new Guest();
  try {
    await pingGateway(t, g, 0x1111);
    await pingGateway(t, g, 0x2222);
    t.is(g.stack.icmp.flows.size, 2);
    t.not(g.stack.icmp.socketKind(4), 'none');
    t.is(g.meter.stage('nat.icmp.rx').frames, 2);
  } finally {
    await g.close();
  }
});

testIf('root', 'netns')('ping sockets (ping_group_range allows us) carry the echo the same way', async (t) => {
  await withSandbox(async (sb) => {
    const ns = await sb.netns('ping');
    await sb.must(['sysctl', '-w', 'net.ipv4.ping_group_range=0 2147483647'], ns);
    const g = new Guest({ hostNetns: ns });
    try {
      await pingGateway(t, g, 0x3333);
      t.is(g.stack.icmp.socketKind(4), 'ping');
    } finally {
      await g.close();
    }
  });
});

testIf('root', 'netns')('raw sockets (ping sockets refused) carry the echo the same way', async (t) => {
  await withSandbox(async (sb) => {
    const ns = await sb.netns('raw');
    await sb.must(['sysctl', '-w', 'net.ipv4.ping_group_range=1 0'], ns);
    const g = new Guest({ hostNetns: ns });
    try {
      await pingGateway(t, g, 0x4444);
      t.is(g.stack.icmp.socketKind(4), 'raw');
    } finally {
      await g.close();
    }
  });
});

testIf('root', 'netns')('replies are real: where the host gets no reply, the guest gets none either', async (t) => {
  await withSandbox(async (sb) => {
    const ns = await sb.netns('dead');
    await sb.must(['ip', 'link', 'set', 'lo', 'down'], ns); // 127.0.0.1 unreachable in there
    for (const range of ['0 2147483647', '1 0']) {
      await sb.must(['sysctl', '-w', `net.ipv4.ping_group_range=${range}`], ns);
      const g = new Guest({ hostNetns: ns });
      try {
        g.send(echoFrame({ dst: '10.0.2.2', ident: 0x5555, seq: 1 }));
        t.deepEqual(await g.collect((r) => r.icmp?.type === 0, 300), []);
      } finally {
        await g.close();
      }
    }
  });
});

test('echo to the DNS address is answered by the stack itself (the address is ours)', async (t) => {
  const g = new Guest();
  try {
    const data = new Uint8Array([1, 2, 3, 4, 5]);
    g.send(echoFrame({ dst: '10.0.2.3', ident: 9, seq: 77, data }));
    const r = await g.waitFor(isReply(9));
    t.is(r.ip!.src, '10.0.2.3');
    t.is(r.icmp!.seq, 77);
    t.true(r.icmp!.checksumOk);
    t.deepEqual([...r.icmp!.body], [...data]);
  } finally {
    await g.close();
  }
});

test('echo to the gateway with host loopback off is answered by the stack (the gateway is ours)', async (t) => {
  const g = new Guest({ config: { hostLoopback: false } });
  try {
    g.send(echoFrame({ dst: '10.0.2.2', ident: 10, seq: 1 }));
    const r = await g.waitFor(isReply(10));
    t.is(r.ip!.src, '10.0.2.2');
    t.is(g.stack.icmp.flows.size, 0);
  } finally {
    await g.close();
  }
});

test('TTL 1 beyond the gateway: Time Exceeded from the gateway quoting the packet', async (t) => {
  const g = new Guest();
  try {
    const sent = echoFrame({ dst: '192.0.2.1', ident: 11, seq: 1, ttl: 1 });
    g.send(sent);
    const r = await g.waitFor((x) => x.icmp?.type === 11);
    t.is(r.icmp!.code, 0);
    t.is(r.ip!.src, '10.0.2.2');
    t.true(r.icmp!.checksumOk);
    t.deepEqual([...r.icmp!.body], [...sent.subarray(14)]);
    t.is(g.stack.icmp.flows.size, 0); // nothing left the host
  } finally {
    await g.close();
  }
});
