/*
 * AF_UNIX sockets with what Node's net module cannot do: passing fds (SCM_RIGHTS, unix(7)),
 * SOCK_DGRAM (QEMU `-netdev dgram`, VDE) and socketpairs.
 *
 * Paths: a string is a filesystem path; a leading '@' names the abstract namespace (Linux),
 * e.g. "@usernet-test" (sun_path[0] = 0, no trailing NUL, as `ss -x` prints it).
 *
 * Every socket is SOCK_NONBLOCK|SOCK_CLOEXEC. Calls that would block return -1 (byte counts) or
 * null (objects); connecting a stream socket to a listener whose backlog is full throws EAGAIN.
 *
 * recvmsg: the control buffer holds SCM_MAX_FD (253) descriptors, far above the 8 (vhost-user)
 * and 16 (vfio-user, QEMU's max_msg_fds) the protocols send; MSG_CMSG_CLOEXEC marks them
 * close-on-exec atomically, and every received fd becomes an OwnedFd before anything else can
 * fail. If the kernel still truncated the control data (flags has MSG_CTRUNC), the fds it could
 * not deliver were closed by the kernel.
 */
#include "common.h"

#include <stddef.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#define SCM_MAX_FDS 253

static bool arg_unix_path(napi_env env, napi_value v, const char *name, struct sockaddr_un *sun, socklen_t *len) {
  char path[sizeof sun->sun_path + 1];
  size_t n;
  if (!arg_string(env, v, name, path, sizeof path, &n, false, NULL)) return false;
  memset(sun, 0, sizeof *sun);
  sun->sun_family = AF_UNIX;
  if (n == 0) return throw_range(env, "%s must not be empty", name);
  if (path[0] == '@') {
    if (n > sizeof sun->sun_path) return throw_range(env, "%s is too long", name);
    memcpy(sun->sun_path + 1, path + 1, n - 1); /* sun_path[0] stays 0: abstract */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  } else {
    if (n >= sizeof sun->sun_path) return throw_range(env, "%s is too long (at most 107 bytes)", name);
    memcpy(sun->sun_path, path, n);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  }
  return true;
}

static bool arg_unix_type(napi_env env, napi_value v, int *type) {
  int64_t t;
  if (!arg_int_opt(env, v, "type", 0, 16, SOCK_STREAM, &t)) return false;
  if (t != SOCK_STREAM && t != SOCK_DGRAM && t != SOCK_SEQPACKET)
    return throw_range(env, "type must be SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET");
  *type = (int)t;
  return true;
}

static napi_value throw_close(napi_env env, int fd, const char *syscall) {
  int err = errno;
  close_quietly(fd);
  throw_errno(env, err, syscall);
  return NULL;
}

/* unixListen(path, backlog = 128, type = SOCK_STREAM) -> OwnedFd */
static napi_value js_unix_listen(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  struct sockaddr_un sun;
  socklen_t len;
  int64_t backlog;
  int type = SOCK_STREAM;
  if (!arg_unix_path(env, argv[0], "path", &sun, &len) ||
      !arg_int_opt(env, argv[1], "backlog", 0, 65535, 128, &backlog) || !arg_unix_type(env, argv[2], &type))
    return NULL;
  if (type == SOCK_DGRAM) {
    throw_range(env, "type must be a connection-oriented type");
    return NULL;
  }
  int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, errno, "socket");
    return NULL;
  }
  if (bind(fd, (struct sockaddr *)&sun, len) < 0) return throw_close(env, fd, "bind");
  if (listen(fd, (int)backlog) < 0) return throw_close(env, fd, "listen");
  return owned_fd_new(env, fd);
}

/* unixAccept(fd) -> OwnedFd | null */
static napi_value js_unix_accept(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  int fd, c;
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  do c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); while (c < 0 && errno == EINTR);
  if (c < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return js_null(env);
    throw_errno(env, errno, "accept4");
    return NULL;
  }
  return owned_fd_new(env, c);
}

/* unixConnect(path, type = SOCK_STREAM) -> OwnedFd */
static napi_value js_unix_connect(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  struct sockaddr_un sun;
  socklen_t len;
  int type = SOCK_STREAM, r;
  if (!arg_unix_path(env, argv[0], "path", &sun, &len) || !arg_unix_type(env, argv[1], &type)) return NULL;
  int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, errno, "socket");
    return NULL;
  }
  do r = connect(fd, (struct sockaddr *)&sun, len); while (r < 0 && errno == EINTR);
  if (r < 0) return throw_close(env, fd, "connect");
  return owned_fd_new(env, fd);
}

