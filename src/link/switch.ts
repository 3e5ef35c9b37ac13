/**
 * Switch: several guests (any frontend mix: virtio rings over vhost-user, QEMU NICs over stream
 * or dgram sockets, netns taps) on one L2 segment inside one usernet process, with at most one
 * uplink — the NAT stack or a tap backend — like a learning bridge with one port to the world
 * (IEEE 802.1Q §8 / 802.1D §7 transparent bridging; the Linux bridge's behaviour is the model).
 *
 * Forwarding, per frame received on port P (one batch at a time):
 *   runt (< 14 bytes) or a group/zero source address        → dropped, counted at P
 *   learn: source MAC → P (mac-table.ts: ageing 300 s by default, bounded table)
 *   destination 01:80:C2:00:00:0X (802.1Q §8.6.3 reserved)   → not forwarded (counted `link-local`)
 *   destination broadcast / multicast                       → flooded to every port but P
 *   destination unicast, known behind Q ≠ P                  → to Q only
 *   destination unicast, known behind P                      → filtered (never reflected)
 *   destination unicast, unknown or aged out                → flooded to every port but P
 * A frame never goes back out of the port it came in on.
 *
 * Borrowing, no copies: frames handed to the switch are borrowed for the call (frame.ts). The
 * switch sorts one incoming batch into one outgoing batch per port (reused arrays) and sends
 * each port its batch before returning — a flooded frame is the *same* borrowed view in every
 * port's batch. The only copies are for ports that cannot take a frame's offload (see
 * switch-offload.ts: checksum completion, software TSO segmentation — metered). A port that
 * sends into the switch from inside its own send (a stack answering at once) is handled one
 * level deeper with its own scratch, so nested batches never overwrite each other.
 *
 * Offloads: each port accepts what its NIC negotiated (`offloads` of an offload-aware port —
 * the guest* flags: what may be sent *to* it), nothing for a plain port, everything for the
 * uplink (a tap or the NAT stack take GSO and partial checksums as they are). The switch itself
 * is offload-aware towards its uplink: `offloads` is what *every* member accepts (their
 * intersection), so frames coming up from the uplink and flooded can go anywhere unchanged; it
 * emits 'offloads' when that changes (a member joins, leaves or renegotiates). A TapBackend
 * uplink follows it (`tap.follow(sw)`), a NAT stack reads it.
 *
 * Counters per port (`stats()`): frames/bytes in and out, frames it received that were flooded,
 * drops by reason. The meter stage `link.switch` has the totals (frames, bytes, copies, drops, time).
 * Ageing runs on a timer (unref'd; `sweepIntervalMs`) and at lookups; the clock is injectable.
 *
 * States: open → closed (close(): detaches every port; with `closePorts` it closes them too).
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { Frame } from './frame';
import type { Port } from './port';
import { MacTable, macKey, LEARN_MOVED, type MacEntry } from './mac-table';
import { ADAPT_ARENA_FULL, ADAPT_DROPPED, OffloadAdapter, acceptsFrame } from './switch-offload';
import { isOffloadAware, type NetOffloads, NO_OFFLOADS } from '../devices/virtio/net-offloads';
import { globalMeter, observing, type Meter, type Stage } from '../meter/meter';
import { tracer } from '../meter/trace';
import { LINK_SWITCH } from '../meter/stages';
import { log, logOnce } from '../log';

/** Everything: what the uplink (tap, NAT stack) accepts. */
export const ALL_OFFLOADS: Readonly<NetOffloads> = Object.freeze({
  guestCsum: true,
  guestTso4: true,
  guestTso6: true,
  guestEcn: true,
  guestUfo: true,
  hostCsum: true,
  hostTso4: true,
  hostTso6: true,
  hostEcn: true,
  hostUfo: true,
  mergeableRx: true,
  maxRxFrame: 65535 + 18,
});

export interface SwitchOptions {
  name?: string;
  /** MAC ageing time. Default 300 000 ms (IEEE 802.1Q default). */
  ageingMs?: number;
  /** Most MAC addresses learned. Default 4096. */
  maxMacs?: number;
  /** Milliseconds, monotonic. Default performance.now. */
  clock?: () => number;
  /** Sweep aged entries this often (0: only at lookups). Default min(ageing / 2, 60 s). */
  sweepIntervalMs?: number;
  meter?: Meter;
  /** Close member ports when the switch closes. Default true. */
  closePorts?: boolean;
}

