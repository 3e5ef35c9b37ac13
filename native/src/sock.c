/*
 * IP sockets with the controls a user-mode NAT needs and Node's dgram/net do not expose:
 * ICMP echo ("ping") sockets with a raw-socket fallback, per-datagram TTL / hop limit, the
 * received TTL, the IP error queue, non-blocking TCP connect with TTL / IP_RECVERR / a bound
 * (possibly privileged) source port, and sockets created inside another network namespace.
 *
 * References: ip(7), ipv6(7), icmp(7) and the ping-socket notes in net/ipv4/ping.c;
 * include/uapi/linux/errqueue.h (struct sock_extended_err, SO_EE_OFFENDER); RFC 3542 §6.3
 * (IPV6_HOPLIMIT ancillary data); RFC 1122 §4.1.3.3 / RFC 5508 for why ICMP errors must reach
 * the guest; RFC 4884 is not decoded here.
 *
 * Error queue (IP_RECVERR / IPV6_RECVERR): an ICMP error about our traffic is queued on the
 * socket and signalled as POLLERR (an FdWatcher reports status < 0). readErrorQueue returns one
 * entry: errno as the kernel translated it, origin (SO_EE_ORIGIN_ICMP/ICMP6/LOCAL), ICMP type
 * and code, info (next-hop MTU for "fragmentation needed" / "packet too big"), the quoted
 * payload (copied into the caller's buffer), the offender (the router or host that sent the
 * ICMP) and the original destination. TCP sockets queue an entry too when a connect in
 * SYN_SENT is aborted by an ICMP error (tcp_v4_err -> ip_icmp_error, with IP_RECVERR set).
 *
 * recvFrom `meta` (Int32Array of >= 8; no allocation per datagram):
 *   [0] address family (AF_INET / AF_INET6, 0 if none)   [1] source port
 *   [2] received TTL / hop limit (-1 unless IP_RECVTTL / IPV6_RECVHOPLIMIT is on)
 *   [3] msg_flags (MSG_TRUNC when the datagram was longer than the buffer)
 *   [4..7] the source address bytes, network order (4 used for IPv4, 16 for IPv6)
 *
 * IPv6 sockets made here are IPV6_V6ONLY: IPv4 and IPv6 flows never share a socket.
 */
#include "common.h"

#include <arpa/inet.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ---------------------------------------------------------------- addresses */

bool arg_inet_addr(napi_env env, napi_value v, const char *name, int port, sockaddr_any *out, socklen_t *len) {
  napi_valuetype t;
  memset(out, 0, sizeof *out);
  if (napi_typeof(env, v, &t) != napi_ok) return throw_type(env, "%s must be an IP address", name);
  if (t == napi_string) {
    char s[INET6_ADDRSTRLEN + 1];
    if (!arg_string(env, v, name, s, sizeof s, NULL, false, NULL)) return false;
    struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
      sin->sin_family = AF_INET;
      sin->sin_port = htons((uint16_t)port);
      *len = sizeof *sin;
      return true;
    }
    if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1) {
      sin6->sin6_family = AF_INET6;
      sin6->sin6_port = htons((uint16_t)port);
      *len = sizeof *sin6;
      return true;
    }
    return throw_type(env, "%s is not an IPv4 or IPv6 address: %s", name, s);
  }
  uint8_t *p;
  size_t n;
  if (!arg_bytes(env, v, name, &p, &n)) return false;
  if (n == 4) {
    struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    memcpy(&sin->sin_addr, p, 4);
    *len = sizeof *sin;
    return true;
  }
  if (n == 16) {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    memcpy(&sin6->sin6_addr, p, 16);
    *len = sizeof *sin6;
    return true;
  }
  return throw_type(env, "%s as bytes must be 4 (IPv4) or 16 (IPv6) long", name);
}

