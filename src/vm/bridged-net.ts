/**
 * The bridged test network: what a guest in bridged mode is plugged into, built from scratch
 * and removed afterwards whatever happens. Used by `usernet vm --net bridged`, the tests (through
 * test/helpers/bridged-net.ts), the demo and the benchmark matrix.
 *
 *   namespace un-br-<pid>-<n>          (ip netns add; loopback up)
 *     br0        Linux bridge, STP off (ports forward at once), the "host side" address
 *                10.0.3.1/24 (`hostAddress`)
 *     <taps>     enslaved with `attach(ifName)` once they exist: usernet's TapBackend creates
 *                its tap *inside* the namespace (the netns option of the native addon), so the
 *                device is born where it is used and vanishes with usernet's fd; QEMU's own
 *                `-netdev tap` creates its tap in the host namespace, and `adopt(ifName)` moves
 *                it in (`ip link set … netns`) before enslaving it.
 *     servers    on 10.0.3.1: busybox httpd serving a file of known content (`http.url`,
 *                `http.sha256`), `iperf3 -s` on `iperf.ports` (one server per concurrent test)
 *
 * Guests get static addresses: `guestAddress(i)` = 10.0.3.(10 + i)/24, gateway none (the segment
 * is the whole world), so nothing depends on a DHCP server.
 *
 * Teardown (`destroy`, idempotent): servers killed by PID (SIGTERM, then SIGKILL), the
 * namespace deleted (which deletes the bridge and every interface still inside — taps included),
 * the temp folder removed. If the process exits without calling it, an exit hook does the same
 * synchronously. Traffic never leaves the namespace: no host interface is touched.
 */
import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TapBackend, type TapBackendOptions } from '../backends/tap';

export interface BridgedNetworkOptions {
  /** First three octets of the /24. Default 10.0.3. */
  subnet?: string;
  /** Size of the file the HTTP server serves. Default 4 MiB; 0: no HTTP server. */
  httpFileBytes?: number;
  /** iperf3 servers to start (ports 5201, 5202, …). Default 1; 0: none. */
  iperfServers?: number;
  /** Bridge MTU (and of the ports attached). Default 1500. */
  mtu?: number;
  /** A label in the namespace name. */
  label?: string;
}

export interface BridgedHttp {
  url: string;
  port: number;
  path: string;
  sha256: string;
  size: number;
}

interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

let counter = 0;
const live = new Set<BridgedNetwork>();
let hookInstalled = false;

