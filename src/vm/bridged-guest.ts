/**
 * Test guests in bridged mode: usernet's devices feeding a tap on the bridged test network
 * (bridged-net.ts), the library behind `usernet vm --net bridged`, the bridged VM tests, the
 * demo's bridged row and the benchmark matrix.
 *
 *   const net = await BridgedNetwork.create();
 *   const usernet = await BridgedUsernet.start({ network: net });
 *   const r = await usernet.runGuest({ command: `wget -O- ${net.http!.url} | sha256sum` });
 *   r.exitCode, r.output, r.guestAddress ('10.0.3.10/24'), r.hostAddress ('10.0.3.1')
 *   await usernet.close(); await net.destroy();
 *
 * or in one call, network included: `await runBridgedGuest({ command })`.
 *
 * Wiring. usernet's tap is created by TapBackend inside the network's namespace and enslaved
 * to its bridge. Each guest gets a frontend: `virtio` = usernet's own virtio-net ring over a
 * vhost-user socket (QEMU's virtio-net-pci driven by the guest's virtio driver, guest RAM a
 * shared memfd), `qemu-rtl8139` / `qemu-virtio` = QEMU's NIC model over a `-netdev stream`
 * socket usernet listens on. One guest: its port is joined straight to the tap
 * (backends/tap.ts bridgeToTap: the tap's offloads follow what the guest negotiated, frames cross
 * without a copy in usernet). Several (`switched`): every port is a member of a Switch whose
 * uplink is the tap; the tap follows the switch's offloads (what every member accepts). A guest
 * that reconnects (vhost-user) gets its new port wired the same way; a port that closes leaves.
 *
 * Guests have static addresses on the segment (network.guestAddress(i)), no gateway, and the
 * host side is network.hostAddress — `usernet vm` prints it. Everything this starts (sockets,
 * servers of the frontends, the tap, QEMU) is closed on every path.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bridgeToTap, type TapBackend } from '../backends/tap';
import type { VirtioNetDevice } from '../devices/virtio/net-device';
import { Switch, type SwitchMember } from '../link/switch';
import type { Port } from '../link/port';
import { globalMeter, type Meter } from '../meter/meter';
import { listenQemuStream, qemuStreamArgs, type QemuStreamPort, type QemuStreamServer } from '../transports/qemu-socket';
import { listenVhostUser, vhostUserQemuArgs, type VhostUserServer } from '../transports/vhost-user';
import { BridgedNetwork, type BridgedNetworkOptions } from './bridged-net';
import { runGuest, type GuestOptions, type GuestResult } from './guest';

export type BridgedNic = 'virtio' | 'qemu-virtio' | 'qemu-rtl8139';

export interface BridgedGuestSpec extends Omit<GuestOptions, 'network' | 'net' | 'memfd'> {
  /** Default 'virtio' (usernet's virtio-net over vhost-user). */
  nic?: BridgedNic;
  /** Guest number on the segment: its address is network.guestAddress(index). Default: next free. */
  index?: number;
  /** Default 52:54:00:12:35:<10 + index>. */
  mac?: string;
  /** MTU of the guest's eth0 (default: the network's). */
  mtu?: number;
}

export interface BridgedGuestResult extends GuestResult {
  /** The guest's address with prefix, e.g. 10.0.3.10/24. */
  guestAddress: string;
  /** The host side of the segment, e.g. 10.0.3.1. */
  hostAddress: string;
  nic: BridgedNic;
}

export interface BridgedUsernetOptions {
  network: BridgedNetwork;
  meter?: Meter;
  /** Several guests at once: put them on a Switch (default false: one guest, joined directly). */
  switched?: boolean;
  /** Name of usernet's tap inside the namespace (default: the kernel picks tapN). */
  tapName?: string;
}

/** usernet in bridged mode on a BridgedNetwork: one tap, frontends made per guest. */
export class BridgedUsernet {
  readonly network: BridgedNetwork;
  readonly tap: TapBackend;
  readonly switch: Switch | null;
  readonly meter: Meter;
  /** Every switch port a guest had (kept after it left, for its counters). */
  readonly members: SwitchMember[] = [];
  private readonly dir: string;
  private readonly servers: (VhostUserServer | QemuStreamServer)[] = [];
  private nextIndex = 0;
  private frontends = 0;
  private closed = false;