napi_value sockaddr_to_js(napi_env env, const struct sockaddr *sa, socklen_t len) {
  char s[INET6_ADDRSTRLEN];
  napi_value r;
  if (len < sizeof(sa_family_t)) return js_null(env);
  if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *sin = (const void *)sa;
    inet_ntop(AF_INET, &sin->sin_addr, s, sizeof s);
    r = js_object(env);
    set_prop(env, r, "family", js_int(env, 4));
    set_prop(env, r, "address", js_str(env, s));
    set_prop(env, r, "port", js_int(env, ntohs(sin->sin_port)));
    return r;
  }
  if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *sin6 = (const void *)sa;
    inet_ntop(AF_INET6, &sin6->sin6_addr, s, sizeof s);
    r = js_object(env);
    set_prop(env, r, "family", js_int(env, 6));
    set_prop(env, r, "address", js_str(env, s));
    set_prop(env, r, "port", js_int(env, ntohs(sin6->sin6_port)));
    return r;
  }
  if (sa->sa_family == AF_UNIX) {
    const struct sockaddr_un *sun = (const void *)sa;
    size_t n = len - offsetof(struct sockaddr_un, sun_path);
    char path[sizeof sun->sun_path + 2];
    if (n > sizeof sun->sun_path) n = sizeof sun->sun_path;
    if (n > 0 && sun->sun_path[0] == 0) { /* abstract */
      path[0] = '@';
      memcpy(path + 1, sun->sun_path + 1, n - 1);
      path[n] = 0;
    } else {
      memcpy(path, sun->sun_path, n);
      path[n] = 0;
    }
    r = js_object(env);
    set_prop(env, r, "family", js_str(env, "unix"));
    napi_value p = NULL;
    napi_create_string_utf8(env, path, strnlen(path, sizeof path), &p);
    set_prop(env, r, "path", p);
    return r;
  }
  return js_null(env);
}

static bool arg_family(napi_env env, napi_value v, int *family) {
  int64_t f;
  if (!arg_int(env, v, "family", 0, 64, &f)) return false;
  if (f != AF_INET && f != AF_INET6) return throw_range(env, "family must be AF_INET or AF_INET6");
  *family = (int)f;
  return true;
}

static int set_int(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof value);
}

/* Create a socket, inside `ns` when given; SOCK_NONBLOCK|SOCK_CLOEXEC always. -1 + errno. */
static int socket_in(napi_env env, const char *ns, int family, int type, int proto, bool *thrown) {
  netns_guard g;
  *thrown = false;
  if (!netns_enter(env, ns, &g)) {
    *thrown = true;
    return -1;
  }
  int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
  netns_leave(&g); /* keeps errno */
  return fd;
}

static napi_value fail_close(napi_env env, int fd, const char *syscall) {
  int err = errno;
  close_quietly(fd);
  throw_errno(env, err, syscall);
  return NULL;
}

/* ---------------------------------------------------------------- socket creation */

/* socketInNetns(netnsPath | null, family, type, protocol) -> OwnedFd */
static napi_value js_socket_in_netns(napi_env env, napi_callback_info info) {
  GET_ARGS(4);
  char ns[4096];
  int64_t family, type, proto;
  bool thrown;
  if (!arg_string(env, argv[0], "netns", ns, sizeof ns, NULL, true, NULL) ||
      !arg_int(env, argv[1], "family", 0, 64, &family) || !arg_int(env, argv[2], "type", 1, 16, &type) ||
      !arg_int_opt(env, argv[3], "protocol", 0, 65535, 0, &proto))
    return NULL;
  int fd = socket_in(env, ns, (int)family, (int)type, (int)proto, &thrown);
  if (fd < 0) {
    if (!thrown) throw_errno(env, errno, "socket");
    return NULL;
  }
  return owned_fd_new(env, fd);
}

/* icmpSocket(family, netnsPath | null, allowRaw) -> { fd: OwnedFd, kind: 'ping' | 'raw' } */
static napi_value js_icmp_socket(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  char ns[4096];
  int family = AF_INET;
  bool allow_raw, thrown;
  const char *kind = "ping";
  if (!arg_family(env, argv[0], &family) || !arg_string(env, argv[1], "netns", ns, sizeof ns, NULL, true, NULL) ||
      !arg_bool_opt(env, argv[2], "allowRaw", true, &allow_raw))
    return NULL;
  int proto = family == AF_INET ? IPPROTO_ICMP : IPPROTO_ICMPV6;
  int fd = socket_in(env, ns, family, SOCK_DGRAM, proto, &thrown);
  if (thrown) return NULL;
  if (fd < 0 && (errno == EACCES || errno == EPERM) && allow_raw) {
    int ping_err = errno;
    fd = socket_in(env, ns, family, SOCK_RAW, proto, &thrown);
    if (thrown) return NULL;
    if (fd < 0) {
      /* Neither kind: report why ping sockets were refused (ping_group_range). */
      char what[96];
      snprintf(what, sizeof what, "socket (ping socket refused; raw fallback: %s)", errno_name(errno));
      throw_errno(env, ping_err, what);
      return NULL;
    }
    kind = "raw";
  }
  if (fd < 0) {
    throw_errno(env, errno, "socket (ICMP echo)");
    return NULL;
  }
  napi_value owned = owned_fd_new(env, fd);
  if (!owned) return NULL;
  napi_value r = js_object(env);
  set_prop(env, r, "fd", owned);
  set_prop(env, r, "kind", js_str(env, kind));
  return r;
}

