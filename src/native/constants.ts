/**
 * Numeric constants of the Linux (x86-64 / aarch64 generic) ABI that the native calls take and
 * return. They are plain literals so that importing them never needs the addon to be built; the
 * unit test `native-constants` checks every one against the values the C code was compiled with.
 */

/** Readiness events for FdWatcher (libuv uv_poll_event). */
export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;
export const POLL_DISCONNECT = 4;
export const POLL_PRIORITIZED = 8;

/** TUNSETIFF flags (include/uapi/linux/if_tun.h). */
export const IFF_TUN = 0x1;
export const IFF_TAP = 0x2;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;
export const IFF_MULTI_QUEUE = 0x100;
export const IFF_NAPI = 0x10;
export const IFF_NO_CARRIER = 0x40;

/** TUNSETOFFLOAD flags: the offloads we accept on read (if_tun.h). */
export const TUN_F_CSUM = 1;
export const TUN_F_TSO4 = 2;
export const TUN_F_TSO6 = 4;
export const TUN_F_TSO_ECN = 8;
export const TUN_F_UFO = 16;
export const TUN_F_USO4 = 32;
export const TUN_F_USO6 = 64;

/** Address families and socket types (socket(2)). */
export const SOCK_SEQPACKET = 5;
export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;

/** Socket option levels and protocols (in.h). */
export const SOL_SOCKET = 1;
export const IPPROTO_IP = 0;
export const IPPROTO_IPV6 = 41;
export const IPPROTO_ICMP = 1;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/** SOL_SOCKET options (socket(7)). */
export const SO_REUSEADDR = 2;
export const SO_REUSEPORT = 15;
export const SO_RCVBUF = 8;
export const SO_SNDBUF = 7;
export const SO_ERROR = 4;
export const SO_KEEPALIVE = 9;

/** IPv4 options (ip(7)). */
export const IP_TTL = 2;
export const IP_TOS = 1;
export const IP_RECVERR = 11;
export const IP_RECVTTL = 12;
export const IP_MTU_DISCOVER = 10;
export const IP_PMTUDISC_DONT = 0;
export const IP_PMTUDISC_WANT = 1;
export const IP_PMTUDISC_DO = 2;
export const IP_PMTUDISC_PROBE = 3;

/** IPv6 options (ipv6(7), RFC 3542). */
export const IPV6_UNICAST_HOPS = 16;
export const IPV6_RECVERR = 25;
export const IPV6_RECVHOPLIMIT = 51;
export const IPV6_HOPLIMIT = 52;
export const IPV6_MTU_DISCOVER = 23;
export const IPV6_V6ONLY = 26;
export const IPV6_TCLASS = 67;
export const IPV6_PMTUDISC_DONT = 0;
export const IPV6_PMTUDISC_WANT = 1;
export const IPV6_PMTUDISC_DO = 2;
export const IPV6_PMTUDISC_PROBE = 3;

/** TCP options (tcp(7)). */
export const TCP_NODELAY = 1;

/** send/recv flags and msg_flags (recv(2)). */
export const MSG_TRUNC = 32;
export const MSG_CTRUNC = 8;
export const MSG_PEEK = 2;
export const MSG_DONTWAIT = 64;
export const MSG_ERRQUEUE = 0x2000;

/** sock_extended_err.ee_origin (linux/errqueue.h). */
export const SO_EE_ORIGIN_NONE = 0;
export const SO_EE_ORIGIN_LOCAL = 1;
export const SO_EE_ORIGIN_ICMP = 2;
export const SO_EE_ORIGIN_ICMP6 = 3;
