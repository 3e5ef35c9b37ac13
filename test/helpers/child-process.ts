/**
 * Stopping a child process we started, by its PID: a signal (SIGTERM unless told), then SIGKILL
 * if it has not exited after a grace period; resolves once it has exited (at once if it already
 * had). Shared by the sandbox (netns.ts) and the benches.
 */
import type { ChildProcess } from 'node:child_process';

export interface StopOptions {
  signal?: NodeJS.Signals;
  /** How long the first signal has before SIGKILL (default 2000 ms). */
  graceMs?: number;
}

export function stopChild(child: ChildProcess, opts: StopOptions = {}): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  const pid = child.pid;
  return new Promise((resolve) => {
    const timer = setTimeout(() => signal(pid, 'SIGKILL'), opts.graceMs ?? 2000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    if (!signal(pid, opts.signal ?? 'SIGTERM')) {
      clearTimeout(timer);
      resolve();
    }
  });
}

/** Send a signal; false when the process is gone. */
function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}