/* udpSocket(family, address | null, port, netnsPath | null, reuseAddr) -> OwnedFd (bound) */
static napi_value js_udp_socket(napi_env env, napi_callback_info info) {
  GET_ARGS(5);
  char ns[4096];
  int family = AF_INET;
  int64_t port;
  bool reuse, thrown;
  sockaddr_any addr;
  socklen_t alen;
  if (!arg_family(env, argv[0], &family) || !arg_int_opt(env, argv[2], "port", 0, 65535, 0, &port) ||
      !arg_string(env, argv[3], "netns", ns, sizeof ns, NULL, true, NULL) ||
      !arg_bool_opt(env, argv[4], "reuseAddr", false, &reuse))
    return NULL;
  if (is_nullish(env, argv[1])) {
    memset(&addr, 0, sizeof addr);
    if (family == AF_INET) {
      addr.ss.ss_family = AF_INET;
      ((struct sockaddr_in *)&addr.ss)->sin_port = htons((uint16_t)port);
      alen = sizeof(struct sockaddr_in);
    } else {
      addr.ss.ss_family = AF_INET6;
      ((struct sockaddr_in6 *)&addr.ss)->sin6_port = htons((uint16_t)port);
      alen = sizeof(struct sockaddr_in6);
    }
  } else {
    if (!arg_inet_addr(env, argv[1], "address", (int)port, &addr, &alen)) return NULL;
    if (addr.ss.ss_family != family) {
      throw_range(env, "address family does not match the socket family");
      return NULL;
    }
  }
  int fd = socket_in(env, ns, family, SOCK_DGRAM, IPPROTO_UDP, &thrown);
  if (fd < 0) {
    if (!thrown) throw_errno(env, errno, "socket");
    return NULL;
  }
  if (family == AF_INET6 && set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1) < 0) return fail_close(env, fd, "setsockopt IPV6_V6ONLY");
  if (reuse && set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1) < 0) return fail_close(env, fd, "setsockopt SO_REUSEADDR");
  if (bind(fd, &addr.sa, alen) < 0) return fail_close(env, fd, "bind");
  return owned_fd_new(env, fd);
}

/* tcpConnect(address, port, ttl, recvErr, bindAddress | null, bindPort, netnsPath | null, reusePort)
 *   -> OwnedFd, connecting (EINPROGRESS) or connected; wait for POLL_WRITABLE (or an error
 *   status) and read getSocketError. An immediate failure throws. A bound port gets
 *   SO_REUSEADDR, and SO_REUSEPORT too with reusePort (to share a listener's port: a
 *   simultaneous open through a port forward). */
