/**
 * The VM frontends of `usernet run`: `--vhost-user PATH` (usernet's virtio-net ring; QEMU's
 * `-netdev vhost-user`), `--qemu-stream ADDR` / `--qemu-stream-connect ADDR` (QEMU's own NIC over
 * `-netdev stream`, usernet listening or connecting) and `--qemu-dgram PATH` (`-netdev dgram`),
 * each repeatable and freely mixed, all joined to one backend (today the NAT stack).
 *
 * One stack for every guest (not one per guest): the guests are hosts on one virtual segment
 * 10.0.2.0/24 as QEMU users know it, each with its own DHCP lease (distinct MACs → 10.0.2.15,
 * .16, …), sharing the gateway, the DNS forwarder and the port forwards — and two guests can
 * reach each other. The segment (GuestSegment) is
 *   direct   exactly one frontend that serves one guest at a time (the common case and the
 *            fast path): the guest's Port is joined back to back with the stack, which follows
 *            that guest's offloads (checksum/TSO) as it (re)negotiates;
 *   switched otherwise: a learning Switch (src/link/switch.ts) with the stack as its uplink; the
 *            stack follows the switch's offloads (what *every* guest accepts), and the switch
 *            segments/checksums in software for a guest that takes less.
 * A guest that leaves (QEMU exits, vhost-user disconnects) is detached; its NAT flows end when
 * their host sockets do. A vhost-user VM that reconnects gets a fresh device on the same socket.
 *
 * `serveFrontends` is `usernet run`'s lifecycle for these frontends: NatConfig → stack → segment
 * → frontends (each prints the QEMU arguments to paste, see qemu-args.ts) → control socket →
 * `ready` line → serve until SIGINT/SIGTERM or the control socket aborts → close everything in
 * reverse order (sockets removed). `--pcap` records every guest port (one pcapng interface per
 * guest port; the plain pcap format merges them).
 *
 * Bridged mode (`--tap NAME [--tap-netns NS]`): the uplink is a tap device (backends/tap.ts,
 * created — or a persistent one attached to — optionally inside a network namespace) instead of
 * the NAT stack; the tap's offloads follow the guest (direct) or the switch (what every guest
 * accepts). No NAT then: no DHCP, DNS or port forwards — the guests configure themselves on
 * whatever segment the tap is enslaved to.
 *
 * Extension point: a frontend kind is a FrontendSpec variant plus a case in `openFrontend`
 * (`--vfio-user PATH` for usernet's RTL8139 lands there).
 */
import { Command, Option } from 'commander';
import { log } from '../log';
import { globalMeter, type Meter } from '../meter/meter';
import { openCapture, type CaptureWriter } from '../meter/pcap';
import { PcapTap } from '../meter/pcap-tap';
import { join, DISCARD, type Port } from '../link/port';
import { Switch } from '../link/switch';
import { isOffloadAware, NO_OFFLOADS, type NetOffloads } from '../devices/virtio/net-offloads';
import type { VirtioNetDevice } from '../devices/virtio/net-device';
import { createNatStack, formatHostForward, parseHostForward, type NatConfig, type NatStack } from '../backends/nat';
import { TapBackend } from '../backends/tap';
import { listenVhostUser, type VhostUserServer } from '../transports/vhost-user';
import { listenVfioUser, VFIO_USER_DEVICES, type VfioUserDeviceKind } from '../transports/vfio-user';
import type { Rtl8139 } from '../devices/rtl8139/device';
import {
  connectQemuStream,
  formatQemuSocketAddress,
  listenQemuStream,
  openQemuDgram,
  parseQemuSocketAddress,
  type QemuDgramPort,
  type QemuStreamPort,
  type QemuStreamServer,
} from '../transports/qemu-socket';
import { ControlServer } from '../control/server';
import { meterControlHandlers } from './meter-control';
import { buildNatConfig, netmaskOf, type NatCliOptions } from './nat-options';
import { describeFrontend, nicQemuArgs, nthMac, shellLine, type FrontendAddress } from './qemu-args';
import { ServeLifetime } from './serve-lifetime';

/** The frontend options `usernet run` takes (each repeatable). */
export interface FrontendCliOptions {
  vhostUser?: string[];
  qemuStream?: string[];
  qemuStreamConnect?: string[];
  qemuDgram?: string[];
  /** usernet's emulated PCI NIC over vfio-user (QEMU ≥ 10.1), and which device it is. */
  vfioUser?: string[];
  device?: string;
  /** Bridged mode: the uplink is this tap device instead of the NAT stack. */
  tap?: string;
  /** The namespace the tap is created in (name, PID or path). */
  tapNetns?: string;
}

