/**
 * Faithful NAT checks (issue 8) against usernet, slirp4netns and pasta, each in the same routed
 * topology (test/helpers/topology.ts: guest → the backend in a "host" namespace → r1 → r2 →
 * r3 → target, a 1280-byte MTU link between r2 and r3). Every check is yes/no, run in the guest
 * namespace with the real tools (traceroute, tcptraceroute, ping, python3 sockets), the same
 * checks as test/integration/nat-faithful.test.ts but backend-neutral: "all hops" means r1, r2,
 * r3 and the target appear in order (a backend's own first hop is not required).
 *
 * The NAT-traversal rows (RFC 4787 §5 filtering, RFC 5382 REQ-2 simultaneous open through a
 * port forward, the inbound source address of a forwarded connection, keep-alive failure
 * detection) use the probes of test/helpers/nat-traversal.ts. A backend is started per check
 * with what the check needs: usernet with its flags (`--udp-filtering`, `--hostfwd`,
 * `--forward-source client`), pasta with `-t HOST:GUEST`, slirp4netns with a forward added
 * through its API socket. A row an anchor has no setting for shows "no" with what it does
 * instead (e.g. the one filtering behaviour it has).
 *
 * Writes bench/results/faithful-nat.md. Every namespace and process made here is removed at the
 * end (the Sandbox). Run: `TS_NODE_TRANSPILE_ONLY=1 node -r ts-node/register bench/faithful-nat.ts [usernet|slirp4netns|pasta ...] [--only TEXT ...]`.
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { withSandbox, type Sandbox, type ExecResult } from '../test/helpers/netns';
import { startNatGuest, ROOT } from '../test/helpers/nat-guest';
import { buildTopology, traceHops, ROUTER_ADDRS, TARGET_ADDR, type Topology } from '../test/helpers/topology';
import { FILTERING_EXPECTED, forwardPeerSeen, HOST_ADDR, keepAliveProbe, simultaneousOpen, sourcePortEcho, sourcePortsSeen, udpFilteringSeen } from '../test/helpers/nat-traversal';

type Backend = 'usernet' | 'slirp4netns' | 'pasta';
type Exec = (argv: string[], timeoutMs?: number) => Promise<ExecResult>;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What a check may ask of the backend it starts. */
interface StartOptions {
  /** A TCP port forward host:hostPort → guest:guestPort (0.0.0.0 on the host side). */
  tcpForward?: [number, number];
  /** Extra `usernet run` flags (usernet only). */
  usernetArgs?: string[];
}

interface GuestSide {
  exec: Exec;
  /** The guest namespace's name. */
  ns: string;
}

interface CheckEnv {
  sb: Sandbox;
  topo: Topology;
  backend: Backend;
  /** Start the backend for a fresh guest namespace (once per check, unless it stops it). */
  start(opts?: StartOptions): Promise<GuestSide>;
}

/** A result: yes/no, or the text of the cell ("no (…)" with what the backend does instead). */
type Outcome = boolean | string;

interface Check {
  name: string;
  run(env: CheckEnv): Promise<Outcome>;
  /** Run this many times, each in a fresh topology (a racy result shows as "k of n"). */
  repeat?: number;
}

