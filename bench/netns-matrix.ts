/**
 * The netns matrix: iperf3 through usernet, slirp4netns and pasta — the same harness, the same
 * flags — with the Linux kernel in a fresh network namespace as the guest and `iperf3 -s` on
 * the host's 127.0.0.1, reached through each backend's gateway address (10.0.2.2 for usernet
 * and slirp4netns, the host's default gateway for pasta, which maps it to the host).
 *
 * Runs are interleaved so slow drifts of a shared machine hit every backend alike: each round
 * goes through every MTU, and within it through every backend (the order rotates per round),
 * each backend measured in both directions (guest→host, and host→guest with -R) on one fresh
 * namespace. The table holds medians (Gbit/s) over the rounds and the ratios usernet/slirp4netns
 * and usernet/pasta. Then usernet's RSS with 1,000 idle guest connections (target < 150 MiB).
 *
 * Output: printed, and written to bench/results/netns-matrix.md (git-ignored).
 * Options: --seconds N (5), --rounds N (3), --mtu LIST (1500,65520), --backends LIST,
 *          --idle N (1000), --no-rss.
 * Needs root (namespaces, taps). Traffic goes only to 127.0.0.1 and into namespaces made here;
 * every process started here is killed by PID and every namespace removed, whatever happens.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { withSandbox, type Sandbox } from '../test/helpers/netns';
import { stopChild } from '../test/helpers/child-process';
import { freePort } from '../test/helpers/host-servers';
import { repoRoot } from '../src/vm/paths';

type Backend = 'usernet' | 'slirp4netns' | 'pasta';
type Direction = 'guest→host' | 'host→guest';

const ROOT = repoRoot();
const CLI = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

interface Options {
  seconds: number;
  rounds: number;
  mtus: number[];
  backends: Backend[];
  idle: number;
  rss: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { seconds: 5, rounds: 3, mtus: [1500, 65520], backends: ['usernet', 'slirp4netns', 'pasta'], idle: 1000, rss: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = (): string => argv[++i] ?? '';
    if (a === '--seconds') o.seconds = Number(next());
    else if (a === '--rounds') o.rounds = Number(next());
    else if (a === '--mtu') o.mtus = next().split(',').map(Number);
    else if (a === '--backends') o.backends = next().split(',') as Backend[];
    else if (a === '--idle') o.idle = Number(next());
    else if (a === '--no-rss') o.rss = false;
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

interface Running {
  /** Where the guest reaches the host's loopback. */
  target: string;
  pid: number;
  stop(): Promise<void>;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function startBackend(sb: Sandbox, backend: Backend, ns: string, mtu: number): Promise<Running> {
  let argv: string[];
  switch (backend) {
    case 'usernet':
      argv = [process.execPath, CLI, 'run', '--netns', ns, '--configure', '--mtu', String(mtu)];
      break;
    case 'slirp4netns':
      argv = ['slirp4netns', '--configure', `--mtu=${mtu}`, '--netns-type=path', `/var/run/netns/${ns}`, 'tap0'];
      break;
    case 'pasta':
      // --runas 0:0: as root pasta otherwise switches to nobody and cannot join the namespace
      argv = ['pasta', '-f', '-q', '--runas', '0:0', '--config-net', '-m', String(mtu), '-t', 'none', '-u', 'none', '-T', 'none', '-U', 'none', '--netns', ns];
      break;
  }
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, USERNET_LOG: 'warn' } });
  child.on('error', () => {});
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const stop = (): Promise<void> => stopChild(child, { graceMs: 5000 });
  sb.defer(stop);
  const alive = (): boolean => child.exitCode === null && child.signalCode === null;
  const fail = (): never => {
    throw new Error(`${backend} exited early: ${out.slice(-2000)}`);
  };
  let target = '10.0.2.2';
  if (backend === 'usernet') {
    await waitFor('usernet ready', async () => (alive() ? /^ready\b/m.test(out) : fail()), 30_000);
  } else if (backend === 'slirp4netns') {
    await waitFor('slirp4netns configured', async () => {
      if (!alive()) fail();
      const r = await sb.exec(ns, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'tap0']);
      return r.code === 0 && r.stdout.includes('inet ');
    });
  } else {
    let via = '';
    await waitFor('pasta configured', async () => {
      if (!alive()) fail();
      const r = await sb.exec(ns, ['ip', '-4', 'route', 'show', 'default']);
      via = /default via (\S+)/.exec(r.stdout)?.[1] ?? '';
      return via !== '';
    });
    target = via;
  }
  return { target, pid: child.pid ?? 0, stop };
}

