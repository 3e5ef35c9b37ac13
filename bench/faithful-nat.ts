/**
 * Faithful NAT checks (issue 8) against usernet, slirp4netns and pasta, each in the same routed
 * topology (test/helpers/topology.ts: guest → the backend in a "host" namespace → r1 → r2 →
 * r3 → target, a 1280-byte MTU link between r2 and r3). Every check is yes/no, run in the guest
 * namespace with the real tools (traceroute, tcptraceroute, ping, python3 sockets), the same
 * checks as test/integration/nat-faithful.test.ts but backend-neutral: "all hops" means r1, r2,
 * r3 and the target appear in order (a backend's own first hop is not required).
 *
 * Writes bench/results/faithful-nat.md. Every namespace and process made here is removed at the
 * end (the Sandbox). Run: `TS_NODE_TRANSPILE_ONLY=1 node -r ts-node/register bench/faithful-nat.ts [usernet|slirp4netns|pasta ...]`.
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { withSandbox, type Sandbox, type ExecResult } from '../test/helpers/netns';
import { startNatGuest, ROOT } from '../test/helpers/nat-guest';
import { buildTopology, traceHops, ROUTER_ADDRS, TARGET_ADDR, type Topology } from '../test/helpers/topology';

type Backend = 'usernet' | 'slirp4netns' | 'pasta';
type Exec = (argv: string[], timeoutMs?: number) => Promise<ExecResult>;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Check {
  name: string;
  run(exec: Exec, sb: Sandbox, topo: Topology): Promise<boolean>;
}

const PATH_HOPS = [...ROUTER_ADDRS, TARGET_ADDR];

/** r1, r2, r3, target in order, ending at the target. */
function allHops(out: string): boolean {
  const hops = traceHops(out).filter((h) => h !== '*');
  const seen = hops.filter((h) => PATH_HOPS.includes(h));
  return seen.join(',') === PATH_HOPS.join(',') && hops[hops.length - 1] === TARGET_ADDR;
}

const py = (exec: Exec, lines: string[], timeoutMs = 60_000): Promise<ExecResult> => exec(['python3', '-c', lines.join('\n')], timeoutMs);

function server(sb: Sandbox, ns: string, lines: string[]): () => void {
  const p = sb.spawn(ns, ['python3', '-c', lines.join('\n')]);
  return () => void p.kill();
}

const TRACE = ['-q', '1', '-N', '1', '-n', '-w', '3', '-m', '10'];

