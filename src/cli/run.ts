/**
 * `usernet run`: serve. A frontend (today: `--netns`, a tap inside a network namespace) joined
 * to the NAT backend, optionally a pcap tap between them and a control socket beside them.
 *
 * Lifecycle:
 *   parse options → NatConfig (nat-options.ts; invalid → exit 2)
 *   open the tap in the namespace → create the NAT stack → join them (through a PcapTap with
 *   --pcap) → --configure the namespace → listen on --control → print the summary and one line
 *   starting with `ready` (tests and scripts wait for it)
 *   serve until SIGINT/SIGTERM, the control socket's owner aborts, or the tap goes away
 *   shutdown (serve-lifetime.ts): closing runs in reverse order of opening (control socket,
 *   namespace configuration, frontend, pcap, stack), each step's failure logged and the rest
 *   still run, so every fd is closed. A second signal during shutdown exits at once.
 *
 * The meter's views: `--pcap FILE` captures the guest side (tap point "guest"), `--pcap-host
 * FILE` the host side as synthesized frames (meter/pcap-host.ts, tap point "host"); the same
 * FILE for both gives one pcapng with the two interfaces. `--metrics HOST:PORT` serves the
 * ledger to Prometheus. The control socket answers `stats`, `flows` and `trace` (meter-control.ts).
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { log } from '../log';
import { globalMeter } from '../meter/meter';
import { openCapture, type CaptureWriter } from '../meter/pcap';
import { PcapTap } from '../meter/pcap-tap';
import { HostCapture } from '../meter/pcap-host';
import { serveMetrics } from '../meter/prometheus';
import { createTcpModule } from '../backends/nat/tcp';
import { meterControlHandlers } from './meter-control';
import path from 'node:path';
import { join, type Port } from '../link/port';
import { formatHostForward, parseHostForward, type NatConfig } from '../backends/nat/config';
import { createNatStack, type NatStack } from '../backends/nat';
import { NetnsTapPort } from '../transports/netns-tap';
import { ControlServer } from '../control/server';
import { buildNatConfig, netmaskOf, type NatCliOptions } from './nat-options';
import { configureNetns, type NetnsConfiguration } from './netns-configure';
import { addFrontendOptions, frontendSpecs, serveFrontends, type FrontendCliOptions } from './frontends';
import { ServeLifetime } from './serve-lifetime';

export interface RunOptions extends NatCliOptions, FrontendCliOptions {
  netns?: string;
  configure?: boolean;
  tapName: string;
  control?: string;
  pcap?: string;
  pcapHost?: string;
  metrics?: string;
  logLevel?: string;
}

function intOption(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be an integer in ${min}..${max}`);
    return n;
  };
}

function collect(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v];
}

export function runCommand(): Command {
  return addFrontendOptions(new Command('run')
    .description('serve: a frontend joined to the NAT stack (a network namespace like slirp4netns / pasta, or VMs: see frontends.ts)')
    .option('--netns <pid|name|path>', 'serve a network namespace through a tap device inside it')
    .option('--configure', 'set the address, MTU, link and default route of the tap inside the namespace')
    .option('--tap-name <name>', 'the tap device inside the namespace', 'tap0')
    .addOption(new Option('--mtu <n>', 'MTU of the link (DHCP option 26 and --configure); default 65520 with --netns').argParser(intOption('--mtu', 576, 65520)))
    .option('-o, --options <qemu-user-options>', 'options in QEMU -netdev user syntax (net=,host=,dns=,dhcpstart=,hostfwd=,...)', collect)
    .option('--net <cidr>', 'the virtual network (default 10.0.2.0/24)')
    .option('--host <addr>', 'the gateway address (default 10.0.2.2; reaches the host loopback)')
    .option('--dns <addr>', 'the DNS forwarder address (default 10.0.2.3)')
    .option('--dhcp-start <addr>', 'the first DHCP lease (default 10.0.2.15; --configure uses it)')
    .option('--dns-upstream <addr[:port]>', 'nameserver to forward to (repeatable; default: the host resolv.conf)', collect)
    .option('--dns-host <name=addr>', 'a static DNS answer (repeatable)', collect)
    .option('--hostfwd <rule>', 'forward a host port to the guest, QEMU syntax [tcp|udp]:[hostaddr]:port-[guestaddr]:port (repeatable)', collect)
    .option('--no-host-loopback', 'do not let the gateway address reach the host 127.0.0.1')
    .addOption(new Option('--udp-filtering <mode>', 'which peers may answer through a UDP mapping (RFC 4787 §5; default address-dependent)').choices(['endpoint-independent', 'address-dependent', 'address-and-port-dependent']))
    .addOption(new Option('--forward-source <who>', 'port-forwarded TCP reaches the guest from the gateway (default, as QEMU) or the client\'s own address').choices(['gateway', 'client']))
    .option('--control <path>', 'listen on a control socket (usernet ctl / usernet stats)')
    .option('--pcap <file>', 'capture the guest-side frames (.pcapng for pcapng)')
    .option('--pcap-host <file>', 'capture the host side of the NAT as synthesized frames (the same file as --pcap: one pcapng, two interfaces)')
    .option('--metrics <host:port>', 'serve the ledger in the Prometheus text format on http://HOST:PORT/metrics')
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
    .action(async (opts: RunOptions & { options?: string[] }) => {
      await serve({ ...opts, o: opts.options });
    }));
}

/** The part of a running instance the control socket talks to. */
interface Instance {
  config: NatConfig;
  stack: NatStack;
  frontend: NetnsTapPort;
  startedAt: number;
}