export interface SwitchPortOptions {
  /** Name in stats (default: the port's own name). */
  name?: string;
  /** What may be sent to this port; default: its negotiated offloads, else none. */
  accepts?: Readonly<NetOffloads>;
}

export interface SwitchPortStats {
  name: string;
  uplink: boolean;
  /** Frames/bytes the port sent into the switch. */
  inFrames: number;
  inBytes: number;
  /** Of those, frames flooded (broadcast, multicast, unknown unicast). */
  flooded: number;
  /** Frames/bytes the switch sent to the port. */
  outFrames: number;
  outBytes: number;
  drops: Record<string, number>;
}

/** One port of the switch. */
export class SwitchMember {
  inFrames = 0;
  inBytes = 0;
  flooded = 0;
  outFrames = 0;
  outBytes = 0;
  readonly drops = new Map<string, number>();
  /** Outgoing batch per dispatch depth. */
  readonly out: Frame[][] = [[]];
  accepts: Readonly<NetOffloads>;
  acceptsAll: boolean;
  detached = false;
  private readonly onOffloads: ((o: Readonly<NetOffloads>) => void) | null = null;

  constructor(
    private readonly sw: Switch,
    readonly port: Port,
    readonly index: number,
    readonly name: string,
    readonly uplink: boolean,
    accepts: Readonly<NetOffloads> | undefined,
  ) {
    if (uplink) this.accepts = accepts ?? ALL_OFFLOADS;
    else if (accepts) this.accepts = accepts;
    else if (isOffloadAware(port)) {
      this.accepts = port.offloads;
      this.onOffloads = (o) => {
        this.accepts = o;
        this.acceptsAll = coversAll(o);
        sw.offloadsChanged();
      };
      port.on('offloads', this.onOffloads);
    } else this.accepts = NO_OFFLOADS;
    this.acceptsAll = coversAll(this.accepts);
  }

  drop(reason: string, n = 1): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + n);
  }

  /** Leave the switch (the port is not closed). Idempotent. */
  detach(): void {
    if (this.detached) return;
    this.detached = true;
    if (this.onOffloads) (this.port as unknown as EventEmitter).off?.('offloads', this.onOffloads);
    this.sw.remove(this);
  }

  stats(): SwitchPortStats {
    return {
      name: this.name,
      uplink: this.uplink,
      inFrames: this.inFrames,
      inBytes: this.inBytes,
      flooded: this.flooded,
      outFrames: this.outFrames,
      outBytes: this.outBytes,
      drops: Object.fromEntries(this.drops),
    };
  }
}

function coversAll(o: Readonly<NetOffloads>): boolean {
  return o.guestCsum && o.guestTso4 && o.guestTso6 && o.guestEcn && o.guestUfo;
}

function intersect(a: Readonly<NetOffloads>, b: Readonly<NetOffloads>): NetOffloads {
  return {
    guestCsum: a.guestCsum && b.guestCsum,
    guestTso4: a.guestTso4 && b.guestTso4,
    guestTso6: a.guestTso6 && b.guestTso6,
    guestEcn: a.guestEcn && b.guestEcn,
    guestUfo: a.guestUfo && b.guestUfo,
    hostCsum: a.hostCsum && b.hostCsum,
    hostTso4: a.hostTso4 && b.hostTso4,
    hostTso6: a.hostTso6 && b.hostTso6,
    hostEcn: a.hostEcn && b.hostEcn,
    hostUfo: a.hostUfo && b.hostUfo,
    mergeableRx: a.mergeableRx && b.mergeableRx,
    maxRxFrame: Math.min(a.maxRxFrame, b.maxRxFrame),
  };
}

export class Switch extends EventEmitter {
  readonly name: string;
  readonly macs: MacTable;
  private readonly clock: () => number;
  private readonly stage: Stage;
  private readonly closePorts: boolean;
  /** Members by index (null: free slot); `members` is the live list, replaced on change. */
  private slots: (SwitchMember | null)[] = [];
  private members: readonly SwitchMember[] = [];
  private uplinkMember: SwitchMember | null = null;
  private readonly adapters: OffloadAdapter[] = [];
  private readonly adapted: Frame[][] = [];
  private depth = 0;
  private memberOffloads: Readonly<NetOffloads> = NO_OFFLOADS;
  private sweepTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(opts: SwitchOptions = {}) {
    super();
    this.name = opts.name ?? 'switch';
    this.macs = new MacTable({ ageingMs: opts.ageingMs, maxEntries: opts.maxMacs });
    this.clock = opts.clock ?? (() => performance.now());
    this.stage = (opts.meter ?? globalMeter).stage(LINK_SWITCH);
    this.closePorts = opts.closePorts ?? true;
    const every = opts.sweepIntervalMs ?? Math.min(this.macs.ageingMs / 2, 60_000);
    if (every > 0) {
      this.sweepTimer = setInterval(() => this.macs.sweep(this.clock()), every);
      this.sweepTimer.unref();
    }
    this.updateOffloads();
  }

