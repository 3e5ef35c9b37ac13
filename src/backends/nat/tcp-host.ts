/**
 * The host side of a re-terminated TCP connection, as the guest-side state machine
 * (tcp-connection.ts) sees it. Two implementations sit behind it:
 *
 *  - tcp-host-node.ts: a Node `net.Socket` (works everywhere; needs a bounded ring per
 *    direction because Node's socket API neither peeks nor reports partial writes);
 *  - a native-fd adapter (the addon's non-blocking connect with TTL and IP_RECVERR, plain
 *    write, recv with MSG_PEEK) where the kernel's socket buffers are the only buffers.
 *
 * The contract mirrors the kernel's (passt's "mirror TCP dynamics" idea):
 *
 *  guest → host   `write` returns how many bytes were taken; only those are acknowledged to the
 *                 guest. `writeSpace` is what can be taken now: it becomes the window we
 *                 advertise, so the guest rarely sends what cannot be taken.
 *  host → guest   bytes received from the host stay in the host socket (or its adapter) until
 *                 the guest acknowledges them: `peek(offset)` reads them as often as needed
 *                 (first send and every retransmission), `consume(n)` drops what the guest
 *                 acknowledged. `setReadLimit(n)` says how many unconsumed bytes the connection
 *                 can use (the guest's window): an adapter stops reading the socket beyond it,
 *                 which closes the host peer's TCP window — back-pressure end to end.
 *
 * Events come back through `HostSocketEvents` (implemented by the connection). Implementations
 * must never throw out of these methods; errors arrive as `hostError`.
 */
import type { Family } from './context';
import { IPPROTO_TCP, SOL_SOCKET, SO_KEEPALIVE } from '../../native/constants';
import type { FdLike } from '../../native/fd';
import { setsockoptInt } from '../../native/sockets';

const TCP_KEEPIDLE = 4;
const TCP_KEEPINTVL = 5;
const TCP_KEEPCNT = 6;

/** SO_KEEPALIVE with its three timers (tcp(7)) on a host TCP socket; false if refused. */
export function setKeepAlive(fd: FdLike, idleS: number, intervalS: number, count: number): boolean {
  try {
    setsockoptInt(fd, IPPROTO_TCP, TCP_KEEPIDLE, Math.max(1, Math.min(32767, Math.round(idleS))));
    setsockoptInt(fd, IPPROTO_TCP, TCP_KEEPINTVL, Math.max(1, Math.min(32767, Math.round(intervalS))));
    setsockoptInt(fd, IPPROTO_TCP, TCP_KEEPCNT, Math.max(1, Math.min(127, Math.round(count))));
    setsockoptInt(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
    return true;
  } catch {
    return false;
  }
}

export interface HostConnectOptions {
  family: Family;
  /** Host address as text (from NatContext.hostAddressFor). */
  host: string;
  port: number;
  /**
   * TTL / hop limit for the connect (issue 8: the guest's SYN TTL goes on the host SYN so a TCP
   * traceroute through the NAT sees every hop; the socket returns to the default TTL once
   * connected). Adapters that cannot set it ignore it.
   */
  ttl?: number;
  /** Local address/port to bind before connecting (privileged source ports, issue 8). */
  localAddress?: string;
  localPort?: number;
  /**
   * The local port is a port-forward listener's (TCP simultaneous open through a forward, RFC
   * 5382 REQ-2): bind with SO_REUSEPORT next to it. Adapters that cannot fail the connect
   * synchronously (EADDRINUSE), and the module retries from an ephemeral port.
   */
  sharePort?: boolean;
  /** SO_KEEPALIVE on the host socket, with this idle time (ms); 0 = off. */
  keepAliveMs?: number;
}

/** Why a host connect failed, with what the error queue told (when the adapter can read it). */
export interface HostConnectError {
  /** errno name: ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT, … */
  code: string;
  /** From IP_RECVERR (sock_extended_err) when known: the ICMP type/code and who sent it. */
  icmpType?: number;
  icmpCode?: number;
  /** Address (4 or 16 bytes) of the router that answered, when known. */
  offender?: Uint8Array;
}

export interface HostSocketEvents {
  /** The connect completed. */
  hostConnected(): void;
  hostConnectFailed(err: HostConnectError): void;
  /** More bytes can be peeked (or the adapter wants the connection to try). */
  hostReadable(): void;
  /** Write space was freed after a write took less than offered, or after a drain. */
  hostWritable(): void;
  /** The host peer sent FIN; every byte before it is already peekable (`buffered`). */
  hostEnd(): void;
  /** The socket failed or was reset (ECONNRESET, EPIPE, ETIMEDOUT, …). */
  hostError(code: string): void;
}

export interface HostSocket {
  /** Bytes received from the host and not yet consumed (what `peek` can return). */
  readonly buffered: number;
  /** Copy up to `len` bytes, `offset` bytes past the consumed point, into `dst`. */
  peek(offset: number, dst: Uint8Array, dstOff: number, len: number): number;
  /** The guest acknowledged `n` more bytes: forget them. */
  consume(n: number): void;
  /** The connection can use up to `n` unconsumed bytes (the guest's window); read no further. */
  setReadLimit(n: number): void;

  /** Offer bytes towards the host; returns how many were taken (0 when full). */
  write(src: Uint8Array, off: number, len: number): number;
  /** What `write` would take now (the window to advertise to the guest). */
  readonly writeSpace: number;
  /** The most `writeSpace` can ever be (for choosing the window scale). */
  readonly writeCapacity: number;
  /** Bytes taken by `write` but not yet handed to the kernel (0 for fd adapters). */
  readonly writePending: number;
  /** Half-close towards the host (FIN after every byte taken so far). */
  shutdownWrite(): void;

  /**
   * TCP keep-alive on the host socket (issue 8: keep-alives honoured in both directions): the
   * first probe after `idleS` seconds without traffic, then every `intervalS` seconds; `count`
   * unanswered probes end the connection with ETIMEDOUT (reported as `hostError`). Called when
   * the guest shows it probes the connection. False when the adapter cannot (then the guest's
   * probes are still answered, but a dead host peer goes unnoticed).
   */
  keepAlive?(idleS: number, intervalS: number, count: number): boolean;

  /** Abort with RST (SO_LINGER 0 close). */
  reset(): void;
  /** Close quietly (after a clean shutdown both ways, or when the module closes). */
  close(): void;
}

/** Creates host sockets; the module takes one (tests and the native adapter swap it). */
export interface HostSocketFactory {
  connect(opts: HostConnectOptions, events: HostSocketEvents): HostSocket;
}
