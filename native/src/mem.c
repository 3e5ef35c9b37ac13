/*
 * Shared memory and counters between processes: mmap of an fd range as an ArrayBuffer (guest
 * RAM handed over by vhost-user SET_MEM_TABLE or vfio-user DMA_MAP), memfd (our own shareable
 * memory, e.g. in tests standing in for guest RAM), eventfd (virtqueue kick/call, interrupts).
 *
 * mmap(fd, offset, length) -> ArrayBuffer
 *   mmap(NULL, length, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_NORESERVE, fd, offset); offset must
 *   be page aligned (the kernel says EINVAL otherwise). The ArrayBuffer is external: no copy,
 *   writes are seen by the other process. Node makes external buffers through node::Buffer, so
 *   length is limited to buffer.constants.MAX_LENGTH (4 GiB on Node 20): larger guest regions
 *   are mapped in chunks. States:
 *     MAPPED --munmap(ab)--> UNMAPPED (ab detached: every view on it now has length 0, so JS can
 *                                      never touch an unmapped page)
 *     MAPPED --GC of ab----> the finalizer unmaps
 *   The mapping record is attached to the ArrayBuffer (type-tagged wrap) so munmap(ab) can find
 *   it, and freed only by the buffer finalizer, which V8 runs once for either path.
 *
 * eventfd: EFD_NONBLOCK|EFD_CLOEXEC. eventfdRead returns the counter (0 = nothing pending:
 * EAGAIN), eventfdWrite returns false when the counter would overflow (EAGAIN). Counts travel as
 * JS numbers, exact up to 2^53.
 */
#include "common.h"

#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

static const napi_type_tag MAPPING_TAG = {0x757365726d6d6170ULL, 0x70696e675f746167ULL};

typedef struct mapping {
  void *addr;
  size_t len;
  bool mapped;
  bool creating;        /* inside napi_create_external_arraybuffer */
  bool finalized_early; /* Node ran the finalizer synchronously because creation failed */
} mapping;

#define MAX_SAFE_INTEGER 9007199254740991LL

static void mapping_unmap(mapping *m) {
  if (!m->mapped) return;
  munmap(m->addr, m->len);
  m->mapped = false;
  STAT_ADD(stat_mappings, -1);
  STAT_ADD(stat_mapped_bytes, -(long)m->len);
}

static void mapping_finalize(napi_env env, void *data, void *hint) {
  mapping *m = hint;
  mapping_unmap(m);
  /* Node calls the finalizer at once when it cannot make the buffer (e.g. longer than
   * buffer.constants.MAX_LENGTH); js_mmap still holds `m` then and frees it itself. */
  if (m->creating) m->finalized_early = true;
  else free(m);
}

static napi_value js_mmap(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  int fd;
  int64_t offset, length;
  napi_value ab;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_int(env, argv[1], "offset", 0, MAX_SAFE_INTEGER, &offset) ||
      !arg_int(env, argv[2], "length", 1, MAX_SAFE_INTEGER, &length))
    return NULL;
  void *addr = mmap(NULL, (size_t)length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, (off_t)offset);
  if (addr == MAP_FAILED) {
    throw_errno(env, errno, "mmap");
    return NULL;
  }
  mapping *m = calloc(1, sizeof *m);
  if (!m) {
    munmap(addr, (size_t)length);
    throw_errno(env, ENOMEM, "mmap");
    return NULL;
  }
  m->addr = addr;
  m->len = (size_t)length;
  m->mapped = true;
  STAT_ADD(stat_mappings, 1);
  STAT_ADD(stat_mapped_bytes, (long)length);
  m->creating = true;
  napi_status status = napi_create_external_arraybuffer(env, addr, m->len, mapping_finalize, m, &ab);
  m->creating = false;
  if (status != napi_ok) {
    bool pending = false;
    mapping_unmap(m); /* no-op if the finalizer already ran */
    free(m);
    napi_is_exception_pending(env, &pending);
    if (!pending) throw_range(env, "cannot make an ArrayBuffer of %lld bytes (at most buffer.constants.MAX_LENGTH): map in chunks", (long long)length);
    return NULL;
  }
  if (m->finalized_early) { /* creation reported success but the buffer is gone: be safe */
    free(m);
    throw_errno(env, ENOMEM, "mmap");
    return NULL;
  }
  /* From here the buffer finalizer owns `m`. */
  if (napi_wrap(env, ab, m, NULL, NULL, NULL) != napi_ok ||
      napi_type_tag_object(env, ab, &MAPPING_TAG) != napi_ok) {
    throw_errno(env, ENOMEM, "mmap (tagging the ArrayBuffer)");
    return NULL;
  }
  return ab;
}

