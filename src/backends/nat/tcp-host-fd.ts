/**
 * FdHostSocket: the host side of a TCP connection on a raw non-blocking fd, with no buffer of
 * our own in either direction (passt's design, see tcp-host.ts for the contract):
 *
 *  host → guest   bytes stay in the kernel's receive queue until the guest acknowledges them.
 *                 A segment for the guest is built by peeking (SO_PEEK_OFF + MSG_PEEK) at the
 *                 byte's offset past the first unconsumed one, straight into the frame's
 *                 payload area — the only copy of host data on its way to the guest; a
 *                 retransmission peeks again. What the guest acknowledged is dropped from the
 *                 queue without copying (recv with MSG_TRUNC). A full receive queue closes the
 *                 host peer's window: back-pressure with nothing in between.
 *  guest → host   guest payload is sent straight from the guest's frame (send, MSG_DONTWAIT):
 *                 the kernel's copy is the only one; what it did not take is not acknowledged
 *                 (the connection keeps it in its out-of-order queue for the next POLLOUT, so
 *                 the guest rarely needs to retransmit). The window advertised to the guest is
 *                 the free space of the socket's send buffer (SO_SNDBUF − SIOCOUTQ).
 *
 * Readiness (libuv poll, level-triggered): data the guest has not acknowledged stays queued,
 * so POLLIN would fire continuously. SO_RCVLOWAT is kept at (bytes already known) + 1, so POLLIN
 * means "something new" (or EOF, which is always readable); readable interest is dropped while
 * the guest's window is full, and POLLRDHUP stays on so a FIN or RST is seen anyway. POLLOUT is
 * watched once after each write (one-shot): the kernel drains the send queue silently, and the
 * window update that lets the guest go on must be triggered by something — with
 * TCP_NOTSENT_LOWAT set, POLLOUT comes when at most half of the unsent limit is left, i.e. when
 * at least half of the window can be offered again.
 *
 * Connect: as tcp-host-native.ts (the guest's TTL on the SYN, IP_RECVERR for the ICMP error
 * that may abort it), but the fd stays ours afterwards.
 *
 * Needs the addon's tcpstream.c and a kernel with SO_PEEK_OFF for TCP (Linux ≥ 6.9);
 * `fdHostSocketsAvailable()` checks both once.
 */
import { addon, addonLoadError, type OwnedFd } from '../../native/binding';
import { errnoName } from '../../native/errors';
import { getSocketError, readErrorQueue, setRecvErr, setsockoptInt, setTtl, tcpConnect } from '../../native/sockets';
import { FdWatcher, POLL_DISCONNECT, POLL_READABLE, POLL_WRITABLE } from '../../native/watcher';
import { IPPROTO_TCP, SOL_SOCKET, TCP_NODELAY } from '../../native/constants';
import type { Stage } from '../../meter/meter';
import { setKeepAlive, type HostConnectError, type HostConnectOptions, type HostSocket, type HostSocketEvents, type HostSocketFactory } from './tcp-host';

interface TcpStreamAddon {
  tcpPeek(fd: OwnedFd, buf: Uint8Array, off: number, len: number, streamOffset: number): number;
  tcpDiscard(fd: OwnedFd, len: number): number;
  tcpSendAt(fd: OwnedFd, buf: Uint8Array, off: number, len: number): number;
  tcpShutdown(fd: OwnedFd, how: number): number;
  tcpSetLingerZero(fd: OwnedFd): number;
  tcpQueues(fd: OwnedFd, out: Int32Array): number;
}

const SO_RCVLOWAT = 18;
const SO_KEEPALIVE = 9;
const TCP_KEEPIDLE = 4;
const EAGAIN = 11;
const SHUT_WR = 1;
/** Share of SO_SNDBUF (which counts skb overhead too) we offer as payload window. */
const SNDBUF_PAYLOAD_SHARE = 0.75;
const TCP_NOTSENT_LOWAT = 25;
/**
 * Most bytes waiting unsent in the kernel (TCP_NOTSENT_LOWAT): the window the guest gets is
 * this minus what is still unsent. It also makes POLLOUT mean "less than half of it is still
 * unsent" (tcp_poll → __tcp_stream_memory_free with wake), the event that reopens a window
 * the guest has filled — without it the kernel drains its queue silently and the guest waits
 * for its persist timer.
 */
