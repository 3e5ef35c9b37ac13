/**
 * The TCP module with the Linux kernel as the guest: a network namespace whose tap is served
 * in-process by the NAT stack (netns-tap transport, TSO and checksum offloads on), with a
 * FaultInjector between the tap and the stack to lose and reorder frames in both directions —
 * so the kernel's retransmissions exercise our out-of-order queue and SACK, and our
 * retransmissions face the kernel's receiver. Servers run on the host's 127.0.0.1 (reached as
 * the gateway); clients in the namespace are small python3 programs.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import type { ExecutionContext } from 'ava';
import { testIf } from '../helpers/env';
import { withSandbox, type Sandbox } from '../helpers/netns';
import { NetnsTapPort } from '../../src/transports/netns-tap';
import { createNatStack, type NatStack } from '../../src/backends/nat';
import { TcpModule } from '../../src/backends/nat/tcp';
import { FaultInjector, type FaultRates } from '../../src/link/fault';
import { join, type Port } from '../../src/link/port';
import { Meter } from '../../src/meter/meter';

const test = testIf('root', 'netns', 'tun', 'cmd:python3');

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

interface Env {
  sb: Sandbox;
  ns: string;
  stack: NatStack;
  tcp: TcpModule;
  fault: FaultInjector | null;
  meter: Meter;
  /** Run a python3 program in the guest namespace; resolves with its stdout (throws on failure). */
  py(code: string, args?: string[], timeoutMs?: number): Promise<string>;
}

interface EnvOptions {
  mtu?: number;
  /** Faults on frames towards the guest / from the guest. */
  toGuest?: FaultRates;
  fromGuest?: FaultRates;
  seed?: number;
  /** Host sockets in a namespace of their own (only loopback inside). */
  isolatedHost?: boolean;
}

async function withGuest(t: ExecutionContext, o: EnvOptions, fn: (env: Env) => Promise<void>): Promise<void> {
  await withSandbox(async (sb) => {
    const ns = await sb.netns('tcpg');
    const hostNs = o.isolatedHost ? await sb.netns('tcph') : null;
    const meter = new Meter();
    const mtu = o.mtu ?? 1500;
    const tap = NetnsTapPort.open({ netns: ns, meter });
    const stack = createNatStack({ config: { mtu }, meter, checksumOffload: true, tsoOffload: true, hostNetns: hostNs });
    stack.setOffloads({ checksum: true, tso: true });
    await stack.ready;
    let guestSide: Port = tap;
    let fault: FaultInjector | null = null;
    if (o.toGuest || o.fromGuest) {
      fault = new FaultInjector(tap, { seed: o.seed ?? 7, outbound: o.toGuest, inbound: o.fromGuest, meter });
      guestSide = fault;
    }
    join(guestSide, stack);
    const ip = (...a: string[]): Promise<string> => sb.must(['ip', '-n', ns, ...a]);
    await ip('link', 'set', 'dev', 'tap0', 'mtu', String(mtu));
    await ip('addr', 'add', '10.0.2.15/24', 'dev', 'tap0');
    await ip('link', 'set', 'dev', 'tap0', 'up');
    await ip('route', 'add', 'default', 'via', '10.0.2.2', 'dev', 'tap0');
    const tcp = (stack as unknown as { tcp: TcpModule }).tcp;
    const env: Env = {
      sb,
      ns,
      stack,
      tcp,
      fault,
      meter,
      async py(code, args = [], timeoutMs = 120_000) {
        const r = await sb.exec(ns, ['python3', '-c', code, ...args], timeoutMs);
        if (r.code !== 0) throw new Error(`guest python failed (${r.code}): ${r.stderr.trim()}`);
        return r.stdout.trim();
      },
    };
    try {
      await fn(env);
    } finally {
      if (fault) t.log('faults', JSON.stringify(fault.counters()));
      const s = meter.stage('nat.tcp.tx').snapshot();
      t.log('nat.tcp.tx drops', JSON.stringify(s.dropReasons));
      await guestSide.close();
      await stack.close();
    }
  });
}

