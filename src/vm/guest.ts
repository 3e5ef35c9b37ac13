/**
 * Boots the test guest under QEMU, runs one command in it and returns its output and exit code.
 * Shared by `usernet vm`, the VM tests, `make demo` and the benchmark matrix.
 *
 *   const r = await runGuest({ network: ['-nic', 'user,model=virtio-net-pci'], command: 'ip addr' });
 *   r.exitCode, r.output, r.serial, r.bootMs
 *
 * States of one run:
 *   spawning → booting (serial lines until the begin marker) → command (output until the end
 *   marker) → powering off (the guest's `poweroff -f` ends QEMU; -no-reboot) → settled.
 * Any state can be cut short by the deadline (ERR_GUEST_TIMEOUT), the caller's AbortSignal
 * (ERR_GUEST_ABORTED) or QEMU exiting on its own (ERR_GUEST_NO_RESULT before the end marker).
 * The promise settles only after QEMU has exited and its temp folder is gone: on every path the
 * launcher kills QEMU by its PID (SIGTERM, then SIGKILL after 2 s); if the Node process itself
 * ends mid-run, an exit hook SIGKILLs any QEMU still running, and QEMU's parent-death signal
 * (set by setpriv, which execs QEMU in place) covers a Node killed by a signal.
 *
 * The command goes base64-encoded on the kernel command line (usernet.cmd=); when that would
 * overflow the 2047-byte command line it goes as the fw_cfg file opt/usernet/cmd instead, from a
 * temp file. The accelerator is probed once (accel.ts); here that means TCG.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { detectAccel, KVM, TCG } from './accel';
import { affinityPrefix } from './cpu-affinity';
import {
  kernelCommandLine,
  KERNEL_CMDLINE_MAX,
  qemuArgs,
  type AccelChoice,
  type Accelerator,
  type GuestNet,
} from './cmdline';
import { GuestError } from './errors';
import { findQemu, guestImage, type GuestImage, type QemuBinary, type QemuKind } from './paths';
import { SerialTranscript, type SerialPhase } from './serial';

export interface GuestOptions {
  /** QEMU arguments that make the guest's NIC(s), verbatim; [] for none. */
  network: readonly string[];
  /** Shell command (busybox sh) run in the guest; stdin is /dev/null, stderr joins stdout. */
  command: string;
  /** Deadline for the whole run, boot included. Default 120 s. */
  timeoutMs?: number;
  /** Guest RAM as a shared memfd (vhost-user and vfio-user back-ends map it). */
  memfd?: boolean;
  /** 'host': the Debian QEMU 7.2; 'v11': QEMU 11 from build/qemu11 (vfio-user). */
  qemu?: QemuKind;
  /** Extra kernel parameters (no whitespace inside one). */
  kernelArgs?: readonly string[];
  signal?: AbortSignal;
  /** How the guest configures eth0. Default DHCP. */
  net?: GuestNet;
  /** Kernel boot messages on the serial port, and the guest's kernel log after a non-zero exit code. */
  console?: boolean;
  /** Load the NFS client modules at boot (they also load on demand at mount). */
  allModules?: boolean;
  memoryMiB?: number;
  smp?: number;
  /** QEMU machine type; default q35. */
  machine?: string;
  /** Default: probe (KVM only if it boots the guest, else TCG). */
  accel?: Accelerator | 'auto';
  image?: GuestImage;
  /** More QEMU arguments, after the network ones. */
  qemuArgs?: readonly string[];
  /** Run QEMU on these CPUs only (Linux CPU list, e.g. "0"; cpu-affinity.ts says when it pays). */
  cpus?: string;
  /** Every serial line as it arrives (CR stripped), with the phase it belongs to. */
  onLine?: (line: string, phase: SerialPhase) => void;
  /** QEMU is running: its PID and arguments. */
  onSpawn?: (info: { pid: number; args: readonly string[] }) => void;
  /** The command started in the guest. */
  onBegin?: () => void;
}

export interface GuestResult {
  exitCode: number;
  /** The command's stdout and stderr, exactly as written. */
  output: string;
  /** The whole serial console (LF line ends). */
  serial: string;
  /** The guest's kernel log, when `console` was set and the command failed. */
  dmesg: string;
  /** From spawning QEMU to the command starting in the guest. */
  bootMs: number;
  /** From the command starting to its end marker. */
  commandMs: number;
  /** From spawning QEMU to QEMU gone. */
  totalMs: number;
  /** The guest kernel's uptime when the command started (s). */
  guestUptime: number | undefined;
  qemu: { kind: QemuKind; path: string; pid: number; args: readonly string[]; accel: Accelerator };
  /** The tail of QEMU's stderr. */
  stderr: string;
}

