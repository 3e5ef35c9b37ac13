/**
 * FlowTable: the bounded table of flows one protocol module keeps (TCP connections, UDP
 * mappings, ICMP echo sessions), for both address families.
 *
 * Key: (family, protocol, source address, source port, destination address, destination port)
 * as the guest sees it. A module that keys on less (UDP's endpoint-independent mapping, RFC 4787
 * REQ-1, keys on the guest's source address and port only; ICMP echo on source address and
 * identifier) passes `null` / 0 for the parts it does not use.
 *
 * Lookup costs no allocation: the key's hash is computed straight from the address views of the
 * packet (FNV-1a over the bytes, kept to 30 bits so it stays a small integer in V8), the bucket is
 * a `Map<number, FlowNode>` chained through the nodes, and every candidate is compared byte by
 * byte against the copy of the key stored in the node (collisions are expected and harmless).
 * Only creating a flow allocates (the node and its key copy: once per flow).
 *
 * Ageing and limits:
 *  - every unpinned node sits in an LRU list (most recently used at the head); `touch` moves it
 *    to the head in O(1);
 *  - with `idleMs`, a timer (unref'd) sweeps from the tail and expires flows idle that long
 *    (hook `onEvict(value, 'idle')`); modules that refresh only on outbound traffic (RFC 4787
 *    REQ-6) simply touch only there;
 *  - at `limit` flows an insert either evicts the least recently used flow (`onEvict(value,
 *    'lru')`) or is refused (returns null), as the module chooses; refusals and evictions are
 *    counted in the meter stage `nat.flows.<name>` (frames = flows created, drops by reason);
 *    every lookup (the NAT lookup of each packet, hit or miss) is a frame of `nat.lookup.<name>`;
 *  - pinned nodes (port forwards) are never aged nor evicted, but still count against the limit.
 */
import type { Meter, Stage } from '../../meter/meter';
import { natFlows, natLookup } from '../../meter/stages';
import type { Family } from './context';

export type EvictReason = 'idle' | 'lru' | 'closed';

export interface FlowTableOptions<T> {
  /** Short name: the meter stage is `nat.flows.<name>`. */
  name: string;
  meter: Meter;
  /** Most flows this table holds (config.maxFlows, or a share of it). */
  limit: number;
  /** Expire flows not touched for this long (ms); 0 or absent: no idle expiry. */
  idleMs?: number;
  /** What an insert at the limit does: evict the least recently used flow, or refuse. */
  whenFull?: 'evict-oldest' | 'refuse';
  /** Called after a flow left the table because of age, the limit, or close(). */
  onEvict?: (value: T, reason: EvictReason) => void;
  /** Clock (ms) — tests may inject one. */
  now?: () => number;
}

/** Offsets inside a stored key. */
const K_FAMILY = 0;
const K_PROTO = 1;
const K_SPORT = 2;
const K_DPORT = 4;
const K_SRC = 8;
const K_DST = 24;
const KEY_LEN = 40;

/** One flow. `value` is the module's own state; the rest belongs to the table. */
export class FlowNode<T> {
  readonly key = new Uint8Array(KEY_LEN);
  hash = 0;
  lastUsed = 0;
  pinned = false;
  /** False once removed (a module holding a stale node can tell). */
  live = false;
  /** Bucket chain. */
  nextInBucket: FlowNode<T> | null = null;
  /** LRU list: `newer` towards the head, `older` towards the tail. */
  newer: FlowNode<T> | null = null;
  older: FlowNode<T> | null = null;

  constructor(public value: T) {}

