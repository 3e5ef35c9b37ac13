/**
 * What a test needs from the machine, and skipping with the reason printed when it is missing.
 * CI here has all of it (root, network namespaces, /dev/net/tun, QEMU), so in CI nothing skips;
 * on a laptop without root the same suite still runs its unit tests.
 */
import test, { type TestFn } from 'ava';
import { accessSync, constants, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

export type Need = 'root' | 'netns' | 'tun' | 'qemu' | `cmd:${string}`;

const cache = new Map<Need, string | null>();

function onPath(cmd: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    try {
      accessSync(`${dir}/${cmd}`, constants.X_OK);
      return true;
    } catch {
      /* next */
    }
  }
  return false;
}

function check(need: Need): string | null {
  switch (need) {
    case 'root':
      return process.getuid?.() === 0 ? null : 'needs root';
    case 'netns':
      if (process.getuid?.() !== 0) return 'network namespaces need root';
      if (!onPath('ip')) return 'needs iproute2 (ip)';
      try {
        execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
        return null;
      } catch {
        return 'ip netns does not work here';
      }
    case 'tun':
      return existsSync('/dev/net/tun') ? null : 'needs /dev/net/tun';
    case 'qemu':
      return onPath('qemu-system-x86_64') ? null : 'needs qemu-system-x86_64';
    default:
      return onPath(need.slice(4)) ? null : `needs ${need.slice(4)} on PATH`;
  }
}

/** The first reason one of `needs` is missing, or null when all are there. */
export function missing(...needs: Need[]): string | null {
  for (const n of needs) {
    if (!cache.has(n)) cache.set(n, check(n));
    const reason = cache.get(n);
    if (reason) return reason;
  }
  return null;
}

const reported = new Set<string>();

/** ava's `test` when every need is met; otherwise a `test.skip` that prints why, once. */
export function testIf(...needs: Need[]): TestFn {
  const reason = missing(...needs);
  if (!reason) return test;
  if (!reported.has(reason)) {
    reported.add(reason);
    // eslint-disable-next-line no-console
    console.log(`# skipping tests that ${reason}`);
  }
  const skipping = ((title: string, ...rest: unknown[]) =>
    (test.skip as (t: string, ...r: unknown[]) => void)(`${title} (skipped: ${reason})`, ...rest)) as unknown as TestFn;
  return Object.assign(skipping, test, { serial: skipping, only: skipping });
}