const CHECKS: Check[] = [
  { name: '`traceroute -T` lists all hops', run: async (exec) => allHops((await exec(['traceroute', '-T', ...TRACE, '-p', '80', TARGET_ADDR], 120_000)).stdout) },
  { name: '`tcptraceroute` lists all hops', run: async (exec) => allHops((await exec(['tcptraceroute', '-n', '-q', '1', '-w', '3', '-m', '10', TARGET_ADDR, '80'], 120_000)).stdout) },
  { name: '`traceroute -I` lists all hops', run: async (exec) => allHops((await exec(['traceroute', '-I', ...TRACE, TARGET_ADDR], 120_000)).stdout) },
  { name: 'UDP `traceroute` lists all hops', run: async (exec) => allHops((await exec(['traceroute', '-U', ...TRACE, TARGET_ADDR], 120_000)).stdout) },
  { name: 'ping works', run: async (exec) => (await exec(['ping', '-c', '2', '-W', '3', TARGET_ADDR])).code === 0 },
  {
    name: '`ping -t 2`: Time Exceeded from r1',
    run: async (exec) => new RegExp(`From ${ROUTER_ADDRS[0].replace(/\./g, '\\.')} .*Time to live exceeded`).test((await exec(['ping', '-n', '-c', '1', '-W', '3', '-t', '2', TARGET_ADDR])).stdout),
  },
  {
    name: 'UDP to a closed port: ECONNREFUSED',
    run: async (exec) =>
      (await py(exec, [
        'import socket',
        's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)',
        `s.connect(("${TARGET_ADDR}", 9))`,
        'try:',
        '  s.send(b"x" * 20); s.recv(100); print("none")',
        'except ConnectionRefusedError: print("ECONNREFUSED")',
        'except Exception as e: print(repr(e))',
      ])).stdout.trim() === 'ECONNREFUSED',
  },
  {
    name: 'unreachable TCP destination: EHOSTUNREACH/ENETUNREACH',
    run: async (exec, _sb, topo) =>
      /^E(HOST|NET)UNREACH$/m.test((await py(exec, [
        'import socket, errno',
        's = socket.socket(); s.settimeout(10)',
        'try:',
        `  s.connect(("${topo.unreachableAddr}", 80)); print("connected")`,
        'except OSError as e: print(errno.errorcode.get(e.errno, e))',
      ])).stdout),
  },
  {
    name: 'DF UDP over the 1280 link: frag-needed with 1280',
    run: async (exec) =>
      /^mtu 1280$/m.test((await py(exec, [
        'import socket, time',
        's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
        's.setsockopt(socket.IPPROTO_IP, 10, 2)',
        `s.connect(("${TARGET_ADDR}", 9))`,
        'for i in range(6):',
        '  try: s.send(b"z" * 1400)',
        '  except OSError: break',
        '  time.sleep(0.5)',
        'print("mtu", s.getsockopt(socket.IPPROTO_IP, 14))',
      ])).stdout),
  },
  {
    name: '20 MiB TCP over the 1280 link',
    run: async (exec, sb, topo) => {
      const size = 20 << 20;
      const stop = server(sb, topo.target, [
        'import socket',
        'l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
        'l.bind(("0.0.0.0", 5001)); l.listen(1)',
        'c, _ = l.accept()',
        `left = ${size}; chunk = bytes(range(256)) * 256`,
        'while left > 0:',
        '  n = c.send(chunk[:min(left, len(chunk))]); left -= n',
        'c.close()',
      ]);
      await sleep(1000);
      const r = await py(exec, [
        'import socket',
        `s = socket.create_connection(("${TARGET_ADDR}", 5001), timeout=30)`,
        'n = 0',
        'while True:',
        '  b = s.recv(1 << 16)',
        '  if not b: break',
        '  n += len(b)',
        'print("bytes", n)',
      ], 120_000);
      stop();
      return r.stdout.trim() === `bytes ${size}`;
    },
  },
  {
    name: 'UDP mapping endpoint-independent (same port for two destinations)',
    run: async (exec, sb, topo) => {
      await sb.exec(topo.target, ['ip', 'addr', 'add', '10.77.3.3/24', 'dev', 't0']);
      const stop = server(sb, topo.target, [
        'import socket, select',
        'socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]',
        `socks[0].bind(("${TARGET_ADDR}", 7777)); socks[1].bind(("10.77.3.3", 7777))`,
        'while True:',
        '  for u in select.select(socks, [], [])[0]:',
        '    d, a = u.recvfrom(100); u.sendto(str(a[1]).encode(), a)',
      ]);
      await sleep(1000);
      const r = await py(exec, [
        'import socket',
        'u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 40000)); u.settimeout(5)',
        `for dst in ("${TARGET_ADDR}", "10.77.3.3"):`,
        '  u.sendto(b"q", (dst, 7777)); d, a = u.recvfrom(100); print(d.decode())',
      ]);
      stop();
      const ports = r.stdout.trim().split('\n');
      return ports.length === 2 && ports[0] === ports[1] && ports[0] !== '';
    },
  },
  {
    name: 'privileged source port kept (TCP 700, UDP 701)',
    run: async (exec, sb, topo) => {
      const stop = server(sb, topo.target, [
        'import socket, threading',
        'u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 7778))',
        'def udp():',
        '  while True:',
        '    d, a = u.recvfrom(100); u.sendto(str(a[1]).encode(), a)',
        'threading.Thread(target=udp, daemon=True).start()',
        'l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("0.0.0.0", 7778)); l.listen(5)',
        'while True:',
        '  c, a = l.accept(); c.sendall(str(a[1]).encode()); c.close()',
      ]);
      await sleep(1000);
      const r = await py(exec, [
        'import socket',
        'try:',
        '  s = socket.socket(); s.bind(("0.0.0.0", 700)); s.settimeout(10)',
        `  s.connect(("${TARGET_ADDR}", 7778)); print("tcp", s.recv(100).decode())`,
        'except Exception as e: print("tcp", repr(e))',
        'try:',
        '  u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 701)); u.settimeout(5)',
        `  u.sendto(b"q", ("${TARGET_ADDR}", 7778)); print("udp", u.recvfrom(100)[0].decode())`,
        'except Exception as e: print("udp", repr(e))',
      ]);
      stop();
      return /^tcp 700$/m.test(r.stdout) && /^udp 701$/m.test(r.stdout);
    },
  },
];

