/**
 * TapBackend: bridged mode. Frames from any frontend (a virtio-net ring over vhost-user, QEMU's
 * own NIC over a stream socket, a Switch of several guests) are written to a Linux tap device,
 * and frames the kernel sends out of the tap go back to them — the guest becomes a host on
 * whatever L2 segment the tap is enslaved to (a bridge, usually). Opened through the native
 * addon, optionally inside a network namespace (the device then lives there for life and
 * vanishes when the fd is closed). The I/O is link/tap-port.ts: batched reads through a reused
 * slab, batched writes of [vnet header, frame] with the frame bytes as the frontend's own views
 * (no copy in usernet; the kernel's one copy is counted with Stage.copied), meter stages
 * `tap.read` and `tap.write`.
 *
 * Offloads pass through untouched, the way QEMU maps virtio-net onto tap (QEMU net/tap.c
 * tap_fd_set_offload; virtio 1.x §5.1.3.1; protocols.md §6):
 *   towards the kernel — a frame keeps its virtio_net_hdr meaning: a 64 KiB TSO frame from the
 *     guest is ONE write with its GSO header, a partial checksum stays partial; the kernel
 *     segments/checksums it on the way out of the bridge, or delivers it whole to a local socket.
 *   towards the guest — TUNSETOFFLOAD is what the guest side negotiated: GUEST_CSUM → TUN_F_CSUM,
 *     GUEST_TSO4/6 → TUN_F_TSO4/6, GUEST_ECN → TUN_F_TSO_ECN, GUEST_UFO → TUN_F_UFO. So the
 *     kernel's GSO frames reach a TSO-capable guest as one Frame, and a guest without offloads
 *     (QEMU's rtl8139 over a stream socket) gets frames the kernel has already segmented and
 *     checksummed. `follow(peer)` keeps the mask in step with an offload-aware peer (a virtio
 *     device re-negotiating, a Switch whose member set changes); a peer that is not
 *     offload-aware gets no offloads.
 *
 * Backpressure, both ways, with no queue of our own:
 *   guest → tap: a write that would block drops the frame and the rest of its batch (`tap.write`
 *     drop reason `tap-full`); a frame the kernel refuses is dropped alone and counted by errno.
 *   tap → guest: a peer that can say it is full (`RxBackpressure`: `rxBlocked` and an
 *     'rx-unblocked' event) pauses reading after the batch that filled it, so frames wait in
 *     the kernel's tap queue and beyond its length are dropped by the kernel and counted there
 *     (the tap's tx_dropped), exactly like a NIC with a full ring; reading resumes on
 *     'rx-unblocked'. Without that signal, reads are bounded per wakeup (batch × burst) and the
 *     peer's own bounded queue drops and counts (VirtioNetDevice: `guest.rx` `rx-backlog-full`).
 *   Either way usernet holds at most one slab of frames from the tap.
 *
 * States: open (reading ⇄ paused) → closed. Bad frames never throw; they are counted drops.
 */
import { isOffloadAware, NO_OFFLOADS, type NetOffloads, type OffloadAware } from '../devices/virtio/net-offloads';
import type { Frame } from '../link/frame';
import { TapPort, openTapDevice } from '../link/tap-port';
import { hasRxBackpressure, join, type Port, type RxBackpressure } from '../link/port';
import { observing, type Meter } from '../meter/meter';
import { tracer } from '../meter/trace';
import { log } from '../log';
import { TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO } from '../native/constants';

export interface TapBackendOptions {
  /** Interface name (≤ 15 bytes). '' or absent: the kernel picks tapN. An existing persistent
   *  tap of that name (made with `ip tuntap add … mode tap vnet_hdr`) is attached to instead. */
  ifName?: string;
  /** Create the device inside this network namespace: a name (ip netns), a PID or a path. */
  netns?: string | number | null;
  /** What the guest side accepts to begin with (default none: the kernel segments and checksums). */
  offloads?: Readonly<NetOffloads>;
  /** Frames per read call (default 64) and read batches per wakeup (default 8). */
  batch?: number;
  burst?: number;
  meter?: Meter;
  /** Port name (default `tap:<ifName>`). */
  name?: string;
}

