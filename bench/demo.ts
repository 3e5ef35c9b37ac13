/**
 * `make demo`: usernet's main job in one run. Boots the test guest (Debian kernel + busybox,
 * QEMU, TCG here) on each network path, and in each guest
 *   1. fetches a 16 MiB file over HTTP from the host side and checks its sha256,
 *   2. runs iperf3 guest→host and host→guest (5 s each),
 *   3. mounts an NFSv3 export (kernel client, busybox mount) and times the first read of a
 *      64 MiB file (`cat FILE > /dev/null`), then checks its sha256 (src/vm/nfs-server.ts:
 *      nfs-ganesha in a private mount namespace, the file in the server's page cache),
 * then prints a table and writes bench/results/demo.md and a plot, bench/results/demo.svg.
 *
 * Paths (rows), in this order:
 *   usernet NAT · virtio (vhost-user)         usernet's virtio-net ring, the NAT stack (src/cli/vm-session.ts)
 *   usernet bridged · virtio (vhost-user+tap) the same device, frames to a tap on a bridged test
 *                                             network in a namespace (src/vm/bridged-net.ts)
 *   QEMU -netdev user (libslirp) · virtio     the comparison everyone knows (QEMU's own NIC and NAT)
 *   usernet NAT · QEMU rtl8139 (stream)       QEMU's RTL8139 model, frames to usernet over -netdev stream
 *   usernet NAT · usernet RTL8139 (vfio-user) usernet's own RTL8139 model (QEMU 11)
 *   usernet bridged · RTL8139 (vfio-user+tap) the same, bridged
 *   usernet NAT/bridged · RTL8139C+           the same device in its C+ mode (revision 0x20): the
 *                                             guest's 8139cp driver, descriptor rings in guest RAM
 * Every usernet row is one runGuestOnUsernet (src/cli/vm-session.ts), the code of `usernet vm`.
 * A path that is not available on this build shows "n/a" with the reason; the NAT/bridged
 * column (usernet NAT ÷ usernet bridged, same guest, same device, same run) is filled where both
 * rows exist. The NFS read column: seconds for the file and MB/s (10^6 bytes/s), "n/a" when the
 * NFS server cannot run here (nfs-ganesha/rpcbind missing), "failed" when the read failed or
 * the sha256 did not match.
 *
 * The servers: on the host's 127.0.0.1 for the NAT paths (the guest reaches them at its gateway,
 * 10.0.2.2), inside the bridged network's namespace for the bridged path (10.0.3.1). Traffic
 * goes nowhere else. Every process, socket and namespace made here is gone at the end.
 * Exit status 0 when the usernet NAT virtio path fetched the file intact and measured both
 * directions, else 1.
 *
 * Options: --seconds N (5), --rows LIST (keys below), --file-mib N (16), --nfs-mib N (64; 0: no NFS).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runGuestOnUsernet, type NetKind, type NicKind } from '../src/cli/vm-session';
import { Meter } from '../src/meter/meter';
import { guestImage, isGuestError, repoRoot, runGuest, type GuestResult } from '../src/vm';
import { guestNfsReadCommand, parseGuestNfsRead, startNfsServer, type NfsServer } from '../src/vm/nfs-server';
import { expectedSha256, startBlobServer, startIperf3Server } from '../test/helpers/host-servers';
import { libslirpAnchor } from './anchors';
import { groupedBarSpec, vegaLiteToSvg, type BarDatum } from './plot';
import { fmtGbps, fmtRatio, guestBenchCommand, parseGuestBench, type Direction, type GuestBenchSpec } from './vm-iperf';

type RowKey = 'nat-virtio' | 'bridged-virtio' | 'libslirp-virtio' | 'nat-qemu-rtl8139' | 'nat-rtl8139' | 'bridged-rtl8139' | 'nat-rtl8139cp' | 'bridged-rtl8139cp';
const ROWS: RowKey[] = ['nat-virtio', 'bridged-virtio', 'libslirp-virtio', 'nat-qemu-rtl8139', 'nat-rtl8139', 'bridged-rtl8139', 'nat-rtl8139cp', 'bridged-rtl8139cp'];

const LABEL: Record<RowKey, string> = {
  'nat-virtio': 'usernet NAT · virtio (vhost-user)',
  'bridged-virtio': 'usernet bridged · virtio (vhost-user + tap)',
  'libslirp-virtio': 'QEMU -netdev user (libslirp) · virtio',
  'nat-qemu-rtl8139': "usernet NAT · QEMU's rtl8139 (-netdev stream)",
  'nat-rtl8139': "usernet NAT · usernet's RTL8139 (vfio-user)",
  'bridged-rtl8139': "usernet bridged · usernet's RTL8139 (vfio-user + tap)",
  'nat-rtl8139cp': "usernet NAT · usernet's RTL8139C+ (vfio-user, 8139cp)",
  'bridged-rtl8139cp': "usernet bridged · usernet's RTL8139C+ (vfio-user + tap)",
};

/** Which row a NAT row is divided by for the NAT/bridged column. */
const BRIDGED_OF: Partial<Record<RowKey, RowKey>> = { 'nat-virtio': 'bridged-virtio', 'nat-rtl8139': 'bridged-rtl8139', 'nat-rtl8139cp': 'bridged-rtl8139cp' };