const DEFAULT_TIMEOUT_MS = 120_000;
/** After the end marker, how long QEMU may take to power off before it is killed. */
const POWEROFF_GRACE_MS = 10_000;
const KILL_GRACE_MS = 2_000;
const STDERR_KEEP = 64 * 1024;

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

// Every QEMU this process started and that has not exited yet, by PID.
const live = new Set<number>();
let exitHookInstalled = false;
function track(pid: number): void {
  live.add(pid);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const p of live) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    });
  }
}

/** PIDs of QEMU processes started by this process that are still running. */
export function liveGuestPids(): number[] {
  return [...live];
}

function qemuOptionValue(v: string): string {
  return v.replace(/,/g, ',,'); // QEMU option syntax: a literal comma is doubled
}

function accelFor(qemu: QemuBinary, choice: GuestOptions['accel']): Promise<AccelChoice> {
  if (choice === 'kvm') return Promise.resolve(KVM);
  if (choice === 'tcg') return Promise.resolve(TCG);
  return detectAccel(qemu, async (q, accel) => {
    try {
      const r = await runWith(q, accel, { network: [], command: 'true', net: 'none', timeoutMs: 30_000 });
      return r.exitCode === 0;
    } catch {
      return false;
    }
  });
}

/** Boot the guest, run `opts.command`, and return what it printed and its exit code. */
export async function runGuest(opts: GuestOptions): Promise<GuestResult> {
  if (opts.signal?.aborted) throw new GuestError('ERR_GUEST_ABORTED', 'aborted before start', '', '', { cause: opts.signal.reason });
  const qemu = findQemu(opts.qemu ?? 'host');
  const accel = await accelFor(qemu, opts.accel ?? 'auto');
  return runWith(qemu, accel, opts);
}

async function runWith(qemu: QemuBinary, accel: AccelChoice, opts: GuestOptions): Promise<GuestResult> {
  if (opts.signal?.aborted) throw new GuestError('ERR_GUEST_ABORTED', 'aborted before start', '', '', { cause: opts.signal.reason });
  const image = opts.image ?? guestImage();
  const nonce = randomBytes(8).toString('hex');
  const cmdSpec = { nonce, net: opts.net, console: opts.console, allModules: opts.allModules, extra: opts.kernelArgs };
  const b64 = Buffer.from(opts.command, 'utf8').toString('base64');
  let cmdline = kernelCommandLine({ ...cmdSpec, commandBase64: b64 });
  let tmpDir: string | undefined;
  let commandFile: string | undefined;
  if (cmdline.length > KERNEL_CMDLINE_MAX) {
    cmdline = kernelCommandLine(cmdSpec);
    if (cmdline.length > KERNEL_CMDLINE_MAX) {
      throw new GuestError('ERR_GUEST_COMMAND_TOO_LONG', `kernel command line is ${cmdline.length} bytes without the command (max ${KERNEL_CMDLINE_MAX})`);
    }
    tmpDir = await mkdtemp(path.join(os.tmpdir(), 'usernet-vm-'));
    commandFile = path.join(tmpDir, 'cmd.sh');
    await writeFile(commandFile, opts.command);
  }
  const args = qemuArgs({
    image,
    accel,
    kernelCmdline: cmdline,
    network: opts.network,
    memoryMiB: opts.memoryMiB,
    smp: opts.smp,
    machine: opts.machine,
    memfd: opts.memfd,
    processName: `usernet-vm-${nonce.slice(0, 6)}`,
    commandFile: commandFile ? qemuOptionValue(commandFile) : undefined,
    extra: opts.qemuArgs,
  });
  try {
    return await supervise(qemu, accel, args, nonce, opts);
  } finally {
    if (tmpDir) await rm(tmpDir, { recursive: true, force: true });
  }
}

