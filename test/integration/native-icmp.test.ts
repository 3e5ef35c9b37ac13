/**
 * ICMP echo sockets against the kernel, both kinds: inside a namespace this test makes,
 * net.ipv4.ping_group_range (per namespace, applies to IPv6 too) is set to admit our group —
 * an unprivileged ping socket opens — or to admit nobody — EACCES, and the addon falls back to
 * a raw socket (we have CAP_NET_RAW). Each kind pings 127.0.0.1 and ::1 there; the host
 * namespace's loopback is pinged with whatever kind its sysctl allows.
 */
import { testIf } from '../helpers/env';
import { withSandbox, type Sandbox } from '../helpers/netns';
import * as native from '../../src/native';
import type { ExecutionContext } from 'ava';

const test = testIf('root', 'netns');

function checksum(b: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += (b[i] << 8) | (i + 1 < b.length ? b[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function echo(family: native.IpFamily, id: number, seq: number): Uint8Array {
  const m = new Uint8Array(8 + 24);
  m[0] = family === 4 ? 8 : 128;
  m[4] = id >> 8;
  m[5] = id & 0xff;
  m[6] = seq >> 8;
  m[7] = seq & 0xff;
  m.set(Buffer.from('usernet icmp echo test!!'), 8);
  if (family === 4) {
    const c = checksum(m);
    m[2] = c >> 8;
    m[3] = c & 0xff;
  }
  return m;
}

function readable(fd: native.FdLike): Promise<void> {
  return new Promise((resolve) => {
    const w = new native.FdWatcher(fd, () => {
      w.close();
      resolve();
    });
    w.start(native.POLL_READABLE);
  });
}

/** Ping `dst` once over `sock`; resolves with the reply's ICMP bytes and the received TTL. */
async function ping(sock: native.IcmpSocket, dst: string, seq: number): Promise<{ icmp: Uint8Array; ttl: number }> {
  const id = 0x5a00 + seq;
  native.setRecvTtl(sock.fd, sock.family);
  const sent = native.sendTo(sock.fd, echo(sock.family, id, seq), dst, 0);
  if (sent <= 0) throw new Error(`sendTo returned ${sent}`);
  const buf = new Uint8Array(2048);
  const meta = new native.RecvMeta();
  const replyType = sock.family === 4 ? 0 : 129;
  for (;;) {
    await readable(sock.fd);
    for (;;) {
      const n = native.recvFrom(sock.fd, buf, meta);
      if (n < 0) break;
      // a raw IPv4 socket sees the IP header first; raw sockets also see other ICMP traffic
      const off = sock.kind === 'raw' && sock.family === 4 ? (buf[0] & 0x0f) * 4 : 0;
      const icmp = buf.slice(off, n);
      const seqOk = ((icmp[6] << 8) | icmp[7]) === seq;
      if (icmp[0] === replyType && seqOk) return { icmp, ttl: meta.ttl };
    }
  }
}

async function checkKind(t: ExecutionContext, sb: Sandbox, range: string, expect: 'ping' | 'raw'): Promise<void> {
  const ns = await sb.netns(expect);
  await sb.must(['sysctl', '-w', `net.ipv4.ping_group_range=${range}`], ns);
  for (const [family, dst] of [[4, '127.0.0.1'], [6, '::1']] as const) {
    const sock = native.icmpSocket(family, { netns: ns });
    sb.defer(() => sock.fd.close());
    t.is(sock.kind, expect, `IPv${family} with ping_group_range ${range}`);
    t.is(sock.family, family);
    const reply = await ping(sock, dst, family);
    t.is(reply.icmp.length, 8 + 24);
    t.is(Buffer.from(reply.icmp.subarray(8)).toString(), 'usernet icmp echo test!!');
    t.is(reply.ttl, 64, 'received TTL / hop limit reported');
    if (expect === 'ping') {
      // the kernel replaced our identifier with the socket's "port"
      const port = (native.getSockName(sock.fd) as native.InetAddress).port;
      t.is((reply.icmp[4] << 8) | reply.icmp[5], port);
    } else {
      t.is((reply.icmp[4] << 8) | reply.icmp[5], 0x5a00 + family, 'raw: identifier kept');
    }
    sock.fd.close();
  }
}

test('ping sockets when ping_group_range admits our group', async (t) => {
  await withSandbox((sb) => checkKind(t, sb, `0 2147483647`, 'ping'));
});

test('raw fallback when ping_group_range admits nobody (EACCES)', async (t) => {
  await withSandbox(async (sb) => {
    await checkKind(t, sb, '1 0', 'raw');
    const ns = await sb.netns('noraw');
    await sb.must(['sysctl', '-w', 'net.ipv4.ping_group_range=1 0'], ns);
    t.throws(() => native.icmpSocket(4, { netns: ns, allowRaw: false }), { code: 'EACCES' });
  });
});

test('the host namespace loopback answers whichever kind its sysctl allows', async (t) => {
  const sock = native.icmpSocket(4);
  try {
    t.true(sock.kind === 'ping' || sock.kind === 'raw');
    const reply = await ping(sock, '127.0.0.1', 7);
    t.is(reply.icmp[0], 0);
  } finally {
    sock.fd.close();
  }
});
