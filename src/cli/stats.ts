/**
 * `usernet stats`: the ledger of a running usernet, read over its control socket.
 *
 *   usernet stats --control PATH                 a table: one row per stage, in path order
 *   usernet stats --control PATH --json          the raw snapshot (stages, NAT summary, TCP totals)
 *   usernet stats --control PATH --watch [S]     refreshed every S seconds (default 1), with rates
 *   usernet stats --control PATH --flows         one row per NAT flow, both sides, with counters
 *
 * Table columns: frames, bytes, copies, bytes copied, copies per byte (bytes copied / bytes of
 * the stage), rewrites, ns per byte (where the stage is timed), drops (with the reasons under
 * the table). Under it, per direction, the copies per payload byte over the whole path and
 * what "payload" is for this instance (meter/ledger.ts). `--watch` shows rates over the last
 * interval instead of totals. The control path may also come from USERNET_CONTROL.
 */
import { Command, InvalidArgumentError } from 'commander';
import { ControlClient, controlRequest } from '../control/client';
import type { StageSnapshot } from '../meter/meter';
import { delta, ledger, type DirectionTotals, type Ledger } from '../meter/ledger';
import type { FlowRow } from '../backends/nat/trace-view';

interface StatsOptions {
  control?: string;
  json?: boolean;
  watch?: number | boolean;
  flows?: boolean;
  all?: boolean;
  reset?: boolean;
}

interface StatsResult {
  pid: number;
  uptimeSeconds: number;
  rssBytes: number;
  meter?: string;
  time?: number;
  stages: StageSnapshot[];
  [k: string]: unknown;
}

const num = (n: number): string => Math.round(n).toLocaleString('en-US');

function human(n: number, unit = 'B'): string {
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(2)} G${unit}`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(2)} M${unit}`;
  if (abs >= 1e4) return `${(n / 1e3).toFixed(1)} k${unit}`;
  return `${Math.round(n)} ${unit}`;
}

function ratio(n: number): string {
  return n === 0 ? '—' : n.toFixed(n < 10 ? 3 : 1);
}

function table(header: string[], rows: string[][], right: boolean[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => (right[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '─'.repeat(w))), ...rows.map(line)].join('\n');
}

function totalsLine(name: string, t: DirectionTotals): string {
  if (t.payload === 0) return `${name}: no payload yet`;
  return `${name}: ${ratio(t.copiesPerPayloadByte)} bytes copied per payload byte (${num(t.bytesCopied)} B in ${num(t.copies)} copies over ${num(t.payload)} B: ${t.payloadIs}), ${num(t.rewrites)} rewrites`;
}

/** The ledger as text: the stage table, drop reasons, totals per direction. */
export function formatLedger(l: Ledger, opts: { rates?: number } = {}): string {
  const per = opts.rates;
  const v = (n: number): number => (per ? n / per : n);
  const header = per
    ? ['stage', 'way', 'frames/s', 'bytes/s', 'copies/s', 'copied/s', 'copies/B', 'rewrites/s', 'ns/B', 'drops/s']
    : ['stage', 'way', 'frames', 'bytes', 'copies', 'bytes copied', 'copies/B', 'rewrites', 'ns/B', 'drops'];
  const rows = l.rows.map((r) => [
    r.name,
    r.dir === 'tx' ? 'g→h' : r.dir === 'rx' ? 'h→g' : r.dir === 'both' ? '⇄' : '',
    num(v(r.frames)),
    per ? human(v(r.bytes)) : num(r.bytes),
    num(v(r.copies)),
    per ? human(v(r.bytesCopied)) : num(r.bytesCopied),
    ratio(r.copiesPerByte),
    num(v(r.rewrites)),
    r.nsPerByte > 0 ? r.nsPerByte.toFixed(r.nsPerByte < 10 ? 2 : 0) : '—',
    num(v(r.drops)),
  ]);
  const out = [table(header, rows, [false, false, true, true, true, true, true, true, true, true])];
  const drops = l.rows.filter((r) => r.drops > 0);
  if (drops.length > 0) {
    out.push('', 'drops by reason:');
    for (const r of drops) {
      const reasons = Object.entries(r.dropReasons)
        .filter(([, n]) => n > 0)
        .map(([k, n]) => `${k} ${num(v(n))}`)
        .join(', ');
      out.push(`  ${r.name}: ${reasons}`);
    }
  }
  out.push('', totalsLine('guest→host', l.tx), totalsLine('host→guest', l.rx));
  out.push('(way: g→h the guest transmits, h→g it receives; time is per batch and includes nested stages)');
  return out.join('\n');
}

