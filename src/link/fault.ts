/**
 * FaultInjector: Port middleware that damages traffic on purpose, for tests — in the manner of
 * smoltcp's phy::FaultInjector, with each direction configured on its own:
 *
 *   drop       the frame is not passed on
 *   corrupt    one byte past the 14-byte Ethernet header is XORed with a random non-zero value
 *              (so the frame still reaches its L3 handler and the damage shows as a bad
 *              checksum or a wrong field, not as a misaddressed frame)
 *   duplicate  the frame is passed on twice, back to back
 *   reorder    the frame is held back and released right after the next frame that passes in
 *              the same direction (or after `holdMs` if none comes), i.e. two frames swap
 *
 * Decisions are drawn, in that order, from a seeded PRNG per direction, so a run is repeatable:
 * the same seed, rates and batches give the same faults, and the two directions do not disturb
 * each other's sequence. Only non-zero rates draw numbers.
 *
 * Frames are borrowed (frame.ts): the injector never writes into one. A corrupted frame is a
 * metered copy (Stage `link.fault`), and so is a held-back frame, since it must outlive the
 * send() that lent it. Copies live in two bounded FrameQueues per direction; when one is full the
 * fault is skipped (counted as `skipped`) rather than memory grown. Each batch leaves as one
 * batch. A send() re-entering the same direction from inside a handler is handled: its scratch
 * copies are released only when the outermost call returns.
 */
import type { Frame } from './frame';
import { PortMiddleware, type FrameHandler, type Port } from './port';
import { FrameQueue } from './frame-queue';
import { globalMeter, type Meter, type Stage } from '../meter/meter';
import { LINK_FAULT } from '../meter/stages';

const ETH_HEADER_LEN = 14;

/** Probabilities in [0, 1] of each fault, per frame. */
export interface FaultRates {
  drop?: number;
  corrupt?: number;
  duplicate?: number;
  reorder?: number;
}

export interface FaultInjectorOptions {
  /** PRNG seed: the same seed gives the same faults. */
  seed: number;
  /** Faults on frames sent through the injector (towards the inner port). */
  outbound?: FaultRates;
  /** Faults on frames the inner port emits (towards our handler). */
  inbound?: FaultRates;
  /** Longest a reordered frame waits for a successor, ms. Default 50. */
  holdMs?: number;
  /** Default: the inner port's name. */
  name?: string;
  meter?: Meter;
  /** Stage counting copies, drops (`fault-drop`) and corruptions (as rewrites). Default `link.fault`. */
  stageName?: string;
}

export interface FaultCounters {
  /** Frames that entered this direction. */
  frames: number;
  /** Frames passed on (duplicates included). */
  passed: number;
  dropped: number;
  corrupted: number;
  duplicated: number;
  reordered: number;
  /** Faults not done because a copy queue was full. */
  skipped: number;
}

/**
 * A small seeded generator: the seed is scrambled (multiplicative hashing, odd constants) into a
 * non-zero state, then Marsaglia's xorshift32 (J. Stat. Software 8(14), 2003) with shifts
 * 13/17/5. Plenty for choosing faults; not for anything secret.
 */
export class SeededRandom {
  private state: number;

  constructor(seed: number) {
    let s = Math.imul((seed | 0) ^ 0x5bd1e995, 0x9e3779b1);
    s ^= s >>> 16;
    s = Math.imul(s, 0x85ebca6b);
    s ^= s >>> 13;
    this.state = s === 0 ? 0x6b43a9b5 : s;
  }

  /** Uniform in [0, 1). */
  next(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x;
    return (x >>> 0) / 4294967296;
  }

  /** Uniform integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.next() * n);
  }
}

function rate(r: number | undefined): number {
  if (r === undefined || !(r > 0)) return 0;
  return r > 1 ? 1 : r;
}

/** One direction's faults, state and counters. */
class FaultLane {
  readonly counters: FaultCounters = {
    frames: 0,
    passed: 0,
    dropped: 0,
    corrupted: 0,
    duplicated: 0,
    reordered: 0,
    skipped: 0,
  };
  private readonly rng: SeededRandom;
  private readonly pDrop: number;
  private readonly pCorrupt: number;
  private readonly pDuplicate: number;
  private readonly pReorder: number;
  /** Corrupted copies of the current batch (cleared when the outermost call returns). */
  private readonly corrupted: FrameQueue;
  /** Held-back copies: released ones still referenced by a batch in flight, then the held one. */
  private readonly held: FrameQueue;
  private holding = false;
  private releasedPending = 0;
  private depth = 0;
  private readonly out: Frame[] = [];
  private readonly single: Frame[] = [];
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly releaseBound = (): void => this.releaseOnTimer();

  constructor(
    seed: number,
    rates: FaultRates,
    private readonly holdMs: number,
    private readonly stage: Stage,
    private readonly emit: FrameHandler,
  ) {
    this.rng = new SeededRandom(seed);
    this.pDrop = rate(rates.drop);
    this.pCorrupt = rate(rates.corrupt);
    this.pDuplicate = rate(rates.duplicate);
    this.pReorder = rate(rates.reorder);
    this.corrupted = new FrameQueue(this.pCorrupt > 0 ? 1 << 20 : 0, stage);
    this.held = new FrameQueue(this.pReorder > 0 ? 1 << 20 : 0, stage);
  }

