/**
 * Errors from native calls follow Node's own system errors: an Error with `code` = the errno
 * name ('ECONNREFUSED'), `errno` = minus the errno number (as in Node's UVException) and
 * `syscall`. Bad arguments throw TypeError / RangeError with code ERR_INVALID_ARG_TYPE /
 * ERR_OUT_OF_RANGE. Would-block is never an exception: calls return -1, null or a count.
 *
 * errno numbers that calls return as values (getSocketError, error-queue entries, the status
 * arrays of the batched calls) are positive; `errnoName` turns them into names.
 */
import { constants } from 'node:os';
import { addon } from './binding';

/** errno numbers by name (positive), e.g. Errno.EAGAIN === 11 on Linux. */
export const Errno = constants.errno;

/** 'ECONNREFUSED' for 111 (or -111). */
export function errnoName(errno: number): string {
  return addon.errnoName(errno);
}

export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

/** A Node-style system error for a positive errno value (e.g. from getSocketError). */
export function errnoError(errno: number, syscall: string): NativeError {
  const code = errnoName(errno);
  return Object.assign(new Error(`${code}, ${syscall}`), { code, errno: -Math.abs(errno), syscall });
}

/** True when `e` is a native system error with the given code. */
export function hasCode(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && (e as { code?: unknown }).code === code;
}