const NOTSENT_LOWAT = 1 << 20;

const tcpAddon = (): TcpStreamAddon => addon as unknown as TcpStreamAddon;

export interface FdHostSocketOptions {
  readStage: Stage;
  writeStage: Stage;
}

export class FdHostSocket implements HostSocket {
  private fd: OwnedFd | null;
  private watcher: FdWatcher | null = null;
  private watching = 0;
  private connected = false;
  private dead = false;
  private eof = false;
  private writeShut = false;
  /** Bytes queued past the first unconsumed one, as of the last SIOCINQ. */
  private known = 0;
  /** How far `hostReadable` has been announced. */
  private announced = 0;
  private lowat = 1;
  /**
   * Woken for reading with nothing new: the kernel also reports POLLIN when its receive window
   * is nearly closed (tcp_epollin_ready), whatever SO_RCVLOWAT says — which, level-triggered,
   * would spin. Reading interest pauses until the guest consumes (or a FIN/RST: POLLRDHUP).
   */
  private readIdle = false;
  private readLimit = 0;
  private wantWritable = false;
  private space = 0;
  private spaceStale = true;
  private keepAliveMs = 0;
  /** [SIOCINQ, SIOCOUTQ, SO_SNDBUF, SIOCOUTQNSD] as of the last refresh. */
  private readonly queues = new Int32Array(4);
  private readonly one = new Uint8Array(1);
  private readonly readStage: Stage;
  private readonly writeStage: Stage;
  private readonly family: 4 | 6;

  private constructor(fd: OwnedFd, family: 4 | 6, private readonly events: HostSocketEvents, o: FdHostSocketOptions) {
    this.fd = fd;
    this.family = family;
    this.readStage = o.readStage;
    this.writeStage = o.writeStage;
  }

  /** A non-blocking connect with the guest's TTL and IP_RECVERR (see the file comment). */
  static connect(opts: HostConnectOptions, events: HostSocketEvents, o: FdHostSocketOptions, netns: string | null): FdHostSocket {
    const fd = tcpConnect(opts.host, opts.port, {
      ttl: opts.ttl,
      recvErr: true,
      bindAddress: opts.localAddress,
      bindPort: opts.localPort,
      reusePort: opts.sharePort,
      netns,
    });
    const h = new FdHostSocket(fd, opts.family, events, o);
    h.keepAliveMs = opts.keepAliveMs ?? 0;
    h.watch(POLL_WRITABLE);
    return h;
  }

  /** An fd already connected (accepted by a port forward). */
  static connected(fd: OwnedFd, family: 4 | 6, events: HostSocketEvents, o: FdHostSocketOptions): FdHostSocket {
    const h = new FdHostSocket(fd, family, events, o);
    h.becomeConnected();
    return h;
  }

  private becomeConnected(): void {
    const fd = this.fd!;
    this.connected = true;
    try {
      setsockoptInt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
      setsockoptInt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, NOTSENT_LOWAT);
      if (this.keepAliveMs > 0) {
        setsockoptInt(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
        setsockoptInt(fd, IPPROTO_TCP, TCP_KEEPIDLE, Math.max(1, Math.round(this.keepAliveMs / 1000)));
      }
      this.setLowat(1);
    } catch {
      /* best effort */
    }
    this.refreshQueues();
    this.updateWatch();
  }

  // ---- readiness -------------------------------------------------------------------

  private watch(events: number): void {
    if (!this.fd || this.dead) return;
    if (events === this.watching && this.watcher?.active) return;
    if (!this.watcher) this.watcher = new FdWatcher(this.fd, this.onReady);
    this.watching = events;
    if (events === 0) this.watcher.stop();
    else this.watcher.start(events);
  }

  private updateWatch(): void {
    if (!this.connected || this.dead) return;
    let ev = 0;
    if (!this.eof) {
      ev |= POLL_DISCONNECT;
      if (this.known < this.readLimit && !this.readIdle) ev |= POLL_READABLE;
    }
    if (this.wantWritable) ev |= POLL_WRITABLE;
    this.watch(ev);
  }

