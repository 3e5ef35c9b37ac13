/**
 * IP options and the error queue against real kernels in namespaces this test builds:
 *
 *     ns a (10.1.0.2, fd01::2) ── veth ── ns r (router, forwarding) ── veth ── ns b (10.2.0.2, fd02::2)
 *
 * Our sockets live in a (created there through setns). Checked:
 *  - UDP to a closed port in b: an error-queue entry 3/3 (v6: 1/4), ECONNREFUSED, offender b,
 *    the original destination and the quoted payload;
 *  - UDP (and a ping socket) with a per-datagram TTL / hop limit of 1: Time Exceeded from the
 *    router, which is the offender; a larger per-datagram TTL arrives in b decremented by one,
 *    as b's IP_RECVTTL reports;
 *  - TCP connect with TTL 1: aborted with EHOSTUNREACH and the error queue names the router
 *    (tcp_v4_err / tcp_v6_err queue it with IP_RECVERR);
 *  - TCP connect to a closed port: ECONNREFUSED;
 *  - TCP connect from a privileged source port to a listener in b, handed to net.Socket on our
 *    side and net.Server on b's side, moves data.
 */
import { createServer, Socket, type AddressInfo } from 'node:net';
import { testIf } from '../helpers/env';
import { withSandbox, type Sandbox } from '../helpers/netns';
import * as native from '../../src/native';

const test = testIf('root', 'netns');

interface Topology {
  a: string;
  r: string;
  b: string;
}

async function topology(sb: Sandbox): Promise<Topology> {
  const a = await sb.netns('a');
  const r = await sb.netns('r');
  const b = await sb.netns('b');
  await sb.veth(a, 'eth0', r, 'ra');
  await sb.veth(r, 'rb', b, 'eth0');
  const sh = (ns: string, ...cmds: string[][]) => Promise.all(cmds.map((c) => sb.must(c, ns)));
  await sh(a, ['ip', 'addr', 'add', '10.1.0.2/24', 'dev', 'eth0'], ['ip', 'addr', 'add', 'fd01::2/64', 'dev', 'eth0', 'nodad']);
  await sh(r,
    ['ip', 'addr', 'add', '10.1.0.1/24', 'dev', 'ra'], ['ip', 'addr', 'add', 'fd01::1/64', 'dev', 'ra', 'nodad'],
    ['ip', 'addr', 'add', '10.2.0.1/24', 'dev', 'rb'], ['ip', 'addr', 'add', 'fd02::1/64', 'dev', 'rb', 'nodad'],
    ['sysctl', '-w', 'net.ipv4.ip_forward=1'], ['sysctl', '-w', 'net.ipv6.conf.all.forwarding=1'],
    ['sysctl', '-w', 'net.ipv4.icmp_ratelimit=0'], ['sysctl', '-w', 'net.ipv6.icmp.ratelimit=0']);
  await sh(b, ['ip', 'addr', 'add', '10.2.0.2/24', 'dev', 'eth0'], ['ip', 'addr', 'add', 'fd02::2/64', 'dev', 'eth0', 'nodad'],
    ['sysctl', '-w', 'net.ipv4.icmp_ratelimit=0'], ['sysctl', '-w', 'net.ipv6.icmp.ratelimit=0']);
  await sh(a, ['ip', 'route', 'add', 'default', 'via', '10.1.0.1'], ['ip', '-6', 'route', 'add', 'default', 'via', 'fd01::1']);
  await sh(b, ['ip', 'route', 'add', 'default', 'via', '10.2.0.1'], ['ip', '-6', 'route', 'add', 'default', 'via', 'fd02::1']);
  return { a, r, b };
}

interface Fired {
  events: number;
  status: number;
}

function nextEvent(fd: native.FdLike, events: number): Promise<Fired> {
  return new Promise((resolve) => {
    const w = new native.FdWatcher(fd, (ev, st) => {
      w.close();
      resolve({ events: ev, status: st });
    });
    w.start(events);
  });
}

/** Wait until the error queue of `fd` has an entry and return it (quoted payload into `buf`). */
async function nextError(fd: native.OwnedFd, buf: Uint8Array | null): Promise<native.ErrorQueueEntry> {
  for (;;) {
    const e = native.readErrorQueue(fd, buf);
    if (e) return e;
    await nextEvent(fd, native.POLL_READABLE); // POLLERR arrives as a negative status
  }
}

const V = {
  4: { a: '10.1.0.2', r: '10.1.0.1', b: '10.2.0.2', unreach: [3, 3], exceeded: [11, 0], origin: native.SO_EE_ORIGIN_ICMP },
  6: { a: 'fd01::2', r: 'fd01::1', b: 'fd02::2', unreach: [1, 4], exceeded: [3, 0], origin: native.SO_EE_ORIGIN_ICMP6 },
} as const;