export type FrontendSpec = FrontendAddress;

function collect(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v];
}

function invalid(message: string): Error {
  return Object.assign(new Error(message), { code: 'EINVAL' });
}

/** Add the VM frontend options to a command (`usernet run`). */
export function addFrontendOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--vhost-user <path>', "serve a VM's virtio-net over vhost-user on this socket (repeatable: one per VM)").argParser(collect))
    .addOption(new Option('--qemu-stream <addr>', 'listen for QEMU -netdev stream on unix:PATH or HOST:PORT (repeatable)').argParser(collect))
    .addOption(new Option('--qemu-stream-connect <addr>', 'connect to a QEMU -netdev stream,server=on at unix:PATH or HOST:PORT (repeatable)').argParser(collect))
    .addOption(new Option('--qemu-dgram <path>', 'serve QEMU -netdev dgram on this unix datagram socket (repeatable)').argParser(collect))
    .addOption(new Option('--vfio-user <path>', "emulate a whole PCI NIC for a QEMU >= 10.1 vfio-user-pci client on this socket (repeatable)").argParser(collect))
    .addOption(new Option('--device <model>', 'the NIC --vfio-user emulates').choices([...VFIO_USER_DEVICES]).default('rtl8139'))
    .option('--tap <name>', 'bridged mode: the VMs\' frames go to this tap device (created, or a persistent one attached) instead of the NAT stack')
    .option('--tap-netns <pid|name|path>', 'create the --tap device inside this network namespace');
}

/** The frontends named on the command line, checked (duplicates and bad addresses: EINVAL). */
export function frontendSpecs(o: FrontendCliOptions): FrontendSpec[] {
  const specs: FrontendSpec[] = [];
  for (const p of o.vhostUser ?? []) specs.push({ kind: 'vhost-user', path: p });
  for (const a of o.qemuStream ?? []) specs.push({ kind: 'qemu-stream', address: parseQemuSocketAddress(a) });
  for (const a of o.qemuStreamConnect ?? []) specs.push({ kind: 'qemu-stream', address: parseQemuSocketAddress(a), connect: true });
  for (const p of o.qemuDgram ?? []) specs.push({ kind: 'qemu-dgram', path: p });
  for (const p of o.vfioUser ?? []) specs.push({ kind: 'vfio-user', path: p, device: (o.device ?? 'rtl8139') as VfioUserDeviceKind });
  const seen = new Set<string>();
  for (const s of specs) {
    const key = s.kind === 'qemu-stream' ? formatQemuSocketAddress(s.address) : s.path;
    if (!key || key === 'unix:') throw invalid(`--${s.kind}: empty address`);
    if (seen.has(key)) throw invalid(`${key} is named by two frontends`);
    seen.add(key);
  }
  return specs;
}

// ---------------------------------------------------------------------------------------------
// The segment: guests ↔ one uplink (the NAT stack)

/** The segment's way out: the NAT stack, or a tap (bridged mode). */
export type GuestUplink = NatStack | TapBackend;

/** Make the uplink send what the guest side accepts, and wait while it is full; returns the unsubscribe. */
export function followOffloads(stack: GuestUplink, peer: unknown): () => void {
  if (stack instanceof TapBackend) {
    stack.follow(typeof peer === 'object' && peer !== null ? peer : {});
    return () => stack.follow({});
  }
  stack.followGuest(peer);
  if (!isOffloadAware(peer)) {
    stack.setOffloads(false, false);
    return () => stack.followGuest(null);
  }
  const apply = (o: Readonly<NetOffloads>): void => stack.setOffloads(o.guestCsum, o.guestTso4);
  apply(peer.offloads);
  peer.on('offloads', apply);
  return () => {
    (peer as unknown as NodeJS.EventEmitter).off('offloads', apply);
    stack.followGuest(null);
  };
}

type Closable = Port & { once?(event: 'close', listener: () => void): unknown };

export class GuestSegment {
  private readonly sw: Switch | null;
  private direct: { port: Port; unfollow: () => void } | null = null;
  private unfollowSwitch: (() => void) | null = null;
  private closed = false;
  /** Guest ports attached and not yet gone. */
  readonly guests = new Set<Port>();

  constructor(
    readonly stack: GuestUplink,
    opts: { shared: boolean; meter?: Meter },
  ) {
    if (opts.shared) {
      this.sw = new Switch({ name: 'segment', meter: opts.meter, closePorts: false });
      this.sw.setUplink(stack);
      this.unfollowSwitch = followOffloads(stack, this.sw);
    } else {
      this.sw = null;
    }
  }