function controlHandlers(inst: Instance) {
  return {
    'hostfwd.add': async ({ rule }: { rule: string }) => {
      const f = parseHostForward(rule);
      const added = await inst.stack.addHostForward(f);
      return { rule: formatHostForward(added) };
    },
    'hostfwd.remove': async ({ rule }: { rule: string }) => {
      const f = parseHostForward(rule);
      const removed = await inst.stack.removeHostForward(f);
      if (!removed) throw Object.assign(new Error(`no forward ${formatHostForward(f)}`), { code: 'ENOENT' });
      return { rule: formatHostForward(f) };
    },
    'hostfwd.list': () => inst.stack.hostForwards().map((f) => ({ rule: formatHostForward(f), ...f })),
    ...meterControlHandlers({ meter: globalMeter, stack: inst.stack, startedAt: inst.startedAt }),
    info: () => ({
      pid: process.pid,
      frontend: { kind: 'netns', netns: inst.frontend.netns, ifName: inst.frontend.ifName },
      network: `${inst.config.network}/${inst.config.prefixLength}`,
      gateway: inst.config.gateway,
      dns: inst.config.dns,
      dhcpStart: inst.config.dhcpStart,
      mtu: inst.config.mtu,
      hostLoopback: inst.config.hostLoopback,
    }),
  };
}

function summary(config: NatConfig, opts: RunOptions, frontend: NetnsTapPort, conf: NetnsConfiguration | null): string {
  const lines = [
    `usernet ${process.pid}: serving ${frontend.netns.name ?? frontend.netns.path} through ${frontend.ifName}`,
    `* MTU:             ${config.mtu}`,
    `* Network:         ${config.network}`,
    `* Netmask:         ${netmaskOf(config.prefixLength)}`,
    `* Gateway:         ${config.gateway}`,
    `* DNS:             ${config.dns}`,
    `* DHCP begin:      ${config.dhcpStart}`,
  ];
  if (conf) lines.push(`* Configured IP:   ${conf.address}${conf.resolvConf ? ` (resolv.conf: ${conf.resolvConf})` : ''}`);
  for (const f of config.hostForwards) lines.push(`* hostfwd:         ${formatHostForward(f)}`);
  if (opts.control) lines.push(`* Control socket:  ${opts.control}`);
  if (opts.pcap) lines.push(`* Capture (guest): ${opts.pcap}`);
  if (opts.pcapHost) lines.push(`* Capture (host):  ${opts.pcapHost}`);
  if (opts.metrics) lines.push(`* Metrics:         http://${opts.metrics}/metrics`);
  if (config.hostLoopback) {
    lines.push(`WARNING: 127.0.0.1:* on the host is accessible as ${config.gateway} (set --no-host-loopback to prohibit connecting to 127.0.0.1:*)`);
  }
  return lines.join('\n') + '\n';
}

