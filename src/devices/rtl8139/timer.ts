/**
 * ChipTimer: the RTL8139's general-purpose timer (datasheet: TCTR 0x48, TimerInt 0x54).
 *
 * TCTR is a 32-bit counter running at the PCI clock (33 MHz here); writing any value restarts it
 * from zero. TimerInt: when nonzero, ISR.TimeOut (bit 14, Linux "PCSTimeout") is set each time
 * TCTR reaches that value — once per 2^32 ticks (≈ 130 s) after each restart, since the counter
 * keeps running and wraps. Zero disables the interrupt.
 *
 * Nothing ticks in software: TCTR is computed from the time since the last restart, and one Node
 * timer (unref'd, so it never keeps the process alive) is armed for the moment TCTR reaches
 * TimerInt.
 */
import { performance } from 'node:perf_hooks';

export const TCTR_HZ = 33_000_000;
const TICKS_PER_MS = TCTR_HZ / 1000;
const WRAP = 0x1_0000_0000;

export class ChipTimer {
  private started = performance.now();
  private interval = 0;
  private handle: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(private readonly onTimeout: () => void) {}

  /** TCTR now. */
  read(): number {
    return Math.floor((performance.now() - this.started) * TICKS_PER_MS) % WRAP;
  }

  /** A write to TCTR: count from zero again. */
  restart(): void {
    this.started = performance.now();
    this.arm();
  }

  get timerInt(): number {
    return this.interval;
  }

  /** A write to TimerInt. */
  setTimerInt(value: number): void {
    this.interval = value >>> 0;
    this.arm();
  }

  private arm(): void {
    if (this.handle) clearTimeout(this.handle);
    this.handle = null;
    if (this.closed || this.interval === 0) return;
    let ticks = (this.interval - this.read() + WRAP) % WRAP;
    if (ticks === 0) ticks = WRAP;
    this.handle = setTimeout(() => this.fire(), Math.max(1, Math.ceil(ticks / TICKS_PER_MS)));
    this.handle.unref();
  }

  private fire(): void {
    this.handle = null;
    if (this.closed || this.interval === 0) return;
    this.onTimeout();
    // next time round (the counter wraps after 2^32 ticks)
    this.arm();
  }

  /** Power-on: TimerInt 0 (no interrupt), counter restarted. */
  reset(): void {
    this.interval = 0;
    this.restart();
  }

  close(): void {
    this.closed = true;
    if (this.handle) clearTimeout(this.handle);
    this.handle = null;
  }
}
