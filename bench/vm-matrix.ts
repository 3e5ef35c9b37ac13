/**
 * The VM matrix: iperf3 guest→host and host→guest with a real QEMU guest (the test guest, TCG,
 * same image, same flags) on
 *   usernet   usernet's virtio-net ring over vhost-user, NAT stack (in this process; src/cli/vm-session.ts)
 *   libslirp  QEMU's `-netdev user`, QEMU's virtio-net
 *   passt     Debian's passt over `-netdev stream`, QEMU's virtio-net, guest MTU 65520 (passt's DHCP)
 * Interleaved: each round boots one guest per backend (order rotated per round), and each guest
 * runs both directions back to back (bench/vm-iperf.ts), so slow drifts of a shared machine hit
 * every backend alike. The table holds medians (Gbit/s) over the rounds and the ratios
 * usernet/libslirp and usernet/passt, and the bar of the VM issue: usernet ≥ passt both ways and
 * ≥ 3× libslirp guest→host.
 *
 * Output: printed, and written to bench/results/vm-matrix.md (git-ignored).
 * Options: --rounds N (3), --seconds N (8), --backends LIST (usernet,libslirp,passt),
 *          --memory MiB (512), --usernet-mtu N (1500).
 * Needs root (QEMU, the guest image: `make guest`). Traffic goes only to 127.0.0.1 (iperf3 -s);
 * every process started here is killed by PID.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runGuestOnUsernet } from '../src/cli/vm-session';
import { Meter } from '../src/meter/meter';
import { repoRoot, runGuest, isGuestError, type GuestResult } from '../src/vm';
import { startIperf3Server } from '../test/helpers/host-servers';
import { libslirpAnchor, passtAnchor } from './anchors';
import { DIRECTIONS, fmtGbps, fmtRatio, guestBenchCommand, median, parseGuestBench, type Direction } from './vm-iperf';

type Backend = 'usernet' | 'libslirp' | 'passt';
const ALL: Backend[] = ['usernet', 'libslirp', 'passt'];

interface Options {
  rounds: number;
  seconds: number;
  backends: Backend[];
  memory: number;
  usernetMtu: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { rounds: 3, seconds: 8, backends: ALL, memory: 512, usernetMtu: 1500 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = (): string => argv[++i] ?? '';
    if (a === '--rounds') o.rounds = Number(next());
    else if (a === '--seconds') o.seconds = Number(next());
    else if (a === '--backends') o.backends = next().split(',') as Backend[];
    else if (a === '--memory') o.memory = Number(next());
    else if (a === '--usernet-mtu') o.usernetMtu = Number(next());
    else throw new Error(`unknown option ${a}`);
  }
  for (const b of o.backends) if (!ALL.includes(b)) throw new Error(`unknown backend ${b} (${ALL.join(', ')})`);
  return o;
}

const LABEL: Record<Backend, string> = {
  usernet: 'usernet (vhost-user, NAT)',
  libslirp: 'QEMU -netdev user (libslirp)',
  passt: 'passt (-netdev stream, MTU 65520)',
};

type Sample = Partial<Record<Direction, number>>;

async function measure(backend: Backend, o: Options, iperfPort: number, dir: string): Promise<Sample> {
  const timeoutMs = 90_000 + 4 * o.seconds * 1000;
  const cmd = (host: string): string => guestBenchCommand({ host, iperfPort, seconds: o.seconds });
  let r: GuestResult;
  if (backend === 'usernet') {
    r = await runGuestOnUsernet({ nic: 'virtio', net: 'nat', nat: { mtu: o.usernetMtu }, meter: new Meter(), command: cmd('10.0.2.2'), timeoutMs, memoryMiB: o.memory });
  } else {
    const anchor = backend === 'libslirp' ? libslirpAnchor() : await passtAnchor(path.join(dir, 'passt.sock'));
    try {
      r = await runGuest({ network: anchor.network, command: cmd(anchor.host), timeoutMs, memoryMiB: o.memory });
    } finally {
      await anchor.stop();
    }
  }
  const res = parseGuestBench(r.output);
  for (const d of DIRECTIONS) {
    if (res.gbps[d] === undefined) process.stderr.write(`  ${backend} ${d}: no result\n${r.output.split('\n').slice(-15).join('\n')}\n`);
  }
  return res.gbps;
}

function machine(): string {
  const qemu = (() => {
    try {
      return execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).split('\n')[0];
    } catch {
      return 'qemu ?';
    }
  })();
  const passt = (() => {
    try {
      return execFileSync('dpkg-query', ['-W', '-f=${Version}', 'passt'], { encoding: 'utf8' });
    } catch {
      return '?';
    }
  })();
  return `${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), Linux ${os.release()}, ${qemu}, passt ${passt}, Node ${process.version}`;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'usernet-vm-matrix-'));
  const iperf = await startIperf3Server();
  const samples = new Map<Backend, Sample[]>(o.backends.map((b) => [b, []]));
  const started = Date.now();
  try {
    for (let round = 0; round < o.rounds; round++) {
      const order = o.backends.map((_, i) => o.backends[(i + round) % o.backends.length]);
      for (const b of order) {
        process.stdout.write(`round ${round + 1}/${o.rounds} ${b}: `);
        let s: Sample = {};
        try {
          s = await measure(b, o, iperf.port, dir);
        } catch (err) {
          process.stderr.write(`\n  ${b} failed: ${isGuestError(err) ? err.describe(10) : (err as Error).message}\n`);
        }
        samples.get(b)!.push(s);
        process.stdout.write(`guest→host ${fmtGbps(s['guest→host'])}  host→guest ${fmtGbps(s['host→guest'])} Gbit/s\n`);
      }
    }
  } finally {
    await iperf.close();
    rmSync(dir, { recursive: true, force: true });
  }

  const med = (b: Backend, d: Direction): number => median(samples.get(b)!.map((s) => s[d]).filter((x): x is number => x !== undefined));
  const has = (b: Backend): boolean => o.backends.includes(b);
  const lines: string[] = [];
  lines.push('# VM matrix: iperf3 with the test guest (TCG) on usernet, libslirp and passt');
  lines.push('');
  lines.push(`${o.rounds} interleaved rounds, iperf3 ${o.seconds} s per direction, one guest boot per backend per round, ${o.memory} MiB, 1 vCPU; medians in Gbit/s (receiver side).`);
  lines.push(`Machine: ${machine()}. Run took ${Math.round((Date.now() - started) / 1000)} s.`);
  lines.push('');
  const ratioCols = (['libslirp', 'passt'] as const).filter((b) => has('usernet') && has(b));
  lines.push(`| direction | ${o.backends.map((b) => LABEL[b]).join(' | ')} |${ratioCols.map((b) => ` usernet/${b} |`).join('')}`);
  lines.push(`|---|${o.backends.map(() => '---:').join('|')}|${ratioCols.map(() => '---:|').join('')}`);
  for (const d of DIRECTIONS) {
    lines.push(
      `| ${d} | ${o.backends.map((b) => fmtGbps(med(b, d))).join(' | ')} |${ratioCols.map((b) => ` ${fmtRatio(med('usernet', d) / med(b, d))} |`).join('')}`,
    );
  }
  lines.push('');
  lines.push('Per round (guest→host / host→guest, Gbit/s):');
  lines.push('');
  for (const b of o.backends) {
    lines.push(`- ${LABEL[b]}: ${samples.get(b)!.map((s) => `${fmtGbps(s['guest→host'])} / ${fmtGbps(s['host→guest'])}`).join(', ')}`);
  }
  if (has('usernet')) {
    lines.push('');
    lines.push('Bar (VM issue): usernet vhost-user ≥ passt both ways, ≥ 3× libslirp guest→host.');
    lines.push('');
    const yes = (ok: boolean): string => (ok ? 'met' : 'NOT met');
    if (has('passt')) {
      for (const d of DIRECTIONS) lines.push(`- usernet ≥ passt ${d}: ${yes(med('usernet', d) >= med('passt', d))} (${fmtRatio(med('usernet', d) / med('passt', d))})`);
    }
    if (has('libslirp')) {
      const r = med('usernet', 'guest→host') / med('libslirp', 'guest→host');
      lines.push(`- usernet ≥ 3× libslirp guest→host: ${yes(r >= 3)} (${fmtRatio(r)})`);
    }
  }
  const text = lines.join('\n') + '\n';
  process.stdout.write('\n' + text);
  const out = path.join(repoRoot(), 'bench', 'results');
  mkdirSync(out, { recursive: true });
  writeFileSync(path.join(out, 'vm-matrix.md'), text);
  process.stdout.write(`\nwritten to ${path.relative(process.cwd(), path.join(out, 'vm-matrix.md'))}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`vm-matrix: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