test('UDP: port unreachable and TTL exceeded reach the error queue with offender and destination', async (t) => {
  await withSandbox(async (sb) => {
    const { a, b } = await topology(sb);
    for (const family of [4, 6] as const) {
      const v = V[family];
      const fd = native.udpSocket(family, { netns: a });
      sb.defer(() => fd.close());
      native.setRecvErr(fd, family);
      const payload = Buffer.from(`closed port probe v${family}`);
      t.is(native.sendTo(fd, payload, v.b, 9), payload.length);
      const quoted = new Uint8Array(256);
      const e = await nextError(fd, quoted);
      t.is(e.errnoName, 'ECONNREFUSED');
      t.is(e.errno, native.Errno.ECONNREFUSED);
      t.is(e.origin, v.origin);
      t.deepEqual([e.type, e.code], [...v.unreach]);
      t.is(e.offender, v.b);
      t.deepEqual(e.destination, { family, address: v.b, port: 9 });
      t.is(Buffer.from(quoted.subarray(0, e.bytes)).toString(), payload.toString(), 'the quoted payload');
      t.false(e.truncated);
      t.is(native.readErrorQueue(fd, quoted), null, 'queue drained');

      // TTL 1 for this datagram only: the router answers Time Exceeded
      const probe = Buffer.from('ttl probe');
      t.is(native.sendTo(fd, probe, v.b, 33434, 1), probe.length);
      const x = await nextError(fd, null);
      t.deepEqual([x.type, x.code], [...v.exceeded]);
      t.is(x.errnoName, 'EHOSTUNREACH');
      t.is(x.offender, v.r, 'the router is the offender');
      t.deepEqual(x.destination, { family, address: v.b, port: 33434 });
      t.true(x.truncated, 'no buffer given: payload cut');
      fd.close();

      // a per-datagram TTL arrives decremented by the router; IP_RECVTTL reports it in b
      const rx = native.udpSocket(family, { netns: b, port: 5000 });
      sb.defer(() => rx.close());
      native.setRecvTtl(rx, family);
      const tx = native.udpSocket(family, { netns: a, address: v.a, port: 4000 });
      sb.defer(() => tx.close());
      const arrived = nextEvent(rx, native.POLL_READABLE);
      t.is(native.sendTo(tx, Buffer.from('hello'), v.b, 5000, 7), 5);
      await arrived;
      const meta = new native.RecvMeta();
      const buf = new Uint8Array(64);
      t.is(native.recvFrom(rx, buf, meta), 5);
      t.is(meta.ttl, 6);
      t.is(meta.family, family);
      t.is(meta.port, 4000);
      t.is(meta.address, v.a);
      t.is(meta.addressBytes.length, family === 4 ? 4 : 16);
      t.is(native.recvFrom(rx, buf, meta), -1, 'nothing more');
      // MSG_PEEK leaves the datagram in place
      native.sendTo(tx, Buffer.from('peekaboo'), v.b, 5000);
      await nextEvent(rx, native.POLL_READABLE);
      t.is(native.recv(rx, buf, native.MSG_PEEK), 8);
      t.is(native.recv(rx, buf), 8);
      t.is(native.recv(rx, buf), -1);
      rx.close();
      tx.close();
    }
  });
});

test('ping socket with TTL 1: Time Exceeded from the router in the error queue', async (t) => {
  await withSandbox(async (sb) => {
    const { a } = await topology(sb);
    await sb.must(['sysctl', '-w', 'net.ipv4.ping_group_range=0 2147483647'], a);
    for (const family of [4, 6] as const) {
      const v = V[family];
      const sock = native.icmpSocket(family, { netns: a });
      sb.defer(() => sock.fd.close());
      t.is(sock.kind, 'ping');
      native.setRecvErr(sock.fd, family);
      const req = new Uint8Array(16);
      req[0] = family === 4 ? 8 : 128;
      req[7] = 1;
      t.is(native.sendTo(sock.fd, req, v.b, 0, 1), 16);
      const quoted = new Uint8Array(64);
      const e = await nextError(sock.fd, quoted);
      t.deepEqual([e.type, e.code], [...v.exceeded]);
      t.is(e.offender, v.r);
      t.is(quoted[0], family === 4 ? 8 : 128, 'the quoted echo request');
      sock.fd.close();
    }
  });
});

