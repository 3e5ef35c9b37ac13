/*
 * Plain and batched I/O on non-blocking fds.
 *
 * Plain calls (read, write, readv, writev) return the byte count, or -1 when the fd would block
 * (EAGAIN), so a drain loop never pays for an exception; other errors throw with the errno code.
 *
 * Batched frame I/O moves many frames per JS->C call (a tap fd, a datagram socket: one read or
 * writev = one frame), with no allocation in either direction:
 *
 *  readFrames(fd, slab, slotSize, maxFrames, lengths, status?)
 *    frame i is read into slab[i*slotSize, (i+1)*slotSize) and its length stored in lengths[i];
 *    stops at maxFrames (clamped to what slab and lengths can hold), at EAGAIN, at a 0-byte read
 *    (stored as length 0: EOF on a stream) or at an error. Returns the number of frames.
 *  writeFrames(fd, parts, partsPerFrame, frameCount, status?)
 *    frame i is parts[i*partsPerFrame .. +partsPerFrame) (1..8 parts, e.g. vnet header + frame;
 *    null/undefined/empty parts are skipped; a frame with no bytes at all is skipped and counted
 *    as written), written with one writev. Returns how many frames were written completely.
 *
 *  status (optional Int32Array, length >= 2): status[0] = the errno that ended the batch
 *  (0 = the batch completed, EAGAIN = the fd is full/empty; a short write on a stream also
 *  reports EAGAIN), status[1] = bytes of the frame that was only partly written (writeFrames).
 *  With `status` the batched calls never throw for I/O errors; without it they throw only when
 *  the very first frame fails with an error other than EAGAIN.
 */
#include "common.h"

#include <limits.h>
#include <unistd.h>

#define MAX_FRAME_PARTS 8
#define MAX_IOV 1024

static bool arg_status(napi_env env, napi_value v, int32_t **status) {
  size_t n;
  *status = NULL;
  if (is_nullish(env, v)) return true;
  if (!arg_int32_array(env, v, "status", status, &n)) return false;
  if (n < 2) return throw_range(env, "status must have at least 2 elements");
  return true;
}

/* Collect an array of byte views into iovecs; returns false on a thrown error. */
static bool arg_iovec(napi_env env, napi_value arr, const char *name, struct iovec *iov, int *count) {
  bool is_array = false;
  uint32_t n;
  if (napi_is_array(env, arr, &is_array) != napi_ok || !is_array)
    return throw_type(env, "%s must be an array of Uint8Array", name);
  napi_get_array_length(env, arr, &n);
  if (n > MAX_IOV) return throw_range(env, "%s has %u parts, at most %d", name, n, MAX_IOV);
  for (uint32_t i = 0; i < n; i++) {
    napi_value el;
    uint8_t *p;
    size_t len;
    if (napi_get_element(env, arr, i, &el) != napi_ok || !arg_bytes(env, el, name, &p, &len)) return false;
    iov[i].iov_base = p;
    iov[i].iov_len = len;
  }
  *count = (int)n;
  return true;
}

static napi_value io_result(napi_env env, ssize_t r, const char *syscall) {
  if (r >= 0) return js_int(env, r);
  if (errno == EAGAIN || errno == EWOULDBLOCK) return js_int(env, -1);
  throw_errno(env, errno, syscall);
  return NULL;
}

static napi_value js_read(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int fd;
  uint8_t *p;
  size_t len;
  ssize_t r;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_bytes(env, argv[1], "buffer", &p, &len)) return NULL;
  do r = read(fd, p, len); while (r < 0 && errno == EINTR);
  return io_result(env, r, "read");
}

static napi_value js_write(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int fd;
  uint8_t *p;
  size_t len;
  ssize_t r;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_bytes(env, argv[1], "buffer", &p, &len)) return NULL;
  do r = write(fd, p, len); while (r < 0 && errno == EINTR);
  return io_result(env, r, "write");
}

static napi_value js_readv(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int fd, n;
  struct iovec iov[MAX_IOV];
  ssize_t r;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_iovec(env, argv[1], "buffers", iov, &n)) return NULL;
  do r = readv(fd, iov, n); while (r < 0 && errno == EINTR);
  return io_result(env, r, "readv");
}

