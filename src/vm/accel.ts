/**
 * Which accelerator the test guest runs under. KVM only when it actually boots the guest: an
 * openable /dev/kvm is not enough (on the lab machines it is PVM, nested, and a stock Debian
 * kernel does not boot under it — QEMU 7.2 `-cpu host` aborts on MSR 0x10a, other CPU models
 * hang). So the first call boots the guest once under KVM with a short deadline; if the command's
 * exit code does not come back, it is TCG (`-cpu qemu64`).
 *
 * The answer is cached in memory (one probe per process and QEMU) and on disk in
 * build/vm/accel.json, keyed by host kernel release, QEMU binary (path, size, mtime) and the
 * /dev/kvm device, so test workers and later runs skip the probe. USERNET_ACCEL=kvm|tcg forces
 * a choice without probing.
 */
import { constants, openSync, closeSync, readFileSync, renameSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AccelChoice } from './cmdline';
import { buildDir, type QemuBinary } from './paths';

export const TCG: AccelChoice = { accel: 'tcg', cpu: 'qemu64' };
export const KVM: AccelChoice = { accel: 'kvm', cpu: 'host' };

/** Boots the guest under `accel` and says whether the command's exit code came back. */
export type AccelProbe = (qemu: QemuBinary, accel: AccelChoice) => Promise<boolean>;

interface CacheEntry {
  accel: 'kvm' | 'tcg';
  reason: string;
  probedAt: string;
}

const inProcess = new Map<string, Promise<AccelChoice>>();

function kvmOpens(): boolean {
  try {
    closeSync(openSync('/dev/kvm', constants.O_RDWR));
    return true;
  } catch {
    return false;
  }
}

function cacheKey(qemu: QemuBinary): string {
  const q = statSync(qemu.path);
  let kvm = 'none';
  try {
    kvm = String(statSync('/dev/kvm').rdev);
  } catch {
    /* no device */
  }
  return `${os.release()}|${qemu.path}|${q.size}|${q.mtimeMs}|kvm:${kvm}`;
}

function cacheFile(): string {
  return buildDir('vm', 'accel.json');
}

function readCache(): Record<string, CacheEntry> {
  try {
    return JSON.parse(readFileSync(cacheFile(), 'utf8')) as Record<string, CacheEntry>;
  } catch {
    return {};
  }
}

function writeCache(key: string, entry: CacheEntry): void {
  try {
    const all = readCache();
    all[key] = entry;
    const file = cacheFile();
    mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(all, null, 2) + '\n');
    renameSync(tmp, file);
  } catch {
    /* a cache that cannot be written only costs a probe next time */
  }
}

/** The accelerator for `qemu`, probing at most once (see the file comment). */
export function detectAccel(qemu: QemuBinary, probe: AccelProbe): Promise<AccelChoice> {
  const forced = process.env.USERNET_ACCEL;
  if (forced === 'tcg') return Promise.resolve(TCG);
  if (forced === 'kvm') return Promise.resolve(KVM);
  if (!kvmOpens()) return Promise.resolve(TCG);
  let pending = inProcess.get(qemu.path);
  if (!pending) {
    pending = (async (): Promise<AccelChoice> => {
      const key = cacheKey(qemu);
      const cached = readCache()[key];
      if (cached) return cached.accel === 'kvm' ? KVM : TCG;
      let ok = false;
      try {
        ok = await probe(qemu, KVM);
      } catch {
        ok = false;
      }
      writeCache(key, {
        accel: ok ? 'kvm' : 'tcg',
        reason: ok ? 'the guest booted under KVM' : '/dev/kvm opens but the guest did not boot under KVM',
        probedAt: new Date().toISOString(),
      });
      return ok ? KVM : TCG;
    })();
    inProcess.set(qemu.path, pending);
  }
  return pending;
}
