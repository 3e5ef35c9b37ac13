/**
 * RateLimiter: Port middleware shaping each direction with a token bucket (RFC 2697 §1 describes
 * the bucket; here with one rate and one depth), like a slow link in front of a fast port.
 *
 * Per direction: tokens (bytes) refill at bitsPerSecond / 8 up to `burstBytes`; a frame of L
 * bytes may pass when the bucket holds min(L, burstBytes) tokens, and takes L — the bucket may go
 * negative, so a 64 KiB GSO super-frame is not stuck forever behind a small burst, it just costs
 * its full size in waiting afterwards. Frames that may not pass yet are queued, FIFO, as metered
 * copies (they are borrowed, frame.ts) in a bounded FrameQueue of `queueBytes`; once a frame is
 * queued every later frame queues behind it, so order is kept. A timer set for when the head of
 * the queue can pass releases as many queued frames as the bucket allows, as one batch. A frame
 * that finds the queue full is dropped and counted (`rate-queue-full` on Stage `link.ratelimit`)
 * — tail drop, the way a router's FIFO behaves.
 *
 * States per direction: idle (queue empty, no timer) ⇄ backlogged (queue non-empty, one timer
 * armed) → closed (queue discarded, timer cleared).
 */
import type { Frame } from './frame';
import { PortMiddleware, type FrameHandler, type Port } from './port';
import { FrameQueue } from './frame-queue';
import { globalMeter, type Meter, type Stage } from '../meter/meter';
import { LINK_RATELIMIT } from '../meter/stages';
import { performance } from 'node:perf_hooks';

export interface RateLimit {
  /** Sustained rate in bits per second (Ethernet frame bytes × 8). */
  bitsPerSecond: number;
  /** Bucket depth in bytes. Default: 10 ms at the rate, at least one 1514-byte frame. */
  burstBytes?: number;
  /** Bytes of frames that may wait. Default: 100 ms at the rate, at least 256 KiB. */
  queueBytes?: number;
}

export interface RateLimiterOptions {
  /** Limit on frames sent through the limiter (towards the inner port); none when absent. */
  outbound?: RateLimit;
  /** Limit on frames the inner port emits; none when absent. */
  inbound?: RateLimit;
  name?: string;
  meter?: Meter;
  /** Default `link.ratelimit`. */
  stageName?: string;
  /** Monotonic milliseconds; default performance.now. For tests. */
  now?: () => number;
}

export interface RateCounters {
  frames: number;
  /** Passed at once, within the budget. */
  passed: number;
  /** Copied into the queue to wait. */
  queued: number;
  /** Released from the queue by the timer. */
  released: number;
  /** Tail-dropped: the queue was full (or the limiter closed with frames waiting). */
  dropped: number;
  /** Frames waiting now. */
  waiting: number;
}

class RateLane {
  readonly counters: RateCounters = { frames: 0, passed: 0, queued: 0, released: 0, dropped: 0, waiting: 0 };
  private readonly bytesPerMs: number;
  private readonly burst: number;
  private readonly queue: FrameQueue;
  private tokens: number;
  private last: number;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private depth = 0;
  private readonly out: Frame[] = [];
  private readonly releaseBound = (): void => this.releaseOnTimer();

  constructor(
    limit: RateLimit,
    private readonly stage: Stage,
    private readonly now: () => number,
    private readonly emit: FrameHandler,
  ) {
    const bytesPerSec = Math.max(1, limit.bitsPerSecond / 8);
    this.bytesPerMs = bytesPerSec / 1000;
    this.burst = Math.max(1, limit.burstBytes ?? Math.max(1514, bytesPerSec * 0.01));
    this.queue = new FrameQueue(limit.queueBytes ?? Math.max(256 * 1024, Math.ceil(bytesPerSec * 0.1)), stage);
    this.tokens = this.burst;
    this.last = now();
  }