/** The old shape of a check: it needs only the guest's exec. */
function simple(name: string, run: (exec: Exec, sb: Sandbox, topo: Topology) => Promise<Outcome>): Check {
  return { name, run: async (env) => run((await env.start()).exec, env.sb, env.topo) };
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
  simple('`traceroute -T` lists all hops', async (exec) => allHops((await exec(['traceroute', '-T', ...TRACE, '-p', '80', TARGET_ADDR], 120_000)).stdout)),
  simple('`tcptraceroute` lists all hops', async (exec) => allHops((await exec(['tcptraceroute', '-n', '-q', '1', '-w', '3', '-m', '10', TARGET_ADDR, '80'], 120_000)).stdout)),
  simple('`traceroute -I` lists all hops', async (exec) => allHops((await exec(['traceroute', '-I', ...TRACE, TARGET_ADDR], 120_000)).stdout)),
  simple('UDP `traceroute` lists all hops', async (exec) => allHops((await exec(['traceroute', '-U', ...TRACE, TARGET_ADDR], 120_000)).stdout)),
  simple('ping works', async (exec) => (await exec(['ping', '-c', '2', '-W', '3', TARGET_ADDR])).code === 0),
  simple(
    '`ping -t 2`: Time Exceeded from r1',
    async (exec) => new RegExp(`From ${ROUTER_ADDRS[0].replace(/\./g, '\\.')} .*Time to live exceeded`).test((await exec(['ping', '-n', '-c', '1', '-W', '3', '-t', '2', TARGET_ADDR])).stdout),
  ),
  simple(
    'UDP to a closed port: ECONNREFUSED',
    async (exec) =>
      (await py(exec, [
        'import socket',
        's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)',
        `s.connect(("${TARGET_ADDR}", 9))`,
        'try:',
        '  s.send(b"x" * 20); s.recv(100); print("none")',
        'except ConnectionRefusedError: print("ECONNREFUSED")',
        'except Exception as e: print(repr(e))',
      ])).stdout.trim() === 'ECONNREFUSED',
  ),
  simple(
    'unreachable TCP destination: EHOSTUNREACH/ENETUNREACH',
    async (exec, _sb, topo) =>
      /^E(HOST|NET)UNREACH$/m.test((await py(exec, [
        'import socket, errno',
        's = socket.socket(); s.settimeout(10)',
        'try:',
        `  s.connect(("${topo.unreachableAddr}", 80)); print("connected")`,
        'except OSError as e: print(errno.errorcode.get(e.errno, e))',
      ])).stdout),
  ),
  simple(
    'DF UDP over the 1280 link: frag-needed with 1280',
    async (exec) =>
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
  ),
  simple(
    '20 MiB TCP over the 1280 link',
    async (exec, sb, topo) => {
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
  ),
  simple(
    'UDP mapping endpoint-independent (same port for two destinations)',
    async (exec, sb, topo) => {
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
  ),
  {
    name: 'privileged source port kept (TCP 700, UDP 701)',
    run: async (env) => {
      const g = await env.start();
      await sourcePortEcho(env.sb, env.topo.target, 7778);
      const seen = await sourcePortsSeen(env.sb, g.ns, 7778, 700, 701);
      return seen.tcp === '700' && seen.udp === '701';
    },
  },
  simple(
    'fragmented UDP from the guest (4000 bytes, MTU 1500) is delivered and answered (RFC 4787 REQ-14)',
    async (exec, sb, topo): Promise<Outcome> => {
      // the guest's own interface to 1500, so its kernel fragments (usernet and pasta offer 65520)
      const links = (await exec(['ip', '-o', 'link', 'show'])).stdout;
      const dev = /^\d+: ([^:@]+)[:@]/gm;
      for (let m = dev.exec(links); m; m = dev.exec(links)) if (m[1] !== 'lo') await exec(['ip', 'link', 'set', 'dev', m[1], 'mtu', '1500']);
      const stop = server(sb, topo.target, [
        'import socket',
        'u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 7790))',
        'while True:',
        '  d, a = u.recvfrom(65535); u.sendto(d, a)',
      ]);
      await sleep(1000);
      const r = await py(exec, [
        'import socket',
        'u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)',
        'u.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_PMTUDISC_DONT: no DF, the kernel fragments',
        'data = bytes(range(256)) * 15 + bytes(160)',
        'for i in range(3):',
        `  u.sendto(data, ("${TARGET_ADDR}", 7790))`,
        '  try:',
        '    d, a = u.recvfrom(65535); print("ok" if d == data else "bad %d" % len(d)); break',
        '  except socket.timeout: print("timeout")',
      ]);
      stop();
      if (/^ok$/m.test(r.stdout)) return true;
      const seen = r.stdout.trim().split('\n').filter(Boolean);
      return `no (${seen.length > 0 && seen.every((l) => l === 'timeout') ? 'no answer' : seen.join(', ') || r.stderr.trim().split('\n').pop()})`;
    },
  ),
  {
    name: 'UDP filtering selectable (usernet: `--udp-filtering` endpoint-independent / address-dependent / address-and-port-dependent)',
    run: async (env) => {
      if (env.backend === 'usernet') {
        // one usernet per mode, each on a fresh guest namespace of the same topology
        for (const [mode, want] of Object.entries(FILTERING_EXPECTED)) {
          const g = await env.start({ usernetArgs: ['--udp-filtering', mode] });
          const seen = await udpFilteringSeen(env.sb, g.ns, env.topo);
          await env.sb.exec(env.topo.target, ['ip', 'addr', 'del', '10.77.3.3/24', 'dev', 't0']);
          if (seen.join(' ') !== want.join(' ')) return `no (${mode}: ${seen.join(' ') || 'nothing'})`;
        }
        return true;
      }
      const g = await env.start();
      const seen = (await udpFilteringSeen(env.sb, g.ns, env.topo)).join(' ');
      const mode = Object.entries(FILTERING_EXPECTED).find(([, want]) => want.join(' ') === seen)?.[0];
      return `no (always ${mode ?? `? saw ${seen || 'nothing'}`})`;
    },
  },
  {
    name: 'TCP simultaneous open through a port forward (RFC 5382 REQ-2)',
    repeat: 5,
    run: async (env) => {
      const g = await env.start({ tcpForward: [9000, 9001] });
      const r = await simultaneousOpen(env.sb, g.ns, env.topo, 9000, 9001);
      if (r.guest === 'got from-peer' && r.peer === 'got from-guest') return true;
      return `no (guest: ${r.guest || 'nothing'}; peer: ${r.peer || 'nothing'})`;
    },
  },
  {
    name: "forwarded TCP reaches the guest from the client's address (usernet: `--forward-source client`)",
    run: async (env) => {
      const g = await env.start({ tcpForward: [9022, 9023], usernetArgs: ['--forward-source', 'client'] });
      const seen = await forwardPeerSeen(env.sb, g.ns, 9023, env.topo.target, HOST_ADDR, 9022);
      if (seen === `${TARGET_ADDR} ping`) return true;
      const peer = /^(\d+\.\d+\.\d+\.\d+) ping$/.exec(seen);
      return `no (${peer ? `from ${peer[1]}` : seen || 'no connection'})`;
    },
  },
  {
    name: "hairpinning: the guest reaches its own forwarded TCP port at the NAT's outside address (RFC 5382 REQ-8)",
    run: async (env) => {
      const g = await env.start({ tcpForward: [9030, 9031] });
      const seen = await forwardPeerSeen(env.sb, g.ns, 9031, g.ns, HOST_ADDR, 9030);
      return / ping$/.test(seen) ? true : `no (${seen || 'no connection'})`;
    },
  },
  {
    name: "keep-alive: the guest's idle connection errors out once the peer is gone",
    run: async (env) => {
      const g = await env.start();
      const r = await keepAliveProbe(env.sb, g.ns, env.topo);
      if (!r.survivedIdle) {
        return /ETIMEDOUT/.test(r.output) ? 'no (probes unanswered: ETIMEDOUT with the peer up)' : `no (idle connection ended: ${r.output.split('\n').join(', ')})`;
      }
      return r.afterSilence.startsWith('error') ? true : `no (${r.afterSilence || 'hangs: the NAT answers the probes'})`;
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
async function startBackend(sb: Sandbox, backend: Backend, topo: Topology, opts: StartOptions = {}): Promise<GuestSide> {
  const [hostPort, guestPort] = opts.tcpForward ?? [0, 0];
  if (backend === 'usernet') {
    const args = [...(opts.usernetArgs ?? [])];
    if (opts.tcpForward) args.push('--hostfwd', `tcp:0.0.0.0:${hostPort}-:${guestPort}`);
    const g = await startNatGuest(sb, { hostNetns: topo.host, args });
    return { exec: g.exec, ns: g.ns };
  }
  const ns = await sb.netns('guest');
  const api = path.join('/tmp', `faithful-nat-${process.pid}-${ns}.sock`);
  const argv =
    backend === 'slirp4netns'
      ? ['slirp4netns', '--configure', '--mtu=1500', `--api-socket=${api}`, '--netns-type=path', `/var/run/netns/${ns}`, 'tap0']
      : ['pasta', '-f', '-q', '--runas', '0:0', '--config-net', '-t', opts.tcpForward ? `${hostPort}:${guestPort}` : 'none', '-u', 'none', '-T', 'none', '-U', 'none', '--netns', `/var/run/netns/${ns}`];
  sb.spawn(topo.host, argv);
  if (backend === 'slirp4netns') sb.defer(() => sb.exec(null, ['rm', '-f', api]).then(() => undefined));
  const ok = await waitFor(async () => {
    const r = await sb.exec(ns, ['ip', '-4', 'route', 'show', 'default']);
    return /default via/.test(r.stdout);
  });
  if (!ok) throw new Error(`${backend} did not configure the guest namespace`);
  await sleep(2000); // the route is set a moment before the backend forwards
  if (backend === 'slirp4netns' && opts.tcpForward) {
    const answer = await slirpApi(api, { execute: 'add_hostfwd', arguments: { proto: 'tcp', host_addr: '0.0.0.0', host_port: hostPort, guest_port: guestPort } });
    if (!/"return"/.test(answer)) throw new Error(`slirp4netns add_hostfwd: ${answer}`);
  }
  return { exec: (a, t) => sb.exec(ns, a, t), ns };
}

/** One request on slirp4netns's API socket (JSON in, JSON out, one connection each). */
function slirpApi(socketPath: string, request: unknown): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const c = net.connect(socketPath, () => c.end(JSON.stringify(request)));
    c.setTimeout(10_000, () => c.destroy(new Error('slirp4netns API timeout')));
    c.on('data', (d: Buffer) => (out += d.toString()));
    c.on('end', () => resolve(out));
    c.on('error', reject);
  });
}

/** One backend: every check in a fresh topology (so the routers' ICMP rate limits start full). */
async function runBackend(backend: Backend, checks: Check[]): Promise<Outcome[]> {
  const results: Outcome[] = [];
  for (const check of checks) {
    const runs: Outcome[] = [];
    for (let i = 0; i < (check.repeat ?? 1); i++) {
      let ok: Outcome = false;
      try {
        ok = await withSandbox(async (sb) => {
          const topo = await buildTopology(sb, { r2r3Mtu: 1280 });
          return check.run({ sb, topo, backend, start: (opts) => startBackend(sb, backend, topo, opts) });
        }, 240_000);
      } catch (err) {
        console.error(`${backend}: ${check.name}: ${String(err)}`);
      }
      runs.push(ok);
    }
    const passed = runs.filter((r) => r === true).length;
    const ok: Outcome = runs.length === 1 || passed === 0 ? runs[runs.length - 1] : passed === runs.length ? true : `${passed} of ${runs.length}`;
    console.log(`${backend.padEnd(12)} ${cell(ok).padEnd(4)} ${check.name}${runs.length > 1 ? ` [${runs.map(cell).join('; ')}]` : ''}`);
    results.push(ok);
  }
  return results;
}

function cell(o: Outcome): string {
  return typeof o === 'string' ? o : o ? 'yes' : 'no';
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const wanted = args.filter((a): a is Backend => a === 'usernet' || a === 'slirp4netns' || a === 'pasta');
  const backends: Backend[] = wanted.length ? wanted : ['usernet', 'slirp4netns', 'pasta'];
  // --only TEXT: just the checks whose name contains TEXT (repeatable)
  const only = args.flatMap((a, i) => (args[i - 1] === '--only' ? [a] : []));
  const checks = only.length ? CHECKS.filter((c) => only.some((o) => c.name.includes(o))) : CHECKS;
  const columns: Outcome[][] = [];
  for (const b of backends) columns.push(await runBackend(b, checks));
  const lines = [
    '# Faithful NAT: the same checks through usernet, slirp4netns and pasta',
    '',
    'Guest namespace → the backend in a "host" namespace → 3 router namespaces → target, with a',
    '1280-byte MTU link between r2 and r3 (bench/faithful-nat.ts; one fresh topology per check).',
    `Run ${new Date().toISOString().slice(0, 16)}Z.`,
    '',
    `| check | ${backends.join(' | ')} |`,
    `|---|${backends.map(() => '---').join('|')}|`,
    ...checks.map((c, i) => `| ${c.name} | ${columns.map((col) => cell(col[i])).join(' | ')} |`),
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
