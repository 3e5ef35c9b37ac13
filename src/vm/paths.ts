/**
 * Where the launcher's inputs live: the test guest (built by `make guest` into build/guest) and
 * the two QEMUs — the host's Debian 12 QEMU 7.2, and QEMU 11 from trixie-backports (built by
 * `make qemu11` into build/qemu11, needed for vfio-user). Environment overrides:
 * USERNET_GUEST_DIR, USERNET_QEMU (host QEMU binary), USERNET_QEMU11 (the 11.x wrapper).
 */
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { GuestError } from './errors';

export type QemuKind = 'host' | 'v11';

export interface GuestImage {
  /** The kernel QEMU boots: the uncompressed ELF (PVH entry) when built, else the bzImage. */
  kernel: string;
  initramfs: string;
}

export interface QemuBinary {
  kind: QemuKind;
  path: string;
}

let cachedRoot: string | undefined;

/** The repository root: the nearest parent with usernet's package.json (works from src/ and dist/). */
export function repoRoot(): string {
  if (cachedRoot) return cachedRoot;
  let dir = __dirname;
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'usernet') {
          cachedRoot = dir;
          return dir;
        }
      } catch {
        /* not ours: keep going up */
      }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error('usernet: cannot find the repository root from ' + __dirname);
    dir = up;
  }
}

/** The folder build outputs of the VM tooling go to (git-ignored). */
export function buildDir(...parts: string[]): string {
  return path.join(repoRoot(), 'build', ...parts);
}

export function guestImage(dir = process.env.USERNET_GUEST_DIR ?? buildDir('guest')): GuestImage {
  const initramfs = path.join(dir, 'initramfs.cpio.gz');
  const pvh = path.join(dir, 'vmlinux');
  const bz = path.join(dir, 'vmlinuz');
  const kernel = existsSync(pvh) ? pvh : bz;
  if (!existsSync(initramfs) || !existsSync(kernel)) {
    throw new GuestError('ERR_GUEST_IMAGE_MISSING', `no test guest in ${dir}: run \`make guest\``);
  }
  return { kernel, initramfs };
}

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function onPath(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    if (dir && executable(path.join(dir, cmd))) return path.join(dir, cmd);
  }
  return undefined;
}

/** The QEMU binary of a kind, or ERR_QEMU_NOT_FOUND with what to do about it. */
export function findQemu(kind: QemuKind = 'host'): QemuBinary {
  if (kind === 'v11') {
    const p = process.env.USERNET_QEMU11 ?? buildDir('qemu11', 'qemu-system-x86_64');
    if (executable(p)) return { kind, path: p };
    throw new GuestError('ERR_QEMU_NOT_FOUND', `no QEMU 11 at ${p}: run \`make qemu11\``);
  }
  const p = process.env.USERNET_QEMU ?? onPath('qemu-system-x86_64');
  if (p && executable(p)) return { kind, path: p };
  throw new GuestError('ERR_QEMU_NOT_FOUND', 'no qemu-system-x86_64 on PATH: apt-get install qemu-system-x86');
}

/** Whether a QEMU of that kind is there (for skipping tests and choosing defaults). */
export function haveQemu(kind: QemuKind): boolean {
  try {
    findQemu(kind);
    return true;
  } catch {
    return false;
  }
}
