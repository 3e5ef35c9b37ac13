/**
 * `usernet vm [options] -- COMMAND...`: the quickest way to a test VM on usernet. Boots the test
 * guest (guest-images/, src/vm) wired to a usernet started for it in this process, waits for
 * the guest's network (its /init gets a DHCP lease before it runs anything), runs COMMAND in the
 * guest, streams its output to stdout, and exits with its exit code. QEMU, the sockets and the
 * stack are gone when it returns, whatever happened (vm-session.ts).
 *
 *   usernet vm -- ip -4 addr show eth0
 *   usernet vm --nic qemu-rtl8139 -- wget -O- http://10.0.2.2:8080/
 *   usernet vm --hostfwd tcp:127.0.0.1:2222-:22 --timeout 600 -- 'httpd -f -p 22'
 *
 * COMMAND: several words are one command, each word passed as it is (quoted for the guest's
 * shell, like `docker run`); a single word is a shell command line (`'ip addr; ping -c1 10.0.2.2'`).
 * Put `--` before a command that has options of its own.
 *
 * stdout carries the command's output and nothing else (exactly as the guest wrote it; lines
 * are passed on as they arrive on the serial console, the last line once the command ended).
 * stderr gets a few `usernet vm:` status lines (network, socket, QEMU PID, the lease, the exit
 * code; `--quiet` drops them) and warnings.
 *
 * Exit status: the command's; 124 if `--timeout` passed (QEMU killed); 128+N after signal N
 * (SIGINT/SIGTERM stop the guest and clean up; a second one exits at once); 1 when the guest
 * could not be booted (the reason and the tail of the console on stderr); 2 for usage errors.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { formatHostForward } from '../backends/nat';
import { log } from '../log';
import { checkCpuList, isGuestError } from '../vm';
import { buildNatConfig, type NatCliOptions } from './nat-options';
import { macArg, shellQuote } from './qemu-args';
import { NET_KINDS, NIC_KINDS, runGuestOnUsernet, type NetKind, type NicKind } from './vm-session';

interface VmCliOptions extends NatCliOptions {
  nic: NicKind;
  net: NetKind;
  timeout: number;
  memory: number;
  mac?: string;
  console?: boolean;
  quiet?: boolean;
  logLevel?: string;
  options?: string[];
  cpus?: string;
}

function cpuListArg(v: string): string {
  try {
    return checkCpuList(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

function collect(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v];
}

function numberArg(name: string, min: number, max: number, integer = true) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be ${integer ? 'an integer' : 'a number'} in ${min}..${max}`);
    }
    return n;
  };
}

/** The guest shell command for COMMAND... (see the file comment). */
export function guestCommandLine(words: readonly string[]): string {
  if (words.length === 1) return words[0];
  return words.map(shellQuote).join(' ');
}

/**
 * Passes the command's lines on as they arrive, two lines behind: the last two lines of the
 * command phase are the end marker and (usually) the newline /init adds before it, which are
 * not output. What is written is therefore always a prefix of the exact output; `finish`
 * writes the rest from the launcher's exact copy.
 */
class OutputStream {
  private readonly held: string[] = [];
  private written = 0;

  constructor(private readonly out: NodeJS.WritableStream) {}

  line(text: string): void {
    this.held.push(text);
    if (this.held.length > 2) {
      const s = this.held.shift()! + '\n';
      this.written += s.length;
      this.out.write(s);
    }
  }

  finish(exact: string): void {
    if (exact.length > this.written) this.out.write(exact.slice(this.written));
  }
}

