/**
 * VfioUserServer: usernet as a vfio-user *server* (QEMU ≥ 10.1 `vfio-user-pci` is the client):
 * usernet emulates a whole PCI NIC — an RTL8139 — and QEMU forwards the guest's accesses to its
 * configuration space and BARs over a unix socket, maps guest RAM to usernet for DMA, and takes
 * interrupts as eventfds (docs/interop/vfio-user.rst; vfio-user-connection.ts for the messages).
 * The guest's own 8139too driver (device 'rtl8139') or 8139cp driver ('rtl8139cp', the C+ chip
 * with descriptor rings) then programs usernet's registers.
 *
 *   const server = await listenVfioUser({ path: '/run/usernet/vm1-nic.sock' });
 *   server.on('guest', (nic) => {                  // nic: Rtl8139, a Port
 *     const nat = createNatStack(...);             // or a tap
 *     join(nic, nat);                              // nic.offloads: none (rtl8139cp: csum/TSO)
 *     nic.once('close', () => void nat.close());
 *   });
 *
 * QEMU side (vfioUserQemuArgs): guest RAM must be fd-backed and shared so DMA_MAP carries fds —
 *   -object memory-backend-memfd,id=mem,size=512M,share=on -machine q35,memory-backend=mem
 *   -device '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"PATH"}}'
 * (the JSON form: `socket` is a SocketAddress). QEMU connects once at startup and never
 * reconnects; usernet going away is a device error for the guest.
 *
 * One connection at a time per socket (one socket = one device); a second connection while one
 * is alive is refused with a log line. Each connection gets a fresh device, announced with
 * 'guest' once VERSION is negotiated, and closed ('close' on the device, 'disconnect' here) when
 * the connection ends for any reason. A bad client closes only its own connection.
 */
import type { Rtl8139, Rtl8139Options } from '../devices/rtl8139/device';
import { globalMeter, type Meter } from '../meter/meter';
import type { OwnedFd } from '../native';
import { UnixDeviceServer } from './unix-device-server';
import { VfioUserConnection } from './vfio-user-connection';

/** 'rtl8139': an RTL8139C (revision 0x10, Linux 8139too); 'rtl8139cp': an RTL8139C+ (revision
 *  0x20, Linux 8139cp: descriptor rings in guest memory, checksum and TSO offloads). */
export type VfioUserDeviceKind = 'rtl8139' | 'rtl8139cp';
export const VFIO_USER_DEVICES: readonly VfioUserDeviceKind[] = ['rtl8139', 'rtl8139cp'];

export interface VfioUserServerOptions {
  /** Socket path (created; a stale socket left by a dead process is replaced). */
  path: string;
  /** The emulated device (default 'rtl8139'). */
  device?: VfioUserDeviceKind;
  /** Device options: MAC, RX FIFO size, link state. */
  rtl8139?: Omit<Rtl8139Options, 'meter' | 'name'>;
  /** Name for logs and ports (default "vfio-user:" + path). */
  name?: string;
  meter?: Meter;
}

export class VfioUserServer extends UnixDeviceServer<VfioUserConnection> {
  private readonly meter: Meter;

  constructor(private readonly opts: VfioUserServerOptions) {
    super(opts.path, opts.name ?? `vfio-user:${opts.path}`, 'vfio-user');
    if (!VFIO_USER_DEVICES.includes(opts.device ?? 'rtl8139')) throw new RangeError(`unknown vfio-user device "${opts.device}"`);
    this.meter = opts.meter ?? globalMeter;
  }

  /** The device of the live connection once negotiated, else null. */
  get guest(): Rtl8139 | null {
    const c = this.connection;
    return c && c.negotiated && !c.closed ? c.nic : null;
  }

  protected connect(fd: OwnedFd, name: string): VfioUserConnection {
    const variant = this.opts.device === 'rtl8139cp' ? 'rtl8139c+' : this.opts.rtl8139?.variant;
    return new VfioUserConnection(fd, { name, meter: this.meter, device: { ...this.opts.rtl8139, variant } });
  }

  protected announce(conn: VfioUserConnection): void {
    conn.once('ready', () => this.emit('guest', conn.nic, conn));
    conn.once('close', (reason: string) => {
      if (conn.negotiated) this.emit('disconnect', conn.nic, reason);
    });
  }
}

export async function listenVfioUser(opts: VfioUserServerOptions): Promise<VfioUserServer> {
  return new VfioUserServer(opts).listen();
}

/**
 * QEMU arguments that plug a vfio-user PCI device on `path` into the guest. Guest RAM must be a
 * shared memfd as well (`memory-backend-memfd,share=on`: GuestOptions.memfd, or memfdArgs in
 * vhost-user.ts). `noPostedWrites` makes every BAR write wait for a reply (x-no-posted-writes).
 */
export function vfioUserQemuArgs(path: string, opts: { id?: string; noPostedWrites?: boolean; msgTimeoutMs?: number } = {}): string[] {
  const dev: Record<string, unknown> = { driver: 'vfio-user-pci', socket: { type: 'unix', path } };
  if (opts.id) dev.id = opts.id;
  if (opts.noPostedWrites) dev['x-no-posted-writes'] = true;
  if (opts.msgTimeoutMs) dev['x-msg-timeout'] = opts.msgTimeoutMs;
  return ['-device', JSON.stringify(dev)];
}
