/**
 * The meter: named stages (`guest.tx`, `nat.tcp.tx`, `host.tcp.write`, `netns.tap.write`, …), each with
 * counters for frames, bytes, copies, bytes copied, header rewrites, drops (by reason) and time.
 * Counters are plain numbers on a Stage object that the hot path holds directly — no lookups,
 * no allocation per packet; time is sampled (one batch in TIME_SAMPLE is timed, and counted
 * that many times). Every copy of packet bytes anywhere in usernet goes through
 * `copyBytes` (or `Stage.copied` when the copy is done by a syscall or by C), so the number of
 * copies per payload byte is always known. Stage names follow the scheme in stages.ts.
 *
 * Switch: USERNET_METER=off (read once, at load) turns the counting methods of every Stage into
 * empty functions and `copyBytes` into a bare copy — what the meter costs is measured by running
 * the same transfer both ways (drops are still counted: they drive log-once messages).
 *
 * Observer: while a packet tracer listens (`observing.on`, src/meter/trace.ts), each counting
 * method also reports to it, so a traced packet's journey is exactly the stages that counted
 * it. The hot path pays one boolean test per call when nobody listens.
 */
import { performance } from 'node:perf_hooks';

/** False when USERNET_METER=off (or 0): counters are no-ops for the life of the process. */
export const METER_ON = !/^(off|0|false|no)$/i.test(process.env.USERNET_METER ?? '');

/** One `start`/`stop` pair in this many reads the clock (a power of two). */
export const TIME_SAMPLE = 8;

/** What the counting methods tell a listening tracer (src/meter/trace.ts). */
export interface StageObserver {
  pass(stage: Stage, frames: number, bytes: number): void;
  copied(stage: Stage, copies: number, bytes: number): void;
  rewrote(stage: Stage, n: number): void;
  dropped(stage: Stage, reason: string): void;
}

/** The one boolean the hot path checks; `observer` is set whenever `on` is true. */
export const observing: { on: boolean; observer: StageObserver | null } = { on: false, observer: null };

export interface StageSnapshot {
  name: string;
  frames: number;
  bytes: number;
  copies: number;
  bytesCopied: number;
  rewrites: number;
  drops: number;
  dropReasons: Record<string, number>;
  ns: number;
}

export class Stage {
  frames = 0;
  bytes = 0;
  copies = 0;
  bytesCopied = 0;
  rewrites = 0;
  drops = 0;
  ns = 0;
  private timeTick = 0;
  readonly dropReasons = new Map<string, number>();

  constructor(readonly name: string) {}

  /** `frames` frames carrying `bytes` bytes passed this stage. */
  pass(frames: number, bytes: number): void {
    this.frames += frames;
    this.bytes += bytes;
    if (observing.on) observing.observer!.pass(this, frames, bytes);
  }

  /** One copy of `bytes` bytes happened in this stage (done elsewhere, e.g. by the kernel or C). */
  copied(bytes: number): void {
    this.copies++;
    this.bytesCopied += bytes;
    if (observing.on) observing.observer!.copied(this, 1, bytes);
  }

  /** `copies` copies of `bytes` bytes in all (a batch: one per frame, done by the kernel). */
  copiedMany(copies: number, bytes: number): void {
    this.copies += copies;
    this.bytesCopied += bytes;
    if (observing.on) observing.observer!.copied(this, copies, bytes);
  }

  /** `n` header fields were rewritten in this stage. */
  rewrote(n: number): void {
    this.rewrites += n;
    if (observing.on) observing.observer!.rewrote(this, n);
  }

  /** A frame was dropped here; returns true the first time this reason is seen (log once). */
  dropped(reason: string): boolean {
    this.drops++;
    const seen = this.dropReasons.get(reason);
    this.dropReasons.set(reason, (seen ?? 0) + 1);
    if (observing.on) observing.observer!.dropped(this, reason);
    return seen === undefined;
  }

  /**
   * Start timing: pass the result to `stop`. Timing is sampled: one call in TIME_SAMPLE reads
   * the clock and counts for TIME_SAMPLE (a clock read costs 100 ns and more on a virtual
   * machine — more than everything else the meter does for a batch); the others return -1.
   */
  start(): number {
    if ((++this.timeTick & (TIME_SAMPLE - 1)) !== 0) return -1;
    return performance.now();
  }

  stop(startedAt: number): void {
    if (startedAt < 0) return;
    this.ns += (performance.now() - startedAt) * 1e6 * TIME_SAMPLE;
  }

  snapshot(): StageSnapshot {
    return {
      name: this.name,
      frames: this.frames,
      bytes: this.bytes,
      copies: this.copies,
      bytesCopied: this.bytesCopied,
      rewrites: this.rewrites,
      drops: this.drops,
      dropReasons: Object.fromEntries(this.dropReasons),
      ns: Math.round(this.ns),
    };
  }

  reset(): void {
    this.frames = this.bytes = this.copies = this.bytesCopied = this.rewrites = this.drops = this.ns = 0;
    this.dropReasons.clear();
  }
}

export class Meter {
  private readonly stages = new Map<string, Stage>();

  /** The stage called `name`, created on first use. Hold the result; do not look up per packet. */
  stage(name: string): Stage {
    let s = this.stages.get(name);
    if (!s) {
      s = new Stage(name);
      this.stages.set(name, s);
    }
    return s;
  }

  snapshot(): StageSnapshot[] {
    return [...this.stages.values()].map((s) => s.snapshot());
  }

  reset(): void {
    for (const s of this.stages.values()) s.reset();
  }
}

function countedCopy(stage: Stage, src: Uint8Array, dst: Uint8Array, dstOffset: number): number {
  dst.set(src, dstOffset);
  stage.copies++;
  stage.bytesCopied += src.length;
  if (observing.on) observing.observer!.copied(stage, 1, src.length);
  return src.length;
}

function plainCopy(_stage: Stage, src: Uint8Array, dst: Uint8Array, dstOffset: number): number {
  dst.set(src, dstOffset);
  return src.length;
}

/** Copy `src` into `dst` at `dstOffset`, counted as one copy in `stage`. Returns bytes copied. */
export const copyBytes: (stage: Stage, src: Uint8Array, dst: Uint8Array, dstOffset: number) => number = METER_ON ? countedCopy : plainCopy;

if (!METER_ON) {
  // USERNET_METER=off: the counting methods become empty (V8 inlines them away); drops stay.
  const noop = (): void => {};
  const p = Stage.prototype as unknown as Record<string, unknown>;
  p.pass = noop;
  p.copied = noop;
  p.copiedMany = noop;
  p.rewrote = noop;
  p.stop = noop;
  p.start = (): number => 0;
}

/** The process-wide meter; components take a Meter in their options and default to this one. */
export const globalMeter = new Meter();
