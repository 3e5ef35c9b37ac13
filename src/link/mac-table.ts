/**
 * MacTable: the forwarding database of a learning switch (IEEE 802.1Q §8.8 "Filtering
 * Database"; the transparent bridge of IEEE 802.1D §7.8–7.9): which port each unicast MAC
 * address was last seen behind, and when.
 *
 * Learning (§8.7): the source address of every frame received on a port is recorded against
 * that port, with the time. A station seen on another port than before has moved; the entry
 * follows it (counted in `moves`). Group addresses (I/G bit set) are never learned.
 * Ageing (§8.8.3): an entry not refreshed for `ageingMs` (802.1Q's recommended default: 300 s)
 * is gone — a lookup treats it as unknown and removes it; `sweep()` removes all such entries
 * (the Switch runs it on a timer). Bound: at most `maxEntries` entries. When full, expired
 * entries are swept first (at most once a second — a quarter of the ageing time if shorter — so a flood of new addresses costs no table
 * walk per frame); if it is still full the new address is not learned (counted in
 * `refused`) and frames to it are flooded — entries in use keep refreshing and stay, so a burst
 * of made-up source addresses cannot push real stations out (the choice Linux's bridge makes
 * with its fdb_max_learned limit).
 *
 * Keys are the 48-bit address as a number (exact in a double), so the per-frame path — learn
 * the source, look up the destination — allocates nothing: one Map lookup each. Entry objects
 * are allocated when an address is first learned, not per frame. Time is whatever clock the
 * owner passes (milliseconds, monotonic); tests pass a fake one.
 */

/** The 6 bytes at `off` as a number: hi 16 bits × 2^32 + lo 32 bits. */
export function macKey(b: Uint8Array, off: number): number {
  return ((b[off] << 8) | b[off + 1]) * 0x100000000 + (((b[off + 2] << 24) | (b[off + 3] << 16) | (b[off + 4] << 8) | b[off + 5]) >>> 0);
}

/** "52:54:00:12:34:56" for a key. */
export function formatMac(key: number): string {
  const hi = Math.floor(key / 0x100000000);
  const lo = key >>> 0;
  const bytes = [hi >>> 8, hi & 0xff, lo >>> 24, (lo >>> 16) & 0xff, (lo >>> 8) & 0xff, lo & 0xff];
  return bytes.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** The key of "52:54:00:12:34:56" (or with '-'); throws RangeError when malformed. */
export function parseMacKey(s: string): number {
  const parts = s.split(/[:-]/);
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{1,2}$/.test(p))) throw new RangeError(`bad MAC address ${s}`);
  return macKey(Uint8Array.from(parts.map((p) => parseInt(p, 16))), 0);
}

export const DEFAULT_AGEING_MS = 300_000;
export const DEFAULT_MAX_MACS = 4096;

/** learn() results. */
export const LEARN_REFRESHED = 0;
export const LEARN_NEW = 1;
export const LEARN_MOVED = 2;
export const LEARN_REFUSED = 3;

interface Entry {
  port: number;
  seen: number;
}

export interface MacTableOptions {
  /** Entries not refreshed for this long are forgotten. Default 300 000 ms. */
  ageingMs?: number;
  /** Most entries kept. Default 4096. */
  maxEntries?: number;
}

export interface MacEntry {
  mac: string;
  port: number;
  /** Milliseconds since last seen. */
  ageMs: number;
}

export class MacTable {
  readonly ageingMs: number;
  readonly maxEntries: number;
  /** Stations seen on a new port. */
  moves = 0;
  /** Addresses not learned because the table was full. */
  refused = 0;
  /** Entries removed by ageing. */
  aged = 0;
  private readonly entries = new Map<number, Entry>();
  private lastFullSweep = -Infinity;
  private readonly fullSweepEveryMs: number;

  constructor(opts: MacTableOptions = {}) {
    this.ageingMs = opts.ageingMs ?? DEFAULT_AGEING_MS;
    this.maxEntries = Math.max(1, opts.maxEntries ?? DEFAULT_MAX_MACS);
    if (!(this.ageingMs > 0)) throw new RangeError('ageingMs must be positive');
    this.fullSweepEveryMs = Math.min(1000, this.ageingMs / 4);
  }

  get size(): number {
    return this.entries.size;
  }

  /** Record that `key` was the source of a frame received on `port` at `now`. */
  learn(key: number, port: number, now: number): number {
    const e = this.entries.get(key);
    if (e !== undefined) {
      e.seen = now;
      if (e.port === port) return LEARN_REFRESHED;
      e.port = port;
      this.moves++;
      return LEARN_MOVED;
    }
    if (this.entries.size >= this.maxEntries) {
      // a full table is swept at most once a second: a flood of made-up source addresses
      // must not cost a walk of the whole table per frame
      if (now - this.lastFullSweep >= this.fullSweepEveryMs || now < this.lastFullSweep) {
        this.lastFullSweep = now;
        this.sweep(now);
      }
      if (this.entries.size >= this.maxEntries) {
        this.refused++;
        return LEARN_REFUSED;
      }
    }
    this.entries.set(key, { port, seen: now });
    return LEARN_NEW;
  }

  /** The port `key` is behind, or -1 when unknown or aged out (the entry is then removed). */
  lookup(key: number, now: number): number {
    const e = this.entries.get(key);
    if (e === undefined) return -1;
    if (now - e.seen > this.ageingMs) {
      this.entries.delete(key);
      this.aged++;
      return -1;
    }
    return e.port;
  }

  /** Remove every entry older than the ageing time; returns how many went. */
  sweep(now: number): number {
    let n = 0;
    for (const [key, e] of this.entries) {
      if (now - e.seen > this.ageingMs) {
        this.entries.delete(key);
        n++;
      }
    }
    this.aged += n;
    return n;
  }

  /** Forget everything learned on `port` (it was detached). */
  forgetPort(port: number): void {
    for (const [key, e] of this.entries) if (e.port === port) this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }

  /** A copy of the table, for stats and tests. */
  list(now: number): MacEntry[] {
    const out: MacEntry[] = [];
    for (const [key, e] of this.entries) out.push({ mac: formatMac(key), port: e.port, ageMs: now - e.seen });
    return out;
  }
}