static napi_value js_writev(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int fd, n;
  struct iovec iov[MAX_IOV];
  ssize_t r;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_iovec(env, argv[1], "buffers", iov, &n)) return NULL;
  do r = writev(fd, iov, n); while (r < 0 && errno == EINTR);
  return io_result(env, r, "writev");
}

static napi_value js_read_frames(napi_env env, napi_callback_info info) {
  GET_ARGS(6);
  int fd;
  uint8_t *slab;
  size_t slab_len, nlengths;
  int32_t *lengths, *status;
  int64_t slot, max;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_bytes(env, argv[1], "slab", &slab, &slab_len) ||
      !arg_int(env, argv[2], "slotSize", 1, INT32_MAX, &slot) ||
      !arg_int(env, argv[3], "maxFrames", 0, INT32_MAX, &max) ||
      !arg_int32_array(env, argv[4], "lengths", &lengths, &nlengths) || !arg_status(env, argv[5], &status))
    return NULL;
  if ((size_t)max > nlengths) max = (int64_t)nlengths;
  if ((size_t)max > slab_len / (size_t)slot) max = (int64_t)(slab_len / (size_t)slot);
  int64_t count = 0;
  int err = 0;
  while (count < max) {
    ssize_t r = read(fd, slab + count * slot, (size_t)slot);
    if (r < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    lengths[count++] = (int32_t)r;
    if (r == 0) break; /* end of stream (or an empty datagram): let the caller look */
  }
  if (status) {
    status[0] = err == EWOULDBLOCK ? EAGAIN : err;
    status[1] = 0;
  } else if (count == 0 && err != 0 && err != EAGAIN && err != EWOULDBLOCK) {
    throw_errno(env, err, "read");
    return NULL;
  }
  return js_int(env, count);
}

static napi_value js_write_frames(napi_env env, napi_callback_info info) {
  GET_ARGS(5);
  int fd;
  bool is_array = false;
  uint32_t nparts;
  int64_t per, frames;
  int32_t *status;
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  if (napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array) {
    throw_type(env, "parts must be an array of Uint8Array (or null)");
    return NULL;
  }
  napi_get_array_length(env, argv[1], &nparts);
  if (!arg_int(env, argv[2], "partsPerFrame", 1, MAX_FRAME_PARTS, &per) ||
      !arg_int(env, argv[3], "frameCount", 0, INT32_MAX, &frames) || !arg_status(env, argv[4], &status))
    return NULL;
  if ((uint64_t)frames * (uint64_t)per > nparts) {
    throw_range(env, "parts holds %u entries, fewer than frameCount * partsPerFrame", nparts);
    return NULL;
  }
  int64_t done = 0;
  int err = 0;
  ssize_t partial = 0;
  for (; done < frames; done++) {
    struct iovec iov[MAX_FRAME_PARTS];
    int n = 0;
    size_t total = 0;
    for (int64_t j = 0; j < per; j++) {
      napi_value el;
      uint8_t *p;
      size_t len;
      if (napi_get_element(env, argv[1], (uint32_t)(done * per + j), &el) != napi_ok) return NULL;
      if (is_nullish(env, el)) continue;
      if (!arg_bytes(env, el, "parts[i]", &p, &len)) return NULL;
      if (len == 0) continue;
      iov[n].iov_base = p;
      iov[n].iov_len = len;
      total += len;
      n++;
    }
    if (n == 0) continue; /* nothing to send: an empty frame is not a frame */
    ssize_t r;
    do r = writev(fd, iov, n); while (r < 0 && errno == EINTR);
    if (r < 0) {
      err = errno == EWOULDBLOCK ? EAGAIN : errno;
      break;
    }
    if ((size_t)r < total) {
      err = EAGAIN;
      partial = r;
      break;
    }
  }
  if (status) {
    status[0] = err;
    status[1] = (int32_t)partial;
  } else if (done == 0 && err != 0 && err != EAGAIN) {
    throw_errno(env, err, "writev");
    return NULL;
  }
  return js_int(env, done);
}

bool io_init(napi_env env, napi_value exports) {
  return export_fn(env, exports, "read", js_read) && export_fn(env, exports, "write", js_write) &&
         export_fn(env, exports, "readv", js_readv) && export_fn(env, exports, "writev", js_writev) &&
         export_fn(env, exports, "readFrames", js_read_frames) &&
         export_fn(env, exports, "writeFrames", js_write_frames);
}
