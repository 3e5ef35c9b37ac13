/**
 * virtio feature bits used by usernet's devices (virtio 1.x §6 "Reserved Feature Bits", §5.1.3
 * "virtio-net Feature bits"; linux/virtio_config.h, linux/virtio_net.h, linux/virtio_ring.h).
 * Features are 64-bit; they are handled as bigint at negotiation time only, never per packet.
 */

export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 2;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
export const VIRTIO_NET_F_GUEST_ECN = 9;
export const VIRTIO_NET_F_GUEST_UFO = 10;
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_HOST_TSO6 = 12;
export const VIRTIO_NET_F_HOST_ECN = 13;
export const VIRTIO_NET_F_HOST_UFO = 14;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_F_CTRL_VQ = 17;
export const VIRTIO_NET_F_GUEST_ANNOUNCE = 21;
export const VIRTIO_NET_F_MQ = 22;

export const VIRTIO_F_NOTIFY_ON_EMPTY = 24;
export const VIRTIO_F_ANY_LAYOUT = 27;
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
export const VIRTIO_RING_F_EVENT_IDX = 29;
/** vhost-user reuses the virtio "UNUSED" bit 30 to announce protocol features. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;

/** virtio-net config `status` bits (§5.1.4). */
export const VIRTIO_NET_S_LINK_UP = 1;
export const VIRTIO_NET_S_ANNOUNCE = 2;

/** Device status bits (§2.1). */
export const VIRTIO_STATUS_ACKNOWLEDGE = 1;
export const VIRTIO_STATUS_DRIVER = 2;
export const VIRTIO_STATUS_DRIVER_OK = 4;
export const VIRTIO_STATUS_FEATURES_OK = 8;
export const VIRTIO_STATUS_DEVICE_NEEDS_RESET = 0x40;
export const VIRTIO_STATUS_FAILED = 0x80;

export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

export function hasBit(features: bigint, n: number): boolean {
  return (features & bit(n)) !== 0n;
}

export function bits(...ns: number[]): bigint {
  let f = 0n;
  for (const n of ns) f |= bit(n);
  return f;
}

/** Names for logs and `usernet stats`. */
const NAMES: Record<number, string> = {
  [VIRTIO_NET_F_CSUM]: 'CSUM',
  [VIRTIO_NET_F_GUEST_CSUM]: 'GUEST_CSUM',
  [VIRTIO_NET_F_CTRL_GUEST_OFFLOADS]: 'CTRL_GUEST_OFFLOADS',
  [VIRTIO_NET_F_MTU]: 'MTU',
  [VIRTIO_NET_F_MAC]: 'MAC',
  [VIRTIO_NET_F_GUEST_TSO4]: 'GUEST_TSO4',
  [VIRTIO_NET_F_GUEST_TSO6]: 'GUEST_TSO6',
  [VIRTIO_NET_F_GUEST_ECN]: 'GUEST_ECN',
  [VIRTIO_NET_F_GUEST_UFO]: 'GUEST_UFO',
  [VIRTIO_NET_F_HOST_TSO4]: 'HOST_TSO4',
  [VIRTIO_NET_F_HOST_TSO6]: 'HOST_TSO6',
  [VIRTIO_NET_F_HOST_ECN]: 'HOST_ECN',
  [VIRTIO_NET_F_HOST_UFO]: 'HOST_UFO',
  [VIRTIO_NET_F_MRG_RXBUF]: 'MRG_RXBUF',
  [VIRTIO_NET_F_STATUS]: 'STATUS',
  [VIRTIO_NET_F_CTRL_VQ]: 'CTRL_VQ',
  [VIRTIO_NET_F_GUEST_ANNOUNCE]: 'GUEST_ANNOUNCE',
  [VIRTIO_NET_F_MQ]: 'MQ',
  [VIRTIO_F_NOTIFY_ON_EMPTY]: 'NOTIFY_ON_EMPTY',
  [VIRTIO_F_ANY_LAYOUT]: 'ANY_LAYOUT',
  [VIRTIO_RING_F_INDIRECT_DESC]: 'INDIRECT_DESC',
  [VIRTIO_RING_F_EVENT_IDX]: 'EVENT_IDX',
  [VHOST_USER_F_PROTOCOL_FEATURES]: 'PROTOCOL_FEATURES',
  [VIRTIO_F_VERSION_1]: 'VERSION_1',
  [VIRTIO_F_ACCESS_PLATFORM]: 'ACCESS_PLATFORM',
  [VIRTIO_F_RING_PACKED]: 'RING_PACKED',
};

export function featureNames(features: bigint): string[] {
  const out: string[] = [];
  for (let n = 0; n < 64; n++) if (hasBit(features, n)) out.push(NAMES[n] ?? `bit${n}`);
  return out;
}