static napi_value js_tcp_connect(napi_env env, napi_callback_info info) {
  GET_ARGS(8);
  char ns[4096];
  int64_t port, ttl, bport;
  bool recverr, reuseport, thrown, has_bind;
  sockaddr_any dst, src;
  socklen_t dlen, slen = 0;
  if (!arg_int(env, argv[1], "port", 0, 65535, &port) ||
      !arg_inet_addr(env, argv[0], "address", (int)port, &dst, &dlen) ||
      !arg_int_opt(env, argv[2], "ttl", -1, 255, -1, &ttl) || !arg_bool_opt(env, argv[3], "recvErr", false, &recverr) ||
      !arg_int_opt(env, argv[5], "bindPort", 0, 65535, 0, &bport) ||
      !arg_string(env, argv[6], "netns", ns, sizeof ns, NULL, true, NULL) ||
      !arg_bool_opt(env, argv[7], "reusePort", false, &reuseport))
    return NULL;
  int family = dst.ss.ss_family;
  has_bind = !is_nullish(env, argv[4]);
  if (has_bind) {
    if (!arg_inet_addr(env, argv[4], "bindAddress", (int)bport, &src, &slen)) return NULL;
    if (src.ss.ss_family != family) {
      throw_range(env, "bindAddress family does not match the destination");
      return NULL;
    }
  } else if (bport > 0) {
    memset(&src, 0, sizeof src);
    src.ss.ss_family = (sa_family_t)family;
    if (family == AF_INET) {
      ((struct sockaddr_in *)&src.ss)->sin_port = htons((uint16_t)bport);
      slen = sizeof(struct sockaddr_in);
    } else {
      ((struct sockaddr_in6 *)&src.ss)->sin6_port = htons((uint16_t)bport);
      slen = sizeof(struct sockaddr_in6);
    }
    has_bind = true;
  }
  int fd = socket_in(env, ns, family, SOCK_STREAM, IPPROTO_TCP, &thrown);
  if (fd < 0) {
    if (!thrown) throw_errno(env, errno, "socket");
    return NULL;
  }
  bool v4 = family == AF_INET;
  if (!v4 && set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1) < 0) return fail_close(env, fd, "setsockopt IPV6_V6ONLY");
  if (ttl >= 0 && set_int(fd, v4 ? IPPROTO_IP : IPPROTO_IPV6, v4 ? IP_TTL : IPV6_UNICAST_HOPS, (int)ttl) < 0)
    return fail_close(env, fd, "setsockopt TTL");
  if (recverr && set_int(fd, v4 ? IPPROTO_IP : IPPROTO_IPV6, v4 ? IP_RECVERR : IPV6_RECVERR, 1) < 0)
    return fail_close(env, fd, "setsockopt RECVERR");
  if (has_bind) {
    if (bport > 0 && set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1) < 0) return fail_close(env, fd, "setsockopt SO_REUSEADDR");
    if (bport > 0 && reuseport && set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1) < 0) return fail_close(env, fd, "setsockopt SO_REUSEPORT");
    if (bport == 0) set_int(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1); /* pick the port at connect */
    if (bind(fd, &src.sa, slen) < 0) return fail_close(env, fd, "bind");
  }
  int r;
  do r = connect(fd, &dst.sa, dlen); while (r < 0 && errno == EINTR);
  if (r < 0 && errno != EINPROGRESS) return fail_close(env, fd, "connect");
  return owned_fd_new(env, fd);
}

/* tcpListen(address, port, backlog, netnsPath | null) -> OwnedFd (SO_REUSEADDR, listening) */
static napi_value js_tcp_listen(napi_env env, napi_callback_info info) {
  GET_ARGS(4);
  char ns[4096];
  int64_t port, backlog;
  bool thrown;
  sockaddr_any addr;
  socklen_t alen;
  if (!arg_int(env, argv[1], "port", 0, 65535, &port) ||
      !arg_inet_addr(env, argv[0], "address", (int)port, &addr, &alen) ||
      !arg_int_opt(env, argv[2], "backlog", 0, 65535, 511, &backlog) ||
      !arg_string(env, argv[3], "netns", ns, sizeof ns, NULL, true, NULL))
    return NULL;
  int family = addr.ss.ss_family;
  int fd = socket_in(env, ns, family, SOCK_STREAM, IPPROTO_TCP, &thrown);
  if (fd < 0) {
    if (!thrown) throw_errno(env, errno, "socket");
    return NULL;
  }
  if (family == AF_INET6 && set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1) < 0) return fail_close(env, fd, "setsockopt IPV6_V6ONLY");
  if (set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1) < 0) return fail_close(env, fd, "setsockopt SO_REUSEADDR");
  if (bind(fd, &addr.sa, alen) < 0) return fail_close(env, fd, "bind");
  if (listen(fd, (int)backlog) < 0) return fail_close(env, fd, "listen");
  return owned_fd_new(env, fd);
}

/* ---------------------------------------------------------------- options */

static napi_value js_setsockopt_int(napi_env env, napi_callback_info info) {
  GET_ARGS(4);
  int fd;
  int64_t level, name, value;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_int(env, argv[1], "level", 0, INT32_MAX, &level) ||
      !arg_int(env, argv[2], "name", 0, INT32_MAX, &name) ||
      !arg_int(env, argv[3], "value", INT32_MIN, INT32_MAX, &value))
    return NULL;
  if (set_int(fd, (int)level, (int)name, (int)value) < 0) {
    throw_errno(env, errno, "setsockopt");
    return NULL;
  }
  return js_undefined(env);
}