interface RowResult {
  key: RowKey;
  /** Why the path could not run (n/a), if so. */
  unavailable?: string;
  /** The guest did not finish (boot failure, timeout). */
  error?: string;
  fetchOk?: boolean;
  gbps: Partial<Record<Direction, number>>;
  bootS?: number;
  /** NFS read: seconds for the file, or why not. */
  nfs?: { seconds?: number; ok: boolean; why?: string };
}

interface Options {
  seconds: number;
  rows: RowKey[];
  fileMiB: number;
  nfsMiB: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { seconds: 5, rows: ROWS, fileMiB: 16, nfsMiB: 64 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = (): string => argv[++i] ?? '';
    if (a === '--seconds') o.seconds = Number(next());
    else if (a === '--rows') o.rows = next().split(',') as RowKey[];
    else if (a === '--file-mib') o.fileMiB = Number(next());
    else if (a === '--nfs-mib') o.nfsMiB = Number(next());
    else throw new Error(`unknown option ${a} (--seconds N, --rows ${ROWS.join(',')}, --file-mib N, --nfs-mib N)`);
  }
  for (const r of o.rows) if (!ROWS.includes(r)) throw new Error(`unknown row ${r} (${ROWS.join(', ')})`);
  return o;
}

interface HostSide {
  httpPort: number;
  httpPath: string;
  sha256: string;
  iperfPort: number;
  /** The NFS server on the host's 127.0.0.1 (NAT rows), or why there is none. */
  nfs: NfsServer | null;
  nfsWhy?: string;
}

const NFS_FILE = 'blob';

function nfsCommand(server: string, nfs: NfsServer): string {
  return ['echo @@step nfs', guestNfsReadCommand({ server, nfsPort: nfs.nfsPort, mountPort: nfs.mountPort, exportPath: nfs.exportPath, file: NFS_FILE })].join('\n');
}

function nfsResult(output: string, nfs: NfsServer | null, why: string | undefined): RowResult['nfs'] {
  if (!nfs) return why ? { ok: false, why } : undefined;
  const step = output.split('@@step nfs')[1] ?? '';
  const p = parseGuestNfsRead(step);
  const ok = p.sha256 === nfs.files[0].sha256 && p.seconds !== undefined;
  return { ok, seconds: p.seconds, why: ok ? undefined : (p.failed ?? (p.sha256 ? 'sha256 mismatch' : 'no result')) };
}

function resultOf(key: RowKey, r: GuestResult, sha256: string, nfs: NfsServer | null, nfsWhy?: string): RowResult {
  const p = parseGuestBench(r.output.split('@@step nfs')[0]);
  const res: RowResult = { key, fetchOk: p.sha256 === sha256, gbps: p.gbps, bootS: r.bootMs / 1000, nfs: nfsResult(r.output, nfs, nfsWhy) };
  if (!res.fetchOk || Object.keys(p.gbps).length < 2 || (res.nfs && !res.nfs.ok && nfs)) {
    process.stderr.write(`  ${key}: guest output (tail):\n${r.output.split('\n').slice(-20).map((l) => `    ${l}`).join('\n')}\n`);
  }
  return res;
}

