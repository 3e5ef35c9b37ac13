/*
 * OwnedFd: the one way a file descriptor leaves the addon.
 *
 * States:  OWNED (fd >= 0) --close()----> CLOSED (fd = -1)
 *                          --release()--> RELEASED (fd = -1; the caller now owns the number,
 *                                          e.g. to give it to `new net.Socket({fd})`)
 *                          --GC---------> the napi finalizer closes it
 *
 * Whatever opened the fd, ownership is taken by wrapping it here immediately, so error paths
 * after that point only have to drop the wrapper. An FdWatcher (poll.c) bound to an OwnedFd is
 * closed first when the fd is closed or released: libuv removes the fd from its epoll set by
 * number, so the watcher must be gone while the number still names this file (a later fd with
 * the same number must never be touched by a stale watcher).
 *
 * Objects are type-tagged so that a foreign wrapped object can never be mistaken for an
 * OwnedFd (and a mapping's ArrayBuffer never for either).
 */
#include "common.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static const napi_type_tag OWNED_FD_TAG = {0x7573657266645f31ULL, 0x6f776e65645f6664ULL};

void close_quietly(int fd) {
  int saved = errno;
  if (fd >= 0) close(fd);
  errno = saved;
}

static void owned_fd_drop(owned_fd *o) {
  if (o->watcher) watcher_detach_owner(o->watcher); /* clears o->watcher */
  if (o->fd >= 0) {
    close(o->fd);
    o->fd = -1;
    STAT_ADD(stat_owned_fds, -1);
  }
}

static void owned_fd_finalize(napi_env env, void *data, void *hint) {
  owned_fd *o = data;
  owned_fd_drop(o);
  free(o);
}

owned_fd *owned_fd_unwrap(napi_env env, napi_value v) {
  napi_valuetype t;
  bool tagged = false;
  void *p = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_object) return NULL;
  if (napi_check_object_type_tag(env, v, &OWNED_FD_TAG, &tagged) != napi_ok || !tagged) return NULL;
  if (napi_unwrap(env, v, &p) != napi_ok) return NULL;
  return p;
}

/* new OwnedFd(fd): adopt an open descriptor. */
static napi_value owned_fd_ctor(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  napi_value target;
  int64_t fd;
  if (napi_get_new_target(env, info, &target) != napi_ok || target == NULL) {
    throw_type(env, "OwnedFd must be called with new");
    return NULL;
  }
  if (!arg_int(env, argv[0], "fd", 0, INT32_MAX, &fd)) return NULL;
  if (fcntl((int)fd, F_GETFD) < 0) {
    throw_errno(env, errno, "OwnedFd");
    return NULL;
  }
  owned_fd *o = calloc(1, sizeof *o);
  if (!o) {
    throw_errno(env, ENOMEM, "OwnedFd");
    return NULL;
  }
  o->fd = (int)fd;
  if (napi_wrap(env, this_arg, o, owned_fd_finalize, NULL, NULL) != napi_ok) {
    free(o); /* the fd stays with the caller */
    throw_errno(env, ENOMEM, "OwnedFd");
    return NULL;
  }
  napi_type_tag_object(env, this_arg, &OWNED_FD_TAG);
  STAT_ADD(stat_owned_fds, 1);
  return this_arg;
}

static owned_fd *this_owned(napi_env env, napi_callback_info info, napi_value *self) {
  size_t argc = 0;
  napi_value this_arg;
  if (napi_get_cb_info(env, info, &argc, NULL, &this_arg, NULL) != napi_ok) return NULL;
  owned_fd *o = owned_fd_unwrap(env, this_arg);
  if (!o) throw_type(env, "receiver is not an OwnedFd");
  if (self) *self = this_arg;
  return o;
}

static napi_value owned_fd_get_fd(napi_env env, napi_callback_info info) {
  owned_fd *o = this_owned(env, info, NULL);
  return o ? js_int(env, o->fd) : NULL;
}

static napi_value owned_fd_close(napi_env env, napi_callback_info info) {
  owned_fd *o = this_owned(env, info, NULL);
  if (!o) return NULL;
  owned_fd_drop(o);
  return js_undefined(env);
}

static napi_value owned_fd_release(napi_env env, napi_callback_info info) {
  owned_fd *o = this_owned(env, info, NULL);
  if (!o) return NULL;
  if (o->fd < 0) {
    throw_errno(env, EBADF, "release");
    return NULL;
  }
  if (o->watcher) watcher_detach_owner(o->watcher);
  int fd = o->fd;
  o->fd = -1;
  STAT_ADD(stat_owned_fds, -1);
  return js_int(env, fd);
}

napi_value owned_fd_new(napi_env env, int fd) {
  addon_state *st = NULL;
  napi_value ctor, arg, obj;
  if (napi_get_instance_data(env, (void **)&st) != napi_ok || !st ||
      napi_get_reference_value(env, st->owned_fd_ctor, &ctor) != napi_ok || ctor == NULL) {
    close_quietly(fd);
    throw_errno(env, EINVAL, "OwnedFd (addon not initialised)");
    return NULL;
  }
  arg = js_int(env, fd);
  if (napi_new_instance(env, ctor, 1, &arg, &obj) != napi_ok) {
    /* the constructor threw (or allocation failed) before taking ownership */
    close_quietly(fd);
    return NULL;
  }
  return obj;
}

/* setNonBlocking(fd, on): O_NONBLOCK on an fd received from elsewhere (it changes the open file
 * description, which the sender shares). */
static napi_value js_set_nonblocking(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int fd, fl;
  bool on;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_bool_opt(env, argv[1], "on", true, &on)) return NULL;
  fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) < 0) {
    throw_errno(env, errno, "fcntl");
    return NULL;
  }
  return js_undefined(env);
}

bool fd_init(napi_env env, napi_value exports, addon_state *st) {
  napi_property_descriptor props[] = {
      {"fd", NULL, NULL, owned_fd_get_fd, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, owned_fd_close, NULL, NULL, NULL, napi_default, NULL},
      {"release", NULL, owned_fd_release, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  if (napi_define_class(env, "OwnedFd", NAPI_AUTO_LENGTH, owned_fd_ctor, NULL,
                        sizeof props / sizeof props[0], props, &cls) != napi_ok)
    return false;
  if (napi_create_reference(env, cls, 1, &st->owned_fd_ctor) != napi_ok) return false;
  return napi_set_named_property(env, exports, "OwnedFd", cls) == napi_ok &&
         export_fn(env, exports, "setNonBlocking", js_set_nonblocking);
}