/* munmap(ab): unmap now and detach; a second call, or a foreign ArrayBuffer, throws. */
static napi_value js_munmap(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  bool tagged = false, is_ab = false;
  void *p = NULL;
  if (napi_is_arraybuffer(env, argv[0], &is_ab) != napi_ok || !is_ab) {
    throw_type(env, "munmap expects an ArrayBuffer returned by mmap");
    return NULL;
  }
  if (napi_check_object_type_tag(env, argv[0], &MAPPING_TAG, &tagged) != napi_ok || !tagged) {
    throw_type(env, "munmap expects an ArrayBuffer returned by mmap");
    return NULL;
  }
  if (napi_remove_wrap(env, argv[0], &p) != napi_ok || !p) {
    throw_errno(env, EINVAL, "munmap (already unmapped)");
    return NULL;
  }
  mapping_unmap(p);
  napi_detach_arraybuffer(env, argv[0]);
  return js_undefined(env);
}

static napi_value js_memfd_create(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  char name[250];
  int64_t size;
  if (!arg_string(env, argv[0], "name", name, sizeof name, NULL, false, NULL) ||
      !arg_int_opt(env, argv[1], "size", 0, MAX_SAFE_INTEGER, 0, &size))
    return NULL;
  int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) {
    throw_errno(env, errno, "memfd_create");
    return NULL;
  }
  if (size > 0 && ftruncate(fd, (off_t)size) < 0) {
    int err = errno;
    close(fd);
    throw_errno(env, err, "ftruncate");
    return NULL;
  }
  return owned_fd_new(env, fd);
}

static napi_value js_eventfd_create(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int64_t initval;
  bool semaphore;
  if (!arg_int_opt(env, argv[0], "initval", 0, UINT32_MAX, 0, &initval) ||
      !arg_bool_opt(env, argv[1], "semaphore", false, &semaphore))
    return NULL;
  int fd = eventfd((unsigned int)initval, EFD_NONBLOCK | EFD_CLOEXEC | (semaphore ? EFD_SEMAPHORE : 0));
  if (fd < 0) {
    throw_errno(env, errno, "eventfd");
    return NULL;
  }
  return owned_fd_new(env, fd);
}

static napi_value js_eventfd_read(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  int fd;
  uint64_t v = 0;
  ssize_t r;
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  do r = read(fd, &v, sizeof v); while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return js_int(env, 0);
    throw_errno(env, errno, "read (eventfd)");
    return NULL;
  }
  if (r != sizeof v) {
    throw_errno(env, EINVAL, "read (not an eventfd)");
    return NULL;
  }
  return js_double(env, (double)v);
}

static napi_value js_eventfd_write(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int fd;
  int64_t value;
  ssize_t r;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_int_opt(env, argv[1], "value", 1, MAX_SAFE_INTEGER, 1, &value))
    return NULL;
  uint64_t v = (uint64_t)value;
  do r = write(fd, &v, sizeof v); while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return js_bool(env, false);
    throw_errno(env, errno, "write (eventfd)");
    return NULL;
  }
  return js_bool(env, true);
}

bool mem_init(napi_env env, napi_value exports) {
  long page = sysconf(_SC_PAGESIZE);
  return export_fn(env, exports, "mmap", js_mmap) && export_fn(env, exports, "munmap", js_munmap) &&
         export_fn(env, exports, "memfdCreate", js_memfd_create) &&
         export_fn(env, exports, "eventfdCreate", js_eventfd_create) &&
         export_fn(env, exports, "eventfdRead", js_eventfd_read) &&
         export_fn(env, exports, "eventfdWrite", js_eventfd_write) &&
         export_int(env, exports, "PAGE_SIZE", page > 0 ? page : 4096);
}
