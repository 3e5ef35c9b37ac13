/**
 * The bridged matrix: iperf3 from the test guest (TCG, virtio-net-pci, one vCPU), both ways,
 * through
 *   usernet-bridged  usernet's virtio-net ring over vhost-user, frames to a TapBackend on the
 *                    bridged test network (the bar: ≥ 0.9 × qemu-tap in both directions)
 *   qemu-tap         QEMU's own `-netdev tap` (vhost=off: there is no /dev/vhost-net here),
 *                    its tap moved into the same namespace and enslaved to the same bridge
 *   usernet-nat      usernet's virtio-net ring over vhost-user into the NAT stack, iperf3 on the
 *                    host's 127.0.0.1 reached as 10.0.2.2 — the same guest and device as
 *                    usernet-bridged, so NAT / bridged is the cost of user-mode NAT
 *   qemu-tap-intx    (optional) qemu-tap with the NIC on INTx (`vectors=0`), the interrupt mode
 *                    QEMU 7.2 forces on a vhost-user NIC under TCG — the same-device comparison
 * The iperf3 server for the bridged rows runs in the bridged namespace on the host side
 * (10.0.3.1), for the NAT row on 127.0.0.1; same flags everywhere.
 *
 * One interleaved run: every round boots one guest per row (the row order rotates per round, so
 * slow drifts of a shared machine hit every row alike), and each guest measures guest→host and
 * host→guest (-R). The table holds medians over the rounds (Gbit/s), the ratios
 * usernet-bridged / qemu-tap and usernet-nat / usernet-bridged, and usernet's CPU time per run.
 *
 * Output: printed, and written to bench/results/bridged-matrix.md (git-ignored).
 * Options: --seconds N (5), --rounds N (3), --rows LIST (usernet-bridged,qemu-tap,usernet-nat),
 *          --qemu host|v11 (host = Debian's QEMU 7.2; v11 = build/qemu11, MSI-X on vhost-user).
 * Needs root, QEMU, /dev/net/tun, iperf3. Traffic stays in the namespace made here and on
 * 127.0.0.1; every process and namespace made here is removed whatever happens.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BridgedNetwork } from '../src/vm/bridged-net';
import { BridgedUsernet } from '../src/vm/bridged-guest';
import { runGuest, type GuestResult } from '../src/vm';
import { listenVhostUser, vhostUserQemuArgs } from '../src/transports/vhost-user';
import { createNatStack } from '../src/backends/nat';
import { isOffloadAware } from '../src/devices/virtio/net-offloads';
import type { VirtioNetDevice } from '../src/devices/virtio/net-device';
import { join } from '../src/link/port';
import { Meter } from '../src/meter/meter';
import { stopChild } from '../test/helpers/child-process';
import { freePort } from '../test/helpers/host-servers';
import { repoRoot } from '../src/vm/paths';

type Row = 'usernet-bridged' | 'qemu-tap' | 'qemu-tap-intx' | 'usernet-nat';
const ALL_ROWS: Row[] = ['usernet-bridged', 'qemu-tap', 'qemu-tap-intx', 'usernet-nat'];

interface Options {
  seconds: number;
  rounds: number;
  rows: Row[];
  qemu: 'host' | 'v11';
}

function parseArgs(argv: string[]): Options {
  const o: Options = { seconds: 5, rounds: 3, rows: ['usernet-bridged', 'qemu-tap', 'usernet-nat'], qemu: 'host' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = (): string => argv[++i] ?? '';
    if (a === '--seconds') o.seconds = Number(next());
    else if (a === '--rounds') o.rounds = Number(next());
    else if (a === '--rows') o.rows = next().split(',') as Row[];
    else if (a === '--qemu') o.qemu = next() as 'host' | 'v11';
    else throw new Error(`unknown option ${a}`);
  }
  for (const r of o.rows) if (!ALL_ROWS.includes(r)) throw new Error(`unknown row ${r} (${ALL_ROWS.join(', ')})`);
  if (!(o.seconds > 0 && o.rounds > 0)) throw new Error('--seconds and --rounds must be positive');
  return o;
}

interface Sample {
  up: number;
  down: number;
  /** usernet's CPU seconds during the guest run (user + system). */
  cpu: number;
  wallMs: number;
  note: string;
}

/** The guest's measurement: wait for the server to answer, then iperf3 both ways. */
function guestCommand(host: string, port: number, seconds: number): string {
  const run = (name: string, extra: string): string =>
    `n=0; until iperf3 -c ${host} -p ${port} -t ${seconds} -f m ${extra} >/tmp/${name} 2>&1; do n=$((n+1)); [ $n -gt 5 ] && break; sleep 1; done; ` +
    `echo ${name}=$(awk '/receiver/ {print $(NF-2)}' /tmp/${name})`;
  return [`n=0; until ping -c 1 -W 1 ${host} >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 60 ] && break; done`, run('up', ''), run('down', '-R')].join('\n');
}

