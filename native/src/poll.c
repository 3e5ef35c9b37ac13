/*
 * FdWatcher: readiness of one fd, reported on the Node event loop through libuv's uv_poll.
 *
 *   new FdWatcher(fd | OwnedFd, callback(events, status))
 *   start(events)  READABLE 1 | WRITABLE 2 | DISCONNECT 4 | PRIORITIZED 8; calling it again
 *                  while active changes the set
 *   stop()         idle; may start() again
 *   close()        final: the uv handle is closed (asynchronously freed)
 *
 * States:  IDLE --start--> ACTIVE --stop / POLLERR--> IDLE;  IDLE|ACTIVE --close--> CLOSED.
 * While ACTIVE the JS object is held by a strong reference so the callback can always run; when
 * IDLE only user references keep it, and garbage collection closes the handle.
 *
 * Error status: libuv stops the handle by itself when the kernel reports POLLERR (a pending
 * socket error, e.g. a failed non-blocking connect, or an ICMP error queued by IP_RECVERR) and
 * calls back with status UV_EBADF (-9) and no events. The watcher is then IDLE: read
 * SO_ERROR / MSG_ERRQUEUE and start() again.
 *
 * Binding to an OwnedFd: the watcher keeps the OwnedFd object alive and the OwnedFd closes the
 * watcher before its fd is closed or released (libuv unregisters by fd number; see fd.c).
 * A raw fd number is also accepted; the caller must then close() the watcher before the fd.
 * One watcher per fd number: a second one (while the first is not closed) throws EBUSY; libuv
 * itself refuses an fd that another started handle (e.g. a net.Socket) polls, with EEXIST.
 *
 * Callbacks run through napi_make_callback, so async hooks, process.nextTick and promise
 * microtasks behave as after any Node I/O callback; an exception thrown by the callback goes to
 * process 'uncaughtException'.
 */
#include "common.h"

#include <stdlib.h>
#include <uv.h>

typedef struct fd_watcher {
  uv_poll_t handle;
  napi_env env;
  addon_state *st;
  struct fd_watcher *prev, *next; /* in st->watchers while the handle is open */
  napi_ref self;      /* from napi_wrap: count 0 while idle, 1 while active */
  napi_ref callback;  /* strong until close */
  napi_ref owner_ref; /* strong reference to the OwnedFd object, or NULL */
  owned_fd *owner;
  napi_async_context actx;
  int fd;
  bool active;
  bool handle_open;   /* uv_poll_init done, uv_close not yet called */
  bool handle_closed; /* close callback ran (or the handle was never initialised) */
  bool finalized;     /* the JS object is gone */
} fd_watcher;

static const napi_type_tag WATCHER_TAG = {0x7573657277617463ULL, 0x6865725f66645f31ULL};

static void on_closed(uv_handle_t *h) {
  fd_watcher *w = h->data;
  w->handle_closed = true;
  if (w->finalized) free(w);
}

static void set_inactive(fd_watcher *w) {
  if (w->active) {
    w->active = false;
    napi_reference_unref(w->env, w->self, NULL);
  }
}

static void watcher_close(fd_watcher *w) {
  napi_env env = w->env;
  if (w->handle_open) {
    set_inactive(w);
    w->handle_open = false;
    if (w->prev) w->prev->next = w->next;
    else if (w->st && w->st->watchers == w) w->st->watchers = w->next;
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = NULL;
    uv_close((uv_handle_t *)&w->handle, on_closed); /* unregisters the fd from epoll now */
    STAT_ADD(stat_watchers, -1);
  }
  if (w->owner) {
    w->owner->watcher = NULL;
    w->owner = NULL;
  }
  if (w->owner_ref) {
    napi_delete_reference(env, w->owner_ref);
    w->owner_ref = NULL;
  }
  if (w->callback) {
    napi_delete_reference(env, w->callback);
    w->callback = NULL;
  }
}

void watcher_detach_owner(fd_watcher *w) { watcher_close(w); }

