/**
 * Text for trace records (trace.ts): one packet's journey as an indented path, the way
 * `usernet trace` prints it and docs/nat-code-path.md shows it.
 *
 *   #7 guest→host TCP 10.0.2.15:40312 → 10.0.2.2:5201 [ACK PSH] 1448 B payload · NAT · 2 copies, 6 rewrites, 14.2 µs
 *   └ netns.tap.read      1.9 µs  TapPort.onReadable (link/tap-port.ts)
 *       copy    the namespace kernel's tap queue → usernet's read slab (readv, batched in C)   1514 B
 *     └ nat.parse.tx      0.4 µs  NatStack.send → input (backends/nat/stack.ts)
 *       └ …
 *
 * Each hop is one step deeper than the one before (the packet moves on); under it, its copies
 * (from → to, bytes), its rewrites (field: old → new) and, with `explain`, one line saying what
 * happens there and why (from meter/stages.ts).
 */
import { stageInfo } from './stages';
import type { TraceRecord } from './trace';

export interface FormatOptions {
  explain?: boolean;
  /** Leave times out (for text compared across runs). */
  noTimes?: boolean;
}

export function formatNs(ns: number): string {
  if (ns < 1000) return `${Math.round(ns)} ns`;
  if (ns < 1e6) return `${(ns / 1000).toFixed(1)} µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(2)} ms`;
  return `${(ns / 1e9).toFixed(2)} s`;
}

export function formatBytes(n: number): string {
  return `${n.toLocaleString('en-US')} B`;
}

/** One line: who, what, how far. */
export function journeyTitle(r: TraceRecord, opts: FormatOptions = {}): string {
  const h = r.headers;
  const way = r.dir === 'tx' ? 'guest→host' : 'host→guest';
  const proto = (h.proto ?? '?').toUpperCase();
  const ends = h.srcPort !== undefined ? `${h.src}:${h.srcPort} → ${h.dst}:${h.dstPort}` : `${h.src ?? h.ethSrc ?? '?'} → ${h.dst ?? h.ethDst ?? '?'}`;
  const flags = h.tcpFlags ? ` [${h.tcpFlags}]` : h.icmpType !== undefined ? ` [type ${h.icmpType} id ${h.icmpId}]` : '';
  const size = h.payload !== undefined ? `${formatBytes(h.payload)} payload` : formatBytes(h.length);
  const path = r.path === 'nat' ? 'NAT' : r.path === 'bridged' ? 'bridged' : r.path === 'local' ? 'answered by usernet' : 'link';
  const cost = `${r.copies} cop${r.copies === 1 ? 'y' : 'ies'} (${formatBytes(r.bytesCopied)}), ${r.rewrites} rewrite${r.rewrites === 1 ? '' : 's'}`;
  const time = opts.noTimes ? '' : `, ${formatNs(r.totalNs)}`;
  const verdict = r.verdict === 'delivered' || r.verdict === 'consumed' ? '' : ` · ${r.verdict}`;
  return `#${r.id} ${way} ${proto} ${ends}${flags} ${size} · ${path} · ${cost}${time}${verdict}`;
}

/** The whole journey as indented text (no trailing newline). */
export function formatJourney(r: TraceRecord, opts: FormatOptions = {}): string {
  const lines = [journeyTitle(r, opts)];
  if (r.host) {
    lines.push(`  host side: ${r.host.local} ⇄ ${r.host.remote} (${r.host.socket})`);
  }
  if (r.headers.gso) lines.push(`  offload: GSO ${r.headers.gso}`);
  const nameWidth = Math.max(...r.hops.map((h) => h.stage.length));
  const seen = new Set<string>();
  r.hops.forEach((hop, i) => {
    const pad = '  '.repeat(i);
    const time = opts.noTimes ? '' : `${formatNs(hop.ns).padStart(9)}  `;
    const again = seen.has(hop.stage);
    seen.add(hop.stage);
    lines.push(`${pad}└ ${hop.stage.padEnd(nameWidth)}  ${time}${again ? '(continued)' : hop.fn}`);
    const under = `${pad}    `;
    for (const c of hop.copies) {
      const n = c.count > 1 ? ` in ${c.count} copies` : '';
      lines.push(`${under}copy     ${c.from} → ${c.to}  ${formatBytes(c.bytes)}${n}`);
    }
    for (const w of hop.rewrites) {
      lines.push(`${under}rewrite  ${w.field}: ${w.from} → ${w.to}${w.note ? `  (${w.note})` : ''}`);
    }
    if (hop.rewrites.length === 0 && hop.rewriteCount > 0) lines.push(`${under}rewrite  ${hop.rewriteCount} header field${hop.rewriteCount === 1 ? '' : 's'}`);
    if (hop.drop) lines.push(`${under}drop     ${hop.drop}`);
    if (opts.explain && !again) {
      const info = stageInfo(hop.stage);
      if (info) lines.push(`${under}why      ${info.explain}`);
    }
  });
  if (r.path === 'bridged') lines.push('  no rewrites: bridged frames reach the other side byte for byte (MACs, addresses, ports, checksums as the guest wrote them)');
  return lines.join('\n');
}
