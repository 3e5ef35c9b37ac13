/*
 * Argument validation, error construction and small value helpers shared by every file.
 *
 * Validation is strict so that a wrong call from TypeScript ends in a catchable TypeError /
 * RangeError, never in undefined behaviour: integers must be finite integral numbers inside
 * the documented range, byte buffers must be ArrayBuffer views (or ArrayBuffers), strings must
 * fit their fixed C buffers (no silent truncation of paths or interface names).
 */
#include "common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

long stat_owned_fds;
long stat_watchers;
long stat_mappings;
long stat_mapped_bytes;

/* ---------------------------------------------------------------- errors */

const char *errno_name(int err) {
  const char *n = strerrorname_np(err);
  return n ? n : "EUNKNOWN";
}

bool throw_errno(napi_env env, int err, const char *syscall) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s, %s", errno_name(err), strerror(err), syscall);
  napi_value code, message, error;
  if (napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_error(env, code, message, &error) != napi_ok)
    return false;
  set_prop(env, error, "errno", js_int(env, -err));
  set_prop(env, error, "syscall", js_str(env, syscall));
  napi_throw(env, error);
  return false;
}

bool throw_type(napi_env env, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return false;
}

bool throw_range(napi_env env, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return false;
}

/* ---------------------------------------------------------------- values */

napi_value js_int(napi_env env, int64_t v) {
  napi_value r = NULL;
  if (v >= INT32_MIN && v <= INT32_MAX)
    napi_create_int32(env, (int32_t)v, &r);
  else
    napi_create_int64(env, v, &r);
  return r;
}

napi_value js_double(napi_env env, double v) {
  napi_value r = NULL;
  napi_create_double(env, v, &r);
  return r;
}

napi_value js_bool(napi_env env, bool v) {
  napi_value r = NULL;
  napi_get_boolean(env, v, &r);
  return r;
}

napi_value js_str(napi_env env, const char *s) {
  napi_value r = NULL;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &r);
  return r;
}

napi_value js_null(napi_env env) {
  napi_value r = NULL;
  napi_get_null(env, &r);
  return r;
}

napi_value js_undefined(napi_env env) {
  napi_value r = NULL;
  napi_get_undefined(env, &r);
  return r;
}

napi_value js_object(napi_env env) {
  napi_value r = NULL;
  napi_create_object(env, &r);
  return r;
}

bool set_prop(napi_env env, napi_value obj, const char *key, napi_value v) {
  return v != NULL && napi_set_named_property(env, obj, key, v) == napi_ok;
}

bool export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  if (napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) != napi_ok) return false;
  return napi_set_named_property(env, exports, name, fn) == napi_ok;
}

bool export_int(napi_env env, napi_value exports, const char *name, int64_t v) {
  return set_prop(env, exports, name, js_int(env, v));
}

/* ---------------------------------------------------------------- arguments */

bool is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return true;
  return t == napi_undefined || t == napi_null;
}

bool arg_int(napi_env env, napi_value v, const char *name, int64_t min, int64_t max, int64_t *out) {
  napi_valuetype t;
  double d;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number)
    return throw_type(env, "%s must be a number", name);
  napi_get_value_double(env, v, &d);
  if (!isfinite(d) || d != floor(d))
    return throw_range(env, "%s must be an integer", name);
  if (d < (double)min || d > (double)max)
    return throw_range(env, "%s must be in [%lld, %lld], got %.0f", name, (long long)min, (long long)max, d);
  *out = (int64_t)d;
  return true;
}

bool arg_int_opt(napi_env env, napi_value v, const char *name, int64_t min, int64_t max, int64_t dflt,
                 int64_t *out) {
  if (is_nullish(env, v)) {
    *out = dflt;
    return true;
  }
  return arg_int(env, v, name, min, max, out);
}

