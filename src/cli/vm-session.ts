/**
 * One test guest on a usernet made for it, in this process: the library behind `usernet vm`,
 * also used by `make demo` (bench/demo.ts) and the VM benchmark (bench/vm-matrix.ts).
 *
 *   const r = await runGuestOnUsernet({ nic: 'virtio', net: 'nat', command: 'wget -O- http://10.0.2.2:8080/' });
 *   r.exitCode, r.output, r.lease ('10.0.2.15/24'), r.hostAddress ('10.0.2.2')
 *
 * The life of one run (every step undone in reverse on every path, also on throw/abort):
 *   temp folder for sockets → the network (NAT: a stack with the run's NatConfig; its port
 *   forwards open) → the NIC's usernet side (a socket in the temp folder) → runGuest (src/vm:
 *   QEMU boots the guest; its /init gets a DHCP lease — reported through `onLease` — then runs
 *   the command; QEMU is killed by PID on any failure) → close the NIC side, the network, remove
 *   the folder.
 *
 * NICs (`nic`), each a NicDriver — add a kind by adding an entry to NICS:
 *   virtio        usernet's own virtio-net ring over vhost-user (QEMU's virtio-net-pci front-end,
 *                 guest RAM a shared memfd); TSO and checksum offloads end to end
 *   qemu-virtio   QEMU's own virtio-net model, frames over `-netdev stream` (no offloads)
 *   qemu-rtl8139  QEMU's own RTL8139 model over `-netdev stream` (the guest's 8139too driver)
 *                 (no qemu-e1000: the test guest carries no e1000 driver)
 *   rtl8139       usernet's own RTL8139 over vfio-user (QEMU 11 vfio-user-pci, guest RAM a shared
 *                 memfd; the guest's 8139too driver programs usernet's registers); no offloads
 *   rtl8139cp     the same device as an RTL8139C+ (revision 0x20): the guest's 8139cp driver, descriptor
 *                 rings in guest memory, checksum and TSO offloads from the guest
 * Networks (`net`), each a NetworkFactory in NETS:
 *   nat           the user-mode NAT stack (10.0.2.0/24, DHCP, the gateway reaches 127.0.0.1)
 *   bridged       usernet's tap backend on the bridged test network (src/vm/bridged-net.ts:
 *                 a namespace with a bridge, the host side 10.0.3.1 with HTTP and iperf3 servers);
 *                 the guest gets the static address 10.0.3.10/24
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createNatStack, type NatConfig, type NatStack } from '../backends/nat';
import { bridgeToTap, type TapBackend } from '../backends/tap';
import type { VirtioNetDevice } from '../devices/virtio/net-device';
import type { Port } from '../link/port';
import { globalMeter, type Meter } from '../meter/meter';
import { listenQemuStream, type QemuStreamPort } from '../transports/qemu-socket';
import { listenVhostUser } from '../transports/vhost-user';
import { listenVfioUser } from '../transports/vfio-user';
import type { Rtl8139 } from '../devices/rtl8139/device';
import { BridgedNetwork, type BridgedNetworkOptions } from '../vm/bridged-net';
import { allowedCpus, formatCpuList, pinProcess } from '../vm/cpu-affinity';
import { runGuest, type GuestNet, type GuestOptions, type GuestResult, type QemuKind } from '../vm';
import { GuestSegment } from './frontends';
import { nicQemuArgs, nthMac, type QemuNicModel } from './qemu-args';

export const NIC_KINDS = ['virtio', 'qemu-virtio', 'qemu-rtl8139', 'rtl8139', 'rtl8139cp'] as const;
export type NicKind = (typeof NIC_KINDS)[number];
export const NET_KINDS = ['nat', 'bridged'] as const;
export type NetKind = (typeof NET_KINDS)[number];

export type VmSetupErrorCode = 'ERR_NOT_AVAILABLE' | 'ERR_BAD_NIC' | 'ERR_BAD_NET';

/** A run that cannot be set up: the NIC or network kind is unknown or not built yet. */
export class VmSetupError extends Error {
  override readonly name = 'VmSetupError';
  constructor(
    readonly code: VmSetupErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** What the guest is plugged into. */
export interface GuestNetwork {
  kind: NetKind;
  /** How the guest's /init configures eth0. */
  guestNet: GuestNet;
  /** Where the guest reaches the host side (NAT: the gateway, which reaches 127.0.0.1). */
  hostAddress: string;
  /** One line for people. */
  description: string;
  /** Put the guest's NIC port on it. */
  attach(port: Port): void;
  close(): Promise<void>;
  /** The NAT stack, for NAT networks (meter, leases, forwards). */
  stack?: NatStack;
  /** Servers the network brings on its host side (bridged: HTTP and iperf3 in its namespace). */
  servers?: NetworkServers;
  /** The network namespace of the host side (bridged), where more servers may be started. */
  netns?: string;
}

export interface NetworkServers {
  http?: { port: number; path: string; sha256: string; size: number };
  iperfPorts: number[];
}

export interface NetworkOptions {
  /** NAT settings (addresses, --hostfwd, DNS); defaults as QEMU's -netdev user. */
  nat?: Partial<NatConfig>;
  /** The bridged test network's servers (file size, iperf3 servers). */
  bridged?: BridgedNetworkOptions;
  meter: Meter;
}

export type NetworkFactory = (opts: NetworkOptions) => Promise<GuestNetwork>;

async function openNat(opts: NetworkOptions): Promise<GuestNetwork> {
  const stack = createNatStack({ config: opts.nat ?? {}, meter: opts.meter });
  try {
    await stack.ready; // --hostfwd listeners are open (or the port is taken: fail before booting)
  } catch (err) {
    await stack.close();
    throw err;
  }
  const segment = new GuestSegment(stack, { shared: false, meter: opts.meter });
  const c = stack.config;
  return {
    kind: 'nat',
    guestNet: 'dhcp',
    hostAddress: c.gateway,
    description: `NAT ${c.network}/${c.prefixLength}, gateway ${c.gateway} (reaches the host's 127.0.0.1${c.hostLoopback ? '' : ': off'}), DNS ${c.dns}`,
    attach: (port) => segment.attach(port),
    close: async () => {
      await segment.close();
      await stack.close();
    },
    stack,
  };
}

/**
 * The bridged test network (src/vm/bridged-net.ts: a namespace with a bridge, the host side
 * 10.0.3.1/24, an HTTP server and `iperf3 -s` there) with usernet's tap (backends/tap.ts) made
 * inside it and enslaved; the guest gets 10.0.3.10/24. All of it is gone after the run.
 */
async function openBridged(opts: NetworkOptions): Promise<GuestNetwork> {
  const net = await BridgedNetwork.create(opts.bridged);
  let tap: TapBackend;
  try {
    tap = await net.openTap({ meter: opts.meter });
  } catch (err) {
    await net.destroy();
    throw err;
  }
  const servers = [net.http ? `HTTP ${net.http.url} (sha256 ${net.http.sha256.slice(0, 12)}…)` : '', ...net.iperfPorts.map((p) => `iperf3 -s on port ${p}`)].filter(Boolean);
  return {
    kind: 'bridged',
    guestNet: { ip: net.guestAddress(0) },
    hostAddress: net.hostAddress,
    description: `bridged: tap ${tap.ifName} on ${net.bridge} in namespace ${net.netns}; host side ${net.hostAddress}/${net.prefixLength} (${servers.join(', ')}); guest ${net.guestAddress(0)}`,
    attach: (port) => bridgeToTap(port, tap),
    netns: net.netns,
    servers: {
      http: net.http ? { port: net.http.port, path: net.http.path, sha256: net.http.sha256, size: net.http.size } : undefined,
      iperfPorts: [...net.iperfPorts],
    },
    close: async () => {
      await tap.close();
      await net.destroy();
    },
  };
}

/** Network kinds. */
export const NETS: Record<NetKind, NetworkFactory> = {
  nat: openNat,
  bridged: openBridged,
};

export interface NicContext {
  /** A private temp folder for sockets (removed after the run). */
  dir: string;
  network: GuestNetwork;
  meter: Meter;
  mac: string;
  memoryMiB: number;
}

export interface NicAttachment {
  /** The QEMU arguments of the NIC (memory backend not included: `memfd` says so). */
  qemuArgs: string[];
  /** Socket files usernet made for this NIC. */
  sockets: string[];
  close(): Promise<void>;
}

export interface NicDriver {
  description: string;
  /** Which QEMU the NIC needs. */
  qemu: QemuKind;
  /** Guest RAM must be a shared memfd (usernet maps it). */
  memfd: boolean;
  attach(ctx: NicContext): Promise<NicAttachment>;
}

const vhostUserNic: NicDriver = {
  description: "usernet's virtio-net ring over vhost-user",
  qemu: 'host',
  memfd: true,
  async attach(ctx) {
    const sock = path.join(ctx.dir, 'vhost-user.sock');
    const server = await listenVhostUser({ path: sock, meter: ctx.meter, device: { mac: ctx.mac } });
    server.on('guest', (port: VirtioNetDevice) => ctx.network.attach(port));
    // no reconnect: this QEMU lives exactly as long as this usernet
    const args = nicQemuArgs({ kind: 'vhost-user', path: sock }, { mac: ctx.mac, noMemory: true, reconnect: false });
    return { qemuArgs: args, sockets: [sock], close: () => server.close() };
  },
};

function qemuStreamNic(model: QemuNicModel): NicDriver {
  return {
    description: `QEMU's ${model} over -netdev stream`,
    qemu: 'host',
    memfd: false,
    async attach(ctx) {
      const sock = path.join(ctx.dir, 'stream.sock');
      const server = await listenQemuStream({ address: { type: 'unix', path: sock }, meter: ctx.meter });
      server.on('guest', (port: QemuStreamPort) => ctx.network.attach(port));
      const args = nicQemuArgs({ kind: 'qemu-stream', address: server.address }, { model, mac: ctx.mac });
      return { qemuArgs: args, sockets: [sock], close: () => server.close() };
    },
  };
}

/** NIC kinds. */
export const NICS: Record<NicKind, NicDriver> = {
  virtio: vhostUserNic,
  'qemu-virtio': qemuStreamNic('virtio-net-pci'),
  'qemu-rtl8139': qemuStreamNic('rtl8139'),
  rtl8139: {
    description: "usernet's RTL8139 over vfio-user (QEMU 11)",
    qemu: 'v11',
    memfd: true,
    async attach(ctx) {
      const sock = path.join(ctx.dir, 'vfio-user.sock');
      const server = await listenVfioUser({ path: sock, meter: ctx.meter, rtl8139: { mac: ctx.mac } });
      server.on('guest', (nic: Rtl8139) => ctx.network.attach(nic));
      const args = nicQemuArgs({ kind: 'vfio-user', path: sock }, { noMemory: true });
      return { qemuArgs: args, sockets: [sock], close: () => server.close() };
    },
  },
  rtl8139cp: {
    description: "usernet's RTL8139C+ over vfio-user (QEMU 11; the guest's 8139cp driver)",
    qemu: 'v11',
    memfd: true,
    async attach(ctx) {
      const sock = path.join(ctx.dir, 'vfio-user.sock');
      const server = await listenVfioUser({ path: sock, meter: ctx.meter, device: 'rtl8139cp', rtl8139: { mac: ctx.mac } });
      server.on('guest', (nic: Rtl8139) => ctx.network.attach(nic));
      const args = nicQemuArgs({ kind: 'vfio-user', path: sock, device: 'rtl8139cp' }, { noMemory: true });
      return { qemuArgs: args, sockets: [sock], close: () => server.close() };
    },
  },
};

export interface DhcpReport {
  ifName: string;
  /** Address/prefix, or null when DHCP failed. */
  address: string | null;
  how: 'dhcp' | 'static';
}

export interface UsernetGuestOptions extends Omit<GuestOptions, 'network' | 'memfd' | 'qemu' | 'net' | 'command'> {
  /**
   * The guest's command; a function gets the network first (its host address, its servers,
   * its namespace) and may start more servers there before it answers.
   */
  command: string | ((network: GuestNetwork) => string | Promise<string>);
  nic?: NicKind;
  net?: NetKind;
  nat?: Partial<NatConfig>;
  /** Options of the bridged test network (`net: 'bridged'`). */
  bridged?: BridgedNetworkOptions;
  meter?: Meter;
  /** The NIC's MAC (default 52:54:00:12:34:56). */
  mac?: string;
  /** Everything is set up and QEMU is about to start. */
  onNetwork?: (info: { network: GuestNetwork; nic: NicDriver; sockets: string[]; qemuArgs: string[] }) => void;
  /** The guest's /init configured eth0 (or failed to). */
  onLease?: (report: DhcpReport) => void;
}

export interface UsernetGuestResult extends GuestResult {
  nic: NicKind;
  net: NetKind;
  /** eth0's address as /init reported it, null if DHCP failed. */
  lease: string | null;
  hostAddress: string;
  /** The sockets usernet made (all removed by now). */
  sockets: string[];
}

const INIT_NET_LINE = /^usernet-init: t=\S+ (\S+) (dhcp|static) (\S+)/;
const INIT_NO_NIC = /^usernet-init: t=\S+ no interface (\S+)/;

/** Boot the test guest on a usernet started for it; see the file comment. */
export async function runGuestOnUsernet(opts: UsernetGuestOptions): Promise<UsernetGuestResult> {
  const nicKind = opts.nic ?? 'virtio';
  const netKind = opts.net ?? 'nat';
  const nic = NICS[nicKind];
  if (!nic) throw new VmSetupError('ERR_BAD_NIC', `unknown NIC kind ${String(nicKind)} (one of ${NIC_KINDS.join(', ')})`);
  const openNetwork = NETS[netKind];
  if (!openNetwork) throw new VmSetupError('ERR_BAD_NET', `unknown network kind ${String(netKind)} (one of ${NET_KINDS.join(', ')})`);
  const meter = opts.meter ?? globalMeter;
  const memoryMiB = opts.memoryMiB ?? 512;

  const closers: (() => Promise<void>)[] = [];
  const dir = await mkdtemp(path.join(os.tmpdir(), 'usernet-vm-'));
  closers.push(() => rm(dir, { recursive: true, force: true }));
  try {
    const network = await openNetwork({ nat: opts.nat, bridged: opts.bridged, meter });
    closers.push(() => network.close());
    const attachment = await nic.attach({ dir, network, meter, mac: opts.mac ?? nthMac(0), memoryMiB });
    closers.push(() => attachment.close());
    opts.onNetwork?.({ network, nic, sockets: attachment.sockets, qemuArgs: attachment.qemuArgs });

    if (opts.cpus !== undefined) {
      // usernet follows QEMU onto its CPUs (cpu-affinity.ts: vfio-user round trips), and back
      const before = formatCpuList(allowedCpus());
      pinProcess(opts.cpus);
      closers.push(async () => pinProcess(before));
    }
    let lease: string | null = null;
    const { nic: _n, net: _t, nat: _c, bridged: _b, meter: _m, mac: _a, onNetwork: _o, onLease, command, ...guestOpts } = opts;
    const r = await runGuest({
      ...guestOpts,
      command: typeof command === 'function' ? await command(network) : command,
      memoryMiB,
      network: attachment.qemuArgs,
      memfd: nic.memfd,
      qemu: nic.qemu,
      net: network.guestNet,
      onLine: (line, phase) => {
        if (phase === 'boot') {
          const m = INIT_NET_LINE.exec(line);
          if (m) {
            lease = m[3] === 'failed' ? null : m[3];
            onLease?.({ ifName: m[1], address: lease, how: m[2] as 'dhcp' | 'static' });
          }
          const n = INIT_NO_NIC.exec(line);
          if (n) onLease?.({ ifName: n[1], address: null, how: network.guestNet === 'dhcp' ? 'dhcp' : 'static' });
        }
        opts.onLine?.(line, phase);
      },
    });
    return { ...r, nic: nicKind, net: netKind, lease, hostAddress: network.hostAddress, sockets: attachment.sockets };
  } finally {
    for (const close of closers.reverse()) {
      try {
        await close();
      } catch {
        /* keep closing the rest */
      }
    }
  }
}
