/**
 * VhostUserServer: usernet as a vhost-user *back-end* for QEMU's virtio-net (`-netdev
 * vhost-user`): it listens on a unix stream socket, and the guest's own virtio-net driver then
 * moves frames through rings in guest memory that usernet maps (docs/interop/vhost-user.rst).
 *
 *   const server = await listenVhostUser({ path: '/run/usernet/vm1.sock' });
 *   server.on('guest', (port) => {               // port: VirtioNetDevice, a Port
 *     const nat = createNatStack(...);            // or a tap
 *     join(port, nat.guestPort);                  // port.offloads says what the guest accepts
 *     port.once('close', () => void nat.close()); // QEMU went away: drop this guest's flows
 *   });
 *   …
 *   await server.close();
 *
 * QEMU side: -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem
 *            -chardev socket,id=c,path=PATH[,reconnect=1] -netdev vhost-user,id=n,chardev=c
 *            -device virtio-net-pci,netdev=n
 *
 * One connection at a time per socket (one socket = one VM's NIC); one process serves several
 * VMs with one server per path. A connection that arrives while another is alive is refused
 * with a log line (after checking the old one is not already dead — QEMU reconnecting after
 * being killed races with our noticing the EOF). Each accepted connection gets a fresh device
 * (a new connection resets the device, as after `reconnect=1`), announced with 'guest' once
 * QEMU has sent SET_FEATURES (so `port.offloads` is meaningful), and closed — 'close' on the
 * port, 'disconnect' here — when the connection ends for any reason.
 *
 * Events: 'guest' (port: VirtioNetDevice, connection: VhostUserConnection),
 *         'disconnect' (port, reason), 'error' is never emitted for bad peers (they are logged
 *         and dropped); listen() rejects if the socket cannot be created.
 */
import type { VirtioNetDevice, VirtioNetOptions } from '../devices/virtio/net-device';
import { globalMeter, type Meter } from '../meter/meter';
import type { OwnedFd } from '../native';
import { UnixDeviceServer } from './unix-device-server';
import { VhostUserConnection } from './vhost-user-connection';

export interface VhostUserServerOptions {
  /** Socket path (created; a stale socket file left by a dead process is replaced). */
  path: string;
  /** Name for logs and ports (default "vhost-user:" + path). */
  name?: string;
  meter?: Meter;
  /** Device options: features offered, MAC, MTU, RX backlog. */
  device?: Omit<VirtioNetOptions, 'memory' | 'name' | 'meter'>;
}

export class VhostUserServer extends UnixDeviceServer<VhostUserConnection> {
  private readonly meter: Meter;

  constructor(private readonly opts: VhostUserServerOptions) {
    super(opts.path, opts.name ?? `vhost-user:${opts.path}`, 'vhost-user');
    this.meter = opts.meter ?? globalMeter;
  }

  /** The device of the live connection once announced, else null. */
  get guest(): VirtioNetDevice | null {
    const c = this.connection;
    return c && c.ready && !c.closed ? c.device : null;
  }

  protected connect(fd: OwnedFd, name: string): VhostUserConnection {
    return new VhostUserConnection(fd, { name, meter: this.meter, device: this.opts.device });
  }

  protected announce(conn: VhostUserConnection): void {
    conn.once('ready', (port: VirtioNetDevice) => this.emit('guest', port, conn));
    conn.once('close', (reason: string) => {
      if (conn.ready) this.emit('disconnect', conn.device, reason);
    });
  }
}

/**
 * The QEMU arguments that put a virtio-net-pci NIC on a usernet vhost-user socket (guest RAM
 * must be shared: `memfdArgs`). `qemuMajor` < 8 under TCG: QEMU 7.2 crashes (SIGSEGV in
 * virtio_pci_vector_unmask: it takes the KVM irqfd path for a vhost-user NIC's MSI-X vectors
 * and there is no irqfd table under TCG), so the NIC then gets `vectors=0` (INTx).
 */
export function vhostUserQemuArgs(
  path: string,
  opts: { id?: string; mac?: string; reconnectSeconds?: number; qemuMajor?: number; tcg?: boolean } = {},
): string[] {
  const id = opts.id ?? 'usernet0';
  const needsIntx = (opts.qemuMajor ?? 7) < 8 && (opts.tcg ?? true);
  const reconnect = opts.reconnectSeconds ? `,reconnect=${opts.reconnectSeconds}` : '';
  return [
    '-chardev',
    `socket,id=${id}-chr,path=${path}${reconnect}`,
    '-netdev',
    `vhost-user,id=${id},chardev=${id}-chr`,
    '-device',
    `virtio-net-pci,netdev=${id}${needsIntx ? ',vectors=0' : ''}${opts.mac ? `,mac=${opts.mac}` : ''}`,
  ];
}

/** Guest RAM as a shared memfd of `mib` MiB (what a vhost-user back-end maps); q35 machine. */
export function memfdArgs(mib: number, machine = 'q35'): string[] {
  return ['-m', `${mib}M`, '-object', `memory-backend-memfd,id=usernet-mem,size=${mib}M,share=on`, '-machine', `${machine},memory-backend=usernet-mem`];
}

/** Create and start a server. */
export async function listenVhostUser(opts: VhostUserServerOptions): Promise<VhostUserServer> {
  return new VhostUserServer(opts).listen();
}
