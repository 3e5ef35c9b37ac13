/*
 * usernet native addon: module registration. Each concern lives in its own file:
 *   fd.c    OwnedFd (every fd the addon hands out), setNonBlocking
 *   poll.c  FdWatcher (uv_poll readiness on the Node loop)
 *   io.c    read/write/readv/writev and the batched readFrames/writeFrames
 *   tap.c   /dev/net/tun
 *   unix.c  AF_UNIX stream/dgram, fd passing
 *   mem.c   mmap/munmap, memfd, eventfd
 *   sock.c  ICMP/UDP/TCP sockets, IP options, error queue
 *   tcpstream.c  TCP data path without buffers: peek at an offset, discard, send, shutdown
 *   netns.c entering a network namespace around socket()/open()
 * The module is context-aware (NAPI_MODULE_INIT): each Node environment (main thread, worker)
 * gets its own instance data.
 */
#include "common.h"

#include <stdlib.h>

static void state_finalize(napi_env env, void *data, void *hint) {
  addon_state *st = data;
  watchers_forget_state(st);
  if (st->owned_fd_ctor) napi_delete_reference(env, st->owned_fd_ctor);
  free(st);
}

/* nativeStats() -> { ownedFds, watchers, mappings, mappedBytes } (process-wide) */
static napi_value js_native_stats(napi_env env, napi_callback_info info) {
  napi_value r = js_object(env);
  set_prop(env, r, "ownedFds", js_int(env, STAT_GET(stat_owned_fds)));
  set_prop(env, r, "watchers", js_int(env, STAT_GET(stat_watchers)));
  set_prop(env, r, "mappings", js_int(env, STAT_GET(stat_mappings)));
  set_prop(env, r, "mappedBytes", js_double(env, (double)STAT_GET(stat_mapped_bytes)));
  return r;
}

NAPI_MODULE_INIT() {
  addon_state *st = calloc(1, sizeof *st);
  if (!st) return NULL;
  if (napi_set_instance_data(env, st, state_finalize, NULL) != napi_ok) {
    free(st);
    return NULL;
  }
  if (!fd_init(env, exports, st) || !poll_init(env, exports) || !io_init(env, exports) ||
      !tap_init(env, exports) || !unix_init(env, exports) || !mem_init(env, exports) ||
      !sock_init(env, exports) || !tcpstream_init(env, exports) || !export_fn(env, exports, "nativeStats", js_native_stats))
    return NULL;
  return exports;
}
