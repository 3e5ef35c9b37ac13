/**
 * An NFS server for the VM tests, the demo and the benchmarks: nfs-ganesha (FSAL VFS) serving
 * NFSv3 and NFSv4.1 over TCP from a temp export folder with test files of given sizes
 * (deterministic content, sha256 known), on chosen ports, bound to one address:
 *   - 127.0.0.1 on the host for the NAT paths (the guest reaches it at its gateway 10.0.2.2,
 *     which the NAT maps to the host's loopback), or
 *   - inside a given network namespace (the bridged test network, src/vm/bridged-net.ts: its
 *     host side 10.0.3.1).
 *
 * How it runs (nfs-ganesha 4.3 refuses to start without an rpcbind it can register with, and
 * the host's rpcbind must not be touched or exposed):
 *   ([ip netns exec NS] unshare -m --propagation private sh -c SCRIPT), its own process group:
 *     tmpfs on /run           (private: rpcbind's socket and lock, ganesha's pid file)
 *     /etc/netconfig          bind-mounted from a copy listing only AF_UNIX transports, so the
 *                             private `rpcbind -f` opens no network port at all; unmounted
 *                             again once rpcbind listens (ganesha insists on a udp entry and
 *                             registers with rpcbind over its unix socket anyway)
 *     exec ganesha.nfsd -F    NFS and MOUNT on the given ports; NLM, RQUOTA, UDP off
 * Clients name the ports explicitly (mount -o port=,mountport=), no portmapper lookup.
 *
 * The export has `PrivilegedPort = false` (the `insecure` of Linux exports): a user-mode NAT
 * re-terminates the guest's TCP connection on a host socket bound to an ephemeral
 * (unprivileged) port, which a `secure` export refuses. Root is not squashed (tests run as root).
 *
 * States: starting → ready (the NFS and MOUNT ports accept a TCP connection) → stopped.
 * `stop()` (idempotent) sends SIGTERM to the process group it started (by its PID), SIGKILL
 * after 2 s, then removes the temp folder; a failed start does the same before throwing, and a
 * process exit hook does it synchronously if nobody called `stop()`.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface NfsFileSpec {
  /** File name inside the export (no slashes). */
  name: string;
  size: number;
}

export interface NfsServerOptions {
  files: readonly NfsFileSpec[];
  /** Listen address. Default 127.0.0.1 (bridged: the network's host side, 10.0.3.1). */
  address?: string;
  /** Run inside this network namespace (ip netns name); default the host's. */
  netns?: string | null;
  /** NFS port; default a free port (host) or 2049 (namespace). */
  nfsPort?: number;
  /** MOUNT port; default a free port (host) or 20048 (namespace). */
  mountPort?: number;
  /** Readiness timeout. Default 20 s. */
  timeoutMs?: number;
}

export interface NfsFile extends NfsFileSpec {
  sha256: string;
}

export interface NfsServer {
  address: string;
  netns: string | null;
  nfsPort: number;
  mountPort: number;
  /** The path clients mount (NFSv3 MOUNT and NFSv4 pseudo path). */
  exportPath: string;
  files: NfsFile[];
  /** PID of the process group leader (ganesha.nfsd after exec). */
  pid: number;
  stop(): Promise<void>;
}

export type NfsServerErrorCode = 'ERR_NFS_SERVER' | 'ERR_NOT_AVAILABLE';

export class NfsServerError extends Error {
  override readonly name = 'NfsServerError';
  constructor(
    readonly code: NfsServerErrorCode,
    message: string,
  ) {
    super(message);
  }
}

const EXPORT_PATH = '/export';
/** The transports rpcbind may open: AF_UNIX only (see the file comment). */
const NETCONFIG_UNIX_ONLY = ['unix       tpi_cots_ord  -     loopback  -      -       -', 'local      tpi_cots_ord  -     loopback  -      -       -', ''].join('\n');

/**
 * Write `size` deterministic bytes (xorshift32 stream seeded from the name) to `file`; returns
 * their sha256. Chunked, so a large file never sits in memory at once.
 */