function formatFlows(rows: FlowRow[]): string {
  if (rows.length === 0) return 'no flows';
  const header = ['proto', 'guest', 'peer (guest view)', 'host socket', 'host peer', 'state', 'bytes g→h', 'bytes h→g', 'pkts g→h', 'pkts h→g', 'retrans', 'win stalls', 'host stalls'];
  const body = rows.map((f) => [
    f.proto,
    f.guest,
    f.peer,
    f.hostLocal ?? '—',
    f.hostRemote ?? '—',
    f.state ?? '',
    num(f.bytesOut),
    num(f.bytesIn),
    num(f.packetsOut),
    num(f.packetsIn),
    f.retransmits !== undefined ? num(f.retransmits) : '—',
    f.windowStalls !== undefined ? num(f.windowStalls) : '—',
    f.hostStalls !== undefined ? num(f.hostStalls) : '—',
  ]);
  return table(header, body, [false, false, false, false, false, false, true, true, true, true, true, true, true]);
}

function controlPath(o: StatsOptions): string {
  const p = o.control ?? process.env.USERNET_CONTROL;
  if (!p) throw Object.assign(new Error('stats: --control PATH is required (or USERNET_CONTROL)'), { code: 'EINVAL' });
  return p;
}

function header(r: StatsResult): string {
  return `usernet ${r.pid} · up ${r.uptimeSeconds} s · RSS ${human(r.rssBytes)}${r.meter === 'off' ? ' · meter OFF (USERNET_METER=off)' : ''}`;
}

async function watch(path: string, seconds: number, o: StatsOptions): Promise<void> {
  const client = await ControlClient.connect(path);
  let prev: StatsResult | null = null;
  let stop = false;
  const onSig = (): void => {
    stop = true;
  };
  process.once('SIGINT', onSig);
  try {
    while (!stop) {
      const r = (await client.request({ cmd: 'stats' })) as StatsResult;
      let text: string;
      if (o.json) {
        text = JSON.stringify(prev ? { ...r, interval: ((r.time ?? 0) - (prev.time ?? 0)) / 1000, rates: delta(r.stages, prev.stages) } : r);
      } else if (prev) {
        const secs = Math.max(0.001, ((r.time ?? Date.now()) - (prev.time ?? Date.now() - seconds * 1000)) / 1000);
        text = `${header(r)} · rates over ${secs.toFixed(1)} s\n\n${formatLedger(ledger(delta(r.stages, prev.stages)), { rates: secs })}`;
      } else {
        text = `${header(r)} · totals (rates from the next refresh)\n\n${formatLedger(ledger(r.stages, { all: o.all }))}`;
      }
      if (!o.json && process.stdout.isTTY) process.stdout.write('\x1b[2J\x1b[H');
      process.stdout.write(text + '\n' + (o.json || process.stdout.isTTY ? '' : '\n'));
      prev = r;
      await new Promise((res) => setTimeout(res, seconds * 1000));
    }
  } finally {
    process.off('SIGINT', onSig);
    client.close();
  }
}

function watchSeconds(v: string): number {
  const n = Number(v);
  if (!(n > 0) || n > 3600) throw new InvalidArgumentError('--watch takes a number of seconds in (0, 3600]');
  return n;
}

export function statsCommand(): Command {
  return new Command('stats')
    .description("the ledger of a running usernet: every stage's frames, bytes, copies, rewrites, time and drops")
    .option('--control <path>', 'the control socket of the instance (usernet run --control PATH); default $USERNET_CONTROL')
    .option('--json', 'print the snapshot as JSON (with --watch: one JSON line per refresh, with rates)')
    .option('--watch [seconds]', 'refresh every SECONDS (default 1) and show rates', watchSeconds)
    .option('--flows', 'one row per NAT flow (both sides, bytes and segments each way, retransmissions, window stalls)')
    .option('--all', 'also list stages that saw nothing')
    .option('--reset', 'reset the counters after reading them')
    .action(async (o: StatsOptions) => {
      const path = controlPath(o);
      if (o.flows) {
        const r = (await controlRequest(path, { cmd: 'flows' })) as { flows: FlowRow[]; tcp: Record<string, number> | null };
        if (o.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
        else {
          process.stdout.write(formatFlows(r.flows) + '\n');
          if (r.tcp) {
            const t = r.tcp;
            process.stdout.write(
              `\nTCP, all connections so far (${num(t.connectionsLive ?? 0)} live, ${num(t.connectionsClosed ?? 0)} closed): ` +
                `${num(t.bytesFromGuest)} B guest→host, ${num(t.bytesToGuest)} B host→guest, ${num(t.retransmits)} retransmissions, ` +
                `${num(t.windowStalls)} window stalls, ${num(t.hostStalls)} host stalls\n`,
            );
          }
        }
        return;
      }
      if (o.watch !== undefined && o.watch !== false) {
        await watch(path, o.watch === true ? 1 : o.watch, o);
        return;
      }
      const r = (await controlRequest(path, { cmd: 'stats', reset: o.reset === true })) as StatsResult;
      if (o.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
      else process.stdout.write(`${header(r)}\n\n${formatLedger(ledger(r.stages, { all: o.all }))}\n`);
    });
}
