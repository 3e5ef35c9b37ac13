/**
 * The NAT seen from outside, for the meter's views: where a guest flow goes on the host (for
 * `usernet trace`, meter/trace.ts: the rewrites between the guest's headers and the host
 * socket's), and one row per flow with its counters (for `usernet stats --flows` and the
 * control socket's `flows` request).
 *
 * Nothing here is on a hot path: it runs when a traced packet's journey is finished or when a
 * client asks, and scans the flow tables (O(flows)); the host socket's addresses come from
 * getsockname/getpeername, asked once per flow and remembered.
 */
import type { HostSideView, NatTraceView, TraceDirection, TraceHeaders } from '../../meter/trace';
import * as native from '../../native';
import type { NatStack } from './stack';
import type { TcpConnection } from './tcp-connection';
import type { TcpModule } from './tcp';
import { hostEndpoints, type HostEndpoints } from './host-endpoints';

const ip = (a: Uint8Array): string => (a.length === 4 ? `${a[0]}.${a[1]}.${a[2]}.${a[3]}` : Buffer.from(a).toString('hex'));

/** One flow, both sides, with its counters. */
export interface FlowRow {
  proto: 'tcp' | 'udp' | 'icmp';
  /** The guest's end and its peer, as the guest sees them. */
  guest: string;
  peer: string;
  /** usernet's end of the host socket, and the host peer. */
  hostLocal: string | null;
  hostRemote: string | null;
  state?: string;
  /** Payload bytes and segments/datagrams each way (guest → host, host → guest). */
  bytesOut: number;
  bytesIn: number;
  packetsOut: number;
  packetsIn: number;
  /** TCP: segments sent to the guest again, their bytes, fast retransmits, RTO expiries. */
  retransmits?: number;
  retransmittedBytes?: number;
  fastRetransmits?: number;
  timeouts?: number;
  /** TCP: times the guest's window stopped usernet with data waiting, zero-window probes. */
  windowStalls?: number;
  zeroWindowProbes?: number;
  /** TCP: times the host socket took less than the guest offered. */
  hostStalls?: number;
  outOfOrder?: number;
  dropped?: number;
}

function sockName(fd: native.OwnedFd | null, peer: boolean): string | null {
  if (!fd) return null;
  try {
    const a = peer ? native.getPeerName(fd) : native.getSockName(fd);
    if (a && a.family !== 'unix') return `${a.address}:${a.port}`;
  } catch {
    /* closed or not connected */
  }
  return null;
}

function tcpModule(stack: NatStack): TcpModule | null {
  const t = stack.tcp as (TcpModule & { connections?: unknown }) | null;
  return t && typeof t.connections === 'function' ? t : null;
}

export class NatView implements NatTraceView {
  private readonly tcpEndpoints = new WeakMap<object, HostEndpoints>();

  constructor(private readonly stack: NatStack) {}

  /** The host side of the flow whose guest-side headers are `h`. */
  hostSide(h: TraceHeaders, dir: TraceDirection): HostSideView | null {
    if (!h.src || !h.dst) return null;
    const guest = dir === 'tx' ? h.src : h.dst;
    const peer = dir === 'tx' ? h.dst : h.src;
    const guestPort = dir === 'tx' ? h.srcPort : h.dstPort;
    const peerPort = dir === 'tx' ? h.dstPort : h.srcPort;
    const hostPeer = this.stack.hostAddressFor(4, Uint8Array.from(peer.split('.').map(Number))) ?? peer;
    if (h.proto === 'tcp') {
      const t = tcpModule(this.stack);
      if (!t) return null;
      for (const c of t.connections()) {
        if (c.guestPort !== guestPort || c.remotePort !== peerPort || ip(c.guestAddr) !== guest || ip(c.remoteAddr) !== peer) continue;
        const ends = this.tcpEnds(c);
        return { local: ends?.local ?? '(connecting)', remote: ends?.remote ?? `${hostPeer}:${peerPort}`, socket: ends?.kind ?? 'TCP socket' };
      }
      return null;
    }
    if (h.proto === 'udp') {
      for (const m of this.stack.udp.flows.values()) {
        if (m.guestPort !== guestPort || ip(m.guest) !== guest) continue;
        return { local: sockName(m.fd, false) ?? '?', remote: `${hostPeer}:${peerPort}`, socket: m.forward ? 'UDP (port forward)' : 'UDP, one socket per guest endpoint', ttl: h.ttl !== undefined && hostPeer !== '127.0.0.1' ? h.ttl - 1 : undefined };
      }
      return null;
    }
    if (h.proto === 'icmp') {
      for (const s of this.stack.icmp.flows.values()) {
        if (s.guestId !== h.icmpId || ip(s.guest) !== guest) continue;
        const local = sockName(s.fd, false);
        return { local: local ?? `raw id ${s.hostId}`, remote: hostPeer, socket: s.fd ? 'ping socket (the port is the ICMP identifier)' : 'raw socket' };
      }
      return null;
    }
    return null;
  }

