/*
 * usernet native addon — shared declarations.
 *
 * The addon exposes only the Linux syscalls Node.js lacks (tap, fd passing over AF_UNIX, mmap,
 * eventfd, ICMP/raw sockets, the IP error queue, setns) plus a readiness watcher on libuv's
 * uv_poll and batched frame I/O. It is plain C on Node-API (node_api.h); everything runs on the
 * thread that calls it (the Node event loop thread), nothing blocks: every fd it opens is
 * O_NONBLOCK and O_CLOEXEC.
 *
 * Conventions used by every file:
 *  - A function that throws a JS exception returns NULL to Node-API; helpers that may throw
 *    return `false` so callers can `if (!helper(...)) return NULL;`.
 *  - Bad arguments throw TypeError (code ERR_INVALID_ARG_TYPE) or RangeError (ERR_OUT_OF_RANGE);
 *    failed syscalls throw Error with `code` = errno name, `errno` = -errno (Node style) and
 *    `syscall`. EAGAIN is never thrown by the I/O calls: they return -1/null/0 counts instead.
 *  - Every fd handed to JS is wrapped in an OwnedFd (fd.c) the moment it exists, so an error
 *    later on the same path closes it through the wrapper or explicitly; no path leaks fds.
 */
#ifndef USERNET_COMMON_H
#define USERNET_COMMON_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <node_api.h>

/* ---- per-environment state (napi instance data) ---- */
struct fd_watcher;
typedef struct addon_state {
  napi_ref owned_fd_ctor;
  struct fd_watcher *watchers; /* watchers with an open uv handle (poll.c): one per fd */
} addon_state;

/* ---- process-wide counters, for leak tests and the meter (atomic: worker threads) ---- */
extern long stat_owned_fds;
extern long stat_watchers;
extern long stat_mappings;
extern long stat_mapped_bytes;
#define STAT_ADD(var, n) __atomic_add_fetch(&(var), (n), __ATOMIC_RELAXED)
#define STAT_GET(var) __atomic_load_n(&(var), __ATOMIC_RELAXED)

/* ---- argument parsing (util.c); each throws and returns false on bad input ---- */
#define MAX_ARGS 10
#define GET_ARGS(n)                                                                 \
  size_t argc = (n);                                                                \
  napi_value argv[(n) > 0 ? (n) : 1];                                               \
  napi_value this_arg;                                                              \
  if (napi_get_cb_info(env, info, &argc, argv, &this_arg, NULL) != napi_ok) return NULL; \
  (void)this_arg

bool is_nullish(napi_env env, napi_value v);
bool arg_int(napi_env env, napi_value v, const char *name, int64_t min, int64_t max, int64_t *out);
bool arg_int_opt(napi_env env, napi_value v, const char *name, int64_t min, int64_t max, int64_t dflt,
                 int64_t *out);
bool arg_bool_opt(napi_env env, napi_value v, const char *name, bool dflt, bool *out);
bool arg_fd(napi_env env, napi_value v, const char *name, int *out);
/* Any ArrayBufferView or ArrayBuffer: byte pointer and byte length. */
bool arg_bytes(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len);
bool arg_int32_array(napi_env env, napi_value v, const char *name, int32_t **data, size_t *count);
/* A string into buf (NUL-terminated); `null`/`undefined` give *present = false when allowed. */
bool arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t cap, size_t *len,
                bool allow_null, bool *present);
bool arg_function(napi_env env, napi_value v, const char *name);

/* ---- errors and values (util.c) ---- */
bool throw_errno(napi_env env, int err, const char *syscall);
bool throw_type(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool throw_range(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *errno_name(int err);
napi_value js_int(napi_env env, int64_t v);
napi_value js_double(napi_env env, double v);
napi_value js_bool(napi_env env, bool v);
napi_value js_str(napi_env env, const char *s);
napi_value js_null(napi_env env);
napi_value js_undefined(napi_env env);
napi_value js_object(napi_env env);
bool set_prop(napi_env env, napi_value obj, const char *key, napi_value v);
/* Export a function on `exports`. */
bool export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb);
bool export_int(napi_env env, napi_value exports, const char *name, int64_t v);

/* ---- owned fds (fd.c) ---- */
struct fd_watcher;
typedef struct owned_fd {
  int fd;                      /* -1 once closed or released */
  struct fd_watcher *watcher;  /* the FdWatcher bound to this fd, if any (poll.c) */
} owned_fd;

bool fd_init(napi_env env, napi_value exports, addon_state *st);
/* Wrap a freshly opened fd. On failure the fd is closed and NULL returned (exception pending). */
napi_value owned_fd_new(napi_env env, int fd);
/* If `v` is an OwnedFd object, its struct; else NULL (no exception). */
owned_fd *owned_fd_unwrap(napi_env env, napi_value v);
/* Close without throwing (keeps errno). */
void close_quietly(int fd);

/* ---- watcher (poll.c) ---- */
bool poll_init(napi_env env, napi_value exports);
/* Called by fd.c before the fd of `w` is closed or released: closes the uv handle. */
void watcher_detach_owner(struct fd_watcher *w);
/* The environment's state is going away: unlink every watcher from it. */
void watchers_forget_state(addon_state *st);

/* ---- network namespaces (netns.c) ---- */
typedef struct netns_guard {
  int original;  /* fd of the thread's original net namespace, or -1 when nothing was entered */
} netns_guard;
/* Enter the namespace at `path` (NULL/empty: stay). Throws and returns false on failure. */
bool netns_enter(napi_env env, const char *path, netns_guard *g);
/* Return to the original namespace; aborts the process if that is impossible. */
void netns_leave(netns_guard *g);

/* ---- socket addresses (sock.c) ---- */
typedef union sockaddr_any {
  struct sockaddr sa;
  struct sockaddr_storage ss;
} sockaddr_any;
/* Parse "a.b.c.d" / "v6" string or a 4/16-byte view into `out`; sets *len. */
bool arg_inet_addr(napi_env env, napi_value v, const char *name, int port, sockaddr_any *out,
                   socklen_t *len);
/* {family, address, port} for AF_INET/AF_INET6, {family, path} for AF_UNIX, null otherwise. */
napi_value sockaddr_to_js(napi_env env, const struct sockaddr *sa, socklen_t len);

/* ---- per-file export registration ---- */
bool io_init(napi_env env, napi_value exports);
bool tap_init(napi_env env, napi_value exports);
bool unix_init(napi_env env, napi_value exports);
bool mem_init(napi_env env, napi_value exports);
bool sock_init(napi_env env, napi_value exports);
bool tcpstream_init(napi_env env, napi_value exports);

#endif