/** A host server: `onConn` gets each socket. */
async function hostServer(onConn: (s: net.Socket) => void): Promise<{ port: number; close: () => Promise<void> }> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    onConn(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const sockets = new Set<net.Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return {
    port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const PY_DOWNLOAD = `
import socket, hashlib, sys
s = socket.create_connection(('10.0.2.2', int(sys.argv[1])))
rcvbuf = int(sys.argv[2]) if len(sys.argv) > 2 else 0
h = hashlib.sha256(); n = 0
while True:
    d = s.recv(1 << 20)
    if not d: break
    h.update(d); n += len(d)
print(n, h.hexdigest())
`;

const PY_UPLOAD_HALF_CLOSE = `
import socket, hashlib, sys
n = int(sys.argv[2]); seed = int(sys.argv[3])
buf = bytearray(n); x = seed
for i in range(n):
    x ^= (x << 13) & 0xffffffff; x ^= x >> 17; x ^= (x << 5) & 0xffffffff
    buf[i] = x & 0xff
s = socket.create_connection(('10.0.2.2', int(sys.argv[1])))
s.sendall(buf)
s.shutdown(socket.SHUT_WR)
reply = b''
while True:
    d = s.recv(65536)
    if not d: break
    reply += d
print(hashlib.sha256(buf).hexdigest(), reply.decode())
`;

const PY_SLOW_READER = `
import socket, hashlib, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(('10.0.2.2', int(sys.argv[1])))
time.sleep(1.5)
h = hashlib.sha256(); n = 0
while True:
    d = s.recv(8192)
    if not d: break
    h.update(d); n += len(d)
    if n < 2_000_000: time.sleep(0.002)
print(n, h.hexdigest())
`;

for (const mtu of [1500, 65520]) {
  test(`download and upload (with half-close) through a lossy, reordering link, MTU ${mtu}`, async (t) => {
    const down = pattern(16 << 20, 11);
    const upSize = 6 << 20;
    const upHash = sha256(pattern(upSize, 5));
    const rates: FaultRates = { drop: 0.01, reorder: 0.02 };
    await withGuest(t, { mtu, toGuest: rates, fromGuest: rates, seed: mtu }, async (env) => {
      const dl = await hostServer((s) => s.end(down));
      const ul = await hostServer((s) => {
        const h = createHash('sha256');
        let n = 0;
        s.on('data', (d) => {
          h.update(d);
          n += d.length;
        });
        // Reply after the guest's FIN: the half-closed connection still carries it.
        s.on('end', () => s.end(`${n} ${h.digest('hex')}`));
      });
      try {
        const [dlOut, ulOut] = await Promise.all([
          env.py(PY_DOWNLOAD, [String(dl.port)]),
          env.py(PY_UPLOAD_HALF_CLOSE, [String(ul.port), String(upSize), '5']),
        ]);
        t.is(dlOut, `${down.length} ${sha256(down)}`);
        const [guestHash, n, serverHash] = ulOut.split(' ');
        t.is(guestHash, upHash);
        t.is(Number(n), upSize);
        t.is(serverHash, upHash);
        const c = env.fault!.counters();
        t.true(c.outbound.dropped > 0 && c.inbound.dropped > 0, 'frames were lost both ways');
        const ooo = env.meter.stage('nat.tcp.tx').snapshot();
        t.log('tcp in', ooo.frames, 'frames; out', env.meter.stage('nat.tcp.rx').snapshot().frames);
      } finally {
        await dl.close();
        await ul.close();
      }
    });
  });
}

test('a slow reader in the guest closes its window: the host sender is held back, nothing is lost', async (t) => {
  const data = pattern(6 << 20, 3);
  await withGuest(t, {}, async (env) => {
    let maxStalls = 0;
    let probes = 0;
    const poll = setInterval(() => {
      for (const c of env.tcp.connections()) {
        maxStalls = Math.max(maxStalls, c.stats.windowStalls);
        probes = Math.max(probes, c.stats.zeroWindowProbes);
      }
    }, 20);
    const srv = await hostServer((s) => s.end(data));
    try {
      const out = await env.py(PY_SLOW_READER, [String(srv.port)]);
      t.is(out, `${data.length} ${sha256(data)}`);
      t.true(maxStalls > 0, 'the guest window stopped us');
      t.log('window stalls', maxStalls, 'zero-window probes', probes);
    } finally {
      clearInterval(poll);
      await srv.close();
    }
  });
});

test('connection refused reaches the guest as ECONNREFUSED; an unroutable host destination as an ICMP error', async (t) => {
  await withGuest(t, { isolatedHost: true }, async (env) => {
    const out = await env.py(`
import socket, errno
def attempt(addr):
    s = socket.socket(); s.settimeout(10)
    try:
        s.connect(addr); return 'connected'
    except socket.timeout:
        return 'timeout'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
print(attempt(('10.0.2.2', 9)), attempt(('192.0.2.1', 80)))
`);
    const [refused, unreachable] = out.split(' ');
    t.is(refused, 'ECONNREFUSED');
    // The host namespace has no route: the host connect fails at once with ENETUNREACH, and
    // the guest's SYN is answered with ICMP net unreachable.
    t.true(['ENETUNREACH', 'EHOSTUNREACH'].includes(unreachable), unreachable);
  });
});

test('a port forward added at run time carries data both ways to a server in the guest', async (t) => {
  await withGuest(t, {}, async (env) => {
    const server = env.sb.spawn(env.ns, [
      'python3',
      '-c',
      `
import socket
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('0.0.0.0', 7070)); l.listen(4)
print('ready', flush=True)
c, a = l.accept()
data = b''
while True:
    d = c.recv(65536)
    if not d: break
    data += d
c.sendall(data.upper() + (' from %s' % a[0]).encode())
c.close()
`,
    ]);
    await new Promise<void>((resolve, reject) => {
      server.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      server.once('exit', (code) => reject(new Error(`guest server exited ${code}`)));
    });
    // The stack learns the guest's MAC from its frames; a namespace that never sent anything
    // would get our SYN to the broadcast MAC, which Linux TCP drops (PACKET_BROADCAST).
    await env.sb.exec(env.ns, ['ping', '-c', '1', '-W', '2', '10.0.2.2']);
    const rule = await env.stack.addHostForward({ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 0, guestAddress: '', guestPort: 7070 });
    const client = net.connect(rule.hostPort, '127.0.0.1');
    const failed = new Promise<never>((_, reject) => client.once('error', reject));
    const chunks: Buffer[] = [];
    client.on('data', (d) => chunks.push(d));
    const body = pattern(300_000, 9).toString('hex');
    client.end(body);
    await Promise.race([new Promise((r) => client.once('end', r)), failed]);
    t.is(Buffer.concat(chunks).toString(), body.toUpperCase() + ' from 10.0.2.2');
    t.true(await env.stack.removeHostForward(rule));
  });
});

test('many concurrent connections each move data and all complete', async (t) => {
  await withGuest(t, {}, async (env) => {
    const srv = await hostServer((s) => {
      let n = 0;
      s.on('data', (d) => (n += d.length));
      s.on('end', () => s.end(pattern(50_000, n)));
    });
    try {
      const out = await env.py(
        `
import socket, sys, threading, hashlib
port = int(sys.argv[1]); N = 200; results = [None] * N
def run(i):
    s = socket.create_connection(('10.0.2.2', port), timeout=60)
    s.sendall(b'x' * (1000 + i)); s.shutdown(socket.SHUT_WR)
    got = b''
    while True:
        d = s.recv(65536)
        if not d: break
        got += d
    results[i] = len(got)
ts = [threading.Thread(target=run, args=(i,)) for i in range(N)]
[x.start() for x in ts]; [x.join() for x in ts]
print(sum(1 for r in results if r == 50000))
`,
        [String(srv.port)],
      );
      t.is(out, '200');
    } finally {
      await srv.close();
    }
  });
});