async function iperf(sb: Sandbox, ns: string, target: string, port: number, dir: Direction, seconds: number): Promise<number> {
  const args = ['iperf3', '-c', target, '-p', String(port), '-t', String(seconds), '-J', ...(dir === 'host→guest' ? ['-R'] : [])];
  const r = await sb.exec(ns, args, (seconds + 30) * 1000);
  try {
    const j = JSON.parse(r.stdout) as { error?: string; end?: { sum_received?: { bits_per_second?: number } } };
    if (j.error) {
      process.stderr.write(`  iperf3 error: ${j.error}\n`);
      return NaN;
    }
    return (j.end?.sum_received?.bits_per_second ?? NaN) / 1e9;
  } catch {
    process.stderr.write(`  iperf3 failed (${r.code}): ${r.stderr.trim().slice(0, 300)}\n`);
    return NaN;
  }
}

function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length & 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

function fmt(x: number, digits = 2): string {
  return Number.isFinite(x) ? x.toFixed(digits) : 'n/a';
}

/** RSS (bytes) of a process from /proc. */
function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

const IDLE_CLIENT = `
const net = require('net');
const [host, port, n] = [process.argv[1], +process.argv[2], +process.argv[3]];
let up = 0; const socks = [];
function one() {
  const s = net.connect(port, host, () => { if (++up === n) console.log('all ' + up); });
  s.on('error', (e) => { console.log('error ' + e.code); process.exit(1); });
  socks.push(s);
}
let i = 0; (function more() { for (let k = 0; k < 50 && i < n; k++, i++) one(); if (i < n) setTimeout(more, 5); })();
setInterval(() => {}, 1000);
`;