/* unixDgram(bindPath | null, connectPath | null) -> OwnedFd */
static napi_value js_unix_dgram(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  struct sockaddr_un local, remote;
  socklen_t llen = 0, rlen = 0;
  bool has_local = !is_nullish(env, argv[0]), has_remote = !is_nullish(env, argv[1]);
  if ((has_local && !arg_unix_path(env, argv[0], "bindPath", &local, &llen)) ||
      (has_remote && !arg_unix_path(env, argv[1], "connectPath", &remote, &rlen)))
    return NULL;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, errno, "socket");
    return NULL;
  }
  if (has_local && bind(fd, (struct sockaddr *)&local, llen) < 0) return throw_close(env, fd, "bind");
  if (has_remote && connect(fd, (struct sockaddr *)&remote, rlen) < 0) return throw_close(env, fd, "connect");
  return owned_fd_new(env, fd);
}

/* unixSocketPair(type = SOCK_STREAM) -> [OwnedFd, OwnedFd] */
static napi_value js_unix_socketpair(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  int type = SOCK_STREAM, sv[2];
  napi_value a, b, arr;
  if (!arg_unix_type(env, argv[0], &type)) return NULL;
  if (socketpair(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
    throw_errno(env, errno, "socketpair");
    return NULL;
  }
  a = owned_fd_new(env, sv[0]);
  if (!a) {
    close_quietly(sv[1]);
    return NULL;
  }
  b = owned_fd_new(env, sv[1]);
  if (!b) return NULL; /* `a` is garbage now; its finalizer closes sv[0] */
  if (napi_create_array_with_length(env, 2, &arr) != napi_ok) return NULL;
  napi_set_element(env, arr, 0, a);
  napi_set_element(env, arr, 1, b);
  return arr;
}

/* unixSendTo(fd, buffer, path) -> bytes | -1 */
static napi_value js_unix_sendto(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  int fd;
  uint8_t *p;
  size_t n;
  struct sockaddr_un sun;
  socklen_t len;
  ssize_t r;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_bytes(env, argv[1], "buffer", &p, &n) ||
      !arg_unix_path(env, argv[2], "path", &sun, &len))
    return NULL;
  do r = sendto(fd, p, n, MSG_NOSIGNAL, (struct sockaddr *)&sun, len); while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return js_int(env, -1);
    throw_errno(env, errno, "sendto");
    return NULL;
  }
  return js_int(env, r);
}

/* unixRecvFrom(fd, buffer) -> { bytes, path } | null */
static napi_value js_unix_recvfrom(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int fd;
  uint8_t *p;
  size_t n;
  sockaddr_any from;
  socklen_t flen = sizeof from;
  ssize_t r;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_bytes(env, argv[1], "buffer", &p, &n)) return NULL;
  do r = recvfrom(fd, p, n, 0, &from.sa, &flen); while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return js_null(env);
    throw_errno(env, errno, "recvfrom");
    return NULL;
  }
  napi_value res = js_object(env), path = js_null(env);
  set_prop(env, res, "bytes", js_int(env, r));
  if (from.sa.sa_family == AF_UNIX && flen > offsetof(struct sockaddr_un, sun_path)) {
    napi_value addr = sockaddr_to_js(env, &from.sa, flen), p = NULL;
    if (addr && napi_get_named_property(env, addr, "path", &p) == napi_ok && p) path = p;
  }
  set_prop(env, res, "path", path);
  return res;
}

/* A single view or an array of views -> iovecs. */
static bool arg_data(napi_env env, napi_value v, struct iovec *iov, int cap, int *count) {
  bool is_array = false;
  if (napi_is_array(env, v, &is_array) == napi_ok && is_array) {
    uint32_t n;
    napi_get_array_length(env, v, &n);
    if (n > (uint32_t)cap) return throw_range(env, "data has %u parts, at most %d", n, cap);
    for (uint32_t i = 0; i < n; i++) {
      napi_value el;
      uint8_t *p;
      size_t len;
      if (napi_get_element(env, v, i, &el) != napi_ok || !arg_bytes(env, el, "data[i]", &p, &len)) return false;
      iov[i].iov_base = p;
      iov[i].iov_len = len;
    }
    *count = (int)n;
    return true;
  }
  uint8_t *p;
  size_t len;
  if (!arg_bytes(env, v, "data", &p, &len)) return false;
  iov[0].iov_base = p;
  iov[0].iov_len = len;
  *count = 1;
  return true;
}

