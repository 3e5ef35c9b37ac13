/*
 * tap devices through /dev/net/tun (Linux Documentation/networking/tuntap.rst,
 * include/uapi/linux/if_tun.h).
 *
 *   tapOpen(name, flags, netnsPath) -> { fd: OwnedFd, name }
 *     open("/dev/net/tun", O_RDWR|O_NONBLOCK|O_CLOEXEC) then TUNSETIFF with `flags`
 *     (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR is what a VM backend wants); an empty name lets the kernel
 *     pick one (tap%d), which is returned. The device belongs to the namespace the fd was opened
 *     in, so with netnsPath the open and TUNSETIFF happen inside that namespace (netns.c).
 *   tapFeatures(fd?)            TUNGETFEATURES: the IFF_* flags this kernel supports
 *   tapSetVnetHdrSize(fd, n)    TUNSETVNETHDRSZ (>= 10; 12 when virtio num_buffers is carried)
 *   tapGetVnetHdrSize(fd)       TUNGETVNETHDRSZ
 *   tapSetOffload(fd, flags)    TUNSETOFFLOAD: the TUN_F_* offloads *we* accept on read; the
 *                               kernel rejects unknown bits with EINVAL (how QEMU probes USO)
 *   tapInfo(fd)                 TUNGETIFF: { name, flags }
 *
 * Each read() of the fd returns one frame and each write() sends one; with IFF_VNET_HDR every
 * frame is preceded by a virtio_net_hdr of the configured size (see io.c for batching).
 */
#include "common.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

static napi_value js_tap_open(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  char name[IFNAMSIZ], ns[4096];
  int64_t flags;
  netns_guard guard;
  struct ifreq ifr;
  int fd, err = 0;
  if (!arg_string(env, argv[0], "name", name, sizeof name, NULL, true, NULL) ||
      !arg_int(env, argv[1], "flags", 0, 0xffff, &flags) ||
      !arg_string(env, argv[2], "netns", ns, sizeof ns, NULL, true, NULL))
    return NULL;
  if (!netns_enter(env, ns, &guard)) return NULL;
  fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    err = errno;
  } else {
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, name, strlen(name));
    ifr.ifr_flags = (short)flags;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
      err = errno;
      close(fd);
    }
  }
  netns_leave(&guard);
  if (err) {
    throw_errno(env, err, fd < 0 ? "open /dev/net/tun" : "ioctl TUNSETIFF");
    return NULL;
  }
  napi_value owned = owned_fd_new(env, fd);
  if (!owned) return NULL;
  char got[IFNAMSIZ + 1];
  memcpy(got, ifr.ifr_name, IFNAMSIZ);
  got[IFNAMSIZ] = 0;
  napi_value result = js_object(env);
  if (!set_prop(env, result, "fd", owned) || !set_prop(env, result, "name", js_str(env, got))) {
    /* the OwnedFd is unreachable now: its finalizer closes the fd */
    return NULL;
  }
  return result;
}

static napi_value js_tap_features(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  int fd, own = -1;
  unsigned int features = 0;
  if (is_nullish(env, argv[0])) {
    own = fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      throw_errno(env, errno, "open /dev/net/tun");
      return NULL;
    }
  } else if (!arg_fd(env, argv[0], "fd", &fd)) {
    return NULL;
  }
  int r = ioctl(fd, TUNGETFEATURES, &features);
  int err = errno;
  close_quietly(own);
  if (r < 0) {
    throw_errno(env, err, "ioctl TUNGETFEATURES");
    return NULL;
  }
  return js_int(env, features);
}

static napi_value js_tap_set_vnet_hdr_size(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int fd;
  int64_t size;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_int(env, argv[1], "size", 0, INT32_MAX, &size)) return NULL;
  int sz = (int)size;
  if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) {
    throw_errno(env, errno, "ioctl TUNSETVNETHDRSZ");
    return NULL;
  }
  return js_undefined(env);
}

static napi_value js_tap_get_vnet_hdr_size(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  int fd, sz = 0;
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  if (ioctl(fd, TUNGETVNETHDRSZ, &sz) < 0) {
    throw_errno(env, errno, "ioctl TUNGETVNETHDRSZ");
    return NULL;
  }
  return js_int(env, sz);
}

static napi_value js_tap_set_offload(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int fd;
  int64_t flags;
  if (!arg_fd(env, argv[0], "fd", &fd) || !arg_int(env, argv[1], "flags", 0, UINT32_MAX, &flags)) return NULL;
  if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0) {
    throw_errno(env, errno, "ioctl TUNSETOFFLOAD");
    return NULL;
  }
  return js_undefined(env);
}

static napi_value js_tap_info(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  int fd;
  struct ifreq ifr;
  char name[IFNAMSIZ + 1];
  if (!arg_fd(env, argv[0], "fd", &fd)) return NULL;
  memset(&ifr, 0, sizeof ifr);
  if (ioctl(fd, TUNGETIFF, &ifr) < 0) {
    throw_errno(env, errno, "ioctl TUNGETIFF");
    return NULL;
  }
  memcpy(name, ifr.ifr_name, IFNAMSIZ);
  name[IFNAMSIZ] = 0;
  napi_value r = js_object(env);
  set_prop(env, r, "name", js_str(env, name));
  set_prop(env, r, "flags", js_int(env, (unsigned short)ifr.ifr_flags));
  return r;
}

bool tap_init(napi_env env, napi_value exports) {
  return export_fn(env, exports, "tapOpen", js_tap_open) &&
         export_fn(env, exports, "tapFeatures", js_tap_features) &&
         export_fn(env, exports, "tapSetVnetHdrSize", js_tap_set_vnet_hdr_size) &&
         export_fn(env, exports, "tapGetVnetHdrSize", js_tap_get_vnet_hdr_size) &&
         export_fn(env, exports, "tapSetOffload", js_tap_set_offload) &&
         export_fn(env, exports, "tapInfo", js_tap_info) &&
         export_int(env, exports, "IFF_TUN", IFF_TUN) && export_int(env, exports, "IFF_TAP", IFF_TAP) &&
         export_int(env, exports, "IFF_NO_PI", IFF_NO_PI) &&
         export_int(env, exports, "IFF_VNET_HDR", IFF_VNET_HDR) &&
         export_int(env, exports, "IFF_MULTI_QUEUE", IFF_MULTI_QUEUE) &&
         export_int(env, exports, "IFF_NAPI", IFF_NAPI) &&
         export_int(env, exports, "IFF_NO_CARRIER", 0x0040) &&
         export_int(env, exports, "TUN_F_CSUM", TUN_F_CSUM) && export_int(env, exports, "TUN_F_TSO4", TUN_F_TSO4) &&
         export_int(env, exports, "TUN_F_TSO6", TUN_F_TSO6) &&
         export_int(env, exports, "TUN_F_TSO_ECN", TUN_F_TSO_ECN) &&
         export_int(env, exports, "TUN_F_UFO", TUN_F_UFO) && export_int(env, exports, "TUN_F_USO4", TUN_F_USO4) &&
         export_int(env, exports, "TUN_F_USO6", TUN_F_USO6);
}
