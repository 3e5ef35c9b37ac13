/**
 * What `make demo` (demo.ts) and the VM matrix (vm-matrix.ts) run inside the test guest, and how
 * they read it back: one guest boot per measurement, one shell script that
 *   1. fetches a file over HTTP from the host side and prints its sha256 (optional),
 *   2. runs iperf3 guest→host (the guest sends) and host→guest (`-R`, the host sends), each
 *      `seconds` long, against one `iperf3 -s` on the host side,
 * each step printing a marker line before its output so a failing step is visible and the
 * others still run. iperf3's receiver summary line is what counts (bytes that arrived).
 *
 * Host side: the HTTP server and iperf3 listen on 127.0.0.1 (test/helpers/host-servers.ts);
 * a NAT backend reaches them through its gateway address (usernet and libslirp 10.0.2.2, passt
 * its mapped gateway), a bridged guest through the bridge's address.
 */

export type Direction = 'guest→host' | 'host→guest';
export const DIRECTIONS: readonly Direction[] = ['guest→host', 'host→guest'];

export interface GuestBenchSpec {
  /** The host side as the guest sees it. */
  host: string;
  iperfPort: number;
  seconds: number;
  directions?: readonly Direction[];
  /** GET http://host:port/path and print its sha256. */
  http?: { port: number; path: string };
  /** Extra iperf3 client flags (e.g. -P 2). */
  iperfFlags?: string;
}

export function guestBenchCommand(spec: GuestBenchSpec): string {
  const lines: string[] = [];
  if (spec.http) {
    lines.push('echo @@step fetch');
    lines.push(`if wget -q -O /tmp/blob http://${spec.host}:${spec.http.port}${spec.http.path}; then echo sha256=$(sha256sum /tmp/blob | cut -d' ' -f1); rm -f /tmp/blob; else echo fetch=failed; fi`);
  }
  for (const d of spec.directions ?? DIRECTIONS) {
    lines.push(`echo @@step ${d === 'guest→host' ? 'up' : 'down'}`);
    // -f m: Mbit/s in the summary; a short connect timeout so a dead path fails fast
    lines.push(`iperf3 -c ${spec.host} -p ${spec.iperfPort} -t ${spec.seconds} -f m --connect-timeout 5000 ${d === 'host→guest' ? '-R ' : ''}${spec.iperfFlags ?? ''} 2>&1 || echo iperf=failed`);
  }
  lines.push('echo @@step done');
  return lines.join('\n');
}

export interface GuestBenchResult {
  sha256?: string;
  /** Gbit/s by direction (receiver side), absent when that step failed. */
  gbps: Partial<Record<Direction, number>>;
  /** Each step's raw output, for the log when something failed. */
  steps: Record<string, string>;
}

export function parseGuestBench(output: string): GuestBenchResult {
  const steps: Record<string, string> = {};
  let current = '';
  for (const line of output.split('\n')) {
    const m = /^@@step (\w+)$/.exec(line);
    if (m) {
      current = m[1];
      steps[current] = '';
    } else if (current) steps[current] += line + '\n';
  }
  const res: GuestBenchResult = { gbps: {}, steps };
  const sha = /^sha256=([0-9a-f]{64})$/m.exec(steps.fetch ?? '');
  if (sha) res.sha256 = sha[1];
  for (const [step, d] of [
    ['up', 'guest→host'],
    ['down', 'host→guest'],
  ] as const) {
    const g = receiverGbps(steps[step] ?? '');
    if (g !== undefined) res.gbps[d] = g;
  }
  return res;
}

/** The rate on iperf3's "receiver" summary line, in Gbit/s. */
export function receiverGbps(text: string): number | undefined {
  const m = /([\d.]+)\s+([KMG]?)bits\/sec\s+(?:\d+\s+)?receiver/.exec(text);
  if (!m) return undefined;
  const scale = m[2] === 'G' ? 1 : m[2] === 'M' ? 1e-3 : m[2] === 'K' ? 1e-6 : 1e-9;
  return Number(m[1]) * scale;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function fmtGbps(x: number | undefined): string {
  if (x === undefined || !Number.isFinite(x)) return '—';
  return x >= 10 ? x.toFixed(1) : x >= 0.1 ? x.toFixed(2) : x.toFixed(3); // 100 Mbit/s parts keep 3 digits
}

export function fmtRatio(x: number | undefined): string {
  return x === undefined || !Number.isFinite(x) ? '—' : `${x.toFixed(2)}×`;
}