  private readonly onReady = (events: number, status: number): void => {
    if (this.dead || !this.fd) return;
    if (!this.connected) {
      this.connectDone(status);
      return;
    }
    if (status < 0) {
      // POLLERR: the watcher stopped itself; the socket error says what happened.
      let errno = 0;
      try {
        errno = getSocketError(this.fd);
      } catch {
        errno = 5;
      }
      this.watching = 0;
      if (errno !== 0) {
        this.fail(errno);
        return;
      }
    }
    if (events & POLL_WRITABLE) {
      // The event may predate writes made since the poll returned (libuv collects every
      // event of a turn first): check it still holds, else keep waiting for the real one.
      this.refreshQueues();
      if (this.dead) return;
      if (this.queues[3] * 2 < NOTSENT_LOWAT) {
        this.wantWritable = false;
        this.events.hostWritable();
        if (this.dead) return;
      }
    }
    if (events & (POLL_READABLE | POLL_DISCONNECT) || status < 0) this.readable();
    if (!this.dead) this.updateWatch();
  };

  private readable(): void {
    this.refreshQueues();
    if (this.dead) return;
    if (this.known > this.announced) {
      this.announced = this.known;
      this.readIdle = false;
      this.events.hostReadable();
    } else if (!this.eof) {
      this.readIdle = true;
      // Woken with nothing new: end of stream (or reset) at the end of what is queued?
      const r = tcpAddon().tcpPeek(this.fd!, this.one, 0, 1, this.known);
      if (r === 0) {
        this.eof = true;
        this.events.hostEnd();
      } else if (r < 0 && r !== -EAGAIN) {
        this.fail(-r);
        return;
      }
    }
    if (!this.dead) this.setLowat(this.known + 1);
  }

  private connectDone(status: number): void {
    const fd = this.fd!;
    let errno = 0;
    try {
      errno = getSocketError(fd);
    } catch {
      errno = status < 0 ? -status : 5;
    }
    if (errno === 0 && status < 0) errno = 113; // POLLERR without SO_ERROR: EHOSTUNREACH
    if (errno === 0) {
      try {
        setTtl(fd, this.family, -1);
        setRecvErr(fd, this.family, false);
      } catch {
        /* the connection works either way */
      }
      this.watching = 0;
      this.watcher?.stop();
      this.becomeConnected();
      this.events.hostConnected();
      return;
    }
    const err: HostConnectError = { code: safeErrnoName(errno) };
    try {
      const e = readErrorQueue(fd);
      if (e && (e.origin === 2 || e.origin === 3)) {
        err.icmpType = e.type;
        err.icmpCode = e.code;
        if (e.offender && /^\d+\.\d+\.\d+\.\d+$/.test(e.offender)) err.offender = Uint8Array.from(e.offender.split('.').map(Number));
      }
    } catch {
      /* the errno is all we know */
    }
    this.teardown(false);
    this.events.hostConnectFailed(err);
  }

  private setLowat(n: number): void {
    if (n === this.lowat || !this.fd) return;
    try {
      setsockoptInt(this.fd, SOL_SOCKET, SO_RCVLOWAT, n);
      this.lowat = n;
    } catch {
      /* keep the old mark */
    }
  }

  private refreshQueues(): void {
    if (!this.fd) return;
    const r = tcpAddon().tcpQueues(this.fd, this.queues);
    if (r < 0) {
      this.fail(-r);
      return;
    }
    this.known = this.queues[0];
    const bySndbuf = Math.floor(this.queues[2] * SNDBUF_PAYLOAD_SHARE) - this.queues[1];
    const byNotsent = NOTSENT_LOWAT - this.queues[3];
    this.space = Math.max(0, Math.min(bySndbuf, byNotsent));
    this.spaceStale = false;
  }

  private fail(errno: number): void {
    if (this.dead) return;
    this.teardown(false);
    this.events.hostError(safeErrnoName(errno));
  }

  // ---- host → guest ------------------------------------------------------------------

  get buffered(): number {
    return this.known;
  }

