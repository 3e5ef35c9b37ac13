/**
 * What the meter costs: iperf3 through `usernet run --netns` with the meter on (the default)
 * and with USERNET_METER=off (every Stage counting method a no-op, copyBytes a bare copy —
 * meter/meter.ts), both directions, rounds interleaved (on/off order alternating) so drifts of
 * a shared machine hit both alike. Reports medians and the throughput gained by switching the
 * meter off (the budget: < 3 %).
 *
 * Guest = the kernel in a fresh network namespace; server = `iperf3 -s` on the host's
 * 127.0.0.1, reached through the gateway 10.0.2.2. Options: --seconds N (5), --rounds N (5),
 * --mtu N (65520), --tcp-host node|fd (usernet's default when absent). Prints a Markdown table
 * and writes it to bench/results/meter-overhead.md. Needs root; everything started here is
 * killed by PID and every namespace removed.
 *
 * On a shared machine throughput swings by tens of percent from run to run, far more than the
 * effect measured; so each run also records usernet's own CPU time (utime + stime from
 * /proc/PID/stat) per byte transferred, which contention disturbs much less: the meter's cost
 * is the difference in CPU per byte (usernet is CPU-bound in these runs, so this is also what
 * it costs in throughput on an idle machine).
 *
 * And an estimate that noise cannot touch: an 8 MiB transfer each way through an in-process
 * usernet (netns tap + NAT stack) with every Stage counting method wrapped to count its calls,
 * times the cost of one call measured in a tight loop (meter on, and the no-op it becomes off):
 * the meter's CPU per payload byte, next to usernet's own from the iperf3 runs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { withSandbox, type Sandbox } from '../test/helpers/netns';
import { copyBytes, globalMeter, Meter, Stage } from '../src/meter/meter';
import { NetnsTapPort } from '../src/transports/netns-tap';
import { createNatStack } from '../src/backends/nat';
import { join } from '../src/link/port';
import { stopChild } from '../test/helpers/child-process';
import { freePort } from '../test/helpers/host-servers';
import { repoRoot } from '../src/vm/paths';

const ROOT = repoRoot();
const CLI = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

interface Options {
  seconds: number;
  rounds: number;
  mtu: number;
  tcpHost: string | null;
  estimate: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { seconds: 5, rounds: 5, mtu: 65520, tcpHost: null, estimate: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = (): string => argv[++i] ?? '';
    if (a === '--seconds') o.seconds = Number(next());
    else if (a === '--rounds') o.rounds = Number(next());
    else if (a === '--mtu') o.mtu = Number(next());
    else if (a === '--tcp-host') o.tcpHost = next();
    else if (a === '--no-estimate') o.estimate = false;
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(p: ChildProcess, re: RegExp, what: string): Promise<void> {
  let text = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} not ready: ${text}`)), 30_000);
    const on = (d: Buffer): void => {
      text += d.toString();
      if (re.test(text)) {
        clearTimeout(timer);
        resolve();
      }
    };
    p.stdout?.on('data', on);
    p.stderr?.on('data', on);
    p.once('exit', (c) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${c}): ${text}`));
    });
  });
}

/** CPU seconds (user + system) the process `pid` used so far. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in USER_HZ (100)
}

interface Run {
  gbps: number;
  /** usernet CPU ns per byte received. */
  cpuNsPerByte: number;
}

