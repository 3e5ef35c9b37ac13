/**
 * The netns transport (what slirp4netns and pasta do): a tap device inside a Linux network
 * namespace, opened from outside through the native addon, is a Port. The namespace's kernel
 * is the "guest": what it sends out of the tap arrives here as Frames; what usernet sends is
 * written to the tap and received by that kernel.
 *
 * Namespace: given as a name (/var/run/netns/NAME, as `ip netns add` makes), a PID
 * (/proc/PID/ns/net) or a path to a namespace handle. The addon enters it only for the
 * open + TUNSETIFF (a tap belongs to the namespace it was created in, for life).
 *
 * Device: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR with a 12-byte virtio_net_hdr (virtio 1.x layout,
 * num_buffers included and ignored) and TUNSETOFFLOAD CSUM|TSO4|TSO6|TSO_ECN, so the namespace
 * hands us 64 KiB TSO super-frames with partial checksums, exactly like a virtio-net guest with
 * GSO (Documentation/networking/tuntap.rst; include/uapi/linux/if_tun.h). Each read is one
 * frame preceded by its vnet header, parsed into the Frame's metadata (readVnetHeader); each
 * write is one frame preceded by a header written from the Frame's metadata, so GSO frames and
 * NEEDS_CSUM frames go to the kernel as they are and the kernel segments / checksums them.
 *
 * I/O (link/tap-port.ts, shared with the bridged backend): batched reads through a reused slab
 * into one handler call per batch, batched writes of [vnet header, frame] with no copy in usernet,
 * drops counted when the tap would block; meter stages `netns.tap.read` and `netns.tap.write`
 * (meter/stages.ts; the bridged backend's tap keeps `tap.read` / `tap.write`). A read error
 * other than EAGAIN (the device was removed, e.g. the namespace died) ends the port: `down`
 * resolves with the error and the port closes itself.
 */
import type { Meter } from '../meter/meter';
import { netnsPath } from '../native/netns';
import { TapPort, openTapDevice } from '../link/tap-port';
import { TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN } from '../native/constants';

export interface NetnsTapOptions {
  /** Namespace: a name, a PID, or a path (see resolveNetns). */
  netns: string;
  /** Interface name inside the namespace. Default `tap0`. */
  ifName?: string;
  /** Frames read per call into C. Default 64. */
  batch?: number;
  /** Read batches per readiness callback before yielding to the event loop. Default 8. */
  burst?: number;
  /** Ask for TSO/checksum offloads. Default true. */
  offloads?: boolean;
  meter?: Meter;
}

export interface NetnsHandle {
  /** The path the addon opens: /var/run/netns/NAME, /proc/PID/ns/net, or as given. */
  path: string;
  /** The name, when given by name (for /etc/netns/NAME). */
  name?: string;
}

/** `NAME` | `PID` | `/path/to/ns` → the namespace handle path. */
export function resolveNetns(spec: string): NetnsHandle {
  const path = netnsPath(spec);
  if (path === null) throw Object.assign(new Error('--netns: empty namespace'), { code: 'EINVAL' });
  if (/^\d+$/.test(spec) || spec.includes('/')) return { path };
  if (!/^[A-Za-z0-9_.-]+$/.test(spec) || spec === '.' || spec === '..') {
    throw Object.assign(new Error(`--netns: "${spec}" is not a namespace name, PID or path`), { code: 'EINVAL' });
  }
  return { path, name: spec };
}

export class NetnsTapPort extends TapPort {
  readonly netns: NetnsHandle;

  private constructor(tap: ReturnType<typeof openTapDevice>, netns: NetnsHandle, opts: NetnsTapOptions) {
    super(tap, { name: `netns:${netns.name ?? netns.path}:${tap.ifName}`, batch: opts.batch, burst: opts.burst, meter: opts.meter, stagePrefix: 'netns.tap' });
    this.netns = netns;
  }

  /** Open (create) the tap inside the namespace and start reading. */
  static open(opts: NetnsTapOptions): NetnsTapPort {
    const netns = resolveNetns(opts.netns);
    const ifName = opts.ifName ?? 'tap0';
    if (ifName.length > 15) throw Object.assign(new Error(`--tap-name: "${ifName}" is longer than 15 characters`), { code: 'EINVAL' });
    // the namespace's kernel is the guest: TCP GSO and partial checksums come through whole
    // (the NAT stack handles them); TSO_ECN is dropped by openTapDevice if the kernel refuses it
    const offload = opts.offloads === false ? 0 : TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
    const tap = openTapDevice({ ifName, netns: netns.path, offload });
    try {
      return new NetnsTapPort(tap, netns, opts);
    } catch (err) {
      tap.fd.close();
      throw err;
    }
  }
}