static napi_value js_getsockopt_int(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  int fd, v = 0;
  int64_t level, name;
  socklen_t len = sizeof v;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_int(env, argv[1], "level", 0, INT32_MAX, &level) ||
      !arg_int(env, argv[2], "name", 0, INT32_MAX, &name))
    return NULL;
  if (getsockopt(fd, (int)level, (int)name, &v, &len) < 0) {
    throw_errno(env, errno, "getsockopt");
    return NULL;
  }
  return js_int(env, v);
}

/* getSocketError(fd) -> errno (0 = none); reading it clears it (SO_ERROR). */
static napi_value js_get_socket_error(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  int fd, v = 0;
  socklen_t len = sizeof v;
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &len) < 0) {
    throw_errno(env, errno, "getsockopt SO_ERROR");
    return NULL;
  }
  return js_int(env, v);
}

static napi_value sock_name(napi_env env, napi_callback_info info, bool peer) {
  GET_ARGS(1);
  int fd;
  sockaddr_any a;
  socklen_t len = sizeof a;
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  memset(&a, 0, sizeof a);
  if ((peer ? getpeername(fd, &a.sa, &len) : getsockname(fd, &a.sa, &len)) < 0) {
    throw_errno(env, errno, peer ? "getpeername" : "getsockname");
    return NULL;
  }
  return sockaddr_to_js(env, &a.sa, len);
}

static napi_value js_getsockname(napi_env env, napi_callback_info info) { return sock_name(env, info, false); }
static napi_value js_getpeername(napi_env env, napi_callback_info info) { return sock_name(env, info, true); }

static napi_value js_errno_name(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  int64_t n;
  if (!arg_int(env, argv[0], "errno", -4095, 4095, &n)) return NULL;
  return js_str(env, errno_name((int)(n < 0 ? -n : n)));
}

/* ---------------------------------------------------------------- datagrams */

/* sendTo(fd, buffer, address | bytes | null, port, ttl) -> bytes | -1 */
static napi_value js_sendto(napi_env env, napi_callback_info info) {
  GET_ARGS(5);
  int fd;
  uint8_t *p;
  size_t n;
  int64_t port, ttl;
  sockaddr_any dst;
  socklen_t dlen = 0;
  bool has_dst;
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int))];
  } control;
  struct iovec iov;
  struct msghdr msg;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_bytes(env, argv[1], "buffer", &p, &n) ||
      !arg_int_opt(env, argv[3], "port", 0, 65535, 0, &port) || !arg_int_opt(env, argv[4], "ttl", -1, 255, -1, &ttl))
    return NULL;
  has_dst = !is_nullish(env, argv[2]);
  if (has_dst && !arg_inet_addr(env, argv[2], "address", (int)port, &dst, &dlen)) return NULL;
  memset(&msg, 0, sizeof msg);
  iov.iov_base = p;
  iov.iov_len = n;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (has_dst) {
    msg.msg_name = &dst;
    msg.msg_namelen = dlen;
  }
  if (ttl >= 0) {
    int family;
    if (has_dst) {
      family = dst.ss.ss_family;
    } else {
      socklen_t flen = sizeof family;
      if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &flen) < 0) {
        throw_errno(env, errno, "getsockopt SO_DOMAIN");
        return NULL;
      }
    }
    memset(&control, 0, sizeof control);
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = family == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP;
    c->cmsg_type = family == AF_INET6 ? IPV6_HOPLIMIT : IP_TTL;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    int t = (int)ttl;
    memcpy(CMSG_DATA(c), &t, sizeof t);
  }
  ssize_t r;
  do r = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT); while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return js_int(env, -1);
    throw_errno(env, errno, "sendmsg");
    return NULL;
  }
  return js_int(env, r);
}

static void fill_meta(int32_t *meta, const sockaddr_any *from, socklen_t flen, int ttl, int flags) {
  memset(meta, 0, 8 * sizeof(int32_t));
  meta[2] = ttl;
  meta[3] = flags;
  if (flen >= sizeof(struct sockaddr_in) && from->ss.ss_family == AF_INET) {
    const struct sockaddr_in *sin = (const void *)&from->ss;
    meta[0] = AF_INET;
    meta[1] = ntohs(sin->sin_port);
    memcpy(&meta[4], &sin->sin_addr, 4);
  } else if (flen >= sizeof(struct sockaddr_in6) && from->ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const void *)&from->ss;
    meta[0] = AF_INET6;
    meta[1] = ntohs(sin6->sin6_port);
    memcpy(&meta[4], &sin6->sin6_addr, 16);
  }
}

