/**
 * IP sockets for the user-mode NAT, with what Node's dgram and net leave out (ip(7), ipv6(7),
 * icmp(7); native/src/sock.c):
 *
 *  - ICMP echo sockets (`SOCK_DGRAM`, IPPROTO_ICMP/ICMPV6): allowed when the caller's group is
 *    in net.ipv4.ping_group_range of the socket's namespace; otherwise, with CAP_NET_RAW, a raw
 *    socket is opened instead and `kind` says so. The two differ for the caller:
 *      ping  the kernel sets the echo identifier to the socket's port and the checksum; only
 *            replies to this socket arrive, without IP header.
 *      raw   what is sent goes out as is (IPv4: the caller computes the ICMP checksum; IPv6:
 *            the kernel does, RFC 3542 §3.1); every ICMP packet of the namespace arrives —
 *            IPv4 with its IP header in front, IPv6 without.
 *  - Per-datagram TTL / hop limit (`sendTo(..., ttl)`: IP_TTL / IPV6_HOPLIMIT cmsg) and the
 *    received TTL (`RecvMeta.ttl`, after setRecvTtl), so a guest's traceroute works (RFC 1812
 *    §5.3.1 is the router's duty; here we only carry the guest's value).
 *  - The error queue (setRecvErr + readErrorQueue): ICMP errors about our datagrams, and about a
 *    TCP connect that an ICMP error aborted, with type/code/offender for translation back to the
 *    guest (RFC 5508 §4, RFC 792 / RFC 4443 for types and codes). Arrival shows as an FdWatcher
 *    callback with a negative status (POLLERR).
 *  - Non-blocking TCP connect with TTL, IP_RECVERR and a chosen (even privileged) source
 *    address/port; finish with FdWatcher(POLL_WRITABLE) + getSocketError, then `release()` the
 *    fd to `new net.Socket({ fd, readable: true, writable: true })`.
 *  - Any of these inside another network namespace (`netns`).
 *
 * IPv6 sockets are IPV6_V6ONLY. Addresses are strings, or raw bytes (4 or 16) where a hot path
 * already has them (sendTo, tcpConnect). Would-block returns -1 (never an exception).
 */
import * as ipaddr from 'ipaddr.js';
import { addon, type FdLike, type NativeErrorQueueEntry, type OwnedFd } from './binding';
import {
  AF_INET,
  AF_INET6,
  IPPROTO_IP,
  IPPROTO_IPV6,
  IP_MTU_DISCOVER,
  IP_RECVERR,
  IP_RECVTTL,
  IP_TTL,
  IPV6_MTU_DISCOVER,
  IPV6_RECVERR,
  IPV6_RECVHOPLIMIT,
  IPV6_UNICAST_HOPS,
  MSG_TRUNC,
} from './constants';
import { netnsPath } from './netns';

export type IpFamily = 4 | 6;

export interface InetAddress {
  family: IpFamily;
  address: string;
  port: number;
}

export interface UnixAddress {
  family: 'unix';
  /** '' for an unbound socket, '@name' for the abstract namespace. */
  path: string;
}

export type SocketAddress = InetAddress | UnixAddress;

function af(family: IpFamily): number {
  if (family === 4) return AF_INET;
  if (family === 6) return AF_INET6;
  throw new RangeError(`family must be 4 or 6, got ${String(family)}`);
}

/* ------------------------------------------------------------------ creation */

export interface IcmpSocket {
  fd: OwnedFd;
  /** 'ping': an unprivileged echo socket; 'raw': the SOCK_RAW fallback (see the file comment). */
  kind: 'ping' | 'raw';
  family: IpFamily;
}

/**
 * An ICMP echo socket; falls back to SOCK_RAW when ping sockets are refused (EACCES/EPERM) and
 * `allowRaw` (default true). Throws the ping socket's error when neither works.
 */
export function icmpSocket(family: IpFamily, opts: { netns?: string | number | null; allowRaw?: boolean } = {}): IcmpSocket {
  const r = addon.icmpSocket(af(family), netnsPath(opts.netns), opts.allowRaw ?? true);
  return { fd: r.fd, kind: r.kind, family };
}

export interface UdpSocketOptions {
  /** Local address to bind (default: any). */
  address?: string;
  /** Local port (default 0: the kernel picks). */
  port?: number;
  netns?: string | number | null;
  reuseAddr?: boolean;
}