  private constructor(network: BridgedNetwork, tap: TapBackend, sw: Switch | null, meter: Meter) {
    this.network = network;
    this.tap = tap;
    this.switch = sw;
    this.meter = meter;
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'usernet-bridged-vm-'));
  }

  static async start(opts: BridgedUsernetOptions): Promise<BridgedUsernet> {
    const meter = opts.meter ?? globalMeter;
    const tap = await opts.network.openTap({ meter, ifName: opts.tapName });
    let sw: Switch | null = null;
    if (opts.switched) {
      sw = new Switch({ meter, name: 'bridged-switch', closePorts: false });
      sw.setUplink(tap, { name: `tap:${tap.ifName}` });
      tap.follow(sw);
    }
    return new BridgedUsernet(opts.network, tap, sw, meter);
  }

  /** Wire a guest's port (for its lifetime) to the tap or the switch. */
  private plug(port: Port & { once(e: 'close', l: () => void): unknown }): void {
    if (this.closed) {
      void port.close();
      return;
    }
    if (this.switch) {
      const member = this.switch.attach(port);
      this.members.push(member);
      port.once('close', () => member.detach());
    } else {
      bridgeToTap(port, this.tap);
    }
  }

  /** A vhost-user socket whose guests are plugged in; returns QEMU's NIC arguments. */
  async vhostUserFrontend(mac: string): Promise<string[]> {
    const n = this.frontends++;
    const sock = path.join(this.dir, `vu-${n}.sock`);
    const server = await listenVhostUser({ path: sock, meter: this.meter });
    this.servers.push(server);
    server.on('guest', (port: VirtioNetDevice) => this.plug(port));
    return vhostUserQemuArgs(sock, { mac, id: `usernet${n}` });
  }

  /** A -netdev stream socket (usernet listens) for QEMU's `model` NIC; returns QEMU's arguments. */
  async streamFrontend(model: string, mac: string): Promise<string[]> {
    const n = this.frontends++;
    const sock = path.join(this.dir, `stream-${n}.sock`);
    const server = await listenQemuStream({ address: { type: 'unix', path: sock }, meter: this.meter });
    this.servers.push(server);
    server.on('guest', (port: QemuStreamPort) => this.plug(port));
    return qemuStreamArgs(server.address, { model, mac, id: `usernet${n}` });
  }

  /** Boot the test guest on the segment, run `spec.command`, return its result. */
  async runGuest(spec: BridgedGuestSpec): Promise<BridgedGuestResult> {
    const index = spec.index ?? this.nextIndex++;
    const nic = spec.nic ?? 'virtio';
    const mac = spec.mac ?? `52:54:00:12:35:${(0x10 + index).toString(16).padStart(2, '0')}`;
    const network = nic === 'virtio' ? await this.vhostUserFrontend(mac) : await this.streamFrontend(nic === 'qemu-rtl8139' ? 'rtl8139' : 'virtio-net-pci', mac);
    const guestAddress = this.network.guestAddress(index);
    const { nic: _nic, index: _index, mac: _mac, mtu, ...rest } = spec;
    const result = await runGuest({
      ...rest,
      network,
      memfd: nic === 'virtio',
      net: { ip: guestAddress, mtu: mtu ?? (this.network.mtu !== 1500 ? this.network.mtu : undefined) },
    });
    return { ...result, guestAddress, hostAddress: this.network.hostAddress, nic };
  }

  /** Close the frontends, the switch and the tap. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.servers) await s.close();
    await this.switch?.close();
    await this.tap.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * One guest on a bridged network built for it (or on `network` if given): the whole of
 * `usernet vm --net bridged -- COMMAND`. Everything it made is gone when it returns or throws.
 */
export async function runBridgedGuest(
  spec: BridgedGuestSpec & { network?: BridgedNetwork; networkOptions?: BridgedNetworkOptions; meter?: Meter },
): Promise<BridgedGuestResult> {
  const { network: given, networkOptions, meter, ...guest } = spec;
  const network = given ?? (await BridgedNetwork.create(networkOptions));
  let usernet: BridgedUsernet | null = null;
  try {
    usernet = await BridgedUsernet.start({ network, meter });
    return await usernet.runGuest(guest);
  } finally {
    await usernet?.close();
    if (!given) await network.destroy();
  }
}