  private tcpEnds(c: TcpConnection): HostEndpoints | null {
    const h = c.host;
    if (!h) return null;
    let e = this.tcpEndpoints.get(h);
    if (!e) {
      const got = hostEndpoints(h);
      if (!got) return null;
      e = got;
      this.tcpEndpoints.set(h, e);
    }
    return e;
  }

  /** Every flow, both sides, with its counters. */
  flows(): FlowRow[] {
    const rows: FlowRow[] = [];
    const t = tcpModule(this.stack);
    if (t) {
      for (const c of t.connections()) {
        const s = c.stats;
        const ends = this.tcpEnds(c);
        rows.push({
          proto: 'tcp',
          guest: `${ip(c.guestAddr)}:${c.guestPort}`,
          peer: `${ip(c.remoteAddr)}:${c.remotePort}`,
          hostLocal: ends?.local ?? null,
          hostRemote: ends?.remote ?? null,
          state: c.state,
          bytesOut: s.bytesFromGuest,
          bytesIn: s.bytesToGuest,
          packetsOut: s.segmentsFromGuest,
          packetsIn: s.segmentsToGuest,
          retransmits: s.retransmits,
          retransmittedBytes: s.retransmittedBytes,
          fastRetransmits: s.fastRetransmits,
          timeouts: s.timeouts,
          windowStalls: s.windowStalls,
          zeroWindowProbes: s.zeroWindowProbes,
          hostStalls: s.hostStalls,
          outOfOrder: s.outOfOrder,
          dropped: s.dropped,
        });
      }
    }
    for (const m of this.stack.udp.flows.values()) {
      rows.push({
        proto: 'udp',
        guest: `${ip(m.guest)}:${m.guestPort}`,
        peer: m.lastDstPort >= 0 ? `${ip(m.lastDst.subarray(0, m.family === 4 ? 4 : 16))}:${m.lastDstPort}` : '*',
        hostLocal: sockName(m.fd, false),
        hostRemote: m.lastHost ? `${ip(m.lastHost)}:${m.lastDstPort}` : null,
        bytesOut: m.bytesOut,
        bytesIn: m.bytesIn,
        packetsOut: m.datagramsOut,
        packetsIn: m.datagramsIn,
      });
    }
    for (const s of this.stack.icmp.flows.values()) {
      rows.push({
        proto: 'icmp',
        guest: `${ip(s.guest)} id ${s.guestId}`,
        peer: s.lastHost ? ip(s.lastDst.subarray(0, s.family === 4 ? 4 : 16)) : '*',
        hostLocal: s.fd ? sockName(s.fd, false) : `raw id ${s.hostId}`,
        hostRemote: s.lastHost ? ip(s.lastHost) : null,
        bytesOut: s.bytesOut,
        bytesIn: s.bytesIn,
        packetsOut: s.echoesOut,
        packetsIn: s.echoesIn,
      });
    }
    return rows;
  }

  /** TCP counters of every connection so far (live and closed), summed. */
  tcpTotals(): Record<string, number> | null {
    const t = tcpModule(this.stack);
    return t ? { ...t.totals() } : null;
  }
}