function run(argv: string[], timeoutMs = 30_000): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(argv[0], argv.slice(1), { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function must(argv: string[]): Promise<string> {
  const r = await run(argv);
  if (r.code !== 0) throw Object.assign(new Error(`${argv.join(' ')} failed (${r.code}): ${r.stderr.trim()}`), { code: 'ERR_BRIDGED_NET' });
  return r.stdout;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export class BridgedNetwork {
  /** The namespace name (ip netns). */
  readonly netns: string;
  readonly bridge = 'br0';
  readonly subnet: string;
  readonly prefixLength = 24;
  readonly mtu: number;
  /** The host side of the segment: the bridge's address. */
  readonly hostAddress: string;
  http: BridgedHttp | null = null;
  /** Ports of the iperf3 servers on hostAddress. */
  readonly iperfPorts: number[] = [];
  private readonly processes: ChildProcess[] = [];
  private readonly taps: TapBackend[] = [];
  private readonly dir: string;
  private destroyed = false;

  private constructor(opts: BridgedNetworkOptions) {
    this.subnet = opts.subnet ?? '10.0.3';
    if (!/^\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(this.subnet)) throw Object.assign(new Error(`subnet must be three octets, got ${this.subnet}`), { code: 'EINVAL' });
    this.mtu = opts.mtu ?? 1500;
    this.hostAddress = `${this.subnet}.1`;
    this.netns = `un-br-${process.pid}-${++counter}${opts.label ? `-${opts.label}` : ''}`.slice(0, 40);
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'usernet-bridged-'));
  }

  /** Build the namespace, the bridge and the servers. On failure everything made is removed. */
  static async create(opts: BridgedNetworkOptions = {}): Promise<BridgedNetwork> {
    const net = new BridgedNetwork(opts);
    live.add(net);
    if (!hookInstalled) {
      hookInstalled = true;
      process.once('exit', () => {
        for (const n of [...live]) n.destroySync();
      });
    }
    try {
      await net.build(opts);
      return net;
    } catch (err) {
      await net.destroy();
      throw err;
    }
  }

  /** The address (with prefix) for guest number `i` (0-based): 10.0.3.(10 + i)/24. */
  guestAddress(i: number): string {
    if (!Number.isInteger(i) || i < 0 || i > 200) throw new RangeError('guest index must be 0..200');
    return `${this.subnet}.${10 + i}/${this.prefixLength}`;
  }

  /** The bare IP of guest `i`. */
  guestIp(i: number): string {
    return this.guestAddress(i).split('/')[0];
  }

  /** Run a command inside the namespace. Never throws. */
  exec(argv: string[], timeoutMs = 60_000): Promise<ExecResult> {
    return run(['ip', 'netns', 'exec', this.netns, ...argv], timeoutMs);
  }

  /** Enslave an interface that already lives in the namespace (a tap usernet made there) and bring it up. */
  async attach(ifName: string): Promise<void> {
    await must(['ip', '-n', this.netns, 'link', 'set', ifName, 'mtu', String(this.mtu)]);
    await must(['ip', '-n', this.netns, 'link', 'set', ifName, 'master', this.bridge]);
    await must(['ip', '-n', this.netns, 'link', 'set', ifName, 'up']);
  }

  /**
   * usernet's side of the segment: a TapBackend whose tap is created inside the namespace and
   * enslaved to the bridge. Closed by `destroy` if still open.
   */
  async openTap(opts: Omit<TapBackendOptions, 'netns'> = {}): Promise<TapBackend> {
    const tap = TapBackend.open({ ...opts, netns: this.netns });
    this.taps.push(tap);
    try {
      await this.attach(tap.ifName);
    } catch (err) {
      await tap.close();
      throw err;
    }
    return tap;
  }

  /**
   * Move an interface from the host namespace into this one and enslave it (QEMU's own
   * `-netdev tap,ifname=…`). Waits up to `timeoutMs` for it to appear (QEMU creates it while
   * starting).
   */
  async adopt(ifName: string, timeoutMs = 20_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const r = await run(['ip', 'link', 'set', ifName, 'netns', this.netns]);
      if (r.code === 0) break;
      if (Date.now() > until) throw Object.assign(new Error(`interface ${ifName} did not appear: ${r.stderr.trim()}`), { code: 'ERR_BRIDGED_NET' });
      await sleep(50);
    }
    await this.attach(ifName);
  }

  /** Counters of an interface in the namespace (/sys/class/net/IF/statistics). */
  async linkStats(ifName: string): Promise<Record<string, number>> {
    const r = await this.exec(['ip', '-s', '-j', 'link', 'show', 'dev', ifName]);
    if (r.code !== 0) return {};
    const j = JSON.parse(r.stdout) as { stats64?: { rx?: Record<string, number>; tx?: Record<string, number> } }[];
    const s = j[0]?.stats64 ?? {};
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(s.rx ?? {})) out[`rx_${k}`] = v;
    for (const [k, v] of Object.entries(s.tx ?? {})) out[`tx_${k}`] = v;
    return out;
  }

  private async build(opts: BridgedNetworkOptions): Promise<void> {
    const ns = this.netns;
    await must(['ip', 'netns', 'add', ns]);
    await must(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    await must(['ip', '-n', ns, 'link', 'add', this.bridge, 'mtu', String(this.mtu), 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    await must(['ip', '-n', ns, 'addr', 'add', `${this.hostAddress}/${this.prefixLength}`, 'dev', this.bridge]);
    await must(['ip', '-n', ns, 'link', 'set', this.bridge, 'up']);

    const size = opts.httpFileBytes ?? 4 << 20;
    if (size > 0) {
      const www = path.join(this.dir, 'www');
      mkdirSync(www, { recursive: true });
      const blob = randomBytes(size);
      writeFileSync(path.join(www, 'blob'), blob);
      const port = 80;
      this.spawnServer(['busybox', 'httpd', '-f', '-p', `${this.hostAddress}:${port}`, '-h', www]);
      this.http = { url: `http://${this.hostAddress}:${port}/blob`, port, path: '/blob', sha256: createHash('sha256').update(blob).digest('hex'), size };
    }
    const iperfs = opts.iperfServers ?? 1;
    for (let i = 0; i < iperfs; i++) {
      const port = 5201 + i;
      this.spawnServer(['iperf3', '-s', '-B', this.hostAddress, '-p', String(port)]);
      this.iperfPorts.push(port);
    }
    // the servers are up when they listen
    const want = [...(this.http ? [this.http.port] : []), ...this.iperfPorts];
    const until = Date.now() + 10_000;
    for (;;) {
      const r = await this.exec(['ss', '-Hltn']);
      const listening = want.every((p) => r.stdout.includes(`${this.hostAddress}:${p} `));
      if (listening) break;
      const dead = this.processes.find((p) => p.exitCode !== null);
      if (dead) throw Object.assign(new Error(`a server in ${ns} exited (${dead.spawnargs.join(' ')})`), { code: 'ERR_BRIDGED_NET' });
      if (Date.now() > until) throw Object.assign(new Error(`servers in ${ns} did not start listening`), { code: 'ERR_BRIDGED_NET' });
      await sleep(50);
    }
  }

  private spawnServer(argv: string[]): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.netns, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.on('error', () => {});
    child.stderr?.resume();
    this.processes.push(child);
    return child;
  }

  /** Kill the servers, delete the namespace (and every interface in it), remove temp files. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    for (const tap of this.taps) await tap.close();
    await Promise.all(this.processes.map(killAndWait));
    await run(['ip', 'netns', 'del', this.netns]);
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Synchronous best effort, for process exit. */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    for (const tap of this.taps) void tap.close();
    for (const p of this.processes) {
      if (p.exitCode === null && p.pid) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    try {
      execFileSync('ip', ['netns', 'del', this.netns], { stdio: 'ignore' });
    } catch {
      /* gone */
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function killAndWait(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null || !p.pid) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      try {
        process.kill(p.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, 2000);
    p.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    try {
      process.kill(p.pid!, 'SIGTERM');
    } catch {
      clearTimeout(timer);
      resolve();
    }
  });
}