function parse(r: GuestResult): { up: number; down: number } {
  const up = /^up=([\d.]+)$/m.exec(r.output);
  const down = /^down=([\d.]+)$/m.exec(r.output);
  if (!up || !down) throw new Error(`no iperf3 result in the guest's output:\n${r.output.slice(-2000)}`);
  return { up: Number(up[1]) / 1000, down: Number(down[1]) / 1000 };
}

class Bench {
  private tapSerial = 0;
  constructor(
    private readonly o: Options,
    private readonly bnet: BridgedNetwork,
    private readonly natIperfPort: number,
    private readonly dir: string,
  ) {}

  async measure(row: Row): Promise<Sample> {
    const cpu0 = process.cpuUsage();
    const t0 = Date.now();
    const timeoutMs = 120_000 + this.o.seconds * 4000;
    let r: GuestResult;
    let note = '';
    const meter = new Meter();
    if (row === 'usernet-bridged') {
      const usernet = await BridgedUsernet.start({ network: this.bnet, meter });
      try {
        r = await usernet.runGuest({
          index: 0,
          qemu: this.o.qemu,
          command: guestCommand(this.bnet.hostAddress, this.bnet.iperfPorts[0], this.o.seconds),
          timeoutMs,
        });
      } finally {
        await usernet.close();
      }
      const rd = meter.stage('tap.read').snapshot();
      const wr = meter.stage('tap.write').snapshot();
      const rx = meter.stage('guest.rx').snapshot();
      note = `tap.write ${(wr.bytes / Math.max(1, wr.frames)).toFixed(0)} B/frame, tap.read ${(rd.bytes / Math.max(1, rd.frames)).toFixed(0)} B/frame, guest.rx drops ${rx.drops}`;
    } else if (row === 'usernet-nat') {
      const sock = path.join(this.dir, `nat-${this.tapSerial++}.sock`);
      const server = await listenVhostUser({ path: sock, meter });
      const stacks: { close(): Promise<void> }[] = [];
      server.on('guest', (port: VirtioNetDevice) => {
        const stack = createNatStack({ meter });
        stacks.push(stack);
        if (isOffloadAware(port)) {
          const apply = (): void => stack.setOffloads(port.offloads.guestCsum, port.offloads.guestTso4);
          apply();
          port.on('offloads', apply);
        }
        join(port, stack);
        port.once('close', () => void stack.close());
      });
      try {
        r = await runGuest({
          network: vhostUserQemuArgs(sock, { mac: '52:54:00:12:35:10', qemuMajor: this.o.qemu === 'v11' ? 11 : 7 }),
          memfd: true,
          qemu: this.o.qemu,
          command: guestCommand('10.0.2.2', this.natIperfPort, this.o.seconds),
          timeoutMs,
        });
      } finally {
        await server.close();
        for (const s of stacks) await s.close();
      }
      const rx = meter.stage('guest.rx').snapshot();
      note = `guest.rx ${(rx.bytes / Math.max(1, rx.frames)).toFixed(0)} B/frame, drops ${rx.drops}`;
    } else {
      const ifName = `unq${process.pid % 100000}${this.tapSerial++}`.slice(0, 15);
      const intx = row === 'qemu-tap-intx' ? ',vectors=0' : '';
      let adopted: Promise<void> = Promise.resolve();
      r = await runGuest({
        network: ['-netdev', `tap,id=n0,ifname=${ifName},script=no,downscript=no,vnet_hdr=on,vhost=off`, '-device', `virtio-net-pci,netdev=n0,mac=52:54:00:12:35:10${intx}`],
        qemu: this.o.qemu,
        net: { ip: this.bnet.guestAddress(0) },
        command: guestCommand(this.bnet.hostAddress, this.bnet.iperfPorts[0], this.o.seconds),
        timeoutMs,
        onSpawn: () => {
          // QEMU made the tap in the host namespace: move it onto the bridge
          adopted = this.bnet.adopt(ifName).catch((err: Error) => {
            note = `adopt failed: ${err.message}`;
          });
        },
      });
      await adopted;
    }
    const cpu = process.cpuUsage(cpu0);
    const { up, down } = parse(r);
    return { up, down, cpu: (cpu.user + cpu.system) / 1e6, wallMs: Date.now() - t0, note };
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function fmt(x: number, digits = 2): string {
  return Number.isFinite(x) ? x.toFixed(digits) : '–';
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('the bridged matrix needs root (namespaces, taps)');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'usernet-bench-bridged-'));
  const bnet = await BridgedNetwork.create({ httpFileBytes: 0, iperfServers: 1, label: 'bench' });
  const natIperfPort = await freePort();
  const natIperf = spawn('iperf3', ['-s', '-B', '127.0.0.1', '-p', String(natIperfPort)], { stdio: 'ignore' });
  const cleanup = async (): Promise<void> => {
    await stopChild(natIperf);
    await bnet.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  const samples = new Map<Row, Sample[]>(o.rows.map((r) => [r, []]));
  const bench = new Bench(o, bnet, natIperfPort, dir);
  try {
    await new Promise((r) => setTimeout(r, 300));
    for (let round = 0; round < o.rounds; round++) {
      const order = o.rows.map((_, i) => o.rows[(i + round) % o.rows.length]);
      for (const row of order) {
        const s = await bench.measure(row);
        samples.get(row)!.push(s);
        console.log(`round ${round + 1}/${o.rounds} ${row.padEnd(16)} guest→host ${fmt(s.up)} Gbit/s  host→guest ${fmt(s.down)} Gbit/s  usernet cpu ${fmt(s.cpu, 1)} s  ${s.note}`);
      }
    }
  } finally {
    await cleanup();
  }

  const med = (row: Row, k: 'up' | 'down' | 'cpu'): number => median((samples.get(row) ?? []).map((s) => s[k]));
  const lines: string[] = [];
  lines.push(`# Bridged matrix`, '');
  lines.push(
    `${new Date().toISOString()} · QEMU ${o.qemu === 'v11' ? '11 (build/qemu11)' : '7.2 (Debian)'} under TCG, 1 vCPU, virtio-net-pci · iperf3 -t ${o.seconds} · ${o.rounds} interleaved rounds · medians in Gbit/s · ${os.cpus().length} host CPUs`,
    '',
  );
  lines.push('| row | guest→host | host→guest | usernet CPU s/run | samples (up / down) |', '|---|---:|---:|---:|---|');
  for (const row of o.rows) {
    const ss = samples.get(row)!;
    lines.push(`| ${row} | ${fmt(med(row, 'up'))} | ${fmt(med(row, 'down'))} | ${row.startsWith('qemu') ? '–' : fmt(med(row, 'cpu'), 1)} | ${ss.map((s) => `${fmt(s.up)}/${fmt(s.down)}`).join(', ')} |`);
  }
  lines.push('');
  const ratio = (a: Row, b: Row, k: 'up' | 'down'): number => med(a, k) / med(b, k);
  if (o.rows.includes('usernet-bridged') && o.rows.includes('qemu-tap')) {
    const up = ratio('usernet-bridged', 'qemu-tap', 'up');
    const down = ratio('usernet-bridged', 'qemu-tap', 'down');
    lines.push(`usernet-bridged / qemu-tap: guest→host ${fmt(up)}×, host→guest ${fmt(down)}× (bar ≥ 0.9: ${up >= 0.9 && down >= 0.9 ? 'met' : 'NOT met'})`, '');
  }
  if (o.rows.includes('usernet-bridged') && o.rows.includes('qemu-tap-intx')) {
    lines.push(`usernet-bridged / qemu-tap-intx (same interrupt mode): guest→host ${fmt(ratio('usernet-bridged', 'qemu-tap-intx', 'up'))}×, host→guest ${fmt(ratio('usernet-bridged', 'qemu-tap-intx', 'down'))}×`, '');
  }
  if (o.rows.includes('usernet-bridged') && o.rows.includes('usernet-nat')) {
    lines.push(`usernet-nat / usernet-bridged (same guest, same device): guest→host ${fmt(ratio('usernet-nat', 'usernet-bridged', 'up'))}×, host→guest ${fmt(ratio('usernet-nat', 'usernet-bridged', 'down'))}×`, '');
  }
  const notes = o.rows.map((r) => `- ${r}: ${(samples.get(r) ?? []).map((s) => s.note).filter(Boolean)[0] ?? ''}`).filter((l) => !l.endsWith(': '));
  if (notes.length) lines.push('Per-row notes (first round):', ...notes, '');
  const report = lines.join('\n');
  console.log('\n' + report);
  const out = path.join(repoRoot(), 'bench', 'results');
  mkdirSync(out, { recursive: true });
  writeFileSync(path.join(out, 'bridged-matrix.md'), report);
  console.log(`written to ${path.join(out, 'bridged-matrix.md')}`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exitCode = 1;
});
