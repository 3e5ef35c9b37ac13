/**
 * TimerWheel: the one clock of the TCP module. Every connection has at most one entry in the
 * wheel; arming, re-arming and cancelling cost O(1) and allocate nothing (the entry's links live
 * on the connection itself), so a retransmission timer restarted by every ACK (RFC 6298 §5.3)
 * costs a few field writes.
 *
 * A hashed wheel (Varghese & Lauck): `slots` buckets of `tickMs` each; an entry due at time T
 * sits in bucket (T / tickMs) mod slots and is skipped by the sweep until T has come (entries
 * further away than one revolution stay where they are for another round). One Node timer,
 * unref'd, runs while the wheel holds entries and is re-armed with `refresh()`, so an idle stack
 * has no timer at all and the wheel never keeps the process alive.
 *
 * `armBy(entry, at)` means "fire no later than `at`": if the entry is already due earlier it is
 * left alone. Owners keep their real deadlines in their own fields and, when fired early, simply
 * arm again for the next one — so pushing a deadline later (the common case: each new ACK moves
 * the RTO out) never touches the wheel.
 */

export interface TimerEntry {
  /** When the entry is due (ms on the wheel's clock); meaningful only while linked. */
  timerDue: number;
  timerNext: TimerEntry | null;
  timerPrev: TimerEntry | null;
  /** True while linked into a slot. */
  timerLinked: boolean;
  /** The slot it is linked in. */
  timerSlot: number;
  /** Called once when due; the entry is already unlinked. Must not throw. */
  onTimer(now: number): void;
}

export type Clock = () => number;

/** Milliseconds since the process started, from the monotonic clock. */
export const monotonicMs: Clock = () => performance.now();

export class TimerWheel {
  private readonly heads: (TimerEntry | null)[];
  private readonly mask: number;
  private count = 0;
  /** The last tick (in ticks, not ms) the sweep processed. */
  private lastTick: number;
  private handle: NodeJS.Timeout | null = null;
  private running = false;
  private closed = false;

  constructor(
    readonly now: Clock = monotonicMs,
    private readonly tickMs = 10,
    slots = 256,
  ) {
    let n = 1;
    while (n < slots) n <<= 1;
    this.heads = new Array<TimerEntry | null>(n).fill(null);
    this.mask = n - 1;
    this.lastTick = Math.floor(this.now() / tickMs);
  }

  get size(): number {
    return this.count;
  }

  /** Make `e` fire no later than `at` (ms on this wheel's clock). */
  armBy(e: TimerEntry, at: number): void {
    if (this.closed) return;
    if (e.timerLinked) {
      if (e.timerDue <= at) return;
      this.unlink(e);
    }
    e.timerDue = at;
    // An entry due in the past goes in the next slot the sweep will look at.
    const tick = Math.max(Math.ceil(at / this.tickMs), this.lastTick + 1);
    const slot = tick & this.mask;
    e.timerSlot = slot;
    e.timerPrev = null;
    e.timerNext = this.heads[slot];
    if (e.timerNext) e.timerNext.timerPrev = e;
    this.heads[slot] = e;
    e.timerLinked = true;
    this.count++;
    this.start();
  }

  cancel(e: TimerEntry): void {
    if (e.timerLinked) this.unlink(e);
  }

  /** Process every slot up to now. Exposed for tests with an injected clock. */
  advance(): void {
    const now = this.now();
    const nowTick = Math.floor(now / this.tickMs);
    let from = this.lastTick + 1;
    // Late by more than a revolution: one pass over every slot is enough.
    if (nowTick - from > this.mask) from = nowTick - this.mask;
    for (let t = from; t <= nowTick && this.count > 0; t++) {
      // Entries armed from inside a handler land in a later slot than the one being swept.
      this.lastTick = t;
      this.sweepSlot(t & this.mask, now);
    }
    this.lastTick = nowTick;
  }

  close(): void {
    this.closed = true;
    for (let i = 0; i < this.heads.length; i++) {
      for (let e = this.heads[i]; e; ) {
        const next: TimerEntry | null = e.timerNext;
        e.timerLinked = false;
        e.timerNext = e.timerPrev = null;
        e = next;
      }
      this.heads[i] = null;
    }
    this.count = 0;
    if (this.handle) clearTimeout(this.handle);
    this.handle = null;
    this.running = false;
  }

  private sweepSlot(slot: number, now: number): void {
    let e = this.heads[slot];
    while (e) {
      const next: TimerEntry | null = e.timerNext;
      if (e.timerDue <= now) {
        this.unlink(e);
        e.onTimer(now);
      }
      e = next;
      // onTimer may have unlinked `next` (another connection closed): stop if it is gone.
      if (e && !e.timerLinked) e = this.heads[slot];
    }
  }

  private unlink(e: TimerEntry): void {
    if (e.timerPrev) e.timerPrev.timerNext = e.timerNext;
    else this.heads[e.timerSlot] = e.timerNext;
    if (e.timerNext) e.timerNext.timerPrev = e.timerPrev;
    e.timerNext = e.timerPrev = null;
    e.timerLinked = false;
    this.count--;
  }

  private start(): void {
    if (this.running) return;
    this.running = true;
    if (!this.handle) {
      this.handle = setTimeout(() => this.tick(), this.tickMs);
      this.handle.unref();
    } else this.handle.refresh();
  }

  private tick(): void {
    this.running = false;
    this.advance();
    if (this.count > 0 && !this.closed) this.start();
  }
}