/** One iperf3 run through a fresh usernet with the meter `on`. */
async function measure(sb: Sandbox, o: Options, meterOn: boolean, reverse: boolean): Promise<Run> {
  const ns = await sb.netns('mo');
  const env: NodeJS.ProcessEnv = { ...process.env, USERNET_LOG: 'warn', USERNET_METER: meterOn ? 'on' : 'off' };
  if (o.tcpHost) env.USERNET_TCP_HOST = o.tcpHost;
  const un = spawn(process.execPath, [CLI, 'run', '--netns', ns, '--configure', '--mtu', String(o.mtu)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const port = await freePort();
  const srv = spawn('iperf3', ['-s', '-B', '127.0.0.1', '-p', String(port), '-1', '--forceflush'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    await waitFor(un, /^ready\b/m, 'usernet');
    await waitFor(srv, /Server listening/, 'iperf3 -s');
    const cpu0 = cpuSeconds(un.pid!);
    const r = await sb.exec(ns, ['iperf3', '-c', '10.0.2.2', '-p', String(port), '-t', String(o.seconds), '-J', ...(reverse ? ['-R'] : [])], (o.seconds + 30) * 1000);
    const cpu1 = cpuSeconds(un.pid!);
    const j = JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second: number; bytes: number } }; error?: string };
    if (!j.end?.sum_received) throw new Error(`iperf3: ${j.error ?? r.stderr}`);
    return { gbps: j.end.sum_received.bits_per_second / 1e9, cpuNsPerByte: ((cpu1 - cpu0) * 1e9) / j.end.sum_received.bytes };
  } finally {
    await stopChild(srv, { graceMs: 5000 });
    await stopChild(un, { graceMs: 5000 });
    await sleep(200);
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** ns per call of the counting methods and of a start/stop pair, in a tight loop (this process: meter on). */
function callCost(): { counting: number; timing: number } {
  const st = new Meter().stage('x');
  const src = new Uint8Array(64);
  const dst = new Uint8Array(64);
  const N = 2_000_000;
  const loop = (): void => {
    for (let i = 0; i < N; i++) {
      st.pass(1, 1500);
      st.copied(1500);
      st.rewrote(3);
      copyBytes(st, src, dst, 0);
    }
  };
  const plain = (): void => {
    for (let i = 0; i < N; i++) dst.set(src, 0);
  };
  loop();
  plain();
  let t = process.hrtime.bigint();
  loop();
  const withMeter = Number(process.hrtime.bigint() - t);
  t = process.hrtime.bigint();
  plain();
  const without = Number(process.hrtime.bigint() - t);
  const timing = (): void => {
    for (let i = 0; i < N; i++) st.stop(st.start());
  };
  timing();
  t = process.hrtime.bigint();
  timing();
  const timed = Number(process.hrtime.bigint() - t);
  return { counting: Math.max(0, withMeter - without) / N / 4, timing: timed / N };
}

interface CallCounts {
  way: string;
  counting: number;
  timing: number;
  bytes: number;
}

/** Counting calls and start/stop pairs per payload byte for SIZE bytes each way, in process. */
async function countCalls(): Promise<CallCounts[]> {
  const SIZE = 8 << 20;
  const counts = { counting: 0, timing: 0 };
  const P = Stage.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  const saved: Record<string, (...a: unknown[]) => unknown> = {};
  for (const k of ['pass', 'copied', 'copiedMany', 'rewrote']) {
    saved[k] = P[k];
    P[k] = function (this: Stage, ...a: unknown[]) {
      counts.counting++;
      return saved[k].apply(this, a);
    };
  }
  saved.start = P.start;
  P.start = function (this: Stage) {
    counts.timing++;
    return saved.start.apply(this);
  };
  const out: CallCounts[] = [];
  try {
    await withSandbox(async (sb) => {
      const ns = await sb.netns('mocalls');
      const tap = NetnsTapPort.open({ netns: ns, ifName: 'tap0', meter: globalMeter });
      const stack = createNatStack({ config: {}, meter: globalMeter, checksumOffload: true, tsoOffload: true });
      sb.defer(async () => {
        await stack.close();
        await tap.close();
      });
      stack.setOffloads({ checksum: true, tso: true });
      join(tap, stack);
      for (const a of [
        ['ip', 'link', 'set', 'lo', 'up'],
        ['ip', 'addr', 'add', '10.0.2.15/24', 'dev', 'tap0'],
        ['ip', 'link', 'set', 'tap0', 'mtu', '65520', 'up'],
        ['ip', 'route', 'add', 'default', 'via', '10.0.2.2'],
      ]) await sb.exec(ns, a);
      const sink = net.createServer((c) => {
        c.resume();
        c.on('end', () => c.end());
      });
      const source = net.createServer((c) => c.end(Buffer.alloc(SIZE)));
      await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
      await new Promise<void>((r) => source.listen(0, '127.0.0.1', r));
      sb.defer(() => {
        sink.close();
        source.close();
      });
      const ways: [string, string][] = [
        ['guest→host', `head -c ${SIZE} /dev/zero > /dev/tcp/10.0.2.2/${(sink.address() as net.AddressInfo).port}`],
        ['host→guest', `cat < /dev/tcp/10.0.2.2/${(source.address() as net.AddressInfo).port} | wc -c`],
      ];
      for (const [way, cmd] of ways) {
        counts.counting = counts.timing = 0;
        const r = await sb.exec(ns, ['bash', '-c', cmd], 120_000);
        if (r.code !== 0) throw new Error(`${way}: ${r.stderr}`);
        await sleep(200);
        out.push({ way, counting: counts.counting, timing: counts.timing, bytes: SIZE });
      }
    });
  } finally {
    for (const k of Object.keys(saved)) P[k] = saved[k];
  }
  return out;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const results: Record<string, number[]> = {};
  const cpu: Record<string, number[]> = {};
  const key = (on: boolean, rev: boolean): string => `${on ? 'on' : 'off'}/${rev ? 'rx' : 'tx'}`;
  await withSandbox(async (sb) => {
    for (let round = 0; round < o.rounds; round++) {
      const order = round % 2 === 0 ? [true, false] : [false, true];
      for (const rev of [false, true]) {
        for (const on of order) {
          const m = await measure(sb, o, on, rev);
          (results[key(on, rev)] ??= []).push(m.gbps);
          (cpu[key(on, rev)] ??= []).push(m.cpuNsPerByte);
          process.stderr.write(`round ${round + 1}: meter ${on ? 'on ' : 'off'} ${rev ? 'host→guest' : 'guest→host'} ${m.gbps.toFixed(2)} Gbit/s, usernet ${m.cpuNsPerByte.toFixed(3)} CPU ns/B\n`);
        }
      }
    }
  });
  const rows: string[] = [];
  for (const rev of [false, true]) {
    const on = median(results[key(true, rev)]);
    const off = median(results[key(false, rev)]);
    const gain = (off / on - 1) * 100;
    const cOn = median(cpu[key(true, rev)]);
    const cOff = median(cpu[key(false, rev)]);
    const cost = (cOn / cOff - 1) * 100;
    rows.push(
      `| ${rev ? 'host→guest' : 'guest→host'} | ${on.toFixed(2)} | ${off.toFixed(2)} | ${gain >= 0 ? '+' : ''}${gain.toFixed(1)} % | ${cOn.toFixed(3)} | ${cOff.toFixed(3)} | ${cost >= 0 ? '+' : ''}${cost.toFixed(1)} % | ${results[key(true, rev)].map((x) => x.toFixed(2)).join(' ')} | ${results[key(false, rev)].map((x) => x.toFixed(2)).join(' ')} |`,
    );
  }
  const md = [
    '# What the meter costs: iperf3 through usernet --netns, meter on vs USERNET_METER=off',
    '',
    `${new Date().toISOString()} · ${o.rounds} interleaved rounds · ${o.seconds} s runs · MTU ${o.mtu} · host sockets: ${o.tcpHost ?? 'default'} · medians in Gbit/s`,
    '',
    `load average at the end: ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`,
    '',
    '| direction | Gbit/s, meter on | meter off | throughput gained off | usernet CPU ns/B, on | off | CPU per byte the meter adds | runs on (Gbit/s) | runs off |',
    '|---|---:|---:|---:|---:|---:|---:|---|---|',
    ...rows,
    '',
  ].join('\n');
  let estimate = '';
  if (o.estimate) {
    const cost = callCost();
    const calls = await countCalls();
    const lines = calls.map((c) => {
      const cpu = median(cpu_(c.way));
      // cost.timing is the average per start/stop pair, sampling included (one pair in 8 reads the clock)
      const meterNs = (c.counting * cost.counting + c.timing * cost.timing) / c.bytes;
      return `| ${c.way} | ${((c.counting / c.bytes) * 1048576).toFixed(0)} | ${((c.timing / c.bytes) * 1048576).toFixed(0)} | ${meterNs.toFixed(4)} | ${cpu.toFixed(3)} | ${((meterNs / cpu) * 100).toFixed(2)} % |`;
    });
    estimate = [
      '',
      `Estimate: counting calls and timer pairs per MiB in an in-process NAT transfer (netns tap, TSO), times their cost in a tight loop on this machine (${cost.counting.toFixed(1)} ns per counting call, ${cost.timing.toFixed(0)} ns per start/stop pair on average, one pair in 8 reading the clock), against usernet's CPU per byte with the meter off from the runs above:`,
      '',
      '| direction | counting calls / MiB | start/stop pairs / MiB | meter CPU ns/B | usernet CPU ns/B (off) | the meter\'s share |',
      '|---|--:|--:|--:|--:|--:|',
      ...lines,
      '',
    ].join('\n');
  }
  function cpu_(way: string): number[] {
    return cpu[key(false, way === 'host→guest')];
  }
  const full = md + estimate;
  process.stdout.write(full);
  const dir = path.join(ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'meter-overhead.md'), full);
}

main().catch((err: unknown) => {
  process.stderr.write(`meter-overhead: ${String((err as Error).stack ?? err)}\n`);
  process.exitCode = 1;
});
