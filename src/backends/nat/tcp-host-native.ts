/**
 * Host sockets whose connect goes through the native addon, then continue on Node.
 *
 * Why: Node's `net.connect` can set neither the TTL of the SYN nor IP_RECVERR. The guest's SYN
 * TTL belongs on the host SYN (issue 8: a TCP traceroute from the guest must see every hop),
 * and when a router answers with an ICMP error the guest should get that error from that
 * router, quoting its own SYN (RFC 5508 §4 spirit). So:
 *
 *   1. `tcpConnect(host, port, {ttl, recvErr: true})`: a non-blocking connect with IP_TTL /
 *      IPV6_UNICAST_HOPS and IP_RECVERR set before the SYN leaves;
 *   2. an FdWatcher waits for POLL_WRITABLE (or POLLERR, reported as a negative status);
 *   3. SO_ERROR says how it went. On failure the error queue (MSG_ERRQUEUE) names the ICMP
 *      type/code and the offender (Linux queues it for a connect aborted by ICMP when
 *      IP_RECVERR is set, tcp_v4_err → ip_icmp_error); a RST shows as ECONNREFUSED with no
 *      queue entry;
 *   4. on success the TTL goes back to the system default (-1) and IP_RECVERR off (so an
 *      established connection treats ICMP errors as soft, as usual), and the fd is released to
 *      a Node socket (NodeHostSocket.openFd) for the data phase.
 *
 * A connect that must share a port-forward listener's port (`sharePort`: simultaneous open
 * through a forward, RFC 5382 REQ-2) binds it with SO_REUSEPORT as well (the listener set it),
 * and is otherwise the same: TTL, error queue, hand-over to Node.
 *
 * Falls back to plain `net.connect` when the addon is not built.
 */
import { addonLoadError } from '../../native/binding';
import { errnoName } from '../../native/errors';
import type { OwnedFd } from '../../native/fd';
import { getSocketError, readErrorQueue, setRecvErr, setTtl, tcpConnect } from '../../native/sockets';
import { FdWatcher, POLL_WRITABLE } from '../../native/watcher';
import type { HostConnectError, HostConnectOptions, HostSocket, HostSocketEvents, HostSocketFactory } from './tcp-host';
import { NodeHostSocket, nodeHostSocketFactory, type NodeHostSocketOptions } from './tcp-host-node';

/** Text address → 4 or 16 bytes (null when not an IP literal). Once per failed connect. */
function addressBytes(text: string | null): Uint8Array | undefined {
  if (!text) return undefined;
  if (text.includes('.') && !text.includes(':')) {
    const p = text.split('.').map(Number);
    if (p.length === 4 && p.every((x) => x >= 0 && x <= 255)) return Uint8Array.from(p);
    return undefined;
  }
  return undefined;
}

class NativeConnect {
  private fd: OwnedFd | null;
  private watcher: FdWatcher | null = null;

  constructor(
    private readonly opts: HostConnectOptions,
    private readonly events: HostSocketEvents,
    private readonly adapter: NodeHostSocket,
    netns: string | null,
  ) {
    this.fd = tcpConnect(opts.host, opts.port, {
      ttl: opts.ttl,
      recvErr: true,
      bindAddress: opts.localAddress,
      bindPort: opts.localPort,
      reusePort: opts.sharePort,
      netns,
    });
    adapter.onAbandon = () => this.cancel();
    try {
      this.watcher = new FdWatcher(this.fd, (ev, status) => this.done(ev, status));
      this.watcher.start(POLL_WRITABLE);
    } catch (err) {
      this.cancel();
      throw err;
    }
  }

  private done(_events: number, status: number): void {
    const fd = this.fd;
    if (!fd) return;
    let errno = 0;
    try {
      errno = getSocketError(fd);
    } catch {
      errno = status < 0 ? -status : 5; // EIO
    }
    if (errno === 0 && status < 0) errno = 113; // POLLERR without SO_ERROR: EHOSTUNREACH
    if (errno === 0) {
      try {
        setTtl(fd, this.opts.family, -1);
        setRecvErr(fd, this.opts.family, false);
      } catch {
        /* best effort: the connection works either way */
      }
      this.watcher?.close();
      this.watcher = null;
      this.fd = null;
      const n = fd.release();
      this.adapter.openFd(n, this.opts.keepAliveMs ?? 0);
      this.events.hostConnected();
      return;
    }
    const err: HostConnectError = { code: safeErrnoName(errno) };
    try {
      const e = readErrorQueue(fd);
      if (e && (e.origin === 2 || e.origin === 3)) {
        err.icmpType = e.type;
        err.icmpCode = e.code;
        err.offender = addressBytes(e.offender);
      }
    } catch {
      /* no queue entry: the errno is all we know */
    }
    this.cancel();
    this.events.hostConnectFailed(err);
  }

  cancel(): void {
    this.watcher?.close();
    this.watcher = null;
    this.fd?.close();
    this.fd = null;
  }
}

function safeErrnoName(errno: number): string {
  try {
    return errnoName(errno);
  } catch {
    return 'EIO';
  }
}

/**
 * The host-socket factory for the TCP module: native connect (TTL, error queue) when the addon
 * is available, Node's otherwise. `netns`: open host sockets inside that namespace (tests).
 */
export function hostSocketFactory(o: NodeHostSocketOptions, netns: string | null = null): HostSocketFactory {
  if (addonLoadError) return nodeHostSocketFactory(o);
  return {
    connect(opts: HostConnectOptions, events: HostSocketEvents): HostSocket {
      const adapter = NodeHostSocket.pending(events, o);
      new NativeConnect(opts, events, adapter, netns);
      return adapter;
    },
  };
}

/** True when host connects carry the guest's TTL and report ICMP errors (the addon is built). */
export const nativeConnectAvailable = addonLoadError === null;