  /**
   * What every member port accepts: the offloads frames from the uplink may carry (the switch
   * is offload-aware towards its uplink). No members: none.
   */
  get offloads(): Readonly<NetOffloads> {
    return this.memberOffloads;
  }

  get uplink(): SwitchMember | null {
    return this.uplinkMember;
  }

  /** Put a guest-side port on the segment. */
  attach(port: Port, opts: SwitchPortOptions = {}): SwitchMember {
    return this.add(port, false, opts);
  }

  /** Make `port` (the NAT stack, a TapBackend) the uplink; a previous uplink is detached. */
  setUplink(port: Port, opts: SwitchPortOptions = {}): SwitchMember {
    this.uplinkMember?.detach();
    const m = this.add(port, true, opts);
    this.uplinkMember = m;
    return m;
  }

  private add(port: Port, uplink: boolean, opts: SwitchPortOptions): SwitchMember {
    if (this.closed) throw Object.assign(new Error(`${this.name} is closed`), { code: 'ERR_SWITCH_CLOSED' });
    if (this.members.some((m) => m.port === port)) throw Object.assign(new Error(`${port.name} is already on ${this.name}`), { code: 'EEXIST' });
    let index = this.slots.indexOf(null);
    if (index < 0) index = this.slots.length;
    const m = new SwitchMember(this, port, index, opts.name ?? port.name, uplink, opts.accepts);
    this.slots[index] = m;
    this.members = [...this.members, m];
    port.onReceive((frames) => this.receive(m, frames));
    this.updateOffloads();
    return m;
  }

  /** @internal SwitchMember.detach */
  remove(m: SwitchMember): void {
    if (this.slots[m.index] !== m) return;
    this.slots[m.index] = null;
    this.members = this.members.filter((x) => x !== m);
    if (this.uplinkMember === m) this.uplinkMember = null;
    this.macs.forgetPort(m.index);
    m.port.onReceive(() => {});
    this.updateOffloads();
  }

  /** @internal a member renegotiated its offloads */
  offloadsChanged(): void {
    this.updateOffloads();
  }

  private updateOffloads(): void {
    let acc: Readonly<NetOffloads> | null = null;
    for (const m of this.members) if (!m.uplink) acc = acc === null ? m.accepts : intersect(acc, m.accepts);
    const next = Object.freeze(acc === null ? { ...NO_OFFLOADS } : { ...acc });
    if (JSON.stringify(next) === JSON.stringify(this.memberOffloads)) return;
    this.memberOffloads = next;
    this.emit('offloads', next);
  }

  /** Forward one batch received on member `from`. */
  private receive(from: SwitchMember, frames: readonly Frame[]): void {
    if (this.closed || from.detached) return;
    const stage = this.stage;
    const t0 = stage.start();
    const level = this.depth++;
    try {
      const members = this.members;
      for (const m of members) while (m.out.length <= level) m.out.push([]);
      const now = this.clock();
      const macs = this.macs;
      let bytes = 0;
      for (let i = 0; i < frames.length; i++) {
        const f = frames[i];
        const d = f.data;
        const len = d.length;
        bytes += len;
        if (len < 14) {
          this.drop(from, 'runt');
          continue;
        }
        // a group source address is never valid (802.1Q §8.6.3 / Linux is_valid_ether_addr)
        if ((d[6] & 1) !== 0 || (d[6] | d[7] | d[8] | d[9] | d[10] | d[11]) === 0) {
          this.drop(from, 'bad-source');
          continue;
        }
        const src = macKey(d, 6);
        if (macs.learn(src, from.index, now) === LEARN_MOVED) log.debug({ switch: this.name, port: from.name }, 'station moved');
        if ((d[0] & 1) !== 0) {
          // 01:80:C2:00:00:00–0F: link-local control protocols (STP, pause, LACP, 802.1X)
          if (d[0] === 0x01 && d[1] === 0x80 && d[2] === 0xc2 && d[3] === 0 && d[4] === 0 && (d[5] & 0xf0) === 0) {
            this.drop(from, 'link-local');
            continue;
          }
          this.flood(from, f, level, members);
          continue;
        }
        const to = macs.lookup(macKey(d, 0), now);
        if (to < 0) {
          this.flood(from, f, level, members);
          continue;
        }
        if (to === from.index) {
          this.drop(from, 'same-port');
          continue;
        }
        const target = this.slots[to];
        // (a port attached during this very dispatch has no batch at this depth yet)
        if (target === null || target === undefined || target.out.length <= level) {
          this.flood(from, f, level, members);
          continue;
        }
        target.out[level].push(f);
      }
      from.inFrames += frames.length;
      from.inBytes += bytes;
      if (observing.on) for (let i = 0; i < frames.length; i++) tracer.hopFor(frames[i], stage);
      stage.pass(frames.length, bytes);
      for (const m of members) {
        const out = m.out[level];
        if (out.length > 0) this.deliver(m, out, level);
      }
    } finally {
      this.depth--;
      stage.stop(t0);
    }
  }

