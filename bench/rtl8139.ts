/**
 * The RTL8139's cost per frame next to virtio-net's, on the same NAT backend, with the test guest
 * (TCG) running iperf3 both ways (bench/vm-iperf.ts):
 *   rtl8139         usernet's RTL8139 over vfio-user (QEMU 11), the guest's 8139too driver
 *   rtl8139-pinned  the same, QEMU and usernet on one CPU (`usernet vm --cpus`, vm/cpu-affinity.ts)
 *   rtl8139cp       usernet's RTL8139C+ over vfio-user (QEMU 11), the guest's 8139cp driver: C+
 *                   mode descriptor rings in guest memory, TSO/checksum offloads from the guest
 *   virtio          usernet's virtio-net over vhost-user
 *   qemu-rtl8139    QEMU's own in-process RTL8139 model (revision 0x20: the guest binds 8139cp,
 *                   a descriptor-ring driver) over -netdev stream into the same NAT — what an
 *                   RTL8139 costs when no register access leaves QEMU
 * Per direction, from the meter (snapshots taken as the guest's step markers arrive): throughput
 * (receiver side), frames the NIC moved each way, and per frame: vfio-user messages, the ones
 * the vCPU waits on (`vfio-user.wait`: register reads, INTx unmasks — each a socket round trip
 * with three thread hand-offs), interrupts, and copies in the device. "µs/frame" is the command
 * wall time over all frames the NIC moved; "µs/wait" is the same time over the waits: the
 * ceiling of what the vfio-user path leaves for everything else.
 *
 * Output: printed, and written to bench/results/rtl8139.md (git-ignored).
 * Options: --seconds N (5), --rounds N (1), --rows LIST (all four), --cpus LIST (the pinned row's
 * CPUs, default 0). Needs root, QEMU 11 (`make qemu11`), the guest image. Traffic goes only to
 * 127.0.0.1 (iperf3 -s); every process started here is killed by PID.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { runGuestOnUsernet } from '../src/cli/vm-session';
import { Meter } from '../src/meter/meter';
import {
  DEVICE_DMA,
  DEVICE_FIFO,
  GUEST_RX,
  GUEST_TX,
  QEMU_STREAM_READ,
  QEMU_STREAM_WRITE,
  VFIO_USER_IRQ,
  VFIO_USER_MSG,
  VFIO_USER_WAIT,
} from '../src/meter/stages';
import { haveQemu, isGuestError, repoRoot } from '../src/vm';
import { startIperf3Server } from '../test/helpers/host-servers';
import { guestBenchCommand, median, parseGuestBench, type Direction } from './vm-iperf';

type Row = 'rtl8139' | 'rtl8139-pinned' | 'rtl8139cp' | 'virtio' | 'qemu-rtl8139';
const ALL: Row[] = ['rtl8139', 'rtl8139-pinned', 'rtl8139cp', 'virtio', 'qemu-rtl8139'];
/** Rows whose NIC is usernet's over vfio-user. */
const VFIO: ReadonlySet<Row> = new Set<Row>(['rtl8139', 'rtl8139-pinned', 'rtl8139cp']);

const LABEL: Record<Row, string> = {
  rtl8139: 'usernet RTL8139 (vfio-user, 8139too)',
  'rtl8139-pinned': 'usernet RTL8139, QEMU + usernet on one CPU',
  rtl8139cp: 'usernet RTL8139C+ (vfio-user, 8139cp)',
  virtio: 'usernet virtio-net (vhost-user)',
  'qemu-rtl8139': "QEMU's RTL8139 in-process (8139cp, -netdev stream)",
};

interface Options {
  seconds: number;
  rounds: number;
  rows: Row[];
  cpus: string;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { seconds: 5, rounds: 1, rows: ALL, cpus: '0' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = (): string => argv[++i] ?? '';
    if (a === '--seconds') o.seconds = Number(next());
    else if (a === '--rounds') o.rounds = Number(next());
    else if (a === '--rows') o.rows = next().split(',') as Row[];
    else if (a === '--cpus') o.cpus = next();
    else throw new Error(`unknown option ${a}`);
  }
  for (const r of o.rows) if (!ALL.includes(r)) throw new Error(`unknown row ${r} (${ALL.join(', ')})`);
  return o;
}

/** The meter counters one step is measured with. */
interface Counts {
  t: number;
  fromGuest: number;
  toGuest: number;
  msgs: number;
  waits: number;
  irqs: number;
  deviceCopies: number;
}

function counts(meter: Meter, row: Row): Counts {
  const s = (name: string) => meter.stage(name).snapshot();
  const inProcess = row === 'qemu-rtl8139';
  return {
    t: performance.now(),
    fromGuest: s(inProcess ? QEMU_STREAM_READ : GUEST_TX).frames,
    toGuest: s(inProcess ? QEMU_STREAM_WRITE : GUEST_RX).frames,
    msgs: s(VFIO_USER_MSG).frames,
    waits: s(VFIO_USER_WAIT).frames,
    irqs: s(VFIO_USER_IRQ).frames,
    deviceCopies: s(DEVICE_DMA).copies + s(DEVICE_FIFO).copies,
  };
}

interface StepResult {
  mbps: number;
  frames: number;
  framesPerS: number;
  msgsPerFrame: number;
  waitsPerFrame: number;
  irqsPerFrame: number;
  usPerFrame: number;
  usPerWait: number;
  copiesPerRxFrame: number;
}

