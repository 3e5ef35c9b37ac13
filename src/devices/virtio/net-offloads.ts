/**
 * NetOffloads: what a guest NIC agreed to, in the words a backend needs (virtio 1.x §5.1.3.1,
 * §5.1.6.2–5.1.6.4). "guest*" = frames *towards* the guest may carry them; "host*" = frames
 * *from* the guest may carry them. A backend (the NAT stack, a tap) reads this to decide whether
 * it may build 64 KiB TSO super-frames and leave checksums partial:
 *   guestCsum ⇒ NEEDS_CSUM frames (partial checksum) and DATA_VALID are allowed towards the guest
 *   guestTso4 / guestTso6 ⇒ GSO_TCPV4 / GSO_TCPV6 super-frames are allowed towards the guest
 *   guestEcn ⇒ the GSO_ECN bit may be set; guestUfo ⇒ GSO_UDP
 * Ports that model a NIC expose it as `offloads` and emit 'offloads' when it changes (a guest
 * driver reload re-negotiates).
 */
export interface NetOffloads {
  guestCsum: boolean;
  guestTso4: boolean;
  guestTso6: boolean;
  guestEcn: boolean;
  guestUfo: boolean;
  hostCsum: boolean;
  hostTso4: boolean;
  hostTso6: boolean;
  hostEcn: boolean;
  hostUfo: boolean;
  /** Mergeable receive buffers: any frame size fits, split over several guest buffers. */
  mergeableRx: boolean;
  /** Largest frame (Ethernet header included, no vnet header) the guest can take without GSO. */
  maxRxFrame: number;
}

export const NO_OFFLOADS: Readonly<NetOffloads> = Object.freeze({
  guestCsum: false,
  guestTso4: false,
  guestTso6: false,
  guestEcn: false,
  guestUfo: false,
  hostCsum: false,
  hostTso4: false,
  hostTso6: false,
  hostEcn: false,
  hostUfo: false,
  mergeableRx: false,
  maxRxFrame: 1514,
});

/** A Port whose peer is a NIC model with negotiated offloads. */
export interface OffloadAware {
  readonly offloads: Readonly<NetOffloads>;
  on(event: 'offloads', listener: (o: Readonly<NetOffloads>) => void): this;
}

export function isOffloadAware(x: unknown): x is OffloadAware {
  return typeof x === 'object' && x !== null && 'offloads' in x && typeof (x as { on?: unknown }).on === 'function';
}
