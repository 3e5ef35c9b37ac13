/**
 * Owned file descriptors. Every fd the addon opens reaches JavaScript as an OwnedFd (see
 * native/src/fd.c): it is closed by `close()`, or by the garbage collector when the object is
 * dropped, or handed away with `release()` — after which the addon never touches the number
 * again (give it to `new net.Socket({ fd })`, `net.Server#listen({ fd })`, `fs.createReadStream`
 * with `fd`, or to a child process).
 *
 *   OWNED --close()--> CLOSED      OWNED --release()--> RELEASED      OWNED --GC--> closed
 *
 * An FdWatcher created on an OwnedFd is closed automatically before the fd is closed or
 * released, so a stale watcher can never act on a reused descriptor number.
 */
import { addon, type FdLike, type OwnedFd } from './binding';

export type { FdLike, OwnedFd } from './binding';

/** Take ownership of an fd opened elsewhere (validated with F_GETFD; EBADF if not open). */
export function adoptFd(fd: number): OwnedFd {
  return new addon.OwnedFd(fd);
}

/** True for objects made by the addon's OwnedFd class. */
export function isOwnedFd(value: unknown): value is OwnedFd {
  return value instanceof addon.OwnedFd;
}

/** The raw descriptor number of an FdLike (-1 for a closed OwnedFd). */
export function fdNumber(fd: FdLike): number {
  return typeof fd === 'number' ? fd : fd.fd;
}

/**
 * Set or clear O_NONBLOCK, e.g. on an eventfd received over SCM_RIGHTS. This changes the open
 * file description, which the sending process shares.
 */
export function setNonBlocking(fd: FdLike, on = true): void {
  addon.setNonBlocking(fd, on);
}

export interface NativeStats {
  /** OwnedFds currently open, process wide. */
  ownedFds: number;
  /** FdWatchers whose libuv handle is open. */
  watchers: number;
  /** Live mmap mappings and their total size. */
  mappings: number;
  mappedBytes: number;
}

/** Counters for leak checks and the meter. */
export function nativeStats(): NativeStats {
  return addon.nativeStats();
}