/* recvFrom(fd, buffer, meta | null, flags = 0) -> bytes | -1 */
static napi_value js_recvfrom(napi_env env, napi_callback_info info) {
  GET_ARGS(4);
  int fd;
  uint8_t *p;
  size_t n, nmeta = 0;
  int32_t *meta = NULL;
  int64_t flags;
  sockaddr_any from;
  union {
    struct cmsghdr align;
    char buf[256];
  } control;
  struct iovec iov;
  struct msghdr msg;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_bytes(env, argv[1], "buffer", &p, &n) ||
      (!is_nullish(env, argv[2]) && !arg_int32_array(env, argv[2], "meta", &meta, &nmeta)) ||
      !arg_int_opt(env, argv[3], "flags", 0, INT32_MAX, 0, &flags))
    return NULL;
  if (meta && nmeta < 8) {
    throw_range(env, "meta must have at least 8 elements");
    return NULL;
  }
  memset(&msg, 0, sizeof msg);
  memset(&from, 0, sizeof from);
  iov.iov_base = p;
  iov.iov_len = n;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_name = &from;
  msg.msg_namelen = sizeof from;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  ssize_t r;
  do r = recvmsg(fd, &msg, (int)flags | MSG_DONTWAIT); while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return js_int(env, -1);
    throw_errno(env, errno, "recvmsg");
    return NULL;
  }
  if (meta) {
    int ttl = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TTL) ||
          (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT))
        memcpy(&ttl, CMSG_DATA(c), sizeof ttl);
    }
    fill_meta(meta, &from, msg.msg_namelen, ttl, msg.msg_flags);
  }
  return js_int(env, r);
}

/* recv(fd, buffer, flags = 0) -> bytes | -1 (MSG_PEEK to look without consuming) */
static napi_value js_recv(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  int fd;
  uint8_t *p;
  size_t n;
  int64_t flags;
  ssize_t r;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_bytes(env, argv[1], "buffer", &p, &n) ||
      !arg_int_opt(env, argv[2], "flags", 0, INT32_MAX, 0, &flags))
    return NULL;
  do r = recv(fd, p, n, (int)flags | MSG_DONTWAIT); while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return js_int(env, -1);
    throw_errno(env, errno, "recv");
    return NULL;
  }
  return js_int(env, r);
}

/* readErrorQueue(fd, buffer | null) -> entry | null (queue empty) */
static napi_value js_read_error_queue(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int fd;
  uint8_t *p = NULL, scratch[1];
  size_t n = 0;
  sockaddr_any dst;
  union {
    struct cmsghdr align;
    char buf[512];
  } control;
  struct iovec iov;
  struct msghdr msg;
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  if (!is_nullish(env, argv[1]) && !arg_bytes(env, argv[1], "buffer", &p, &n)) return NULL;
  memset(&msg, 0, sizeof msg);
  memset(&dst, 0, sizeof dst);
  iov.iov_base = n > 0 ? (void *)p : (void *)scratch;
  iov.iov_len = n;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_name = &dst;
  msg.msg_namelen = sizeof dst;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  ssize_t r;
  do r = recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT); while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return js_null(env);
    throw_errno(env, errno, "recvmsg MSG_ERRQUEUE");
    return NULL;
  }
  napi_value res = js_object(env), offender = js_null(env);
  struct sock_extended_err ee;
  bool have_ee = false;
  int ttl = -1;
  memset(&ee, 0, sizeof ee);
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR) ||
        (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_RECVERR)) {
      size_t avail = c->cmsg_len - CMSG_LEN(0);
      if (avail < sizeof ee) continue;
      memcpy(&ee, CMSG_DATA(c), sizeof ee);
      have_ee = true;
      size_t off_len = avail - sizeof ee;
      if (off_len >= sizeof(sa_family_t)) {
        sockaddr_any off;
        memset(&off, 0, sizeof off);
        memcpy(&off, CMSG_DATA(c) + sizeof ee, off_len < sizeof off ? off_len : sizeof off);
        if (off.ss.ss_family == AF_INET || off.ss.ss_family == AF_INET6) {
          char s[INET6_ADDRSTRLEN];
          const void *a = off.ss.ss_family == AF_INET ? (const void *)&((struct sockaddr_in *)&off.ss)->sin_addr
                                                      : (const void *)&((struct sockaddr_in6 *)&off.ss)->sin6_addr;
          inet_ntop(off.ss.ss_family, a, s, sizeof s);
          offender = js_str(env, s);
        }
      }
    } else if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TTL) ||
               (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT)) {
      memcpy(&ttl, CMSG_DATA(c), sizeof ttl);
    }
  }
  set_prop(env, res, "errno", js_int(env, have_ee ? (int)ee.ee_errno : 0));
  set_prop(env, res, "errnoName", have_ee && ee.ee_errno ? js_str(env, errno_name((int)ee.ee_errno)) : js_null(env));
  set_prop(env, res, "origin", js_int(env, ee.ee_origin));
  set_prop(env, res, "type", js_int(env, ee.ee_type));
  set_prop(env, res, "code", js_int(env, ee.ee_code));
  set_prop(env, res, "info", js_double(env, ee.ee_info));
  set_prop(env, res, "eeData", js_double(env, ee.ee_data));
  set_prop(env, res, "bytes", js_int(env, r));
  set_prop(env, res, "truncated", js_bool(env, (msg.msg_flags & MSG_TRUNC) != 0));
  set_prop(env, res, "offender", offender);
  set_prop(env, res, "destination", sockaddr_to_js(env, &dst.sa, msg.msg_namelen));
  set_prop(env, res, "ttl", js_int(env, ttl));
  return res;
}