#define MAX_MSG_PARTS 64

/* sendmsg(fd, data | data[], fds?) -> bytes | -1 */
static napi_value js_sendmsg(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  int fd, niov;
  struct iovec iov[MAX_MSG_PARTS];
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * SCM_MAX_FDS)];
  } control;
  struct msghdr msg;
  uint32_t nfds = 0;
  ssize_t r;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_data(env, argv[1], iov, MAX_MSG_PARTS, &niov)) return NULL;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = (size_t)niov;
  if (!is_nullish(env, argv[2])) {
    bool is_array = false;
    if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array) {
      throw_type(env, "fds must be an array of fd numbers or OwnedFds");
      return NULL;
    }
    napi_get_array_length(env, argv[2], &nfds);
    if (nfds > SCM_MAX_FDS) {
      throw_range(env, "at most %d fds per message", SCM_MAX_FDS);
      return NULL;
    }
    if (nfds > 0) {
      memset(&control, 0, sizeof control);
      msg.msg_control = control.buf;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      int *out = (int *)CMSG_DATA(c);
      for (uint32_t i = 0; i < nfds; i++) {
        napi_value el;
        int one;
        if (napi_get_element(env, argv[2], i, &el) != napi_ok || !arg_fd(env, el, "fds[i]", &one)) return NULL;
        memcpy(out + i, &one, sizeof one);
      }
    }
  }
  do r = sendmsg(fd, &msg, MSG_NOSIGNAL); while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return js_int(env, -1);
    throw_errno(env, errno, "sendmsg");
    return NULL;
  }
  return js_int(env, r);
}

/* recvmsg(fd, buffer | buffer[]) -> { bytes, fds: OwnedFd[], flags } | null */
static napi_value js_recvmsg(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int fd, niov;
  struct iovec iov[MAX_MSG_PARTS];
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * SCM_MAX_FDS)];
  } control;
  struct msghdr msg;
  ssize_t r;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_data(env, argv[1], iov, MAX_MSG_PARTS, &niov)) return NULL;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = (size_t)niov;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  do r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC); while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return js_null(env);
    throw_errno(env, errno, "recvmsg");
    return NULL;
  }
  /* Collect every received fd first, so that none can be lost whatever fails next. */
  int got[SCM_MAX_FDS];
  int ngot = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < n && ngot < SCM_MAX_FDS; i++) memcpy(&got[ngot++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
  }
  napi_value arr = NULL, res;
  bool ok = napi_create_array_with_length(env, (size_t)ngot, &arr) == napi_ok;
  for (int i = 0; i < ngot; i++) {
    napi_value o = ok ? owned_fd_new(env, got[i]) : NULL; /* owned_fd_new closes on failure */
    if (!o) {
      if (ok) ok = false;
      else close_quietly(got[i]);
      continue;
    }
    napi_set_element(env, arr, (uint32_t)i, o);
  }
  if (!ok) return NULL;
  res = js_object(env);
  set_prop(env, res, "bytes", js_int(env, r));
  set_prop(env, res, "fds", arr);
  set_prop(env, res, "flags", js_int(env, msg.msg_flags & ~MSG_CMSG_CLOEXEC)); /* the kernel echoes it */
  return res;
}

bool unix_init(napi_env env, napi_value exports) {
  return export_fn(env, exports, "unixListen", js_unix_listen) &&
         export_fn(env, exports, "unixAccept", js_unix_accept) &&
         export_fn(env, exports, "unixConnect", js_unix_connect) &&
         export_fn(env, exports, "unixDgram", js_unix_dgram) &&
         export_fn(env, exports, "unixSocketPair", js_unix_socketpair) &&
         export_fn(env, exports, "unixSendTo", js_unix_sendto) &&
         export_fn(env, exports, "unixRecvFrom", js_unix_recvfrom) &&
         export_fn(env, exports, "sendmsg", js_sendmsg) && export_fn(env, exports, "recvmsg", js_recvmsg) &&
         export_int(env, exports, "MSG_TRUNC", MSG_TRUNC) && export_int(env, exports, "MSG_CTRUNC", MSG_CTRUNC) &&
         export_int(env, exports, "SOCK_SEQPACKET", SOCK_SEQPACKET);
}