function writeTestFile(file: string, name: string, size: number): string {
  let x = 0x9e3779b9;
  for (let i = 0; i < name.length; i++) x = (Math.imul(x ^ name.charCodeAt(i), 0x01000193) >>> 0) || 1;
  const chunk = new Uint32Array(1 << 18); // 1 MiB
  const bytes = Buffer.from(chunk.buffer);
  const h = createHash('sha256');
  const fd = openSync(file, 'w');
  try {
    for (let off = 0; off < size; off += bytes.length) {
      for (let i = 0; i < chunk.length; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        chunk[i] = x >>> 0;
      }
      const n = Math.min(bytes.length, size - off);
      const part = bytes.subarray(0, n);
      h.update(part);
      writeSync(fd, part);
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

function ganeshaConfig(o: { address: string; nfsPort: number; mountPort: number; exportDir: string; recoveryDir: string }): string {
  return `# written by usernet's src/vm/nfs-server.ts
NFS_CORE_PARAM {
  NFS_Port = ${o.nfsPort};
  MNT_Port = ${o.mountPort};
  Bind_addr = ${o.address};
  Protocols = 3, 4;
  Enable_NLM = false;
  Enable_RQUOTA = false;
  Enable_UDP = false;
  Mount_Path_Pseudo = true;
}
NFS_KRB5 { Active_krb5 = false; }
NFSV4 {
  RecoveryBackend = fs;
  RecoveryRoot = ${o.recoveryDir};
  Grace_Period = 5;
  Lease_Lifetime = 5;
  Minor_Versions = 1;
}
EXPORT {
  Export_Id = 1;
  Path = ${o.exportDir};
  Pseudo = ${EXPORT_PATH};
  Protocols = 3, 4;
  Transports = TCP;
  Access_Type = RW;
  Squash = No_Root_Squash;
  SecType = sys;
  # the NAT connects from an unprivileged host port: "insecure"
  PrivilegedPort = false;
  FSAL { Name = VFS; }
}
LOG { Default_Log_Level = WARN; }
`;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function tcpAccepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Does the port accept a TCP connection (inside the namespace, if any)? */
function accepts(netns: string | null, host: string, port: number): Promise<boolean> {
  if (!netns) return tcpAccepts(host, port);
  return new Promise((resolve) => {
    const c = spawn('ip', ['netns', 'exec', netns, 'nc', '-z', '-w', '1', host, String(port)], { stdio: 'ignore' });
    c.once('error', () => resolve(false));
    c.once('exit', (code) => resolve(code === 0));
  });
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    /* gone */
  }
}

function haveCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const live = new Set<() => void>();
let hookInstalled = false;

/** Start the server; resolves once its ports accept connections. See the file comment. */
export async function startNfsServer(opts: NfsServerOptions): Promise<NfsServer> {
  for (const cmd of ['ganesha.nfsd', 'rpcbind', 'unshare']) {
    if (!haveCommand(cmd)) throw new NfsServerError('ERR_NOT_AVAILABLE', `${cmd} is not installed (Debian: nfs-ganesha nfs-ganesha-vfs rpcbind)`);
  }
  if (process.getuid?.() !== 0) throw new NfsServerError('ERR_NOT_AVAILABLE', 'the NFS server needs root (mount namespace, tmpfs)');
  const netns = opts.netns ?? null;
  const address = opts.address ?? '127.0.0.1';
  const nfsPort = opts.nfsPort ?? (netns ? 2049 : await freePort());
  let mountPort = opts.mountPort ?? (netns ? 20048 : await freePort());
  while (mountPort === nfsPort) mountPort = await freePort();

  const dir = mkdtempSync(path.join(os.tmpdir(), 'usernet-nfs-'));
  let child: ChildProcess | null = null;
  let stopped = false;
  const stopSync = (): void => {
    if (stopped) return;
    stopped = true;
    live.delete(stopSync);
    if (child?.pid) killGroup(child.pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    live.delete(stopSync);
    const pgid = child?.pid;
    if (pgid && groupAlive(pgid)) {
      killGroup(pgid, 'SIGTERM');
      const until = Date.now() + 2000;
      while (groupAlive(pgid) && Date.now() < until) await sleep(50);
      if (groupAlive(pgid)) {
        killGroup(pgid, 'SIGKILL');
        const hard = Date.now() + 2000;
        while (groupAlive(pgid) && Date.now() < hard) await sleep(50);
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  live.add(stopSync);
  if (!hookInstalled) {
    hookInstalled = true;
    process.once('exit', () => {
      for (const s of [...live]) s();
    });
  }

  const logFile = path.join(dir, 'ganesha.log');
  const logTail = (): string => {
    try {
      return readFileSync(logFile, 'utf8')
        .split('\n')
        .filter((l) => /:(FATAL|MAJ|CRIT) :/.test(l) && !/DBUS|krb5|keytab|credentials/i.test(l))
        .slice(-5)
        .join('\n');
    } catch {
      return '';
    }
  };
  try {
    const exportDir = path.join(dir, 'export');
    const recoveryDir = path.join(dir, 'recovery');
    mkdirSync(exportDir);
    mkdirSync(recoveryDir);
    const files: NfsFile[] = [];
    for (const f of opts.files) {
      if (!/^[\w.-]+$/.test(f.name)) throw new NfsServerError('ERR_NFS_SERVER', `bad file name ${f.name}`);
      files.push({ ...f, sha256: writeTestFile(path.join(exportDir, f.name), f.name, f.size) });
    }
    const conf = path.join(dir, 'ganesha.conf');
    writeFileSync(conf, ganeshaConfig({ address, nfsPort, mountPort, exportDir, recoveryDir }));
    const netconfig = path.join(dir, 'netconfig');
    writeFileSync(netconfig, NETCONFIG_UNIX_ONLY);
    const script = [
      'set -e',
      'mount -t tmpfs -o mode=755 usernet-nfs /run',
      'mkdir -p /run/rpcbind',
      `mount --bind '${netconfig}' /etc/netconfig`,
      'rpcbind -f &',
      'i=0',
      'while [ ! -S /run/rpcbind.sock ]; do i=$((i+1)); if [ $i -gt 200 ]; then echo "rpcbind did not start" >&2; exit 1; fi; sleep 0.05; done',
      'umount /etc/netconfig',
      `exec ganesha.nfsd -F -f '${conf}' -L '${logFile}' -p /run/ganesha.pid`,
    ].join('\n');
    const argv = [...(netns ? ['ip', 'netns', 'exec', netns] : []), 'unshare', '-m', '--propagation', 'private', 'sh', '-c', script];
    let stderr = '';
    child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    child.on('error', () => {});
    child.stderr?.on('data', (d: Buffer) => {
      if (stderr.length < 4096) stderr += d.toString();
    });
    const c = child;
    const until = Date.now() + (opts.timeoutMs ?? 20_000);
    for (;;) {
      if (c.exitCode !== null || c.signalCode !== null) {
        throw new NfsServerError('ERR_NFS_SERVER', `ganesha.nfsd exited (${c.exitCode ?? c.signalCode}): ${(stderr.trim() + '\n' + logTail()).trim()}`);
      }
      if ((await accepts(netns, address, nfsPort)) && (await accepts(netns, address, mountPort))) break;
      if (Date.now() > until) throw new NfsServerError('ERR_NFS_SERVER', `ganesha.nfsd did not listen on ${address}:${nfsPort}/${mountPort}: ${logTail()}`);
      await sleep(100);
    }
    return { address, netns, nfsPort, mountPort, exportPath: EXPORT_PATH, files, pid: c.pid!, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * The guest's side (busybox sh, the kernel's NFS client; busybox `mount` has no NFS helper, so
 * every option is spelled out; v3 with `nolock` since NLM is off, or v4.1 with `version: 4.1`): mount, time one `cat FILE >
 * /dev/null` (the first read: nothing of the file is in the guest's page cache yet), then
 * sha256sum, unmount. Prints `nfs_read_ns=N` (date +%s%N, or /proc/uptime in 10 ms steps as a
 * fallback), `nfs_sha256=HEX`, or `nfs=failed ...`.
 */
export function guestNfsReadCommand(o: { server: string; nfsPort: number; mountPort: number; exportPath: string; file: string; version?: 3 | 4.1 }): string {
  const opts =
    o.version === 4.1 ? `vers=4.1,proto=tcp,port=${o.nfsPort},addr=${o.server}` : `vers=3,proto=tcp,port=${o.nfsPort},mountport=${o.mountPort},mountproto=tcp,nolock,addr=${o.server}`;
  return [
    'mkdir -p /mnt/nfs',
    'now() { t=$(date +%s%N 2>/dev/null); case "$t" in *N*|"") t=$(cut -d" " -f1 /proc/uptime | tr -d .)0000000;; esac; echo $t; }',
    `if mount -t ${o.version === 4.1 ? 'nfs4' : 'nfs'} -o ${opts} ${o.server}:${o.exportPath} /mnt/nfs; then`,
    `  t0=$(now); if cat /mnt/nfs/${o.file} > /dev/null; then t1=$(now); echo nfs_read_ns=$((t1 - t0)); echo nfs_sha256=$(sha256sum /mnt/nfs/${o.file} | cut -d' ' -f1); else echo nfs=failed read; fi`,
    '  umount /mnt/nfs',
    'else echo nfs=failed mount; fi',
  ].join('\n');
}

export interface GuestNfsRead {
  seconds?: number;
  sha256?: string;
  failed?: string;
}

export function parseGuestNfsRead(output: string): GuestNfsRead {
  const r: GuestNfsRead = {};
  const t = /^nfs_read_ns=(\d+)\s*$/m.exec(output);
  if (t) r.seconds = Number(t[1]) / 1e9;
  const s = /^nfs_sha256=([0-9a-f]{64})\s*$/m.exec(output);
  if (s) r.sha256 = s[1];
  const f = /^nfs=failed (.*)$/m.exec(output);
  if (f) r.failed = f[1];
  return r;
}