/** A bound UDP socket. */
export function udpSocket(family: IpFamily, opts: UdpSocketOptions = {}): OwnedFd {
  return addon.udpSocket(af(family), opts.address ?? null, opts.port ?? 0, netnsPath(opts.netns), opts.reuseAddr ?? false);
}

export interface TcpConnectOptions {
  /** IP_TTL / IPV6_UNICAST_HOPS for every segment (1..255); default: the system's. */
  ttl?: number;
  /** IP_RECVERR / IPV6_RECVERR: queue the ICMP error that aborts the connect (readErrorQueue). */
  recvErr?: boolean;
  /** Source address to bind. */
  bindAddress?: string;
  /** Source port to bind (privileged ports need CAP_NET_BIND_SERVICE); sets SO_REUSEADDR. */
  bindPort?: number;
  /** With bindPort: SO_REUSEPORT too, to share the port of a listener that set it. */
  reusePort?: boolean;
  netns?: string | number | null;
}

/**
 * Start a non-blocking connect. Returns the fd at once (connecting); wait for POLL_WRITABLE or a
 * negative watcher status, then getSocketError(fd) is 0 (connected) or the errno
 * (ECONNREFUSED, EHOSTUNREACH, ETIMEDOUT …). Errors known immediately (ENETUNREACH, EADDRINUSE)
 * throw.
 */
export function tcpConnect(address: string | Uint8Array, port: number, opts: TcpConnectOptions = {}): OwnedFd {
  return addon.tcpConnect(
    address,
    port,
    opts.ttl ?? -1,
    opts.recvErr ?? false,
    opts.bindAddress ?? null,
    opts.bindPort ?? 0,
    netnsPath(opts.netns),
    opts.reusePort ?? false,
  );
}

/** A listening TCP socket (SO_REUSEADDR); hand it to `net.createServer().listen({ fd })`. */
export function tcpListen(address: string, port: number, opts: { backlog?: number; netns?: string | number | null } = {}): OwnedFd {
  return addon.tcpListen(address, port, opts.backlog ?? 511, netnsPath(opts.netns));
}

/* ------------------------------------------------------------------ options */

export function setsockoptInt(fd: FdLike, level: number, name: number, value: number): void {
  addon.setsockoptInt(fd, level, name, value);
}

export function getsockoptInt(fd: FdLike, level: number, name: number): number {
  return addon.getsockoptInt(fd, level, name);
}

/** SO_ERROR: 0 or the pending errno (reading clears it). */
export function getSocketError(fd: FdLike): number {
  return addon.getSocketError(fd);
}

/** IP_TTL (v4) / IPV6_UNICAST_HOPS (v6) for every packet of the socket. */
export function setTtl(fd: FdLike, family: IpFamily, ttl: number): void {
  if (family === 6) addon.setsockoptInt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, ttl);
  else addon.setsockoptInt(fd, IPPROTO_IP, IP_TTL, ttl);
}

/** IP_RECVERR / IPV6_RECVERR: queue ICMP errors (readErrorQueue). */
export function setRecvErr(fd: FdLike, family: IpFamily, on = true): void {
  if (family === 6) addon.setsockoptInt(fd, IPPROTO_IPV6, IPV6_RECVERR, on ? 1 : 0);
  else addon.setsockoptInt(fd, IPPROTO_IP, IP_RECVERR, on ? 1 : 0);
}

/** IP_RECVTTL / IPV6_RECVHOPLIMIT: report each datagram's TTL in RecvMeta.ttl. */
export function setRecvTtl(fd: FdLike, family: IpFamily, on = true): void {
  if (family === 6) addon.setsockoptInt(fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, on ? 1 : 0);
  else addon.setsockoptInt(fd, IPPROTO_IP, IP_RECVTTL, on ? 1 : 0);
}

/** IP_MTU_DISCOVER / IPV6_MTU_DISCOVER: IP_PMTUDISC_DO (2) sets DF, IP_PMTUDISC_DONT (0) clears it. */
export function setMtuDiscover(fd: FdLike, family: IpFamily, mode: number): void {
  if (family === 6) addon.setsockoptInt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, mode);
  else addon.setsockoptInt(fd, IPPROTO_IP, IP_MTU_DISCOVER, mode);
}

export function getSockName(fd: FdLike): SocketAddress | null {
  return addon.getSockName(fd) as SocketAddress | null;
}

export function getPeerName(fd: FdLike): SocketAddress | null {
  return addon.getPeerName(fd) as SocketAddress | null;
}

