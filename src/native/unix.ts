/**
 * AF_UNIX sockets for what Node's `net` cannot do (unix(7)): passing fds with SCM_RIGHTS
 * (vhost-user memory and eventfds, vfio-user DMA regions and interrupts), SOCK_DGRAM (QEMU
 * `-netdev dgram`, VDE) and socketpairs (tests, helpers).
 *
 * Paths: a filesystem path, or '@name' for the Linux abstract namespace. Every socket is
 * non-blocking and close-on-exec. Would-block gives -1 (byte counts) or null (objects); a stream
 * connect to a listener with a full backlog throws EAGAIN.
 *
 * recvmsg collects up to 253 fds per message (SCM_MAX_FD; vhost-user sends ≤ 8, vfio-user
 * ≤ 16) with MSG_CMSG_CLOEXEC and returns them as OwnedFds, so an fd nobody takes is closed by
 * GC. `flags & MSG_CTRUNC` means the kernel dropped (and closed) fds that did not fit;
 * `flags & MSG_TRUNC` that a datagram was longer than the buffer. `bytes === 0` on a stream is
 * end of stream. Received fds keep the sender's O_NONBLOCK setting (see setNonBlocking).
 */
import { addon, type FdLike, type OwnedFd } from './binding';
import { SOCK_STREAM } from './constants';

export interface ReceivedMessage {
  /** Bytes of data received; 0 on a stream = the peer closed. */
  bytes: number;
  /** Descriptors that came with the message (SCM_RIGHTS), in order. */
  fds: OwnedFd[];
  /** msg_flags: MSG_TRUNC, MSG_CTRUNC. */
  flags: number;
}

/** A listening socket (SOCK_STREAM, or SOCK_SEQPACKET via `type`). */
export function unixListen(path: string, opts: { backlog?: number; type?: number } = {}): OwnedFd {
  return addon.unixListen(path, opts.backlog ?? 128, opts.type ?? SOCK_STREAM);
}

/** The next pending connection, or null if none. */
export function unixAccept(fd: FdLike): OwnedFd | null {
  return addon.unixAccept(fd);
}

/** A connected socket (stream by default; SOCK_DGRAM gives a connected datagram socket). */
export function unixConnect(path: string, type: number = SOCK_STREAM): OwnedFd {
  return addon.unixConnect(path, type);
}

/** A datagram socket, optionally bound to `bind` and connected to `connect`. */
export function unixDgram(opts: { bind?: string | null; connect?: string | null } = {}): OwnedFd {
  return addon.unixDgram(opts.bind ?? null, opts.connect ?? null);
}

/** A connected pair (stream by default). */
export function unixSocketPair(type: number = SOCK_STREAM): [OwnedFd, OwnedFd] {
  return addon.unixSocketPair(type);
}

/** One datagram to `path`; bytes sent or -1. */
export function unixSendTo(fd: FdLike, buf: ArrayBufferView, path: string): number {
  return addon.unixSendTo(fd, buf, path);
}

/** One datagram and its sender's path (null when unbound), or null if none waiting. */
export function unixRecvFrom(fd: FdLike, buf: ArrayBufferView): { bytes: number; path: string | null } | null {
  return addon.unixRecvFrom(fd, buf);
}

/**
 * sendmsg with data (one view or up to 64 parts) and optionally fds (numbers or OwnedFds;
 * they stay open and owned here — the receiver gets duplicates). Bytes sent, or -1.
 */
export function sendmsg(fd: FdLike, data: ArrayBufferView | ArrayBufferView[], fds?: readonly FdLike[] | null): number {
  return addon.sendmsg(fd, data, fds ?? null);
}

/** recvmsg into one view or up to 64 parts; null if nothing is waiting. */
export function recvmsg(fd: FdLike, buf: ArrayBufferView | ArrayBufferView[]): ReceivedMessage | null {
  return addon.recvmsg(fd, buf);
}

