/**
 * Sandboxes for tests that make network namespaces, veths, taps and processes: everything made
 * through a Sandbox is removed when the callback ends — on success, throw, timeout, or when the
 * test process itself exits (signal handlers run the cleanup of every live sandbox).
 *
 * Namespace names are unique per process (`un-<pid>-<n>`), so concurrent test files never
 * collide; deleting a namespace also deletes every interface inside it.
 */
import { spawn, execFile, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { stopChild } from './child-process';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

let counter = 0;
const live = new Set<Sandbox>();

function run(argv: string[], timeoutMs = 60_000): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(argv[0], argv.slice(1), { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

export class Sandbox {
  readonly namespaces: string[] = [];
  readonly processes: ChildProcess[] = [];
  private readonly hostLinks: string[] = [];
  private readonly cleanups: (() => Promise<void> | void)[] = [];
  private closed = false;

  constructor() {
    live.add(this);
  }

  /** Make a new namespace with loopback up; returns its name. */
  async netns(label = 'ns'): Promise<string> {
    const name = `un-${process.pid}-${++counter}-${label}`.slice(0, 40);
    await this.must(['ip', 'netns', 'add', name]);
    this.namespaces.push(name);
    await this.must(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }

  /** A veth pair: ifA in nsA and ifB in nsB (null = the host namespace). Both are set up. */
  async veth(nsA: string | null, ifA: string, nsB: string | null, ifB: string): Promise<void> {
    const tmpA = `uv${process.pid % 100000}a${++counter}`.slice(0, 15);
    const tmpB = `uv${process.pid % 100000}b${counter}`.slice(0, 15);
    await this.must(['ip', 'link', 'add', tmpA, 'type', 'veth', 'peer', 'name', tmpB]);
    this.hostLinks.push(tmpA);
    await this.moveAndName(tmpA, nsA, ifA);
    await this.moveAndName(tmpB, nsB, ifB);
    if (nsA === null) this.hostLinks.push(ifA);
    if (nsB === null) this.hostLinks.push(ifB);
  }

  private async moveAndName(tmp: string, ns: string | null, name: string): Promise<void> {
    if (ns !== null) {
      await this.must(['ip', 'link', 'set', tmp, 'netns', ns]);
      await this.must(['ip', '-n', ns, 'link', 'set', tmp, 'name', name]);
      await this.must(['ip', '-n', ns, 'link', 'set', name, 'up']);
    } else {
      await this.must(['ip', 'link', 'set', tmp, 'name', name]);
      await this.must(['ip', 'link', 'set', name, 'up']);
    }
  }

  /** Run a command inside `ns` (null = host namespace) and wait for it. Never throws. */
  exec(ns: string | null, argv: string[], timeoutMs = 60_000): Promise<ExecResult> {
    return run(ns === null ? argv : ['ip', 'netns', 'exec', ns, ...argv], timeoutMs);
  }

  /** Like exec, but throws with the command's stderr when it exits non-zero. */
  async must(argv: string[], ns: string | null = null, timeoutMs = 60_000): Promise<string> {
    const r = await this.exec(ns, argv, timeoutMs);
    if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
    return r.stdout;
  }

  /** Start a long-running process inside `ns`; it is killed (by PID) at cleanup. */
  spawn(ns: string | null, argv: string[], options: SpawnOptions = {}): ChildProcess {
    const full = ns === null ? argv : ['ip', 'netns', 'exec', ns, ...argv];
    const child = spawn(full[0], full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    child.on('error', () => {});
    this.processes.push(child);
    return child;
  }

  /** Register extra cleanup (run before namespaces are deleted, in reverse order). */
  defer(fn: () => Promise<void> | void): void {
    this.cleanups.push(fn);
  }

  async cleanup(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    live.delete(this);
    for (const fn of this.cleanups.reverse()) {
      try {
        await fn();
      } catch {
        /* keep cleaning */
      }
    }
    await Promise.all(this.processes.map((p) => stopChild(p)));
    for (const link of this.hostLinks) await run(['ip', 'link', 'del', link]);
    for (const ns of this.namespaces.reverse()) await run(['ip', 'netns', 'del', ns]);
  }

  /** Synchronous best effort for process exit: kill processes, delete namespaces. */
  cleanupSync(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.processes) if (p.exitCode === null && p.pid) safeKill(p.pid, 'SIGKILL');
    const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
    for (const link of this.hostLinks) {
      try {
        execFileSync('ip', ['link', 'del', link], { stdio: 'ignore' });
      } catch {
        /* gone */
      }
    }
    for (const ns of this.namespaces) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        /* gone */
      }
    }
  }
}

function safeKill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    /* already gone */
  }
}

/** Run `fn` with a fresh sandbox and always clean it up. Optional overall timeout. */
export async function withSandbox<T>(fn: (sb: Sandbox) => Promise<T>, timeoutMs = 0): Promise<T> {
  const sb = new Sandbox();
  let timer: NodeJS.Timeout | undefined;
  try {
    if (timeoutMs > 0) {
      return await Promise.race([
        fn(sb),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`sandbox timed out after ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    }
    return await fn(sb);
  } finally {
    if (timer) clearTimeout(timer);
    await sb.cleanup();
  }
}

function cleanupAll(): void {
  for (const sb of [...live]) sb.cleanupSync();
}
process.once('exit', cleanupAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    cleanupAll();
    process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
  });
}