/** The TUNSETOFFLOAD mask for a guest side that accepts `o` (what QEMU sets for virtio-net). */
export function tapOffloadMask(o: Readonly<NetOffloads>): number {
  if (!o.guestCsum) return 0;
  let mask = TUN_F_CSUM;
  if (o.guestTso4) mask |= TUN_F_TSO4;
  if (o.guestTso6) mask |= TUN_F_TSO6;
  if (o.guestEcn && (o.guestTso4 || o.guestTso6)) mask |= TUN_F_TSO_ECN;
  if (o.guestUfo) mask |= TUN_F_UFO;
  return mask;
}

export class TapBackend extends TapPort {
  /** The namespace the device lives in (as given), or null for this process's own. */
  readonly netns: string | number | null;
  private guestOffloads: Readonly<NetOffloads>;
  private unfollow: (() => void) | null = null;
  private pressure: RxBackpressure | null = null;
  private readonly onUnblocked = (): void => this.resumeReading();

  private constructor(tap: ReturnType<typeof openTapDevice>, opts: TapBackendOptions, offloads: Readonly<NetOffloads>) {
    super(tap, { name: opts.name ?? `tap:${tap.ifName}`, batch: opts.batch, burst: opts.burst, meter: opts.meter });
    this.netns = opts.netns ?? null;
    this.guestOffloads = offloads;
  }

  /** Create (or attach to) the tap and start reading. Throws a coded error when it cannot. */
  static open(opts: TapBackendOptions = {}): TapBackend {
    const offloads = opts.offloads ?? NO_OFFLOADS;
    const tap = openTapDevice({ ifName: opts.ifName ?? '', netns: opts.netns, offload: tapOffloadMask(offloads) });
    try {
      return new TapBackend(tap, opts, offloads);
    } catch (err) {
      tap.fd.close();
      throw err;
    }
  }

  /** The guest-side offloads the TUNSETOFFLOAD mask was derived from. */
  get offloads(): Readonly<NetOffloads> {
    return this.guestOffloads;
  }

  /** The guest side now accepts `o`: ask the kernel for matching frames. Returns the mask set. */
  setGuestOffloads(o: Readonly<NetOffloads>): number {
    this.guestOffloads = o;
    const want = tapOffloadMask(o);
    const got = this.setOffload(want);
    if (got !== want) log.info({ port: this.name, want, got }, 'tap: the kernel refused some offloads; it segments/checksums those itself');
    return got;
  }

  /**
   * Take the offloads (and receive backpressure, if it has any) from the port the tap's frames
   * go to. A port that is not offload-aware gets plain frames. Replaces an earlier follow.
   */
  follow(peer: object): void {
    this.unfollow?.();
    this.unfollow = null;
    if (isOffloadAware(peer)) {
      const aware: OffloadAware = peer;
      const apply = (o: Readonly<NetOffloads>): void => void this.setGuestOffloads(o);
      apply(aware.offloads);
      aware.on('offloads', apply);
      const emitter = peer as unknown as { off?(e: string, l: (o: Readonly<NetOffloads>) => void): unknown };
      this.unfollow = () => emitter.off?.('offloads', apply);
    } else {
      this.setGuestOffloads(NO_OFFLOADS);
    }
    if (this.pressure) this.pressure.off('rx-unblocked', this.onUnblocked);
    this.pressure = hasRxBackpressure(peer) ? peer : null;
    this.pressure?.on('rx-unblocked', this.onUnblocked);
  }

  override onReceive(handler: (frames: readonly Frame[]) => void): void {
    super.onReceive((frames) => {
      handler(frames);
      // packet traces: a guest port without egress trace calls (the RTL8139 model) took them
      if (observing.on) for (let i = 0; i < frames.length; i++) tracer.handedOff(frames[i]);
      // the batch that filled the receiver is delivered; the next ones wait in the kernel
      if (this.pressure?.rxBlocked) this.pauseReading();
    });
  }

  override async close(reason: Error | null = null): Promise<void> {
    this.unfollow?.();
    this.unfollow = null;
    this.pressure?.off('rx-unblocked', this.onUnblocked);
    this.pressure = null;
    await super.close(reason);
  }
}

/** Wire a guest-side port to a tap: frames both ways, offloads and backpressure followed. */
export function bridgeToTap(guest: Port, tap: TapBackend): void {
  tap.follow(guest);
  join(guest, tap);
}