/* ------------------------------------------------------------------ datagrams */

/**
 * One datagram (or ICMP echo message) to address:port — address as a string or 4/16 raw bytes,
 * null on a connected socket — with TTL / hop limit `ttl` for this datagram only (-1: the
 * socket's). Bytes sent, or -1 if it would block.
 */
export function sendTo(fd: FdLike, buf: ArrayBufferView, address: string | Uint8Array | null, port = 0, ttl = -1): number {
  return addon.sendTo(fd, buf, address, port, ttl);
}

/**
 * Where a datagram came from, filled by recvFrom without allocating: reuse one per socket.
 * Layout of `raw` (Int32Array(8)): family, port, ttl, msg_flags, then 16 address bytes.
 */
export class RecvMeta {
  readonly raw = new Int32Array(8);
  private readonly bytes4 = new Uint8Array(this.raw.buffer, 16, 4);
  private readonly bytes16 = new Uint8Array(this.raw.buffer, 16, 16);

  /** 4, 6, or 0 when the socket gave no address. */
  get family(): 0 | IpFamily {
    const f = this.raw[0];
    return f === AF_INET ? 4 : f === AF_INET6 ? 6 : 0;
  }

  get port(): number {
    return this.raw[1];
  }

  /** The datagram's TTL / hop limit, -1 unless setRecvTtl is on. */
  get ttl(): number {
    return this.raw[2];
  }

  /** msg_flags (MSG_TRUNC: the datagram did not fit the buffer). */
  get flags(): number {
    return this.raw[3];
  }

  get truncated(): boolean {
    return (this.raw[3] & MSG_TRUNC) !== 0;
  }

  /** The source address bytes (a view, 4 or 16 long; overwritten by the next recvFrom). */
  get addressBytes(): Uint8Array {
    return this.family === 6 ? this.bytes16 : this.bytes4;
  }

  /** The source address as text (allocates). */
  get address(): string {
    const f = this.family;
    if (f === 0) return '';
    return ipaddr.fromByteArray(Array.from(f === 6 ? this.bytes16 : this.bytes4)).toString();
  }
}

/**
 * One datagram into `buf`; bytes received (a longer datagram is cut: meta.truncated), or -1 if
 * none is waiting. `flags` e.g. MSG_PEEK.
 */
export function recvFrom(fd: FdLike, buf: ArrayBufferView, meta?: RecvMeta | Int32Array | null, flags = 0): number {
  const raw = meta instanceof RecvMeta ? meta.raw : meta ?? null;
  return addon.recvFrom(fd, buf, raw, flags);
}

/** recv(2) with MSG_DONTWAIT added: bytes, 0 at end of stream, -1 if it would block. */
export function recv(fd: FdLike, buf: ArrayBufferView, flags = 0): number {
  return addon.recv(fd, buf, flags);
}

/** One entry of the error queue (struct sock_extended_err and what came with it). */
export interface ErrorQueueEntry {
  /** ee_errno as the kernel translated the ICMP error (positive; ECONNREFUSED for port unreachable). */
  errno: number;
  errnoName: string | null;
  /** SO_EE_ORIGIN_*: 2 ICMP, 3 ICMPv6, 1 local (e.g. EMSGSIZE from the local MTU). */
  origin: number;
  /** ICMP type and code of the error (3/3 port unreachable, 11/0 TTL exceeded in transit …). */
  type: number;
  code: number;
  /** ee_info: the next-hop MTU for fragmentation needed / packet too big. */
  info: number;
  /** ee_data (zerocopy/timestamping; 0 for ICMP). */
  eeData: number;
  /** Bytes of the quoted original payload copied into the caller's buffer. */
  bytes: number;
  /** The quoted payload was longer than the buffer. */
  truncated: boolean;
  /** The node that sent the ICMP error (a router or the destination), null if unknown. */
  offender: string | null;
  /** The original destination (address and port) of the datagram or connection. */
  destination: InetAddress | null;
  /** The ICMP error packet's TTL, -1 unless setRecvTtl is on. */
  ttl: number;
}

/** Dequeue one error-queue entry (the quoted payload goes into `buf`), or null if empty. */
export function readErrorQueue(fd: FdLike, buf?: ArrayBufferView | null): ErrorQueueEntry | null {
  return addon.readErrorQueue(fd, buf ?? null) as (NativeErrorQueueEntry & ErrorQueueEntry) | null;
}
