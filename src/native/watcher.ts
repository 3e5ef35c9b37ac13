/**
 * FdWatcher: readiness of one descriptor on the Node event loop (libuv uv_poll, level
 * triggered), for fds Node cannot wrap itself — tap devices, eventfds, AF_UNIX sockets carrying
 * fds, ICMP and error-queue sockets, connecting TCP sockets.
 *
 *   const w = new FdWatcher(fd, (events, status) => { ... });
 *   w.start(POLL_READABLE);                   // or POLL_WRITABLE, or both; again to change
 *   w.stop();  w.start(...);  w.close();
 *
 * States: IDLE --start--> ACTIVE --stop()/error status--> IDLE; any --close()--> CLOSED (final).
 * An ACTIVE watcher keeps itself (and its callback) alive; an IDLE one is closed when garbage
 * collected. `events` has the POLL_* bits that fired. `status` is 0, or negative when the
 * kernel reported POLLERR — a pending socket error (a failed non-blocking connect) or an ICMP
 * error queued by IP_RECVERR. libuv reports that as -EBADF (-9) with events 0 and stops the
 * watcher: read `getSocketError(fd)` / `readErrorQueue(fd)`, then `start()` again.
 *
 * Rules: one watcher per fd (a second one throws EBUSY until the first is closed), and none on
 * an fd that a Node stream also polls (libuv refuses it: EEXIST). Created on an OwnedFd, the
 * watcher is closed automatically when that fd is closed or released; created on a raw number,
 * close the watcher before closing the fd.
 * The callback runs like any Node I/O callback (microtasks and nextTicks run after it; a throw
 * becomes an 'uncaughtException').
 */
import { addon, type FdLike, type NativeFdWatcher } from './binding';

export { POLL_READABLE, POLL_WRITABLE, POLL_DISCONNECT, POLL_PRIORITIZED } from './constants';

/** (events that fired, 0 or a negative errno — see the file comment). */
export type ReadinessCallback = (events: number, status: number) => void;

export class FdWatcher {
  private readonly handle: NativeFdWatcher;

  constructor(fd: FdLike, callback: ReadinessCallback) {
    this.handle = new addon.FdWatcher(fd, callback);
  }

  /** Watch for `events` (POLL_* bits); calling again while active changes the set. */
  start(events: number): void {
    this.handle.start(events);
  }

  /** Stop watching; start() may be called again. */
  stop(): void {
    this.handle.stop();
  }

  /** Release the libuv handle. Final and idempotent. */
  close(): void {
    this.handle.close();
  }

  get active(): boolean {
    return this.handle.active;
  }

  get closed(): boolean {
    return this.handle.closed;
  }

  /** The watched fd, -1 once closed. */
  get fd(): number {
    return this.handle.fd;
  }
}
