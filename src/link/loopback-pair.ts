/**
 * LoopbackPair: two in-memory Ports, `a` and `b`, wired back to back like the two ends of a
 * cable. `a.send(frames)` is delivered to b's handler and `b.send(frames)` to a's — never inside
 * the send call, but from a later turn of the event loop (setImmediate), so a handler can answer
 * without recursing and everything sent to one end in the same turn arrives as one batch.
 *
 * Frames passed to send() are borrowed and die when it returns, so each is copied (metered,
 * Stage `link.loopback` by default) into the receiving end's bounded FrameQueue. When that queue
 * is full — a sender outrunning its receiver within one turn — frames are dropped and counted
 * (`rx-full`), as a NIC with a full RX ring would. setImmediate rather than a microtask keeps a
 * pair of endpoints that answer each other forever from starving I/O.
 *
 * States per end: open → closed. A closed end neither accepts nor delivers (frames are counted
 * as `closed` drops); close() on the pair closes both ends. Used by unit tests and to join two
 * endpoints living in one process.
 */
import type { Frame } from './frame';
import { DISCARD, type FrameHandler, type Port } from './port';
import { FrameQueue } from './frame-queue';
import { globalMeter, type Meter, type Stage } from '../meter/meter';
import { LINK_LOOPBACK } from '../meter/stages';

export interface LoopbackPairOptions {
  /** Names of the two ends. Default "loop.a" / "loop.b". */
  names?: [string, string];
  /** Bytes each end can hold undelivered. Default 4 MiB. */
  queueBytes?: number;
  meter?: Meter;
  /** Stage counting the copies and drops. Default `link.loopback`. */
  stageName?: string;
}

export interface LoopbackEndStats {
  /** Frames accepted by send() on this end. */
  sent: number;
  /** Frames delivered to this end's handler. */
  delivered: number;
  /** Frames lost: the peer's queue was full, or an end was closed. */
  dropped: number;
}

/** One end of a LoopbackPair. */
export class LoopbackEnd implements Port {
  private handler: FrameHandler = DISCARD;
  private peer!: LoopbackEnd;
  /** Frames on their way to *this* end's handler. */
  private readonly rx: FrameQueue;
  private readonly batch: Frame[] = [];
  private scheduled = false;
  private closed = false;
  private readonly deliverBound = (): void => this.deliver();
  private readonly counters: LoopbackEndStats = { sent: 0, delivered: 0, dropped: 0 };

  /** @internal — made by LoopbackPair. */
  constructor(
    readonly name: string,
    queueBytes: number,
    private readonly stage: Stage,
  ) {
    this.rx = new FrameQueue(queueBytes, stage);
  }

  /** @internal */
  connect(peer: LoopbackEnd): void {
    this.peer = peer;
  }

  send(frames: readonly Frame[]): void {
    const n = frames.length;
    if (n === 0) return;
    if (this.closed || this.peer.closed) {
      this.drop(n, 'closed');
      return;
    }
    let accepted = 0;
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      const f = frames[i];
      if (this.peer.rx.push(f)) {
        accepted++;
        bytes += f.data.length;
      } else this.drop(1, 'rx-full');
    }
    this.counters.sent += accepted;
    this.stage.pass(accepted, bytes);
    this.peer.schedule();
  }

  onReceive(handler: FrameHandler): void {
    this.handler = handler;
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      const pending = this.rx.length;
      if (pending > 0) this.drop(pending, 'closed');
      this.rx.clear();
      this.handler = DISCARD;
    }
    return Promise.resolve();
  }

  stats(): LoopbackEndStats {
    return { ...this.counters };
  }

  private schedule(): void {
    if (this.scheduled || this.rx.length === 0) return;
    this.scheduled = true;
    setImmediate(this.deliverBound);
  }

  private deliver(): void {
    this.scheduled = false;
    if (this.closed) return;
    const n = this.rx.length;
    if (n === 0) return;
    const batch = this.batch;
    batch.length = n;
    for (let i = 0; i < n; i++) batch[i] = this.rx.at(i);
    try {
      this.handler(batch);
    } finally {
      batch.length = 0;
      this.rx.shift(n);
      this.counters.delivered += n;
      // whatever the handler (or anyone) sent to this end meanwhile goes in the next turn
      this.schedule();
    }
  }

  private drop(n: number, reason: string): void {
    this.counters.dropped += n;
    for (let i = 0; i < n; i++) this.stage.dropped(reason);
  }
}

export class LoopbackPair {
  readonly a: LoopbackEnd;
  readonly b: LoopbackEnd;

  constructor(opts: LoopbackPairOptions = {}) {
    const [na, nb] = opts.names ?? ['loop.a', 'loop.b'];
    const stage = (opts.meter ?? globalMeter).stage(opts.stageName ?? LINK_LOOPBACK);
    const queueBytes = opts.queueBytes ?? 4 << 20;
    this.a = new LoopbackEnd(na, queueBytes, stage);
    this.b = new LoopbackEnd(nb, queueBytes, stage);
    this.a.connect(this.b);
    this.b.connect(this.a);
  }

  async close(): Promise<void> {
    await Promise.all([this.a.close(), this.b.close()]);
  }
}