void watchers_forget_state(addon_state *st) {
  for (fd_watcher *w = st->watchers, *next; w; w = next) {
    next = w->next;
    w->st = NULL;
    w->prev = w->next = NULL;
  }
  st->watchers = NULL;
}

static void watcher_finalize(napi_env env, void *data, void *hint) {
  fd_watcher *w = data;
  watcher_close(w);
  if (w->actx) napi_async_destroy(env, w->actx);
  w->actx = NULL;
  if (w->self) napi_delete_reference(env, w->self);
  w->self = NULL;
  w->finalized = true;
  if (w->handle_closed) free(w);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  fd_watcher *w = h->data;
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_value self = NULL, cb = NULL, args[2], result;
  if (!w->handle_open || !w->callback) return;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_get_reference_value(env, w->self, &self);
  napi_get_reference_value(env, w->callback, &cb);
  /* libuv has already stopped the handle on POLLERR; mirror that (self stays alive in scope) */
  if (status < 0) set_inactive(w);
  if (self && cb) {
    args[0] = js_int(env, events);
    args[1] = js_int(env, status);
    if (napi_make_callback(env, w->actx, self, cb, 2, args, &result) == napi_pending_exception) {
      napi_value exc;
      if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
    }
  }
  napi_close_handle_scope(env, scope);
}

static napi_value watcher_ctor(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  napi_value target, name;
  uv_loop_t *loop;
  int fd, r;
  if (napi_get_new_target(env, info, &target) != napi_ok || target == NULL) {
    throw_type(env, "FdWatcher must be called with new");
    return NULL;
  }
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_function(env, argv[1], "callback")) return NULL;
  owned_fd *owner = owned_fd_unwrap(env, argv[0]);
  if (owner && owner->watcher) {
    throw_errno(env, EBUSY, "FdWatcher (this OwnedFd already has a watcher)");
    return NULL;
  }
  addon_state *st = NULL;
  if (napi_get_instance_data(env, (void **)&st) != napi_ok || !st) {
    throw_errno(env, EINVAL, "FdWatcher (addon not initialised)");
    return NULL;
  }
  /* libuv cannot tell two handles on one fd apart (and its fd check would even drop the first
   * one's epoll registration), so refuse a second watcher on a number we already watch. */
  for (fd_watcher *o = st->watchers; o; o = o->next) {
    if (o->fd == fd) {
      throw_errno(env, EBUSY, "FdWatcher (this fd already has a watcher)");
      return NULL;
    }
  }
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    throw_errno(env, EINVAL, "napi_get_uv_event_loop");
    return NULL;
  }
  fd_watcher *w = calloc(1, sizeof *w);
  if (!w) {
    throw_errno(env, ENOMEM, "FdWatcher");
    return NULL;
  }
  w->env = env;
  w->fd = fd;
  w->handle_closed = true;
  r = uv_poll_init(loop, &w->handle, fd);
  if (r < 0) {
    free(w);
    throw_errno(env, -r, "uv_poll_init");
    return NULL;
  }
  w->handle.data = w;
  w->st = st;
  w->next = st->watchers;
  if (st->watchers) st->watchers->prev = w;
  st->watchers = w;
  w->handle_open = true;
  w->handle_closed = false;
  STAT_ADD(stat_watchers, 1);
  if (napi_wrap(env, this_arg, w, watcher_finalize, NULL, &w->self) != napi_ok) {
    w->finalized = true; /* nothing in JS refers to it: free when libuv is done */
    watcher_close(w);
    throw_errno(env, ENOMEM, "FdWatcher");
    return NULL;
  }
  napi_type_tag_object(env, this_arg, &WATCHER_TAG);
  name = js_str(env, "usernet.FdWatcher");
  if (napi_create_reference(env, argv[1], 1, &w->callback) != napi_ok ||
      napi_async_init(env, this_arg, name, &w->actx) != napi_ok ||
      (owner && napi_create_reference(env, argv[0], 1, &w->owner_ref) != napi_ok)) {
    watcher_close(w); /* the finalizer frees it later */
    throw_errno(env, ENOMEM, "FdWatcher");
    return NULL;
  }
  if (owner) {
    w->owner = owner;
    owner->watcher = w;
  }
  return this_arg;
}