async function measureRss(sb: Sandbox, idle: number): Promise<{ baseline: number; loaded: number; established: number }> {
  const ns = await sb.netns('rss');
  const held: net.Socket[] = [];
  const server = net.createServer((s) => {
    held.push(s);
    s.on('error', () => {});
  });
  server.maxConnections = idle + 100;
  await new Promise<void>((r) => server.listen({ port: 0, host: '127.0.0.1', backlog: 2048 }, r));
  sb.defer(
    () =>
      new Promise<void>((r) => {
        for (const s of held) s.destroy();
        server.close(() => r());
      }),
  );
  const port = (server.address() as net.AddressInfo).port;
  const u = await startBackend(sb, 'usernet', ns, 65520);
  await sleep(500);
  const baseline = rssOf(u.pid);
  const client = sb.spawn(ns, ['prlimit', '--nofile=8192', process.execPath, '-e', IDLE_CLIENT, u.target, String(port), String(idle)]);
  let out = '';
  client.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(`${idle} idle connections`, async () => {
    if (out.includes('error')) throw new Error(`idle client: ${out}`);
    return out.includes(`all ${idle}`) && held.length >= idle;
  }, 120_000);
  await sleep(2000); // let timers, GC settle
  const loaded = rssOf(u.pid);
  await stopChild(client, { graceMs: 5000 });
  await u.stop();
  return { baseline, loaded, established: held.length };
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) {
    process.stdout.write('netns matrix: skipped (needs root for network namespaces and taps)\n');
    return;
  }
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run make build`);
  const backends = o.backends.filter((b) => {
    if (b === 'usernet') return true;
    const ok = ['/usr/bin/' + b, '/usr/sbin/' + b, '/bin/' + b].some(existsSync);
    if (!ok) process.stdout.write(`netns matrix: ${b} not installed, left out\n`);
    return ok;
  });
  const results = new Map<string, number[]>();
  const key = (b: Backend, mtu: number, d: Direction): string => `${b}|${mtu}|${d}`;
  let rss: { baseline: number; loaded: number; established: number } | null = null;

  await withSandbox(async (sb) => {
    const port = await freePort();
    const server = sb.spawn(null, ['iperf3', '-s', '-B', '127.0.0.1', '-p', String(port), '--forceflush']);
    let sout = '';
    server.stdout?.on('data', (d: Buffer) => (sout += d.toString()));
    await waitFor('iperf3 -s', async () => sout.includes('Server listening'));
    process.stdout.write(`netns matrix: ${o.rounds} rounds × MTU ${o.mtus.join('/')} × ${backends.join(', ')} × both directions, ${o.seconds} s each\n`);
    for (let round = 0; round < o.rounds; round++) {
      for (const mtu of o.mtus) {
        const order = backends.map((_, i) => backends[(i + round) % backends.length]);
        for (const b of order) {
          const ns = await sb.netns(b.slice(0, 5));
          let run: Running;
          try {
            run = await startBackend(sb, b, ns, mtu);
          } catch (err) {
            process.stderr.write(`  ${b} mtu ${mtu}: ${(err as Error).message}\n`);
            continue;
          }
          for (const d of ['guest→host', 'host→guest'] as Direction[]) {
            const g = await iperf(sb, ns, run.target, port, d, o.seconds);
            const k = key(b, mtu, d);
            results.set(k, [...(results.get(k) ?? []), g]);
            process.stdout.write(`  round ${round + 1} mtu ${mtu} ${b.padEnd(11)} ${d}: ${fmt(g)} Gbit/s\n`);
          }
          await run.stop();
          await sb.exec(null, ['ip', 'netns', 'del', ns]);
        }
      }
    }
    if (o.rss) rss = await measureRss(sb, o.idle);
  });

  const lines: string[] = [];
  lines.push('# netns matrix: iperf3 through usernet, slirp4netns and pasta');
  lines.push('');
  lines.push(`${new Date().toISOString()} · ${o.rounds} interleaved rounds · ${o.seconds} s runs · medians in Gbit/s · guest = the kernel in a network namespace, server = iperf3 on the host's 127.0.0.1`);
  lines.push('');
  const hasS = backends.includes('slirp4netns');
  const hasP = backends.includes('pasta');
  lines.push(`| MTU | direction | ${backends.join(' | ')} |${hasS ? ' usernet/slirp4netns |' : ''}${hasP ? ' usernet/pasta |' : ''}`);
  lines.push(`|---|---|${backends.map(() => '---:').join('|')}|${hasS ? '---:|' : ''}${hasP ? '---:|' : ''}`);
  for (const mtu of o.mtus) {
    for (const d of ['guest→host', 'host→guest'] as Direction[]) {
      const med = (b: Backend): number => median(results.get(key(b, mtu, d)) ?? []);
      const u = med('usernet');
      lines.push(
        `| ${mtu} | ${d} | ${backends.map((b) => fmt(med(b))).join(' | ')} |${hasS ? ` ${fmt(u / med('slirp4netns'))} |` : ''}${hasP ? ` ${fmt(u / med('pasta'))} |` : ''}`,
      );
    }
  }
  if (rss) {
    const r = rss as { baseline: number; loaded: number; established: number };
    const mib = (x: number): string => (x / 1048576).toFixed(1);
    lines.push('');
    lines.push(`usernet RSS: ${mib(r.baseline)} MiB idle, ${mib(r.loaded)} MiB with ${r.established} idle guest connections (target < 150 MiB: ${r.loaded < 150 * 1048576 ? 'met' : 'NOT met'})`);
  }
  const text = lines.join('\n') + '\n';
  mkdirSync(path.join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(path.join(ROOT, 'bench', 'results', 'netns-matrix.md'), text);
  process.stdout.write('\n' + text);
}

main().catch((err: unknown) => {
  process.stderr.write(`netns matrix failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