async function runRow(key: RowKey, o: Options, host: HostSide): Promise<RowResult> {
  const timeoutMs = 180_000 + 4 * o.seconds * 1000;
  const bench = (h: string, http: HostSide = host): GuestBenchSpec => ({
    host: h,
    iperfPort: http.iperfPort,
    seconds: o.seconds,
    http: { port: http.httpPort, path: http.httpPath },
  });
  const onUsernet = async (nic: NicKind, net: NetKind): Promise<RowResult> => {
    // NAT: the servers on the host's 127.0.0.1, reached at the gateway; bridged: the network's
    // own servers on its host side (in its namespace)
    let side = host;
    let nfs: NfsServer | null = host.nfs;
    let nfsWhy = host.nfsWhy;
    let own: NfsServer | null = null;
    try {
      const r = await runGuestOnUsernet({
        nic,
        net,
        meter: new Meter(),
        bridged: { httpFileBytes: o.fileMiB << 20, iperfServers: 1, label: 'demo' },
        command: async (network) => {
          const s = network.servers;
          if (s) {
            if (!s.http || s.iperfPorts.length === 0) throw new Error(`the ${network.kind} network came up without its servers`);
            side = { httpPort: s.http.port, httpPath: s.http.path, sha256: s.http.sha256, iperfPort: s.iperfPorts[0], nfs: null };
          }
          // bridged: an NFS server of its own in the network's namespace, on its host side
          if (network.netns && o.nfsMiB > 0) {
            nfs = null;
            try {
              own = nfs = await startNfsServer({ files: [{ name: NFS_FILE, size: o.nfsMiB << 20 }], netns: network.netns, address: network.hostAddress });
            } catch (err) {
              nfsWhy = (err as Error).message.split('\n')[0];
            }
          }
          const cmd = guestBenchCommand(bench(network.hostAddress, side));
          return nfs ? `${cmd}\n${nfsCommand(network.hostAddress, nfs)}` : cmd;
        },
        timeoutMs,
      });
      return resultOf(key, r, side.sha256, nfs, nfsWhy);
    } finally {
      await (own as NfsServer | null)?.stop();
    }
  };
  switch (key) {
    case 'nat-virtio':
      return onUsernet('virtio', 'nat');
    case 'bridged-virtio':
      return onUsernet('virtio', 'bridged');
    case 'nat-qemu-rtl8139':
      return onUsernet('qemu-rtl8139', 'nat');
    case 'nat-rtl8139':
      return onUsernet('rtl8139', 'nat');
    case 'bridged-rtl8139':
      return onUsernet('rtl8139', 'bridged');
    case 'nat-rtl8139cp':
      return onUsernet('rtl8139cp', 'nat');
    case 'bridged-rtl8139cp':
      return onUsernet('rtl8139cp', 'bridged');
    case 'libslirp-virtio': {
      const a = libslirpAnchor();
      const cmd = guestBenchCommand(bench(a.host));
      const r = await runGuest({ network: a.network, command: host.nfs ? `${cmd}\n${nfsCommand(a.host, host.nfs)}` : cmd, timeoutMs });
      return resultOf(key, r, host.sha256, host.nfs, host.nfsWhy);
    }
  }
}

function notAvailable(err: unknown): string | null {
  const e = err as { code?: unknown; message?: unknown };
  if (e && e.code === 'ERR_NOT_AVAILABLE') return String(e.message);
  return null;
}

function machine(): string {
  let qemu = 'QEMU ?';
  try {
    qemu = execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).split('\n')[0].replace('QEMU emulator version', 'QEMU');
  } catch {
    /* not there: the rows say so */
  }
  return `${os.cpus().length} CPUs, Linux ${os.release()}, ${qemu}, Node ${process.version}`;
}

