/**
 * `usernet run --metrics 127.0.0.1:PORT`: the ledger in the Prometheus text exposition format
 * (https://prometheus.io/docs/instrumenting/exposition_formats/, version 0.0.4), served on
 * GET /metrics. One counter family per ledger column, one series per stage:
 *
 *   usernet_stage_frames_total{stage="host.tcp.write",way="tx"} 81234
 *   usernet_stage_bytes_copied_total{stage="host.tcp.write",way="tx"} 8388608
 *   usernet_stage_drops_total{stage="nat.tcp.tx",reason="out-of-window"} 3
 *
 * Written by hand (a few lines of text per scrape) rather than through a client library: the
 * meter already holds the counters, so nothing is registered or duplicated on the hot path.
 * Bound to the address given (loopback by default); anything but GET /metrics is a 404.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { globalMeter, METER_ON, type Meter } from './meter';
import { stageInfo } from './stages';

const FAMILIES: { name: string; help: string; value: (s: ReturnType<Meter['snapshot']>[number]) => number }[] = [
  { name: 'usernet_stage_frames_total', help: 'Frames (or packets, segments, lookups) that passed a meter stage', value: (s) => s.frames },
  { name: 'usernet_stage_bytes_total', help: 'Bytes that passed a meter stage, headers included', value: (s) => s.bytes },
  { name: 'usernet_stage_copies_total', help: 'Copies of packet bytes made in a stage (by usernet or by the kernel in a syscall)', value: (s) => s.copies },
  { name: 'usernet_stage_bytes_copied_total', help: 'Bytes copied in a stage', value: (s) => s.bytesCopied },
  { name: 'usernet_stage_rewrites_total', help: 'Header fields rewritten in a stage', value: (s) => s.rewrites },
  { name: 'usernet_stage_seconds_total', help: 'Time spent in a stage (per batch, inclusive of nested stages)', value: (s) => s.ns / 1e9 },
];

const label = (v: string): string => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

/** The exposition text for `meter`. */
export function metricsText(meter: Meter = globalMeter): string {
  const stages = meter.snapshot();
  const out: string[] = [];
  out.push('# HELP usernet_meter_enabled 1 unless the process runs with USERNET_METER=off', '# TYPE usernet_meter_enabled gauge', `usernet_meter_enabled ${METER_ON ? 1 : 0}`);
  for (const f of FAMILIES) {
    out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} counter`);
    for (const s of stages) out.push(`${f.name}{stage="${label(s.name)}",way="${stageInfo(s.name)?.dir ?? 'none'}"} ${f.value(s)}`);
  }
  out.push('# HELP usernet_stage_drops_total Frames dropped in a stage, by reason', '# TYPE usernet_stage_drops_total counter');
  for (const s of stages) for (const [reason, n] of Object.entries(s.dropReasons)) out.push(`usernet_stage_drops_total{stage="${label(s.name)}",reason="${label(reason)}"} ${n}`);
  return out.join('\n') + '\n';
}

export interface MetricsServer {
  address: string;
  port: number;
  close(): Promise<void>;
}

/** `host:port` (or `:port`, or a port) → listening server. */
export async function serveMetrics(spec: string, meter: Meter = globalMeter): Promise<MetricsServer> {
  const m = /^(?:\[?([^\]]*)\]?:)?(\d+)$/.exec(spec.trim());
  if (!m) throw Object.assign(new Error(`--metrics: "${spec}" is not HOST:PORT`), { code: 'EINVAL' });
  const host = m[1] || '127.0.0.1';
  const port = Number(m[2]);
  if (port > 65535) throw Object.assign(new Error(`--metrics: port ${port} out of range`), { code: 'EINVAL' });
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(metricsText(meter));
      return;
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  return {
    address: a.address,
    port: a.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