  get family(): Family {
    return this.key[K_FAMILY] as Family;
  }
  get protocol(): number {
    return this.key[K_PROTO];
  }
  get srcPort(): number {
    return (this.key[K_SPORT] << 8) | this.key[K_SPORT + 1];
  }
  get dstPort(): number {
    return (this.key[K_DPORT] << 8) | this.key[K_DPORT + 1];
  }
  /** The stored source address (a view into the key; 4 or 16 bytes). */
  src(): Uint8Array {
    return this.key.subarray(K_SRC, K_SRC + (this.key[K_FAMILY] === 4 ? 4 : 16));
  }
  dst(): Uint8Array {
    return this.key.subarray(K_DST, K_DST + (this.key[K_FAMILY] === 4 ? 4 : 16));
  }
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

function mixByte(h: number, b: number): number {
  return Math.imul(h ^ b, FNV_PRIME);
}

function mixAddress(h: number, a: Uint8Array | null, len: number): number {
  if (a === null) {
    for (let i = 0; i < len; i++) h = mixByte(h, 0);
    return h;
  }
  for (let i = 0; i < len; i++) h = mixByte(h, a[i]);
  return h;
}

/** The 30-bit hash of a flow key, from the address views themselves (no allocation). */
export function flowHash(
  family: Family,
  protocol: number,
  src: Uint8Array | null,
  srcPort: number,
  dst: Uint8Array | null,
  dstPort: number,
): number {
  const alen = family === 4 ? 4 : 16;
  let h = FNV_OFFSET;
  h = mixByte(h, family);
  h = mixByte(h, protocol);
  h = mixByte(h, srcPort >>> 8);
  h = mixByte(h, srcPort & 0xff);
  h = mixByte(h, dstPort >>> 8);
  h = mixByte(h, dstPort & 0xff);
  h = mixAddress(h, src, alen);
  h = mixAddress(h, dst, alen);
  return (h ^ (h >>> 30)) & 0x3fffffff;
}

function sameAddress(key: Uint8Array, at: number, a: Uint8Array | null, len: number): boolean {
  if (a === null) {
    for (let i = 0; i < len; i++) if (key[at + i] !== 0) return false;
    return true;
  }
  for (let i = 0; i < len; i++) if (key[at + i] !== a[i]) return false;
  return true;
}

export class FlowTable<T> {
  private readonly buckets = new Map<number, FlowNode<T>>();
  /** LRU list ends (unpinned nodes only). */
  private head: FlowNode<T> | null = null;
  private tail: FlowNode<T> | null = null;
  private count = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly stage: Stage;
  private readonly lookupStage: Stage;
  private readonly now: () => number;
  private readonly whenFull: 'evict-oldest' | 'refuse';
  private readonly onEvict?: (value: T, reason: EvictReason) => void;
  limit: number;
  idleMs: number;

  /** Counters (also visible in the meter stage). */
  readonly stats = { created: 0, removed: 0, expired: 0, evicted: 0, refused: 0 };

  constructor(opts: FlowTableOptions<T>) {
    this.stage = opts.meter.stage(natFlows(opts.name));
    this.lookupStage = opts.meter.stage(natLookup(opts.name));
    this.limit = Math.max(1, opts.limit);
    this.idleMs = opts.idleMs ?? 0;
    this.whenFull = opts.whenFull ?? 'evict-oldest';
    this.onEvict = opts.onEvict;
    this.now = opts.now ?? Date.now;
    if (this.idleMs > 0) {
      const every = Math.max(250, Math.min(10_000, Math.floor(this.idleMs / 4)));
      this.timer = setInterval(() => this.sweep(), every);
      this.timer.unref();
    }
  }

  get size(): number {
    return this.count;
  }

  /** The flow with this key, or undefined. Allocates nothing. */
  lookup(
    family: Family,
    protocol: number,
    src: Uint8Array | null,
    srcPort: number,
    dst: Uint8Array | null,
    dstPort: number,
  ): FlowNode<T> | undefined {
    const hash = flowHash(family, protocol, src, srcPort, dst, dstPort);
    this.lookupStage.pass(1, 0);
    for (let n: FlowNode<T> | null = this.buckets.get(hash) ?? null; n; n = n.nextInBucket) {
      if (n.hash === hash && this.matches(n, family, protocol, src, srcPort, dst, dstPort)) return n;
    }
    return undefined;
  }

  /**
   * Add a flow (the key must not be present: look it up first). Returns its node, or null when
   * the table is full and refuses (counted as a drop `table-full`).
   */
  insert(
    family: Family,
    protocol: number,
    src: Uint8Array | null,
    srcPort: number,
    dst: Uint8Array | null,
    dstPort: number,
    value: T,
    pinned = false,
  ): FlowNode<T> | null {
    if (this.count >= this.limit && !this.makeRoom()) {
      this.stats.refused++;
      this.stage.dropped('table-full');
      return null;
    }
    const node = new FlowNode(value);
    const k = node.key;
    const alen = family === 4 ? 4 : 16;
    k[K_FAMILY] = family;
    k[K_PROTO] = protocol;
    k[K_SPORT] = srcPort >>> 8;
    k[K_SPORT + 1] = srcPort & 0xff;
    k[K_DPORT] = dstPort >>> 8;
    k[K_DPORT + 1] = dstPort & 0xff;
    if (src) for (let i = 0; i < alen; i++) k[K_SRC + i] = src[i];
    if (dst) for (let i = 0; i < alen; i++) k[K_DST + i] = dst[i];
    node.hash = flowHash(family, protocol, src, srcPort, dst, dstPort);
    node.nextInBucket = this.buckets.get(node.hash) ?? null;
    this.buckets.set(node.hash, node);
    node.lastUsed = this.now();
    node.live = true;
    node.pinned = pinned;
    if (!pinned) this.linkHead(node);
    this.count++;
    this.stats.created++;
    this.stage.pass(1, 0);
    return node;
  }