  process(frames: readonly Frame[]): void {
    const n = frames.length;
    if (this.closed || n === 0) return;
    const c = this.counters;
    c.frames += n;
    this.refill();
    this.depth++;
    const out = this.depth === 1 ? this.out : [];
    out.length = 0;
    let i = 0;
    if (this.queue.length === 0) {
      for (; i < n; i++) {
        const len = frames[i].data.length;
        if (!this.mayPass(len)) break;
        this.tokens -= len;
        out.push(frames[i]);
      }
    }
    // the rest waits, behind anything already waiting (queued before passing anything on, so a
    // re-entrant send from inside the handler cannot overtake it)
    for (; i < n; i++) {
      if (this.queue.push(frames[i])) c.queued++;
      else {
        c.dropped++;
        this.stage.dropped('rate-queue-full');
      }
    }
    c.waiting = this.queue.length;
    if (this.queue.length > 0) this.arm();
    try {
      c.passed += out.length;
      if (out.length > 0) this.emit(out);
    } finally {
      out.length = 0;
      this.depth--;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const waiting = this.queue.length;
    this.counters.dropped += waiting;
    for (let i = 0; i < waiting; i++) this.stage.dropped('rate-closed');
    this.queue.clear();
    this.counters.waiting = 0;
  }

  private mayPass(len: number): boolean {
    return this.tokens >= (len < this.burst ? len : this.burst);
  }

  private refill(): void {
    const t = this.now();
    const dt = t - this.last;
    this.last = t;
    if (dt > 0) {
      this.tokens += dt * this.bytesPerMs;
      if (this.tokens > this.burst) this.tokens = this.burst;
    }
  }

  /** Set the timer for when the head of the queue may pass. */
  private arm(): void {
    if (this.timer !== null || this.closed) return;
    const len = this.queue.at(0).data.length;
    const need = (len < this.burst ? len : this.burst) - this.tokens;
    const ms = need > 0 ? Math.ceil(need / this.bytesPerMs) : 0;
    this.timer = setTimeout(this.releaseBound, ms < 1 ? 1 : ms);
  }

  private releaseOnTimer(): void {
    this.timer = null;
    if (this.closed) return;
    this.refill();
    const q = this.queue;
    let k = 0;
    const out: Frame[] = this.depth === 0 ? this.out : [];
    out.length = 0;
    while (k < q.length) {
      const f = q.at(k);
      if (!this.mayPass(f.data.length)) break;
      this.tokens -= f.data.length;
      out.push(f);
      k++;
    }
    this.depth++;
    try {
      if (k > 0) {
        this.counters.released += k;
        this.emit(out);
      }
    } finally {
      out.length = 0;
      this.depth--;
      q.shift(k);
      this.counters.waiting = q.length;
      if (q.length > 0) this.arm();
    }
  }
}

export class RateLimiter extends PortMiddleware {
  private readonly outLane: RateLane | null;
  private readonly inLane: RateLane | null;
  private closing: Promise<void> | null = null;

  constructor(inner: Port, opts: RateLimiterOptions) {
    super(opts.name ?? inner.name, inner);
    const stage = (opts.meter ?? globalMeter).stage(opts.stageName ?? LINK_RATELIMIT);
    const now = opts.now ?? (() => performance.now());
    this.outLane = opts.outbound
      ? new RateLane(opts.outbound, stage, now, (frames) => this.inner.send(frames))
      : null;
    this.inLane = opts.inbound ? new RateLane(opts.inbound, stage, now, (frames) => this.handler(frames)) : null;
  }

  /** Counters per direction (null where that direction is not limited). */
  counters(): { outbound: RateCounters | null; inbound: RateCounters | null } {
    return {
      outbound: this.outLane ? { ...this.outLane.counters } : null,
      inbound: this.inLane ? { ...this.inLane.counters } : null,
    };
  }

  protected override outbound(frames: readonly Frame[]): void {
    if (this.outLane) this.outLane.process(frames);
    else this.inner.send(frames);
  }

  protected override inbound(frames: readonly Frame[]): void {
    if (this.inLane) this.inLane.process(frames);
    else this.handler(frames);
  }

  override close(): Promise<void> {
    if (this.closing === null) {
      this.outLane?.close();
      this.inLane?.close();
      this.closing = this.inner.close();
    }
    return this.closing;
  }
}