export function vmCommand(): Command {
  return new Command('vm')
    .description('boot the test guest on a usernet started for it, run COMMAND in it, exit with its exit code')
    .usage('[options] -- COMMAND...')
    .argument('<command...>', 'the command to run in the guest (one word: a shell command line)')
    .addOption(
      new Option('--nic <kind>', "the guest's NIC: virtio = usernet's virtio-net over vhost-user; qemu-* = QEMU's own model over -netdev stream; rtl8139 = usernet's RTL8139 over vfio-user (8139too); rtl8139cp = the same as an RTL8139C+ (8139cp)")
        .choices(NIC_KINDS as unknown as string[])
        .default('virtio'),
    )
    .addOption(new Option('--net <kind>', 'what the NIC is plugged into: nat (the user-mode stack) or bridged (a tap on a test bridge)').choices(NET_KINDS as unknown as string[]).default('nat'))
    .option('--hostfwd <rule>', 'forward a host port to the guest, QEMU syntax [tcp|udp]:[hostaddr]:port-[guestaddr]:port (repeatable)', collect)
    .addOption(new Option('--timeout <seconds>', 'give up (and kill QEMU) after this long, boot included').default(300).argParser(numberArg('--timeout', 1, 86_400, false)))
    .addOption(new Option('--memory <MiB>', 'guest RAM').default(512).argParser(numberArg('--memory', 128, 16_384)))
    .option('--mac <mac>', "the NIC's MAC address (default 52:54:00:12:34:56)", macArg)
    .addOption(new Option('--mtu <n>', 'MTU the NAT stack offers by DHCP (default 1500)').argParser(numberArg('--mtu', 576, 65520)))
    .option('-o, --options <qemu-user-options>', 'NAT options in QEMU -netdev user syntax (net=,host=,dns=,dhcpstart=,hostfwd=,...)', collect)
    .option('--dns-upstream <addr[:port]>', 'nameserver the NAT DNS forwards to (repeatable; default: the host resolv.conf)', collect)
    .option('--dns-host <name=addr>', 'a static DNS answer (repeatable)', collect)
    .option('--no-host-loopback', 'do not let the gateway address reach the host 127.0.0.1')
    .option('--cpus <list>', 'run QEMU and this usernet on these CPUs only (e.g. 0): pays off for --nic rtl8139 where waking a thread on another CPU is dear', cpuListArg)
    .option('--console', "show the guest kernel's messages (and its log when the command fails) on stderr")
    .option('-q, --quiet', 'no status lines on stderr')
    .addOption(new Option('--log-level <level>', 'usernet log level (default warn)').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
    .action(async (words: string[], opts: VmCliOptions) => {
      process.exitCode = await runVm(words, opts);
    });
}

async function runVm(words: string[], opts: VmCliOptions): Promise<number> {
  log.level = opts.logLevel ?? process.env.USERNET_LOG ?? 'warn';
  // `--net` here is the network kind (nat|bridged), not NatCliOptions' CIDR (use -o net=… for that)
  const config = buildNatConfig({ ...opts, net: undefined, o: opts.options });
  const status = (s: string): void => {
    if (!opts.quiet) process.stderr.write(`usernet vm: ${s}\n`);
  };
  const out = new OutputStream(process.stdout);
  let hostSide = config.gateway; // the network says which (NAT: the gateway; bridged: the bridge)
  const ac = new AbortController();
  let signalled: NodeJS.Signals | null = null;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (signalled) process.exit(128 + (sig === 'SIGINT' ? 2 : 15)); // the exit hook still kills QEMU
    signalled = sig;
    status(`${sig}: stopping the guest`);
    ac.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const r = await runGuestOnUsernet({
      nic: opts.nic,
      net: opts.net,
      nat: config,
      mac: opts.mac,
      command: guestCommandLine(words),
      timeoutMs: Math.round(opts.timeout * 1000),
      memoryMiB: opts.memory,
      console: opts.console,
      cpus: opts.cpus,
      signal: ac.signal,
      onNetwork: ({ network, nic, sockets }) => {
        hostSide = network.hostAddress;
        status(`${network.description}`);
        for (const f of config.hostForwards) status(`hostfwd ${formatHostForward(f)}`);
        status(`NIC: ${nic.description}; socket ${sockets.join(', ')}`);
      },
      onSpawn: ({ pid }) => status(`QEMU pid ${pid}`),
      onLease: (l) => {
        if (l.address) status(`${l.ifName} ${l.address} (${l.how}); the host side is ${hostSide}`);
        else process.stderr.write(`usernet vm: warning: ${l.ifName} is not configured (no NIC driver or no DHCP answer); running the command anyway\n`);
      },
      onLine: (line, phase) => {
        if (phase === 'command') out.line(line);
        else if (opts.console && phase === 'boot') process.stderr.write(line + '\n');
      },
    });
    out.finish(r.output);
    if (opts.console && r.dmesg) process.stderr.write(r.dmesg);
    status(`exit code ${r.exitCode} (boot ${(r.bootMs / 1000).toFixed(1)} s, command ${(r.commandMs / 1000).toFixed(1)} s, ${r.qemu.accel})`);
    return r.exitCode;
  } catch (err) {
    if (isGuestError(err)) {
      if (err.code === 'ERR_GUEST_ABORTED' && signalled) return 128 + (signalled === 'SIGINT' ? 2 : 15);
      process.stderr.write(`usernet vm: ${err.describe(opts.console ? 40 : 15)}\n`);
      return err.code === 'ERR_GUEST_TIMEOUT' ? 124 : 1;
    }
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