  /** Mark a flow as used now (moves it to the head of the LRU list). */
  touch(node: FlowNode<T>, now = this.now()): void {
    node.lastUsed = now;
    if (node.pinned || !node.live || this.head === node) return;
    this.unlink(node);
    this.linkHead(node);
  }

  /** Pin or unpin a flow (pinned flows are never aged or evicted). */
  pin(node: FlowNode<T>, pinned: boolean): void {
    if (!node.live || node.pinned === pinned) return;
    if (pinned) this.unlink(node);
    node.pinned = pinned;
    if (!pinned) {
      node.lastUsed = this.now();
      this.linkHead(node);
    }
  }

  /** Take a flow out of the table (the module closes its resources itself; no hook). */
  remove(node: FlowNode<T>): void {
    if (!node.live) return;
    node.live = false;
    if (!node.pinned) this.unlink(node);
    const first = this.buckets.get(node.hash);
    if (first === node) {
      if (node.nextInBucket) this.buckets.set(node.hash, node.nextInBucket);
      else this.buckets.delete(node.hash);
    } else {
      for (let n: FlowNode<T> | null = first ?? null; n; n = n.nextInBucket) {
        if (n.nextInBucket === node) {
          n.nextInBucket = node.nextInBucket;
          break;
        }
      }
    }
    node.nextInBucket = null;
    this.count--;
    this.stats.removed++;
  }

  /** Expire flows idle for `idleMs` or more. Returns how many expired. */
  sweep(now = this.now()): number {
    if (this.idleMs <= 0) return 0;
    let expired = 0;
    while (this.tail && now - this.tail.lastUsed >= this.idleMs) {
      const node = this.tail;
      this.remove(node);
      this.stats.expired++;
      expired++;
      this.onEvict?.(node.value, 'idle');
    }
    return expired;
  }

  /** Every live flow, oldest first, pinned ones last (not for hot paths). */
  *values(): IterableIterator<T> {
    const nodes: FlowNode<T>[] = [];
    for (const first of this.buckets.values()) for (let n: FlowNode<T> | null = first; n; n = n.nextInBucket) nodes.push(n);
    nodes.sort((a, b) => (a.pinned === b.pinned ? a.lastUsed - b.lastUsed : a.pinned ? 1 : -1));
    for (const n of nodes) yield n.value;
  }

  /** Remove every flow, calling `onEvict(value, 'closed')` for each, and stop the timer. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const all = [...this.buckets.values()];
    for (const first of all) {
      for (let n: FlowNode<T> | null = first; n; ) {
        const next: FlowNode<T> | null = n.nextInBucket;
        this.remove(n);
        this.onEvict?.(n.value, 'closed');
        n = next;
      }
    }
  }

  private makeRoom(): boolean {
    if (this.whenFull !== 'evict-oldest' || !this.tail) return false;
    const victim = this.tail;
    this.remove(victim);
    this.stats.evicted++;
    this.stage.dropped('evicted-lru');
    this.onEvict?.(victim.value, 'lru');
    return true;
  }

  private matches(
    n: FlowNode<T>,
    family: Family,
    protocol: number,
    src: Uint8Array | null,
    srcPort: number,
    dst: Uint8Array | null,
    dstPort: number,
  ): boolean {
    const k = n.key;
    if (k[K_FAMILY] !== family || k[K_PROTO] !== protocol) return false;
    if (((k[K_SPORT] << 8) | k[K_SPORT + 1]) !== srcPort || ((k[K_DPORT] << 8) | k[K_DPORT + 1]) !== dstPort) return false;
    const alen = family === 4 ? 4 : 16;
    return sameAddress(k, K_SRC, src, alen) && sameAddress(k, K_DST, dst, alen);
  }

  private linkHead(node: FlowNode<T>): void {
    node.older = this.head;
    node.newer = null;
    if (this.head) this.head.newer = node;
    this.head = node;
    if (!this.tail) this.tail = node;
  }

  private unlink(node: FlowNode<T>): void {
    if (node.newer) node.newer.older = node.older;
    else if (this.head === node) this.head = node.older;
    if (node.older) node.older.newer = node.newer;
    else if (this.tail === node) this.tail = node.newer;
    node.newer = node.older = null;
  }
}
