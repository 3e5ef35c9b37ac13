/**
 * ServeLifetime: how a serving `usernet run` lives and ends. One AbortController says "stop"
 * (SIGINT, SIGTERM, or the code itself: a tap that went away); everything opened registers how
 * to close it, and closing runs in reverse order of opening, each closer isolated (a failing one
 * is logged, the rest still run, so every fd is closed). A second signal while stopping exits at
 * once with 128 + the signal number.
 *
 *   const life = new ServeLifetime();
 *   try {
 *     life.closeWith('nat stack', () => stack.close());
 *     await life.stopped();            // until a signal or life.stop()
 *   } finally {
 *     await life.close();              // closers in reverse order, signal handlers removed
 *   }
 */
import { log } from '../log';

export class ServeLifetime {
  private readonly ac = new AbortController();
  private readonly closers: { what: string; close: () => Promise<void> | void }[] = [];
  private signals = 0;
  private readonly onSignal = (sig: NodeJS.Signals): void => {
    if (++this.signals > 1) process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
    log.info({ signal: sig }, 'shutting down');
    this.ac.abort();
  };

  constructor() {
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  /** Aborted when it is time to stop. */
  get signal(): AbortSignal {
    return this.ac.signal;
  }

  stop(): void {
    this.ac.abort();
  }

  /** Register what to close (closed in reverse order of registration). */
  closeWith(what: string, close: () => Promise<void> | void): void {
    this.closers.push({ what, close });
  }

  /** Resolves once it is time to stop. */
  stopped(): Promise<void> {
    const signal = this.ac.signal;
    return new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener('abort', () => resolve(), { once: true });
    });
  }

  /** Run every closer (newest first) and remove the signal handlers. Idempotent. */
  async close(): Promise<void> {
    const closers = this.closers.splice(0).reverse();
    for (const c of closers) {
      try {
        await c.close();
      } catch (err) {
        log.warn({ err: (err as Error).message }, `shutdown: closing ${c.what} failed`);
      }
    }
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }
}