  get passThrough(): boolean {
    return this.pDrop === 0 && this.pCorrupt === 0 && this.pDuplicate === 0 && this.pReorder === 0;
  }

  process(frames: readonly Frame[]): void {
    const c = this.counters;
    const n = frames.length;
    if (this.closed) {
      c.frames += n;
      c.dropped += n;
      for (let i = 0; i < n; i++) this.stage.dropped('fault-closed');
      return;
    }
    if (this.passThrough) {
      c.frames += n;
      c.passed += n;
      this.emit(frames);
      return;
    }
    this.depth++;
    const out = this.depth === 1 ? this.out : [];
    out.length = 0;
    for (let i = 0; i < n; i++) {
      c.frames++;
      let f = frames[i];
      if (this.pDrop > 0 && this.rng.next() < this.pDrop) {
        c.dropped++;
        this.stage.dropped('fault-drop');
        continue;
      }
      if (this.pCorrupt > 0 && this.rng.next() < this.pCorrupt && f.data.length > ETH_HEADER_LEN) {
        const copy = this.corruptCopy(f);
        if (copy !== null) f = copy;
      }
      if (this.pReorder > 0 && !this.holding && this.rng.next() < this.pReorder) {
        if (this.held.push(f)) {
          this.holding = true;
          c.reordered++;
          continue;
        }
        c.skipped++;
      }
      out.push(f);
      if (this.pDuplicate > 0 && this.rng.next() < this.pDuplicate) {
        out.push(f);
        c.duplicated++;
      }
      if (this.holding) this.releaseInto(out);
    }
    try {
      c.passed += out.length;
      if (out.length > 0) this.emit(out);
    } finally {
      out.length = 0;
      this.leave();
    }
  }

  /** Drop a held frame and stop the timer. */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.holding) {
      this.holding = false;
      this.counters.dropped++;
      this.stage.dropped('fault-held-at-close');
    }
    if (this.depth === 0) {
      this.held.clear();
      this.corrupted.clear();
    }
  }

  private corruptCopy(f: Frame): Frame | null {
    if (!this.corrupted.push(f)) {
      this.counters.skipped++;
      return null;
    }
    const copy = this.corrupted.at(this.corrupted.length - 1);
    const at = ETH_HEADER_LEN + this.rng.below(copy.data.length - ETH_HEADER_LEN);
    copy.data[at] ^= 1 + this.rng.below(255);
    this.counters.corrupted++;
    this.stage.rewrote(1);
    return copy;
  }

  /** Append the held frame to `out`; its copy stays queued until the batch has left. */
  private releaseInto(out: Frame[]): void {
    out.push(this.held.at(this.held.length - 1));
    this.holding = false;
    this.releasedPending++;
  }

  /** End of a (possibly nested) call: free copies once no batch in flight refers to them. */
  private leave(): void {
    this.depth--;
    if (this.depth > 0) return;
    if (this.releasedPending > 0) {
      this.held.shift(this.releasedPending);
      this.releasedPending = 0;
    }
    this.corrupted.clear();
    if (this.holding && this.timer === null && !this.closed) {
      // not unref'd: a held frame is traffic in flight; close() clears the timer
      this.timer = setTimeout(this.releaseBound, this.holdMs);
    }
  }

  /** No successor came in time: let the held frame go on its own. */
  private releaseOnTimer(): void {
    this.timer = null;
    if (!this.holding || this.closed) return;
    this.depth++;
    const out = this.single;
    out.length = 0;
    this.releaseInto(out);
    try {
      this.counters.passed++;
      this.emit(out);
    } finally {
      out.length = 0;
      this.leave();
    }
  }
}

export class FaultInjector extends PortMiddleware {
  private readonly outLane: FaultLane;
  private readonly inLane: FaultLane;
  private closing: Promise<void> | null = null;

  constructor(inner: Port, opts: FaultInjectorOptions) {
    super(opts.name ?? inner.name, inner);
    const stage = (opts.meter ?? globalMeter).stage(opts.stageName ?? LINK_FAULT);
    const holdMs = opts.holdMs ?? 50;
    this.outLane = new FaultLane(opts.seed, opts.outbound ?? {}, holdMs, stage, (frames) => this.inner.send(frames));
    this.inLane = new FaultLane(opts.seed ^ 0x2545f491, opts.inbound ?? {}, holdMs, stage, (frames) =>
      this.handler(frames),
    );
  }

  /** What the injector did so far, per direction. */
  counters(): { outbound: FaultCounters; inbound: FaultCounters } {
    return { outbound: { ...this.outLane.counters }, inbound: { ...this.inLane.counters } };
  }

  protected override outbound(frames: readonly Frame[]): void {
    this.outLane.process(frames);
  }

  protected override inbound(frames: readonly Frame[]): void {
    this.inLane.process(frames);
  }

  override close(): Promise<void> {
    if (this.closing === null) {
      this.outLane.close();
      this.inLane.close();
      this.closing = this.inner.close();
    }
    return this.closing;
  }
}
