/**
 * The ledger as people read it: a meter snapshot (meter.ts) turned into rows in path order with
 * each stage's direction (stages.ts), copies per byte and time per byte, plus totals per
 * direction — how many bytes were copied for each payload byte that crossed usernet.
 *
 * Payload of a direction is what crossed the boundary usernet translates at: for NAT the bytes
 * written to host sockets (guest → host) and read from them (host → guest; a retransmission to
 * the guest is read again and counted again, as it is copied again); for bridged, where nothing
 * is parsed, the frame bytes written to / read from the bridged tap (headers included). Both are
 * stated with the totals so a reader knows what the ratio is over.
 */
import type { StageSnapshot } from './meter';
import { stageInfo, stageOrder, type StageDirection } from './stages';

export interface LedgerRow extends StageSnapshot {
  dir: StageDirection;
  /** bytesCopied / bytes (0 when the stage saw no bytes). */
  copiesPerByte: number;
  /** ns / bytes (time is measured per batch, inclusive of nested stages). */
  nsPerByte: number;
}

export interface DirectionTotals {
  /** Payload bytes the ratio is over, and what they are. */
  payload: number;
  payloadIs: string;
  copies: number;
  bytesCopied: number;
  /** bytesCopied / payload. */
  copiesPerPayloadByte: number;
  rewrites: number;
}

export interface Ledger {
  rows: LedgerRow[];
  tx: DirectionTotals;
  rx: DirectionTotals;
  mode: 'nat' | 'bridged' | 'both' | 'idle';
}

/** Stages that are not on the data path (capture, control messages, helpers): kept out of totals. */
function offPath(name: string): boolean {
  return name.startsWith('pcap.') || name.startsWith('vfio-user.') || name.startsWith('wire.') || name.startsWith('link.fault') || name.startsWith('link.loopback');
}

export function ledger(stages: readonly StageSnapshot[], opts: { all?: boolean } = {}): Ledger {
  const rows: LedgerRow[] = stages
    .filter((s) => opts.all || s.frames > 0 || s.copies > 0 || s.drops > 0)
    .map((s) => ({
      ...s,
      dir: stageInfo(s.name)?.dir ?? 'none',
      copiesPerByte: s.bytes > 0 ? s.bytesCopied / s.bytes : 0,
      nsPerByte: s.bytes > 0 && s.ns > 0 ? s.ns / s.bytes : 0,
    }))
    .sort((a, b) => stageOrder(a.name) - stageOrder(b.name) || a.name.localeCompare(b.name));
  const by = (name: string): StageSnapshot | undefined => stages.find((s) => s.name === name);
  const sum = (names: string[], f: (s: StageSnapshot) => number): number => names.reduce((acc, n) => acc + (by(n) ? f(by(n)!) : 0), 0);
  const natTx = sum(['host.tcp.write', 'host.udp.write', 'host.icmp.write'], (s) => s.bytes);
  const natRx = sum(['host.tcp.read', 'host.udp.read', 'host.icmp.read'], (s) => s.bytes);
  const tapTx = by('tap.write')?.bytes ?? 0;
  const tapRx = by('tap.read')?.bytes ?? 0;
  const nat = natTx + natRx > 0;
  const bridged = tapTx + tapRx > 0;
  const mode = nat && bridged ? 'both' : nat ? 'nat' : bridged ? 'bridged' : 'idle';
  const totals = (dir: 'tx' | 'rx'): DirectionTotals => {
    const payload = nat ? (dir === 'tx' ? natTx : natRx) : dir === 'tx' ? tapTx : tapRx;
    const payloadIs = nat
      ? dir === 'tx'
        ? 'payload bytes written to host sockets'
        : 'payload bytes read from host sockets (retransmissions read again)'
      : dir === 'tx'
        ? 'frame bytes written to the bridged tap'
        : 'frame bytes read from the bridged tap';
    let copies = 0;
    let bytesCopied = 0;
    let rewrites = 0;
    for (const s of stages) {
      if (offPath(s.name) || stageInfo(s.name)?.dir !== dir) continue;
      copies += s.copies;
      bytesCopied += s.bytesCopied;
      rewrites += s.rewrites;
    }
    return { payload, payloadIs, copies, bytesCopied, copiesPerPayloadByte: payload > 0 ? bytesCopied / payload : 0, rewrites };
  };
  return { rows, tx: totals('tx'), rx: totals('rx'), mode };
}

/** Difference of two snapshots of the same meter (for rates). */
export function delta(now: readonly StageSnapshot[], before: readonly StageSnapshot[]): StageSnapshot[] {
  const prev = new Map(before.map((s) => [s.name, s]));
  return now.map((s) => {
    const p = prev.get(s.name);
    if (!p) return s;
    const reasons: Record<string, number> = {};
    for (const [k, v] of Object.entries(s.dropReasons)) reasons[k] = v - (p.dropReasons[k] ?? 0);
    return {
      name: s.name,
      frames: s.frames - p.frames,
      bytes: s.bytes - p.bytes,
      copies: s.copies - p.copies,
      bytesCopied: s.bytesCopied - p.bytesCopied,
      rewrites: s.rewrites - p.rewrites,
      drops: s.drops - p.drops,
      dropReasons: reasons,
      ns: s.ns - p.ns,
    };
  });
}
