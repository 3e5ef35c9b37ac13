/**
 * A "guest" for NAT tests: a fresh network namespace (test/helpers/netns.ts) served by a real
 * `usernet run --netns NS --configure --control SOCK` — the built CLI from dist/, as a child
 * process, exactly as a user runs it. The test gets the namespace, a way to run commands in it,
 * the control socket, usernet's output, and `stop()`; usernet is always stopped (SIGTERM by PID,
 * SIGKILL after 5 s) and the namespace removed, also when the test throws or times out.
 *
 * `hostNetns`: run usernet itself inside another namespace made for the test (its "host"), e.g.
 * to give it a ping_group_range of its own without touching the real host's sysctls. Servers the
 * test wants the guest to reach through the gateway must then run in that namespace too.
 *
 * dist/ is rebuilt (tsc, once per process, under a lock shared by concurrent test files) when
 * any src/*.ts is newer than dist/src/cli/main.js, so `node test/run.js FILE` works on a fresh
 * edit as `make test` does.
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { withSandbox, type ExecResult, type Sandbox } from './netns';
import { controlRequest, type ControlRequestBody } from '../../src/control/client';
import { repoRoot } from '../../src/vm/paths';

/** The repository root (also when this file runs compiled from dist/, as the benches do). */
export const ROOT = repoRoot();
export const CLI = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

export interface NatGuestOptions {
  /** Extra arguments for `usernet run` (e.g. ['--hostfwd', 'tcp:127.0.0.1:8080-:80']). */
  args?: string[];
  /** Run usernet inside this (test-made) namespace instead of the host's. */
  hostNetns?: string;
  /** Default 'tap0'. */
  tapName?: string;
  /** ms to wait for the ready line. Default 30 s. */
  readyTimeoutMs?: number;
  /** Environment additions for the usernet process. */
  env?: Record<string, string>;
}

export interface NatGuest {
  sb: Sandbox;
  /** The guest namespace's name. */
  ns: string;
  /** The control socket path. */
  control: string;
  /** usernet's PID. */
  pid: number;
  /** Everything usernet printed so far. */
  readonly stdout: string;
  readonly stderr: string;
  /** Run a command in the guest namespace. */
  exec(argv: string[], timeoutMs?: number): Promise<ExecResult>;
  /** Run `bash -o pipefail -c SCRIPT` in the guest namespace (a failing curl in a pipe fails it). */
  sh(script: string, timeoutMs?: number): Promise<ExecResult>;
  /** Start a long-running command in the guest (killed at cleanup). */
  spawn(argv: string[]): ChildProcess;
  /** A control request. */
  ctl(body: ControlRequestBody): Promise<unknown>;
  /** The `usernet` CLI itself, run from the host namespace (e.g. ['ctl', '--control', ...]). */
  cli(args: string[], timeoutMs?: number): Promise<ExecResult>;
  /** Stop usernet (SIGTERM) and return how it exited. Idempotent. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function execNode(args: string[], timeoutMs: number, env?: NodeJS.ProcessEnv): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { timeout: timeoutMs, maxBuffer: 64 << 20, env: env ?? process.env }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestMtime(p));
    else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

let built: Promise<void> | null = null;

/** Make sure dist/ holds a build of the current sources (see the file comment). */
export function ensureBuilt(): Promise<void> {
  if (!built) built = build();
  return built;
}

async function build(): Promise<void> {
  const fresh = (): boolean => existsSync(CLI) && statSync(CLI).mtimeMs >= newestMtime(path.join(ROOT, 'src'));
  if (fresh()) return;
  const lock = path.join(ROOT, 'dist', '.build-lock');
  mkdirSync(path.dirname(lock), { recursive: true });
  for (let i = 0; ; i++) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      // someone else builds; a lock older than 3 min is stale
      try {
        if (Date.now() - statSync(lock).mtimeMs > 180_000) rmdirSync(lock);
      } catch {
        /* gone */
      }
      await new Promise((r) => setTimeout(r, 500));
      if (fresh()) return;
      if (i > 600) throw new Error('timed out waiting for another test to build dist/');
    }
  }
  try {
    if (fresh()) return;
    // tsc emits even when other parts of the tree have type errors; only a missing CLI fails
    await execNode([path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(ROOT, 'tsconfig.json')], 300_000);
    if (!existsSync(CLI)) throw new Error(`tsc did not produce ${CLI}`);
  } finally {
    rmdirSync(lock);
  }
}

/** Start usernet on a fresh namespace of `sb`; stopped at sandbox cleanup. */
export async function startNatGuest(sb: Sandbox, opts: NatGuestOptions = {}): Promise<NatGuest> {
  await ensureBuilt();
  const ns = await sb.netns('guest');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'usernet-guest-'));
  const control = path.join(dir, 'control.sock');
  const argv = [CLI, 'run', '--netns', ns, '--configure', '--control', control, ...(opts.tapName ? ['--tap-name', opts.tapName] : []), ...(opts.args ?? [])];
  const child = sb.spawn(opts.hostNetns ?? null, [process.execPath, ...argv], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, USERNET_LOG: process.env.USERNET_LOG ?? 'warn', ...opts.env },
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`usernet not ready after ${opts.readyTimeoutMs ?? 30_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`)), opts.readyTimeoutMs ?? 30_000);
    child.stdout?.on('data', (d: string) => {
      stdout += d;
      if (/^ready\b/m.test(stdout)) {
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`usernet exited (${code ?? signal}) before it was ready\nstdout: ${stdout}\nstderr: ${stderr}`));
    });
  });
  let stopping: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | null = null;
  const stop = (): Promise<{ code: number | null; signal: NodeJS.Signals | null }> => {
    if (!stopping) {
      stopping = (async () => {
        if (child.exitCode === null && child.signalCode === null && child.pid) {
          // `ip netns exec` (hostNetns) execs node in place, so the PID is usernet's either way
          try {
            process.kill(child.pid, 'SIGTERM');
          } catch {
            /* gone */
          }
          const timer = setTimeout(() => {
            try {
              process.kill(child.pid!, 'SIGKILL');
            } catch {
              /* gone */
            }
          }, 5000);
          const r = await exited;
          clearTimeout(timer);
          return r;
        }
        return exited;
      })();
    }
    return stopping;
  };
  sb.defer(async () => {
    await stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    sb,
    ns,
    control,
    pid: child.pid ?? 0,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    exec: (a, t) => sb.exec(ns, a, t),
    sh: (script, t) => sb.exec(ns, ['bash', '-o', 'pipefail', '-c', script], t),
    spawn: (a) => sb.spawn(ns, a),
    ctl: (body) => controlRequest(control, body),
    cli: (args, t = 30_000) => execNode([CLI, ...args], t),
    stop,
  };
}

/** A sandbox with a NAT guest in it; everything is removed when `fn` ends. */
export function withNatGuest<T>(opts: NatGuestOptions, fn: (g: NatGuest) => Promise<T>, timeoutMs = 0): Promise<T> {
  return withSandbox(async (sb) => fn(await startNatGuest(sb, opts)), timeoutMs);
}
