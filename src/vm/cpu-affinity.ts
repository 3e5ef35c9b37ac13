/**
 * CPU affinity for a guest and the usernet process that serves it (`usernet vm --cpus LIST`,
 * GuestOptions.cpus, the RTL8139 bench).
 *
 * Why it exists: a device served over vfio-user answers every register *read* of the guest
 * driver with a socket round trip — QEMU's vCPU thread sends and sleeps, usernet wakes and
 * replies, QEMU's vfio-user I/O thread wakes and wakes the vCPU (three hand-offs). Where waking a
 * thread on another CPU is dear (an inter-processor interrupt under nested or paravirtualised
 * virtualisation costs tens of microseconds), keeping QEMU and usernet on the same CPU turns
 * those wake-ups into plain context switches. Measured on the 2-CPU development VM (bench/
 * rtl8139.ts): a unix-socket ping-pong is ~66 µs across CPUs and ~12 µs on one CPU, and the
 * RTL8139's iperf3 throughput doubles when pinned. Virtio-net, which batches through its rings,
 * has no use for it. It is opt-in: on a host with cheap wake-ups sharing one CPU only costs.
 *
 * A CPU list is Linux's format (cpuset(7) "List format"): "0", "0-1", "0,2-3". It is checked
 * against the CPUs this process may use (os.availableParallelism is not the set, so the check
 * reads /proc/self/status Cpus_allowed_list). Processes are pinned with util-linux `taskset`:
 * QEMU is started through it (it execs in place, the PID stays), a running process gets every
 * thread pinned with `taskset -a -p`.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Parse a CPU list; throws RangeError on bad syntax. Returns sorted unique CPU numbers. */
export function parseCpuList(text: string): number[] {
  const cpus = new Set<number>();
  const trimmed = text.trim();
  if (trimmed === '') throw new RangeError('empty CPU list');
  for (const part of trimmed.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new RangeError(`bad CPU list "${text}" (want e.g. 0 or 0-1 or 0,2-3)`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo || hi > 4095) throw new RangeError(`bad CPU range "${part}" in "${text}"`);
    for (let c = lo; c <= hi; c++) cpus.add(c);
  }
  return [...cpus].sort((a, b) => a - b);
}

/** The CPUs a process may run on (/proc/PID/status Cpus_allowed_list). */
export function allowedCpus(pid: number | 'self' = 'self'): number[] {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^Cpus_allowed_list:\s*(.+)$/m.exec(status);
  if (!m) throw new Error(`/proc/${pid}/status has no Cpus_allowed_list`);
  return parseCpuList(m[1]);
}

/** Validate `text` against the CPUs this process may use; the canonical list text. */
export function checkCpuList(text: string): string {
  const wanted = parseCpuList(text);
  const allowed = new Set(allowedCpus());
  const missing = wanted.filter((c) => !allowed.has(c));
  if (missing.length > 0) throw new RangeError(`CPU ${missing.join(',')} is not available here (allowed: ${formatCpuList([...allowed])})`);
  return formatCpuList(wanted);
}

export function formatCpuList(cpus: readonly number[]): string {
  const out: string[] = [];
  for (let i = 0; i < cpus.length; ) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j] + 1) j++;
    out.push(j === i ? String(cpus[i]) : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return out.join(',');
}

/** argv prefix that starts a program on `cpus` (taskset execs it in place: same PID). */
export function affinityPrefix(cpus: string): string[] {
  return ['taskset', '-c', checkCpuList(cpus)];
}

/** Pin every thread of a running process (default: this one) to `cpus`. */
export function pinProcess(cpus: string, pid: number = process.pid): void {
  execFileSync('taskset', ['-a', '-p', '-c', checkCpuList(cpus), String(pid)], { stdio: 'ignore' });
}