test('path MTU: with DF set, "fragmentation needed" / "packet too big" carries the next-hop MTU', async (t) => {
  await withSandbox(async (sb) => {
    const { a, r } = await topology(sb);
    await sb.must(['ip', 'link', 'set', 'rb', 'mtu', '1280'], r);
    for (const family of [4, 6] as const) {
      const v = V[family];
      const fd = native.udpSocket(family, { netns: a });
      sb.defer(() => fd.close());
      native.setRecvErr(fd, family);
      native.setMtuDiscover(fd, family, family === 4 ? native.IP_PMTUDISC_DO : native.IPV6_PMTUDISC_DO);
      const level = family === 4 ? native.IPPROTO_IP : native.IPPROTO_IPV6;
      const name = family === 4 ? native.IP_MTU_DISCOVER : native.IPV6_MTU_DISCOVER;
      t.is(native.getsockoptInt(fd, level, name), 2);
      t.is(native.sendTo(fd, new Uint8Array(1400), v.b, 9), 1400);
      const e = await nextError(fd, null);
      t.is(e.errnoName, 'EMSGSIZE');
      t.is(e.origin, v.origin);
      t.deepEqual([e.type, e.code], family === 4 ? [3, 4] : [2, 0]);
      t.is(e.info, 1280, 'next-hop MTU');
      t.is(e.offender, v.r);
      // the kernel learned the path MTU: a second oversized datagram fails locally, at once
      t.throws(() => native.sendTo(fd, new Uint8Array(1400), v.b, 9), { code: 'EMSGSIZE' });
      fd.close();
    }
  });
});

test('TCP connect with TTL 1 fails with EHOSTUNREACH and the error queue names the router', async (t) => {
  await withSandbox(async (sb) => {
    const { a } = await topology(sb);
    for (const family of [4, 6] as const) {
      const v = V[family];
      const fd = native.tcpConnect(v.b, 80, { ttl: 1, recvErr: true, netns: a });
      sb.defer(() => fd.close());
      let err = 0;
      while (err === 0) {
        const r = await nextEvent(fd, native.POLL_WRITABLE);
        err = native.getSocketError(fd);
        if (err === 0 && r.status === 0) t.fail('connected through a TTL of 1?');
      }
      t.is(native.errnoName(err), 'EHOSTUNREACH');
      const e = native.readErrorQueue(fd, null);
      t.truthy(e, 'the aborting ICMP error was queued');
      t.deepEqual([e!.type, e!.code], [...v.exceeded]);
      t.is(e!.offender, v.r);
      t.is(e!.destination?.address, v.b);
      t.is(e!.destination?.port, 80);
      fd.close();
    }
  });
});

test('TCP connect to a closed port: ECONNREFUSED from SO_ERROR', async (t) => {
  await withSandbox(async (sb) => {
    const { a } = await topology(sb);
    for (const family of [4, 6] as const) {
      const fd = native.tcpConnect(V[family].b, 81, { netns: a });
      sb.defer(() => fd.close());
      await nextEvent(fd, native.POLL_WRITABLE);
      t.is(native.errnoName(native.getSocketError(fd)), 'ECONNREFUSED');
      fd.close();
    }
  });
});

test('TCP from a privileged source port, released to net.Socket, talks to a net.Server in b', async (t) => {
  await withSandbox(async (sb) => {
    const { a, b } = await topology(sb);
    for (const family of [4, 6] as const) {
      const v = V[family];
      const listener = native.tcpListen(v.b, 8080, { netns: b });
      const peers: string[] = [];
      const server = createServer((s) => {
        peers.push(`${s.remoteAddress}:${s.remotePort}`);
        s.pipe(s);
      });
      await new Promise<void>((resolve) => server.listen({ fd: listener.release() }, resolve));
      sb.defer(() => new Promise<void>((resolve) => server.close(() => resolve())));
      t.is((server.address() as AddressInfo).port, 8080);

      const fd = native.tcpConnect(v.b, 8080, { bindAddress: v.a, bindPort: 1000 + family, netns: a, ttl: 64, recvErr: true });
      const r = await nextEvent(fd, native.POLL_WRITABLE);
      t.is(r.status, 0);
      t.is(native.getSocketError(fd), 0);
      t.deepEqual(native.getSockName(fd), { family, address: v.a, port: 1000 + family });
      t.deepEqual(native.getPeerName(fd), { family, address: v.b, port: 8080 });
      const sock = new Socket({ fd: fd.release(), readable: true, writable: true });
      const echoed = await new Promise<string>((resolve, reject) => {
        let got = '';
        sock.on('data', (d) => {
          got += d.toString();
          if (got.length >= 11) resolve(got);
        });
        sock.on('error', reject);
        sock.write('hello via b');
      });
      t.is(echoed, 'hello via b');
      t.deepEqual(peers, [`${v.a}:${1000 + family}`]);
      sock.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