function supervise(
  qemu: QemuBinary,
  accel: AccelChoice,
  args: string[],
  nonce: string,
  opts: GuestOptions,
): Promise<GuestResult> {
  return new Promise<GuestResult>((resolve, reject) => {
    const t0 = performance.now();
    let tBegin: number | undefined;
    let tEnd: number | undefined;
    let stderr = '';
    let failure: Error | undefined; // why we are killing QEMU, if we are
    let exited = false;
    let killTimer: NodeJS.Timeout | undefined;
    let graceTimer: NodeJS.Timeout | undefined;

    const transcript = new SerialTranscript(nonce, {
      line: (line, phase) => {
        if (!opts.onLine) return;
        try {
          opts.onLine(line, phase);
        } catch (e) {
          fail(e instanceof Error ? e : new Error(String(e)));
        }
      },
      begin: () => {
        tBegin = performance.now();
        try {
          opts.onBegin?.();
        } catch (e) {
          fail(e instanceof Error ? e : new Error(String(e)));
        }
      },
      end: () => {
        tEnd = performance.now();
        // The guest powers off by itself; a QEMU that does not exit soon is killed, the
        // result stands.
        graceTimer = setTimeout(() => kill(), POWEROFF_GRACE_MS);
      },
    });

    let child: ChildProcess;
    try {
      // setpriv (util-linux) sets PR_SET_PDEATHSIG and execs QEMU in place (same PID): if this
      // Node process dies by a signal, before any exit hook can run, the kernel kills QEMU.
      const command = [...(opts.cpus !== undefined ? affinityPrefix(opts.cpus) : []), qemu.path, ...args];
      const [file, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', ...command]] : [command[0], command.slice(1)];
      child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      reject(new GuestError('ERR_QEMU_SPAWN', `cannot start ${qemu.path}: ${String(e)}`, '', '', { cause: e }));
      return;
    }
    const pid = child.pid;

    const kill = (): void => {
      if (exited || pid === undefined) return;
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone already */
      }
      if (!killTimer) {
        killTimer = setTimeout(() => {
          if (exited) return;
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* gone already */
          }
        }, KILL_GRACE_MS);
      }
    };

    function fail(err: Error): void {
      if (!failure && transcript.exitCode === undefined) failure = err;
      else if (!failure && !(err instanceof GuestError)) failure = err; // a callback threw after the end
      kill();
    }

    const deadline = setTimeout(() => {
      fail(new GuestError('ERR_GUEST_TIMEOUT', `no result within ${opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms (phase ${transcript.phase})`));
    }, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);

    const onAbort = (): void => {
      fail(new GuestError('ERR_GUEST_ABORTED', 'aborted by the caller', '', '', { cause: opts.signal?.reason }));
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    child.stdout!.on('data', (chunk: Buffer) => transcript.feed(chunk));
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      stderr += s;
      if (stderr.length > STDERR_KEEP * 2) stderr = stderr.slice(-STDERR_KEEP);
    });

    let spawnError: Error | undefined;
    child.on('error', (e) => {
      spawnError ??= e;
      if (pid === undefined) {
        // spawn itself failed (ENOENT, EACCES): there is no process to wait for.
        clearTimeout(deadline);
        opts.signal?.removeEventListener('abort', onAbort);
        reject(new GuestError('ERR_QEMU_SPAWN', `cannot start ${qemu.path}: ${e.message}`, '', '', { cause: e }));
      }
    });
    if (pid !== undefined) {
      track(pid);
      try {
        opts.onSpawn?.({ pid, args });
      } catch (e) {
        fail(e instanceof Error ? e : new Error(String(e)));
      }
    }
    child.on('exit', () => {
      exited = true;
      if (pid !== undefined) live.delete(pid);
    });

    // 'close': the process has exited and its stdout/stderr are drained.
    child.on('close', (code, signal) => {
      exited = true;
      if (pid !== undefined) live.delete(pid);
      clearTimeout(deadline);
      clearTimeout(killTimer);
      clearTimeout(graceTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      transcript.close();
      const serial = transcript.serial;
      const errTail = stderr.slice(-STDERR_KEEP);
      if (spawnError && pid === undefined) {
        reject(new GuestError('ERR_QEMU_SPAWN', `cannot start ${qemu.path}: ${spawnError.message}`, '', errTail, { cause: spawnError }));
        return;
      }
      if (failure && !(failure instanceof GuestError)) {
        reject(failure);
        return;
      }
      if (transcript.exitCode === undefined) {
        const err =
          failure instanceof GuestError
            ? new GuestError(failure.code, failure.message, serial, errTail, { cause: failure.cause })
            : new GuestError('ERR_GUEST_NO_RESULT', `QEMU exited (${signal ?? `code ${code}`}) before the command finished (phase ${transcript.phase})`, serial, errTail);
        reject(err);
        return;
      }
      const end = performance.now();
      resolve({
        exitCode: transcript.exitCode,
        output: transcript.output,
        serial,
        dmesg: transcript.dmesg,
        bootMs: Math.round((tBegin ?? end) - t0),
        commandMs: Math.round((tEnd ?? end) - (tBegin ?? end)),
        totalMs: Math.round(end - t0),
        guestUptime: transcript.guestUptimeAtBegin,
        qemu: { kind: qemu.kind, path: qemu.path, pid: pid ?? -1, args, accel: accel.accel },
        stderr: errTail,
      });
    });
  });
}