  get mode(): 'direct' | 'switched' {
    return this.sw ? 'switched' : 'direct';
  }

  /** Put a guest on the segment; it leaves by itself when the port closes. */
  attach(port: Closable): void {
    if (this.closed) {
      void port.close();
      return;
    }
    this.guests.add(port);
    if (this.sw) {
      const m = this.sw.attach(port);
      port.once?.('close', () => {
        this.guests.delete(port);
        m.detach();
      });
      return;
    }
    if (this.direct) this.detachDirect(); // a new connection replaces the old (vhost-user reconnect)
    join(port, this.stack);
    this.direct = { port, unfollow: followOffloads(this.stack, port) };
    port.once?.('close', () => {
      this.guests.delete(port);
      if (this.direct?.port === port) this.detachDirect();
    });
  }

  private detachDirect(): void {
    if (!this.direct) return;
    this.direct.unfollow();
    this.direct.port.onReceive(DISCARD);
    this.stack.onReceive(DISCARD);
    this.direct = null;
  }

  /** Detach every guest (the ports are closed by their frontends). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.detachDirect();
    this.unfollowSwitch?.();
    await this.sw?.close();
    this.guests.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// Frontends

export interface Frontend {
  spec: FrontendSpec;
  /** The MAC the printed QEMU arguments give the NIC. */
  mac: string;
  /** The QEMU arguments to paste (virtio-net-pci for vhost-user; QEMU's own model otherwise). */
  qemuArgs: string[];
  close(): Promise<void>;
}

export interface OpenFrontendOptions {
  meter?: Meter;
  /** The index of this frontend (its MAC). */
  index: number;
  /** Wrap each guest port before it joins the segment (pcap). */
  wrap?: (port: Closable) => Closable;
  /** Guest RAM the printed vhost-user arguments use. */
  memoryMiB?: number;
}

/** Open one frontend and attach every guest that arrives on it to `segment`. */
export async function openFrontend(spec: FrontendSpec, segment: GuestSegment, opts: OpenFrontendOptions): Promise<Frontend> {
  const meter = opts.meter ?? globalMeter;
  const mac = nthMac(opts.index);
  const wrap = opts.wrap ?? ((p: Closable) => p);
  const args = nicQemuArgs(spec, { mac, id: `usernet${opts.index}`, memoryMiB: opts.memoryMiB });
  switch (spec.kind) {
    case 'vhost-user': {
      const server: VhostUserServer = await listenVhostUser({ path: spec.path, meter, device: { mac } });
      server.on('guest', (port: VirtioNetDevice) => segment.attach(wrap(port)));
      return { spec, mac, qemuArgs: args, close: () => server.close() };
    }
    case 'qemu-stream': {
      if (!spec.connect) {
        const server: QemuStreamServer = await listenQemuStream({ address: spec.address, meter });
        server.on('guest', (port: QemuStreamPort) => segment.attach(wrap(port)));
        // a TCP port 0 becomes the real port: print that
        const bound: FrontendSpec = { ...spec, address: server.address };
        return { spec: bound, mac, qemuArgs: nicQemuArgs(bound, { mac, id: `usernet${opts.index}` }), close: () => server.close() };
      }
      return connectingStream(spec, segment, wrap, meter, mac, args);
    }
    case 'qemu-dgram': {
      const port: QemuDgramPort = openQemuDgram({ path: spec.path, meter });
      segment.attach(wrap(port));
      return { spec, mac, qemuArgs: args, close: () => port.close() };
    }
    case 'vfio-user': {
      const server = await listenVfioUser({ path: spec.path, meter, device: spec.device, rtl8139: { mac } });
      server.on('guest', (nic: Rtl8139) => segment.attach(wrap(nic)));
      return { spec, mac, qemuArgs: args, close: () => server.close() };
    }
  }
}

