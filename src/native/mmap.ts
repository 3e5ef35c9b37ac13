/**
 * Memory shared with another process, and eventfd counters (native/src/mem.c).
 *
 * mmap(fd, offset, length) maps [offset, offset+length) of `fd` read/write, MAP_SHARED |
 * MAP_NORESERVE, and returns it as an external ArrayBuffer — no copy; what the other process
 * writes is visible at once (guest RAM from vhost-user SET_MEM_TABLE / vfio-user DMA_MAP).
 * `offset` must be a multiple of pageSize() (the kernel answers EINVAL otherwise; vhost-user's
 * mmap_offset is applied by slicing the view). The mapping ends when the ArrayBuffer is
 * garbage-collected, or at once with munmap(buffer), which also detaches the buffer: every
 * view on it becomes length 0, so no JavaScript can touch the unmapped range.
 *
 * Node makes external buffers through node::Buffer, so one mapping is at most
 * maxMappingLength() bytes (buffer.constants.MAX_LENGTH: 4 GiB on Node 20); map a larger guest
 * region in chunks. A longer request throws an error with code ERR_BUFFER_TOO_LARGE (nothing leaks).
 *
 * memfdCreate: anonymous shareable memory (MFD_CLOEXEC), e.g. guest RAM in tests.
 *
 * eventfd (EFD_NONBLOCK | EFD_CLOEXEC): eventfdRead returns the counter and resets it (1 in
 * semaphore mode), 0 when nothing is pending; eventfdWrite adds `value` (default 1) and
 * returns false if the counter would overflow. Watch it with FdWatcher(POLL_READABLE).
 */
import { constants as bufferConstants } from 'node:buffer';
import { addon, type FdLike, type OwnedFd } from './binding';

export function mmap(fd: FdLike, offset: number, length: number): ArrayBuffer {
  return addon.mmap(fd, offset, length);
}

/** Unmap now and detach `buffer`; throws TypeError for a buffer not from mmap, EINVAL if already unmapped. */
export function munmap(buffer: ArrayBuffer): void {
  addon.munmap(buffer);
}

/** The longest single mapping this Node can expose as an ArrayBuffer. */
export function maxMappingLength(): number {
  return bufferConstants.MAX_LENGTH;
}

/** The system page size (mmap offsets must be multiples of it). */
export function pageSize(): number {
  return addon.PAGE_SIZE as number;
}

export function memfdCreate(name: string, size = 0): OwnedFd {
  return addon.memfdCreate(name, size);
}

export function eventfdCreate(initval = 0, semaphore = false): OwnedFd {
  return addon.eventfdCreate(initval, semaphore);
}

/** The counter value read (and reset), or 0 if none pending. */
export function eventfdRead(fd: FdLike): number {
  return addon.eventfdRead(fd);
}

/** Add `value` (default 1); false when it would block (counter near 2^64-1). */
export function eventfdWrite(fd: FdLike, value = 1): boolean {
  return addon.eventfdWrite(fd, value);
}
