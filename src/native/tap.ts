/**
 * tap devices (/dev/net/tun; Documentation/networking/tuntap.rst, include/uapi/linux/if_tun.h).
 *
 * `openTap` is the one-call way: create (or attach to) the device, optionally inside a network
 * namespace, set the vnet header size and offloads, and close the fd again if any step fails.
 * The raw steps are exported too, named as the ioctls:
 *
 *   tapOpen(name, flags, netns)   TUNSETIFF; '' lets the kernel choose the name (tap0, tap1 …)
 *   tapFeatures(fd?)              TUNGETFEATURES (IFF_* flags the kernel supports); without fd
 *                                 a temporary /dev/net/tun fd is used
 *   tapSetVnetHdrSize(fd, n)      TUNSETVNETHDRSZ (10, or 12 to carry virtio num_buffers)
 *   tapGetVnetHdrSize(fd)         TUNGETVNETHDRSZ
 *   tapSetOffload(fd, TUN_F_*)    TUNSETOFFLOAD: the offloads *we* accept on read (with
 *                                 TUN_F_CSUM the kernel may hand us NEEDS_CSUM frames, with TSO4/6
 *                                 64 KiB GSO frames); unknown bits fail with EINVAL
 *   tapInfo(fd)                   TUNGETIFF { name, flags }
 *
 * The fd is non-blocking: one read = one frame, one write = one frame, preceded by the virtio
 * net header when IFF_VNET_HDR is set (io.ts readFrames/writeFrames batch them).
 * Creating a device needs CAP_NET_ADMIN (in the namespace's owning user namespace).
 */
import { addon, type FdLike, type OwnedFd } from './binding';
import { IFF_NO_PI, IFF_TAP, IFF_VNET_HDR } from './constants';
import { netnsPath } from './netns';

export function tapOpen(name: string, flags: number, netns?: string | number | null): { fd: OwnedFd; name: string } {
  return addon.tapOpen(name, flags, netnsPath(netns));
}

export function tapFeatures(fd?: FdLike | null): number {
  return addon.tapFeatures(fd ?? null);
}

export function tapSetVnetHdrSize(fd: FdLike, size: number): void {
  addon.tapSetVnetHdrSize(fd, size);
}

export function tapGetVnetHdrSize(fd: FdLike): number {
  return addon.tapGetVnetHdrSize(fd);
}

export function tapSetOffload(fd: FdLike, flags: number): void {
  addon.tapSetOffload(fd, flags);
}

export function tapInfo(fd: FdLike): { name: string; flags: number } {
  return addon.tapInfo(fd);
}

export interface TapOptions {
  /** Interface name (at most 15 bytes); '' or absent: the kernel picks tapN. */
  name?: string;
  /** TUNSETIFF flags. Default IFF_TAP | IFF_NO_PI | IFF_VNET_HDR. */
  flags?: number;
  /** With IFF_VNET_HDR: TUNSETVNETHDRSZ. Default 12 (virtio 1.x header with num_buffers). */
  vnetHdrSize?: number;
  /** TUNSETOFFLOAD mask (TUN_F_*). Default 0: the kernel checksums and segments for us. */
  offload?: number;
  /** Create the device inside this namespace (name, PID or path). */
  netns?: string | number | null;
}

export interface Tap {
  fd: OwnedFd;
  /** The interface name the kernel assigned. */
  name: string;
  /** The TUNSETIFF flags in effect. */
  flags: number;
  /** TUNGETFEATURES of this kernel. */
  features: number;
  /** Bytes of virtio net header before each frame (0 without IFF_VNET_HDR). */
  vnetHdrSize: number;
  /** The TUNSETOFFLOAD mask set. */
  offload: number;
}

/** Open and configure a tap; on any failure nothing stays open and the error is thrown. */
export function openTap(opts: TapOptions = {}): Tap {
  const flags = opts.flags ?? IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  const { fd, name } = tapOpen(opts.name ?? '', flags, opts.netns);
  try {
    const features = tapFeatures(fd);
    let vnetHdrSize = 0;
    if (flags & IFF_VNET_HDR) {
      vnetHdrSize = opts.vnetHdrSize ?? 12;
      tapSetVnetHdrSize(fd, vnetHdrSize);
    }
    const offload = opts.offload ?? 0;
    if (offload !== 0 || opts.offload !== undefined) tapSetOffload(fd, offload);
    return { fd, name, flags, features, vnetHdrSize, offload };
  } catch (e) {
    fd.close();
    throw e;
  }
}