function fmtNfs(n: RowResult['nfs'], mib: number): string {
  if (!n) return 'n/a';
  if (!n.ok) return n.seconds === undefined && n.why && !/failed|mismatch|no result/.test(n.why) ? 'n/a' : 'failed';
  const s = n.seconds!;
  return `${s.toFixed(2)} s · ${((mib * 1048576) / s / 1e6).toFixed(0)} MB/s`;
}

function table(results: RowResult[], o: Options): string[] {
  const by = new Map(results.map((r) => [r.key, r]));
  const lines = [
    `| path | fetch ${o.fileMiB} MiB (sha256) | iperf3 guest→host Gbit/s | iperf3 host→guest Gbit/s | NFSv3 read ${o.nfsMiB} MiB | NAT/bridged guest→host | NAT/bridged host→guest | NAT/bridged NFS time |`,
    '|---|:---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    const label = LABEL[r.key];
    if (r.unavailable) {
      lines.push(`| ${label} | n/a | n/a | n/a | n/a | | | |`);
      continue;
    }
    if (r.error) {
      lines.push(`| ${label} | failed | — | — | — | | | |`);
      continue;
    }
    const b = BRIDGED_OF[r.key] ? by.get(BRIDGED_OF[r.key]!) : undefined;
    const ratio = (d: Direction): string => {
      const x = r.gbps[d];
      const y = b?.gbps[d];
      return x !== undefined && y !== undefined ? fmtRatio(x / y) : '';
    };
    const nfsRatio = r.nfs?.ok && b?.nfs?.ok && r.nfs.seconds && b.nfs.seconds ? fmtRatio(r.nfs.seconds / b.nfs.seconds) : '';
    lines.push(
      `| ${label} | ${r.fetchOk ? 'ok' : 'FAILED'} | ${fmtGbps(r.gbps['guest→host'])} | ${fmtGbps(r.gbps['host→guest'])} | ${fmtNfs(r.nfs, o.nfsMiB)} | ${ratio('guest→host')} | ${ratio('host→guest')} | ${nfsRatio} |`,
    );
  }
  return lines;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  guestImage(); // fails early with "run make guest" when the image is missing
  const started = Date.now();
  process.stdout.write(`usernet demo: the test guest on ${o.rows.length} network paths (TCG: each boot takes a few seconds)\n\n`);

  const size = o.fileMiB << 20;
  const blob = await startBlobServer('127.0.0.1');
  const iperf = await startIperf3Server();
  let hostNfs: NfsServer | null = null;
  let hostNfsWhy: string | undefined = o.nfsMiB > 0 ? undefined : 'not asked for (--nfs-mib 0)';
  if (o.nfsMiB > 0) {
    try {
      hostNfs = await startNfsServer({ files: [{ name: NFS_FILE, size: o.nfsMiB << 20 }] });
    } catch (err) {
      hostNfsWhy = (err as Error).message.split('\n')[0];
      process.stdout.write(`NFS server: n/a — ${hostNfsWhy}\n`);
    }
  }
  const host: HostSide = { httpPort: blob.port, httpPath: `/blob/${size}`, sha256: expectedSha256(size), iperfPort: iperf.port, nfs: hostNfs, nfsWhy: hostNfsWhy };
  const results: RowResult[] = [];
  try {
    for (const key of o.rows) {
      process.stdout.write(`${LABEL[key]} … `);
      let res: RowResult;
      try {
        res = await runRow(key, o, host);
        process.stdout.write(
          `fetch ${res.fetchOk ? 'ok' : 'FAILED'}, guest→host ${fmtGbps(res.gbps['guest→host'])}, host→guest ${fmtGbps(res.gbps['host→guest'])} Gbit/s, NFS ${fmtNfs(res.nfs, o.nfsMiB)}${res.nfs?.why ? ` (${res.nfs.why})` : ''} (boot ${res.bootS?.toFixed(1)} s)\n`,
        );
      } catch (err) {
        const why = notAvailable(err);
        if (why) {
          res = { key, unavailable: why, gbps: {} };
          process.stdout.write(`n/a: ${why}\n`);
        } else {
          const msg = isGuestError(err) ? err.describe(12) : (err as Error).message;
          res = { key, error: msg, gbps: {} };
          process.stdout.write(`failed: ${msg}\n`);
        }
      }
      results.push(res);
    }
  } finally {
    await hostNfs?.stop();
    await iperf.close();
    await blob.close();
  }

  const seconds = Math.round((Date.now() - started) / 1000);
  const rows = table(results, o);
  const notes: string[] = [];
  for (const r of results) if (r.unavailable) notes.push(`- ${LABEL[r.key]}: n/a — ${r.unavailable}`);
  for (const r of results) if (r.error) notes.push(`- ${LABEL[r.key]}: failed — ${r.error.split('\n')[0]}`);
  for (const r of results) if (r.nfs && !r.nfs.ok && r.nfs.why) notes.push(`- ${LABEL[r.key]}: NFS read ${fmtNfs(r.nfs, o.nfsMiB)} — ${r.nfs.why}`);
  notes.push(
    `- NFSv3 read: nfs-ganesha (FSAL VFS) on the host's 127.0.0.1 (NAT rows, export \`insecure\`: the NAT connects from an unprivileged port) or in the bridged network's namespace on 10.0.3.1; the guest's kernel client (busybox mount, TCP, explicit ports, nolock) times the first \`cat\` of a ${o.nfsMiB} MiB file that sits in the server's page cache, then checks its sha256. MB/s = 10^6 bytes/s. NAT/bridged NFS time = NAT read time ÷ bridged read time.`,
  );
  const md = [
    '# usernet demo',
    '',
    `The test guest (Debian kernel, busybox, iperf3; QEMU, 1 vCPU, 512 MiB) on each path: an HTTP fetch of ${o.fileMiB} MiB from the host side with its sha256 checked, iperf3 for ${o.seconds} s each way (receiver side), then an NFSv3 read of ${o.nfsMiB} MiB (time of the first read, sha256 checked).`,
    `NAT paths reach the host's 127.0.0.1 through the gateway 10.0.2.2; the bridged path reaches servers on its bridge (10.0.3.1) in a namespace.`,
    `NAT/bridged = usernet NAT ÷ usernet bridged with the same guest and device in the same run: the cost of user-mode NAT.`,
    '',
    ...rows,
    '',
    ...notes,
    '',
    `Machine: ${machine()}. The run took ${seconds} s. Plot: [demo.svg](demo.svg).`,
    '',
  ].join('\n');
  process.stdout.write('\n' + rows.join('\n') + '\n\n' + notes.join('\n') + '\n');

  const outDir = path.join(repoRoot(), 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  writeFileSync(path.join(outDir, 'demo.md'), md);
  const bars: BarDatum[] = [];
  for (const r of results) {
    for (const d of ['guest→host', 'host→guest'] as const) {
      const v = r.gbps[d];
      if (v !== undefined) bars.push({ group: LABEL[r.key], series: `iperf3 ${d}`, value: Number(v.toFixed(3)) });
    }
  }
  try {
    const svg = await vegaLiteToSvg(groupedBarSpec(bars, { title: `usernet demo: iperf3 with the test guest (${machine()})`, valueTitle: 'Gbit/s' }));
    writeFileSync(path.join(outDir, 'demo.svg'), svg);
  } catch (err) {
    process.stderr.write(`demo: the plot could not be drawn: ${(err as Error).message}\n`);
  }
  process.stdout.write(`\nwritten: bench/results/demo.md, bench/results/demo.svg (${seconds} s)\n`);

  const main = results.find((r) => r.key === 'nat-virtio');
  const ok = !main || (main.fetchOk === true && main.gbps['guest→host'] !== undefined && main.gbps['host→guest'] !== undefined);
  process.exitCode = ok ? 0 : 1;
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (err: unknown) => {
    process.stderr.write(`demo: ${isGuestError(err) ? err.describe() : ((err as Error).stack ?? String(err))}\n`);
    process.exit(1);
  },
);
