/*
 * TCP stream sockets driven by the NAT's TCP module without any buffer of its own (passt's way):
 *
 *   tcpPeek(fd, buffer, offset, length, streamOffset) -> bytes | 0 at EOF | -errno
 *       Copy queued bytes starting `streamOffset` bytes past the first unconsumed one into
 *       buffer[offset ..] without consuming them: SO_PEEK_OFF (socket(7); TCP since Linux 6.9)
 *       then recv(MSG_PEEK). The same bytes can be peeked again for a retransmission.
 *   tcpDiscard(fd, length) -> bytes | -errno
 *       Consume `length` queued bytes without copying them (recv(NULL, n, MSG_TRUNC): tcp(7)).
 *   tcpSendAt(fd, buffer, offset, length) -> bytes taken | -errno
 *       send(MSG_DONTWAIT | MSG_NOSIGNAL) of a slice, no view needed on the JS side.
 *   tcpShutdown(fd, how) -> 0 | -errno          shutdown(2): 0 RD, 1 WR, 2 RDWR
 *   tcpSetLingerZero(fd) -> 0 | -errno          SO_LINGER {1, 0}: close() then sends RST
 *   tcpQueues(fd, Int32Array(3|4)) -> 0 | -errno  [SIOCINQ, SIOCOUTQ, SO_SNDBUF, SIOCOUTQNSD]
 *       (tcp(7), socket(7)); the 4th, bytes queued but not yet sent, when the array has room
 *
 * Errors of the socket are returned as negative errno values (EAGAIN = -11), never thrown: the
 * caller is a per-segment hot path. Only bad arguments throw.
 */
#include "common.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SO_PEEK_OFF
#define SO_PEEK_OFF 42
#endif

static bool slice(napi_env env, napi_value *argv, uint8_t **p, size_t *n) {
  uint8_t *base;
  size_t len;
  int64_t off, cnt;
  if (!arg_bytes(env, argv[0], "buffer", &base, &len) || !arg_int(env, argv[1], "offset", 0, (int64_t)len, &off) ||
      !arg_int(env, argv[2], "length", 0, (int64_t)len - off, &cnt))
    return false;
  *p = base + off;
  *n = (size_t)cnt;
  return true;
}

static napi_value js_tcp_peek(napi_env env, napi_callback_info info) {
  GET_ARGS(5);
  int fd;
  uint8_t *p;
  size_t n;
  int64_t at;
  if (!arg_fd(env, argv[0], "fd", &fd) || !slice(env, argv + 1, &p, &n) ||
      !arg_int(env, argv[4], "streamOffset", 0, INT32_MAX, &at))
    return NULL;
  int off = (int)at;
  if (setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof off) < 0) return js_int(env, -errno);
  ssize_t r;
  do r = recv(fd, p, n, MSG_PEEK | MSG_DONTWAIT); while (r < 0 && errno == EINTR);
  return js_int(env, r < 0 ? -errno : r);
}

static napi_value js_tcp_discard(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int fd;
  int64_t n;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_int(env, argv[1], "length", 0, INT32_MAX, &n)) return NULL;
  ssize_t r;
  do r = recv(fd, NULL, (size_t)n, MSG_TRUNC | MSG_DONTWAIT); while (r < 0 && errno == EINTR);
  return js_int(env, r < 0 ? -errno : r);
}

static napi_value js_tcp_send_at(napi_env env, napi_callback_info info) {
  GET_ARGS(4);
  int fd;
  uint8_t *p;
  size_t n;
  if (!arg_fd(env, argv[0], "fd", &fd) || !slice(env, argv + 1, &p, &n)) return NULL;
  ssize_t r;
  do r = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL); while (r < 0 && errno == EINTR);
  return js_int(env, r < 0 ? -errno : r);
}

static napi_value js_tcp_shutdown(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int fd;
  int64_t how;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_int(env, argv[1], "how", 0, 2, &how)) return NULL;
  return js_int(env, shutdown(fd, (int)how) < 0 ? -errno : 0);
}

static napi_value js_tcp_set_linger_zero(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  int fd;
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  struct linger l = {.l_onoff = 1, .l_linger = 0};
  return js_int(env, setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) < 0 ? -errno : 0);
}

static napi_value js_tcp_queues(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int fd;
  int32_t *out;
  size_t count;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_int32_array(env, argv[1], "out", &out, &count)) return NULL;
  if (count < 3) {
    throw_range(env, "out must hold 3 values");
    return NULL;
  }
  int inq = 0, outq = 0, sndbuf = 0, notsent = 0;
  socklen_t len = sizeof sndbuf;
  if (ioctl(fd, SIOCINQ, &inq) < 0 || ioctl(fd, SIOCOUTQ, &outq) < 0 ||
      getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) < 0 || (count > 3 && ioctl(fd, SIOCOUTQNSD, &notsent) < 0))
    return js_int(env, -errno);
  out[0] = inq;
  out[1] = outq;
  out[2] = sndbuf;
  if (count > 3) out[3] = notsent;
  return js_int(env, 0);
}

bool tcpstream_init(napi_env env, napi_value exports) {
  return export_fn(env, exports, "tcpPeek", js_tcp_peek) && export_fn(env, exports, "tcpDiscard", js_tcp_discard) &&
         export_fn(env, exports, "tcpSendAt", js_tcp_send_at) && export_fn(env, exports, "tcpShutdown", js_tcp_shutdown) &&
         export_fn(env, exports, "tcpSetLingerZero", js_tcp_set_linger_zero) &&
         export_fn(env, exports, "tcpQueues", js_tcp_queues);
}