async function waitFor(check: () => Promise<boolean>, timeoutMs = 15_000): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check()) return true;
    await sleep(200);
  }
  return false;
}

/** Start `backend` for a fresh guest namespace behind the topology's host namespace. */
async function startBackend(sb: Sandbox, backend: Backend, topo: Topology): Promise<Exec> {
  if (backend === 'usernet') {
    const g = await startNatGuest(sb, { hostNetns: topo.host });
    return g.exec;
  }
  const ns = await sb.netns('guest');
  const argv =
    backend === 'slirp4netns'
      ? ['slirp4netns', '--configure', '--mtu=1500', '--netns-type=path', `/var/run/netns/${ns}`, 'tap0']
      : ['pasta', '-f', '-q', '--runas', '0:0', '--config-net', '-t', 'none', '-u', 'none', '-T', 'none', '-U', 'none', '--netns', `/var/run/netns/${ns}`];
  sb.spawn(topo.host, argv);
  const ok = await waitFor(async () => {
    const r = await sb.exec(ns, ['ip', '-4', 'route', 'show', 'default']);
    return /default via/.test(r.stdout);
  });
  if (!ok) throw new Error(`${backend} did not configure the guest namespace`);
  await sleep(2000); // the route is set a moment before the backend forwards
  return (a, t) => sb.exec(ns, a, t);
}

/** One backend: every check in a fresh topology (so the routers' ICMP rate limits start full). */
async function runBackend(backend: Backend): Promise<boolean[]> {
  const results: boolean[] = [];
  for (const check of CHECKS) {
    let ok = false;
    try {
      ok = await withSandbox(async (sb) => {
        const topo = await buildTopology(sb, { r2r3Mtu: 1280 });
        const exec = await startBackend(sb, backend, topo);
        return check.run(exec, sb, topo);
      }, 240_000);
    } catch (err) {
      console.error(`${backend}: ${check.name}: ${String(err)}`);
    }
    console.log(`${backend.padEnd(12)} ${ok ? 'yes' : 'no '}  ${check.name}`);
    results.push(ok);
  }
  return results;
}

async function main(): Promise<void> {
  const wanted = process.argv.slice(2).filter((a): a is Backend => a === 'usernet' || a === 'slirp4netns' || a === 'pasta');
  const backends: Backend[] = wanted.length ? wanted : ['usernet', 'slirp4netns', 'pasta'];
  const columns: boolean[][] = [];
  for (const b of backends) columns.push(await runBackend(b));
  const lines = [
    '# Faithful NAT: the same checks through usernet, slirp4netns and pasta',
    '',
    'Guest namespace → the backend in a "host" namespace → 3 router namespaces → target, with a',
    '1280-byte MTU link between r2 and r3 (bench/faithful-nat.ts; one fresh topology per check).',
    `Run ${new Date().toISOString().slice(0, 16)}Z.`,
    '',
    `| check | ${backends.join(' | ')} |`,
    `|---|${backends.map(() => '---').join('|')}|`,
    ...CHECKS.map((c, i) => `| ${c.name} | ${columns.map((col) => (col[i] ? 'yes' : 'no')).join(' | ')} |`),
    '',
  ];
  const out = path.join(ROOT, 'bench', 'results', 'faithful-nat.md');
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, lines.join('\n'));
  console.log(lines.join('\n'));
  console.log(`wrote ${out}`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
