/**
 * The meter: named stages (`guest.tx`, `device.dma`, `nat.tcp.out`, `host.write`, …), each with
 * counters for frames, bytes, copies, bytes copied, header rewrites, drops (by reason) and time.
 * Counters are plain numbers on a Stage object that the hot path holds directly — no lookups,
 * no allocation per packet. Every copy of packet bytes anywhere in usernet goes through
 * `copyBytes` (or `Stage.copied` when the copy is done by a syscall or by C), so the number of
 * copies per payload byte is always known.
 */
import { performance } from 'node:perf_hooks';

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
  readonly dropReasons = new Map<string, number>();

  constructor(readonly name: string) {}

  /** `frames` frames carrying `bytes` bytes passed this stage. */
  pass(frames: number, bytes: number): void {
    this.frames += frames;
    this.bytes += bytes;
  }

  /** One copy of `bytes` bytes happened in this stage (done elsewhere, e.g. by the kernel or C). */
  copied(bytes: number): void {
    this.copies++;
    this.bytesCopied += bytes;
  }

  /** `n` header fields were rewritten in this stage. */
  rewrote(n: number): void {
    this.rewrites += n;
  }

  /** A frame was dropped here; returns true the first time this reason is seen (log once). */
  dropped(reason: string): boolean {
    this.drops++;
    const seen = this.dropReasons.get(reason);
    this.dropReasons.set(reason, (seen ?? 0) + 1);
    return seen === undefined;
  }

  /** Start timing: pass the result to `stop`. */
  start(): number {
    return performance.now();
  }

  stop(startedAt: number): void {
    this.ns += (performance.now() - startedAt) * 1e6;
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

/** Copy `src` into `dst` at `dstOffset`, counted as one copy in `stage`. Returns bytes copied. */
export function copyBytes(stage: Stage, src: Uint8Array, dst: Uint8Array, dstOffset: number): number {
  dst.set(src, dstOffset);
  stage.copies++;
  stage.bytesCopied += src.length;
  return src.length;
}

/** The process-wide meter; components take a Meter in their options and default to this one. */
export const globalMeter = new Meter();