/* ---------------------------------------------------------------- registration */

#define C(name) export_int(env, exports, #name, name)

bool sock_init(napi_env env, napi_value exports) {
  return export_fn(env, exports, "socketInNetns", js_socket_in_netns) &&
         export_fn(env, exports, "icmpSocket", js_icmp_socket) &&
         export_fn(env, exports, "udpSocket", js_udp_socket) &&
         export_fn(env, exports, "tcpConnect", js_tcp_connect) &&
         export_fn(env, exports, "tcpListen", js_tcp_listen) &&
         export_fn(env, exports, "setsockoptInt", js_setsockopt_int) &&
         export_fn(env, exports, "getsockoptInt", js_getsockopt_int) &&
         export_fn(env, exports, "getSocketError", js_get_socket_error) &&
         export_fn(env, exports, "getSockName", js_getsockname) &&
         export_fn(env, exports, "getPeerName", js_getpeername) &&
         export_fn(env, exports, "errnoName", js_errno_name) && export_fn(env, exports, "sendTo", js_sendto) &&
         export_fn(env, exports, "recvFrom", js_recvfrom) && export_fn(env, exports, "recv", js_recv) &&
         export_fn(env, exports, "readErrorQueue", js_read_error_queue) && C(AF_UNSPEC) && C(AF_INET) &&
         C(AF_INET6) && C(AF_UNIX) && C(SOCK_STREAM) && C(SOCK_DGRAM) && C(SOCK_RAW) && C(SOL_SOCKET) &&
         C(SO_REUSEADDR) && C(SO_REUSEPORT) && C(SO_RCVBUF) && C(SO_SNDBUF) && C(SO_ERROR) && C(SO_KEEPALIVE) &&
         C(IPPROTO_IP) && C(IPPROTO_IPV6) && C(IPPROTO_ICMP) && C(IPPROTO_ICMPV6) && C(IPPROTO_TCP) &&
         C(IPPROTO_UDP) && C(IP_TTL) && C(IP_TOS) && C(IP_RECVERR) && C(IP_RECVTTL) && C(IP_MTU_DISCOVER) &&
         C(IP_PMTUDISC_DONT) && C(IP_PMTUDISC_WANT) && C(IP_PMTUDISC_DO) && C(IP_PMTUDISC_PROBE) &&
         C(IPV6_UNICAST_HOPS) && C(IPV6_RECVERR) && C(IPV6_RECVHOPLIMIT) && C(IPV6_HOPLIMIT) &&
         C(IPV6_MTU_DISCOVER) && C(IPV6_V6ONLY) && C(IPV6_TCLASS) && C(IPV6_PMTUDISC_DONT) &&
         C(IPV6_PMTUDISC_WANT) && C(IPV6_PMTUDISC_DO) && C(IPV6_PMTUDISC_PROBE) && C(TCP_NODELAY) &&
         C(MSG_PEEK) && C(MSG_DONTWAIT) && C(MSG_ERRQUEUE) && C(SO_EE_ORIGIN_NONE) && C(SO_EE_ORIGIN_LOCAL) &&
         C(SO_EE_ORIGIN_ICMP) && C(SO_EE_ORIGIN_ICMP6);
}