/** usernet as the stream client: connect, and after QEMU goes away (or is not there yet) retry every second. */
function connectingStream(
  spec: Extract<FrontendSpec, { kind: 'qemu-stream' }>,
  segment: GuestSegment,
  wrap: (p: Closable) => Closable,
  meter: Meter,
  mac: string,
  args: string[],
): Frontend {
  let stopped = false;
  let current: QemuStreamPort | null = null;
  let timer: NodeJS.Timeout | null = null;
  let failures = 0;
  const where = formatQemuSocketAddress(spec.address);
  const attempt = async (): Promise<void> => {
    timer = null;
    if (stopped) return;
    try {
      const port = await connectQemuStream(spec.address, { meter });
      if (stopped) {
        await port.close();
        return;
      }
      failures = 0;
      current = port;
      log.info({ address: where }, `qemu-stream: connected to QEMU at ${where}`);
      port.once('close', () => {
        current = null;
        if (!stopped) timer = setTimeout(() => void attempt(), 1000);
      });
      segment.attach(wrap(port));
    } catch (err) {
      if (failures++ === 0) log.warn({ address: where, err: (err as Error).message }, `qemu-stream: cannot connect to ${where} yet; retrying every second`);
      if (!stopped) timer = setTimeout(() => void attempt(), 1000);
    }
  };
  void attempt();
  return {
    spec,
    mac,
    qemuArgs: args,
    close: async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      await current?.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// `usernet run` with VM frontends

/**
 * A guest port recorded into a capture (`--pcap`): a PcapTap that still looks like the guest
 * to the segment — its offloads, its 'offloads' and 'close' events — so capturing does not turn
 * TSO off. Closing it closes the guest port.
 */
class CapturedGuest extends PcapTap {
  constructor(
    private readonly guest: Closable,
    writer: CaptureWriter,
  ) {
    super(guest, writer, { name: guest.name });
  }

  get offloads(): Readonly<NetOffloads> {
    return isOffloadAware(this.guest) ? this.guest.offloads : NO_OFFLOADS;
  }

  on(event: 'offloads' | 'close', listener: (o: Readonly<NetOffloads>) => void): this {
    if (isOffloadAware(this.guest) || event === 'close') (this.guest as unknown as NodeJS.EventEmitter).on(event, listener);
    return this;
  }

  off(event: 'offloads' | 'close', listener: (o: Readonly<NetOffloads>) => void): this {
    (this.guest as unknown as NodeJS.EventEmitter).off?.(event, listener);
    return this;
  }

  once(event: 'close', listener: () => void): this {
    this.guest.once?.(event, listener);
    return this;
  }
}

export interface ServeFrontendsOptions extends NatCliOptions, FrontendCliOptions {
  control?: string;
  pcap?: string;
  logLevel?: string;
}

function controlHandlers(config: NatConfig, uplink: GuestUplink, segment: GuestSegment, fronts: Frontend[], startedAt: number) {
  const nat = (): NatStack => {
    if (uplink instanceof TapBackend) throw Object.assign(new Error('bridged mode (--tap): there is no NAT stack, hence no port forwards'), { code: 'ENOTSUP' });
    return uplink;
  };
  return {
    'hostfwd.add': async ({ rule }: { rule: string }) => ({ rule: formatHostForward(await nat().addHostForward(parseHostForward(rule))) }),
    'hostfwd.remove': async ({ rule }: { rule: string }) => {
      const f = parseHostForward(rule);
      if (!(await nat().removeHostForward(f))) throw Object.assign(new Error(`no forward ${formatHostForward(f)}`), { code: 'ENOENT' });
      return { rule: formatHostForward(f) };
    },
    'hostfwd.list': () => (uplink instanceof TapBackend ? [] : uplink.hostForwards().map((f) => ({ rule: formatHostForward(f), ...f }))),
    ...meterControlHandlers({
      meter: globalMeter,
      stack: uplink instanceof TapBackend ? null : uplink,
      startedAt,
      extra: () => (uplink instanceof TapBackend ? { tap: { ifName: uplink.ifName, offload: uplink.offload } } : {}),
    }),
    info: () => ({
      pid: process.pid,
      frontends: fronts.map((f) => ({ kind: f.spec.kind, description: describeFrontend(f.spec), mac: f.mac, qemuArgs: f.qemuArgs })),
      segment: segment.mode,
      guests: segment.guests.size,
      ...(uplink instanceof TapBackend ? { backend: 'tap', tap: uplink.ifName, tapNetns: uplink.netns } : { backend: 'nat' }),
      network: `${config.network}/${config.prefixLength}`,
      gateway: config.gateway,
      dns: config.dns,
      dhcpStart: config.dhcpStart,
      mtu: config.mtu,
      hostLoopback: config.hostLoopback,
    }),
  };
}

function summary(config: NatConfig, opts: ServeFrontendsOptions, fronts: Frontend[], segment: GuestSegment): string {
  if (segment.stack instanceof TapBackend) {
    const tap = segment.stack;
    const where = tap.netns === null ? '' : ` in namespace ${String(tap.netns)}`;
    const lines = [`usernet ${process.pid}: serving ${fronts.length} VM frontend${fronts.length === 1 ? '' : 's'} bridged to tap ${tap.ifName}${where} (${segment.mode})`];
    if (opts.control) lines.push(`* Control socket:  ${opts.control}`);
    for (const f of fronts) {
      lines.push(`* Frontend:        ${describeFrontend(f.spec)}, MAC ${f.mac}`);
      lines.push(`  QEMU arguments:  ${shellLine(f.qemuArgs)}`);
    }
    lines.push(`(no NAT: enslave ${tap.ifName} to a bridge and give the guests addresses on that segment)`);
    return lines.join('\n') + '\n';
  }
  const lines = [
    `usernet ${process.pid}: serving ${fronts.length} VM frontend${fronts.length === 1 ? '' : 's'} on one NAT stack (${segment.mode})`,
    `* MTU:             ${config.mtu}`,
    `* Network:         ${config.network}`,
    `* Netmask:         ${netmaskOf(config.prefixLength)}`,
    `* Gateway:         ${config.gateway}`,
    `* DNS:             ${config.dns}`,
    `* DHCP begin:      ${config.dhcpStart}`,
  ];
  for (const f of config.hostForwards) lines.push(`* hostfwd:         ${formatHostForward(f)}`);
  if (opts.control) lines.push(`* Control socket:  ${opts.control}`);
  for (const f of fronts) {
    lines.push(`* Frontend:        ${describeFrontend(f.spec)}, MAC ${f.mac}`);
    lines.push(`  QEMU arguments:  ${shellLine(f.qemuArgs)}`);
  }
  if (config.hostLoopback) {
    lines.push(`WARNING: 127.0.0.1:* on the host is accessible as ${config.gateway} (set --no-host-loopback to prohibit connecting to 127.0.0.1:*)`);
  }
  return lines.join('\n') + '\n';
}

/** `usernet run --vhost-user … --qemu-stream … --qemu-dgram …`: serve until a signal. */
export async function serveFrontends(opts: ServeFrontendsOptions): Promise<void> {
  if (opts.logLevel) log.level = opts.logLevel;
  const specs = frontendSpecs(opts);
  if (specs.length === 0) throw invalid('run: a frontend is required (--vhost-user, --vfio-user, --qemu-stream, --qemu-stream-connect or --qemu-dgram)');
  const config = buildNatConfig(opts); // MTU: 1500 unless asked (what QEMU's NIC models expect)

  const life = new ServeLifetime();
  try {
    let stack: GuestUplink;
    if (opts.tap !== undefined) {
      if ((config.hostForwards ?? []).length > 0) throw invalid('run: --hostfwd needs the NAT stack; it cannot be combined with --tap');
      const tap = TapBackend.open({ ifName: opts.tap, netns: opts.tapNetns, meter: globalMeter });
      stack = tap;
      life.closeWith('tap', () => tap.close());
      void tap.down.then((err) => {
        if (err) {
          log.error({ err: err.message }, 'the tap went away; exiting');
          life.stop();
        }
      });
    } else {
      if (opts.tapNetns !== undefined) throw invalid('run: --tap-netns needs --tap');
      const nat = createNatStack({ config, meter: globalMeter });
      stack = nat;
      life.closeWith('nat stack', () => nat.close());
      await nat.ready;
    }

    // one frontend that serves one guest at a time: direct; else a switch
    const segment = new GuestSegment(stack, { shared: specs.length > 1, meter: globalMeter });
    life.closeWith('segment', () => segment.close());

    let wrap: ((p: Closable) => Closable) | undefined;
    if (opts.pcap) {
      const writer: CaptureWriter = await openCapture(opts.pcap);
      life.closeWith('pcap', () => writer.close());
      wrap = (p) => new CapturedGuest(p, writer);
    }

    const fronts: Frontend[] = [];
    for (const [index, spec] of specs.entries()) {
      const f = await openFrontend(spec, segment, { meter: globalMeter, index, wrap });
      fronts.push(f);
      life.closeWith(describeFrontend(f.spec), () => f.close());
    }

    if (opts.control) {
      const server = await ControlServer.listen(opts.control, controlHandlers(config, stack, segment, fronts, Date.now()), { signal: life.signal });
      life.closeWith('control socket', () => server.close());
    }

    process.stdout.write(summary(config, opts, fronts, segment));
    process.stdout.write(`ready pid=${process.pid}\n`);

    await life.stopped();
    await life.close();
  } finally {
    await life.close();
  }
}