static fd_watcher *this_watcher(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value self;
  void *p = NULL;
  size_t zero = 0;
  if (napi_get_cb_info(env, info, argc ? argc : &zero, argv, &self, NULL) != napi_ok) return NULL;
  bool tagged = false;
  if (napi_check_object_type_tag(env, self, &WATCHER_TAG, &tagged) != napi_ok || !tagged ||
      napi_unwrap(env, self, &p) != napi_ok || !p) {
    throw_type(env, "receiver is not an FdWatcher");
    return NULL;
  }
  return p;
}

static napi_value watcher_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t events;
  fd_watcher *w = this_watcher(env, info, &argc, argv);
  if (!w) return NULL;
  if (argc < 1) argv[0] = js_undefined(env);
  if (!arg_int(env, argv[0], "events", 1, UV_READABLE | UV_WRITABLE | UV_DISCONNECT | UV_PRIORITIZED, &events))
    return NULL;
  if (!w->handle_open) {
    throw_errno(env, EBADF, "FdWatcher.start (closed)");
    return NULL;
  }
  int r = uv_poll_start(&w->handle, (int)events, on_poll);
  if (r < 0) {
    throw_errno(env, -r, "uv_poll_start");
    return NULL;
  }
  if (!w->active) {
    w->active = true;
    napi_reference_ref(env, w->self, NULL);
  }
  return js_undefined(env);
}

static napi_value watcher_stop(napi_env env, napi_callback_info info) {
  fd_watcher *w = this_watcher(env, info, NULL, NULL);
  if (!w) return NULL;
  if (w->handle_open && w->active) {
    uv_poll_stop(&w->handle);
    set_inactive(w);
  }
  return js_undefined(env);
}

static napi_value watcher_close_js(napi_env env, napi_callback_info info) {
  fd_watcher *w = this_watcher(env, info, NULL, NULL);
  if (!w) return NULL;
  watcher_close(w);
  return js_undefined(env);
}

static napi_value watcher_get_active(napi_env env, napi_callback_info info) {
  fd_watcher *w = this_watcher(env, info, NULL, NULL);
  return w ? js_bool(env, w->active) : NULL;
}

static napi_value watcher_get_closed(napi_env env, napi_callback_info info) {
  fd_watcher *w = this_watcher(env, info, NULL, NULL);
  return w ? js_bool(env, !w->handle_open) : NULL;
}

static napi_value watcher_get_fd(napi_env env, napi_callback_info info) {
  fd_watcher *w = this_watcher(env, info, NULL, NULL);
  return w ? js_int(env, w->handle_open ? w->fd : -1) : NULL;
}

bool poll_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"start", NULL, watcher_start, NULL, NULL, NULL, napi_default, NULL},
      {"stop", NULL, watcher_stop, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, watcher_close_js, NULL, NULL, NULL, napi_default, NULL},
      {"active", NULL, NULL, watcher_get_active, NULL, NULL, napi_enumerable, NULL},
      {"closed", NULL, NULL, watcher_get_closed, NULL, NULL, napi_enumerable, NULL},
      {"fd", NULL, NULL, watcher_get_fd, NULL, NULL, napi_enumerable, NULL},
  };
  napi_value cls;
  if (napi_define_class(env, "FdWatcher", NAPI_AUTO_LENGTH, watcher_ctor, NULL,
                        sizeof props / sizeof props[0], props, &cls) != napi_ok)
    return false;
  return napi_set_named_property(env, exports, "FdWatcher", cls) == napi_ok &&
         export_int(env, exports, "POLL_READABLE", UV_READABLE) &&
         export_int(env, exports, "POLL_WRITABLE", UV_WRITABLE) &&
         export_int(env, exports, "POLL_DISCONNECT", UV_DISCONNECT) &&
         export_int(env, exports, "POLL_PRIORITIZED", UV_PRIORITIZED);
}