function diff(a: Counts, b: Counts, mbps: number): StepResult {
  const frames = b.fromGuest - a.fromGuest + (b.toGuest - a.toGuest);
  const us = (b.t - a.t) * 1000;
  const waits = b.waits - a.waits;
  const per = (x: number): number => (frames > 0 ? x / frames : NaN);
  return {
    mbps,
    frames,
    framesPerS: frames / (us / 1e6),
    msgsPerFrame: per(b.msgs - a.msgs),
    waitsPerFrame: per(waits),
    irqsPerFrame: per(b.irqs - a.irqs),
    usPerFrame: per(us),
    usPerWait: waits > 0 ? us / waits : NaN,
    copiesPerRxFrame: b.toGuest > a.toGuest ? (b.deviceCopies - a.deviceCopies) / (b.toGuest - a.toGuest) : NaN,
  };
}

async function measure(row: Row, o: Options, iperfPort: number): Promise<Partial<Record<Direction, StepResult>>> {
  const meter = new Meter();
  const marks = new Map<string, Counts>();
  const r = await runGuestOnUsernet({
    nic: row === 'virtio' ? 'virtio' : row === 'qemu-rtl8139' ? 'qemu-rtl8139' : row === 'rtl8139cp' ? 'rtl8139cp' : 'rtl8139',
    net: 'nat',
    meter,
    cpus: row === 'rtl8139-pinned' ? o.cpus : undefined,
    command: guestBenchCommand({ host: '10.0.2.2', iperfPort, seconds: o.seconds }),
    timeoutMs: 120_000 + 4 * o.seconds * 1000,
    onLine: (line, phase) => {
      const m = phase === 'command' ? /^@@step (\w+)$/.exec(line) : null;
      if (m) marks.set(m[1], counts(meter, row));
    },
  });
  const res = parseGuestBench(r.output);
  const out: Partial<Record<Direction, StepResult>> = {};
  const up = marks.get('up');
  const down = marks.get('down');
  const done = marks.get('done');
  const upMbps = res.gbps['guest→host'];
  const downMbps = res.gbps['host→guest'];
  if (up && down && upMbps !== undefined) out['guest→host'] = diff(up, down, upMbps * 1000);
  if (down && done && downMbps !== undefined) out['host→guest'] = diff(down, done, downMbps * 1000);
  if (!out['guest→host'] || !out['host→guest']) process.stderr.write(`  ${row}: a step failed\n${r.output.split('\n').slice(-15).join('\n')}\n`);
  return out;
}

const f = (x: number | undefined, digits = 2): string => (x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(digits));

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (!haveQemu('v11')) o.rows = o.rows.filter((r) => r === 'virtio' || r === 'qemu-rtl8139');
  const iperf = await startIperf3Server();
  const samples = new Map<Row, Array<Partial<Record<Direction, StepResult>>>>(o.rows.map((r) => [r, []]));
  const started = Date.now();
  try {
    for (let round = 0; round < o.rounds; round++) {
      for (const row of o.rows) {
        process.stdout.write(`round ${round + 1}/${o.rounds} ${row}: `);
        try {
          const s = await measure(row, o, iperf.port);
          samples.get(row)!.push(s);
          process.stdout.write(`guest→host ${f(s['guest→host']?.mbps, 1)}  host→guest ${f(s['host→guest']?.mbps, 1)} Mbit/s\n`);
        } catch (err) {
          process.stdout.write(`failed: ${isGuestError(err) ? err.describe(10) : (err as Error).message}\n`);
        }
      }
    }
  } finally {
    await iperf.close();
  }

  // per row and direction: the round with the median throughput
  const pick = (row: Row, d: Direction): StepResult | undefined => {
    const xs = samples.get(row)!.map((s) => s[d]).filter((x): x is StepResult => x !== undefined);
    if (xs.length === 0) return undefined;
    const m = median(xs.map((x) => x.mbps));
    return xs.reduce((best, x) => (Math.abs(x.mbps - m) < Math.abs(best.mbps - m) ? x : best));
  };
  const lines: string[] = [];
  lines.push('# RTL8139 vs virtio-net: cost per frame through usernet\'s NAT (test guest, TCG)');
  lines.push('');
  lines.push(`iperf3 ${o.seconds} s per direction, ${o.rounds} round(s) (the median round shown), 1 vCPU, MTU 1500 for the RTL8139 rows. A frame is what the NIC moved: for 8139cp a guest TSO super-frame counts once.`);
  lines.push(`Machine: ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), Linux ${os.release()}, Node ${process.version}. Run took ${Math.round((Date.now() - started) / 1000)} s.`);
  lines.push('');
  lines.push('| NIC | direction | Mbit/s | frames/s | vfio-user msgs/frame | vCPU waits/frame | interrupts/frame | µs/frame | µs/wait | device copies/received frame |');
  lines.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const row of o.rows) {
    for (const d of ['guest→host', 'host→guest'] as const) {
      const s = pick(row, d);
      const vfio = VFIO.has(row);
      lines.push(
        `| ${LABEL[row]} | ${d} | ${f(s?.mbps, 1)} | ${f(s?.framesPerS, 0)} | ${vfio ? f(s?.msgsPerFrame) : '—'} | ${vfio ? f(s?.waitsPerFrame) : '—'} | ${vfio ? f(s?.irqsPerFrame) : '—'} | ${f(s?.usPerFrame, 0)} | ${vfio ? f(s?.usPerWait, 0) : '—'} | ${row === 'qemu-rtl8139' ? '—' : f(s?.copiesPerRxFrame)} |`,
      );
    }
  }
  lines.push('');
  lines.push('Bar (RTL8139 issue): ≥ 100 Mbit/s both ways through NAT. Every register read of 8139too is a vfio-user round trip that stalls the vCPU;');
  lines.push('"µs/wait" is the wall time per such wait, the budget every frame pays "vCPU waits/frame" times.');
  const text = lines.join('\n') + '\n';
  process.stdout.write('\n' + text);
  const dir = path.join(repoRoot(), 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'rtl8139.md'), text);
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