  private flood(from: SwitchMember, f: Frame, level: number, members: readonly SwitchMember[]): void {
    from.flooded++;
    for (const m of members) if (m !== from) m.out[level].push(f);
  }

  private drop(m: SwitchMember, reason: string): void {
    m.drop(reason);
    if (this.stage.dropped(reason) && reason !== 'same-port' && reason !== 'link-local') {
      logOnce(`${this.name}.${reason}`, `${this.name}: frame from ${m.name} dropped (${reason})`);
    }
  }

  /** Send `out` (then empty it) to `m`, adapting the frames it cannot take. */
  private deliver(m: SwitchMember, out: Frame[], level: number): void {
    if (m.detached) {
      m.drop('detached', out.length);
      out.length = 0;
      return;
    }
    let plain = m.acceptsAll;
    if (!plain) {
      plain = true;
      for (let i = 0; i < out.length; i++) {
        if (!acceptsFrame(out[i], m.accepts)) {
          plain = false;
          break;
        }
      }
    }
    if (plain) {
      this.send(m, out);
      out.length = 0;
      return;
    }
    const adapter = (this.adapters[level] ??= new OffloadAdapter(this.stage));
    const adapted = (this.adapted[level] ??= []);
    adapted.length = 0;
    for (let i = 0; i < out.length; i++) {
      let res = adapter.adapt(out[i], m.accepts, adapted);
      if (res === ADAPT_ARENA_FULL) {
        // send what is ready, then start the arena again
        this.send(m, adapted);
        adapted.length = 0;
        adapter.reset();
        res = adapter.adapt(out[i], m.accepts, adapted);
      }
      if (res === ADAPT_DROPPED) this.drop(m, adapter.lastDrop);
      else if (res === ADAPT_ARENA_FULL) this.drop(m, 'too-large');
    }
    this.send(m, adapted);
    adapted.length = 0;
    adapter.reset();
    out.length = 0;
  }

  private send(m: SwitchMember, out: Frame[]): void {
    const n = out.length;
    if (n === 0) return;
    let bytes = 0;
    for (let i = 0; i < n; i++) bytes += out[i].data.length;
    m.outFrames += n;
    m.outBytes += bytes;
    try {
      m.port.send(out);
    } catch (err) {
      if (this.stage.dropped('port-threw')) log.error({ switch: this.name, port: m.name, err: (err as Error).message }, 'switch: a port threw from send; frames dropped');
      m.drop('port-threw', n);
    }
  }

  /** Per-port counters. */
  stats(): SwitchPortStats[] {
    return this.members.map((m) => m.stats());
  }

  /** The learned addresses with their ports' names. */
  macTable(): (MacEntry & { portName: string })[] {
    return this.macs.list(this.clock()).map((e) => ({ ...e, portName: this.slots[e.port]?.name ?? '?' }));
  }

  /** Detach everything (closing the ports unless `closePorts` was false). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    const members = this.members;
    for (const m of members) m.detach();
    this.macs.clear();
    if (this.closePorts) {
      for (const m of members) {
        try {
          await m.port.close();
        } catch (err) {
          log.warn({ switch: this.name, port: m.name, err: (err as Error).message }, 'switch: closing a port failed');
        }
      }
    }
  }
}