bool arg_bool_opt(napi_env env, napi_value v, const char *name, bool dflt, bool *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return throw_type(env, "%s must be a boolean", name);
  if (t == napi_undefined || t == napi_null) {
    *out = dflt;
    return true;
  }
  if (t != napi_boolean) return throw_type(env, "%s must be a boolean", name);
  napi_get_value_bool(env, v, out);
  return true;
}

bool arg_fd(napi_env env, napi_value v, const char *name, int *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return throw_type(env, "%s must be an fd", name);
  if (t == napi_number) {
    int64_t n;
    if (!arg_int(env, v, name, 0, INT32_MAX, &n)) return false;
    *out = (int)n;
    return true;
  }
  if (t == napi_object) {
    owned_fd *o = owned_fd_unwrap(env, v);
    if (o) {
      if (o->fd < 0) return throw_errno(env, EBADF, name);
      *out = o->fd;
      return true;
    }
  }
  return throw_type(env, "%s must be an fd number or an OwnedFd", name);
}

static size_t element_size(napi_typedarray_type type) {
  switch (type) {
    case napi_int8_array:
    case napi_uint8_array:
    case napi_uint8_clamped_array:
      return 1;
    case napi_int16_array:
    case napi_uint16_array:
      return 2;
    case napi_int32_array:
    case napi_uint32_array:
    case napi_float32_array:
      return 4;
    default:
      return 8;
  }
}

bool arg_bytes(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len) {
  bool yes = false;
  void *p = NULL;
  size_t n = 0;
  if (napi_is_typedarray(env, v, &yes) == napi_ok && yes) {
    napi_typedarray_type type;
    if (napi_get_typedarray_info(env, v, &type, &n, &p, NULL, NULL) != napi_ok)
      return throw_type(env, "%s: unreadable typed array", name);
    n *= element_size(type);
  } else if (napi_is_dataview(env, v, &yes) == napi_ok && yes) {
    if (napi_get_dataview_info(env, v, &n, &p, NULL, NULL) != napi_ok)
      return throw_type(env, "%s: unreadable DataView", name);
  } else if (napi_is_arraybuffer(env, v, &yes) == napi_ok && yes) {
    if (napi_get_arraybuffer_info(env, v, &p, &n) != napi_ok)
      return throw_type(env, "%s: unreadable ArrayBuffer", name);
  } else {
    return throw_type(env, "%s must be a Uint8Array (or another ArrayBuffer view)", name);
  }
  if (p == NULL) n = 0;
  *data = p;
  *len = n;
  return true;
}

bool arg_int32_array(napi_env env, napi_value v, const char *name, int32_t **data, size_t *count) {
  bool yes = false;
  napi_typedarray_type type;
  void *p = NULL;
  size_t n = 0;
  if (napi_is_typedarray(env, v, &yes) != napi_ok || !yes ||
      napi_get_typedarray_info(env, v, &type, &n, &p, NULL, NULL) != napi_ok || type != napi_int32_array)
    return throw_type(env, "%s must be an Int32Array", name);
  if (p == NULL) n = 0;
  *data = p;
  *count = n;
  return true;
}

bool arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t cap, size_t *len,
                bool allow_null, bool *present) {
  napi_valuetype t;
  size_t n = 0;
  if (present) *present = false;
  if (napi_typeof(env, v, &t) != napi_ok) return throw_type(env, "%s must be a string", name);
  if ((t == napi_undefined || t == napi_null) && allow_null) {
    buf[0] = 0;
    if (len) *len = 0;
    return true;
  }
  if (t != napi_string) return throw_type(env, "%s must be a string", name);
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) return throw_type(env, "%s: bad string", name);
  if (n + 1 > cap) return throw_range(env, "%s is too long (%zu bytes, at most %zu)", name, n, cap - 1);
  napi_get_value_string_utf8(env, v, buf, cap, &n);
  if (strlen(buf) != n) return throw_type(env, "%s must not contain NUL characters", name);
  if (len) *len = n;
  if (present) *present = true;
  return true;
}

bool arg_function(napi_env env, napi_value v, const char *name) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_function)
    return throw_type(env, "%s must be a function", name);
  return true;
}
