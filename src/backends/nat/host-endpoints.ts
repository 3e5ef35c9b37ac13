/**
 * Where a TCP host socket is on the host: usernet's end (the port the kernel gave the connect)
 * and the host peer — for the meter's views (trace-view.ts, meter/pcap-host.ts), never for the
 * data path. Asked of the socket when it offers `endpoints()`; otherwise read from what the two
 * adapters hold (the fd adapter's descriptor through getsockname/getpeername, the Node
 * adapter's net.Socket), so the views work with either adapter without the data path knowing.
 */
import type net from 'node:net';
import * as native from '../../native';
import type { HostSocket } from './tcp-host';

export interface HostEndpoints {
  local: string;
  remote: string;
  /** What kind of host socket it is, in words. */
  kind: string;
}

interface Inspectable {
  endpoints?(): { local: string; remote: string; kind?: string } | null;
  fd?: native.OwnedFd | null;
  sock?: net.Socket | null;
}

function name(a: native.SocketAddress | null): string | null {
  return a && a.family !== 'unix' ? `${a.address}:${a.port}` : null;
}

/** The socket's two ends, or null (not connected yet, or already closed). */
export function hostEndpoints(host: HostSocket | null): HostEndpoints | null {
  if (!host) return null;
  const h = host as unknown as Inspectable;
  try {
    if (typeof h.endpoints === 'function') {
      const e = h.endpoints();
      return e ? { kind: 'TCP socket', ...e } : null;
    }
    if (h.fd) {
      const local = name(native.getSockName(h.fd));
      const remote = name(native.getPeerName(h.fd));
      return local && remote ? { local, remote, kind: 'TCP socket (fd: send from the frame, MSG_PEEK into the frame)' } : null;
    }
    if (h.sock && h.sock.localAddress && h.sock.remoteAddress) {
      return {
        local: `${h.sock.localAddress}:${h.sock.localPort}`,
        remote: `${h.sock.remoteAddress}:${h.sock.remotePort}`,
        kind: 'TCP socket (Node net.Socket with bounded rings)',
      };
    }
  } catch {
    /* closed meanwhile */
  }
  return null;
}