export async function serve(opts: RunOptions): Promise<void> {
  if (opts.logLevel) log.level = opts.logLevel;
  if (frontendSpecs(opts).length > 0) {
    // VM frontends (vhost-user, qemu stream/dgram): their own lifecycle in frontends.ts
    if (opts.netns) throw Object.assign(new Error('run: --netns cannot be combined with VM frontends in one instance'), { code: 'EINVAL' });
    if (opts.pcapHost || opts.metrics) throw Object.assign(new Error('run: --pcap-host and --metrics are served with --netns only for now'), { code: 'EINVAL' });
    return serveFrontends(opts);
  }
  if (opts.tap !== undefined || opts.tapNetns !== undefined) throw Object.assign(new Error('run: --tap bridges VM frontends (--vhost-user, --qemu-stream, --qemu-dgram); it needs at least one'), { code: 'EINVAL' });
  if (!opts.netns) throw Object.assign(new Error('run: a frontend is required (--netns <pid|name|path>, --vhost-user, --qemu-stream or --qemu-dgram)'), { code: 'EINVAL' });
  if (opts.mtu === undefined) opts.mtu = 65520; // slirp4netns / pasta default for a namespace
  const config = buildNatConfig(opts);

  const life = new ServeLifetime();
  try {
    // capture files first (closed last, after everything that writes into them)
    let guestWriter: CaptureWriter | null = null;
    let hostCapture: HostCapture | null = null;
    if (opts.pcap || opts.pcapHost) {
      const shared = opts.pcap && opts.pcapHost && path.resolve(opts.pcap) === path.resolve(opts.pcapHost);
      if (opts.pcap) {
        const w = await openCapture(opts.pcap, shared ? { format: 'pcapng' } : {});
        life.closeWith('pcap', () => w.close());
        guestWriter = w;
      }
      if (opts.pcapHost) {
        let w = shared ? guestWriter : null;
        if (!w) {
          const own = await openCapture(opts.pcapHost);
          life.closeWith('host pcap', () => own.close());
          w = own;
        }
        const cap = new HostCapture(w, { meter: globalMeter });
        cap.start();
        life.closeWith('host capture', () => cap.stop());
        hostCapture = cap;
      }
    }

    const frontend = NetnsTapPort.open({ netns: opts.netns, ifName: opts.tapName, meter: globalMeter });
    life.closeWith('tap', () => frontend.close());

    const hc = hostCapture;
    const stack = createNatStack({
      config,
      meter: globalMeter,
      checksumOffload: true,
      tsoOffload: true,
      ...(hc ? { tcp: (ctx) => createTcpModule(ctx, { wrapHosts: (h) => hc.wrap(h) }) } : {}),
    });
    life.closeWith('nat stack', () => stack.close());
    // the tap takes NEEDS_CSUM and GSO frames as they are (TUNSETOFFLOAD only limits what the
    // kernel hands us), so the stack may send both
    stack.setOffloads({ checksum: true, tso: true });
    await stack.ready; // configured --hostfwd rules are listening (or we fail here, exit 1)

    let guestSide: Port = frontend;
    if (guestWriter) {
      // the writer is closed by its own closer (it may also hold the host side)
      guestSide = new PcapTap(frontend, guestWriter, { name: 'guest', ownsWriter: false });
    }
    join(guestSide, stack);

    if (opts.metrics) {
      const m = await serveMetrics(opts.metrics, globalMeter);
      life.closeWith('metrics', () => m.close());
      log.info({ address: m.address, port: m.port }, 'metrics: serving /metrics');
    }

    let conf: NetnsConfiguration | null = null;
    if (opts.configure) {
      conf = await configureNetns({
        netnsPath: frontend.netns.path,
        netnsName: frontend.netns.name,
        ifName: frontend.ifName,
        address: config.dhcpStart,
        prefixLength: config.prefixLength,
        gateway: config.gateway,
        dns: config.dns,
        mtu: config.mtu,
      });
      const c = conf;
      life.closeWith('namespace configuration', () => c.undo());
      process.once('exit', () => c.undoSync());
    }

    const inst: Instance = { config, stack, frontend, startedAt: Date.now() };
    if (opts.control) {
      const server = await ControlServer.listen(opts.control, controlHandlers(inst), { signal: life.signal });
      life.closeWith('control socket', () => server.close());
    }

    process.stdout.write(summary(config, opts, frontend, conf));
    process.stdout.write(`ready pid=${process.pid}\n`);

    const down = frontend.down.then((err) => {
      if (err) log.error({ err: err.message }, 'the namespace tap went away; exiting');
      life.stop();
    });
    await life.stopped();
    await life.close();
    await down;
  } finally {
    await life.close();
  }
}