  peek(offset: number, dst: Uint8Array, dstOff: number, len: number): number {
    if (!this.fd || len <= 0) return 0;
    const r = tcpAddon().tcpPeek(this.fd, dst, dstOff, len, offset);
    if (r <= 0) return 0;
    this.readStage.pass(1, r);
    this.readStage.copied(r); // kernel → frame: the one copy
    return r;
  }

  consume(n: number): void {
    if (!this.fd || n <= 0) return;
    const r = tcpAddon().tcpDiscard(this.fd, n);
    if (r < 0 && r !== -EAGAIN) {
      this.fail(-r);
      return;
    }
    this.known = Math.max(0, this.known - n);
    this.announced = Math.max(0, this.announced - n);
    this.readIdle = false;
    this.setLowat(this.known + 1);
    this.updateWatch();
  }

  setReadLimit(n: number): void {
    this.readLimit = n;
    this.updateWatch();
  }

  // ---- guest → host ------------------------------------------------------------------

  write(src: Uint8Array, off: number, len: number): number {
    if (!this.fd || this.dead || this.writeShut || len <= 0) return 0;
    const r = tcpAddon().tcpSendAt(this.fd, src, off, len);
    if (r >= 0) {
      this.writeStage.pass(1, r);
      this.writeStage.copied(r); // frame → kernel: the one copy
      this.spaceStale = true;
      // One-shot POLLOUT after every write: the send queue drains with no event of ours, and
      // the guest only learns of the freed space from a window update (sent from
      // hostWritable). The kernel reports POLLOUT once free space ≥ half the queued bytes
      // (sk_stream_is_writeable), so a stalled window reopens in large steps.
      this.wantWritable = true;
      this.updateWatch();
      return r;
    }
    if (r === -EAGAIN) {
      this.wantWritable = true;
      this.updateWatch();
      return 0;
    }
    // EPIPE, ECONNRESET: report after the current segment is handled.
    const errno = -r;
    queueMicrotask(() => this.fail(errno));
    return 0;
  }

  get writeSpace(): number {
    if (!this.fd || this.dead || this.writeShut) return 0;
    if (this.spaceStale) this.refreshQueues();
    return this.space;
  }

  get writeCapacity(): number {
    return NOTSENT_LOWAT;
  }

  get writePending(): number {
    return 0;
  }

  shutdownWrite(): void {
    if (this.writeShut || !this.fd || this.dead) return;
    this.writeShut = true;
    tcpAddon().tcpShutdown(this.fd, SHUT_WR);
  }

  keepAlive(idleS: number, intervalS: number, count: number): boolean {
    return !this.dead && this.fd !== null && setKeepAlive(this.fd, idleS, intervalS, count);
  }

  // ---- teardown ----------------------------------------------------------------------

  reset(): void {
    if (this.dead) return;
    this.teardown(true);
  }

  close(): void {
    if (this.dead) return;
    this.teardown(false);
  }

  private teardown(abortive: boolean): void {
    this.dead = true;
    const fd = this.fd;
    this.fd = null;
    this.watcher?.close();
    this.watcher = null;
    if (!fd) return;
    if (abortive) tcpAddon().tcpSetLingerZero(fd);
    fd.close();
  }
}

function safeErrnoName(errno: number): string {
  try {
    return errnoName(errno);
  } catch {
    return 'EIO';
  }
}

let available: boolean | null = null;

/**
 * True when the addon has the tcpstream calls and the kernel accepts SO_PEEK_OFF on TCP
 * sockets (checked once, on a socket pair of our own on loopback).
 */
export function fdHostSocketsAvailable(): boolean {
  if (available !== null) return available;
  available = false;
  if (addonLoadError) return false;
  try {
    if (typeof (addon as unknown as Record<string, unknown>).tcpPeek !== 'function') return false;
    const fd = tcpConnect('127.0.0.1', 9, {});
    try {
      setsockoptInt(fd, SOL_SOCKET, 42 /* SO_PEEK_OFF */, 0);
      available = true;
    } finally {
      fd.close();
    }
  } catch {
    available = false;
  }
  return available;
}

export function fdHostSocketFactory(o: FdHostSocketOptions, netns: string | null = null): HostSocketFactory {
  return { connect: (opts, events) => FdHostSocket.connect(opts, events, o, netns) };
}
