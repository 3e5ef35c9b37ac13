/**
 * `usernet qemu-args`: the QEMU arguments that put a VM's NIC on a running usernet, ready to
 * paste after `qemu-system-x86_64`. Also the one place those arguments are made for `usernet run`
 * (its summary prints them per frontend) and `usernet vm` (it passes them to QEMU), so what a
 * user pastes is what the tests boot.
 *
 *   usernet qemu-args --vhost-user /run/vm1.sock [--memory 1024]
 *     -m 1024M -object memory-backend-memfd,id=usernet-mem,size=1024M,share=on
 *     -machine q35,memory-backend=usernet-mem
 *     -chardev socket,id=usernet0-chr,path=/run/vm1.sock,reconnect=1
 *     -netdev vhost-user,id=usernet0,chardev=usernet0-chr -device virtio-net-pci,netdev=usernet0,...
 *   usernet qemu-args --qemu-stream unix:/run/vm1.stream --model rtl8139
 *   usernet qemu-args --qemu-stream 127.0.0.1:5555 [--connect]   (usernet connects: QEMU listens)
 *   usernet qemu-args --qemu-dgram /run/vm1.dgram --model e1000
 *
 * Why each part is there:
 *   vhost-user  usernet maps the guest's RAM, so RAM must be a shared memfd the size of -m
 *               (docs/interop/vhost-user.rst "memory backend"; protocols.md §1.9).
 *               `reconnect=1` lets the VM survive a usernet restart. QEMU < 8 under TCG crashes
 *               with MSI-X on a vhost-user NIC, so there the NIC gets `vectors=0` (INTx) — see
 *               vhostUserQemuArgs in src/transports/vhost-user.ts.
 *   stream      QEMU connects to usernet's socket (`server=off`) unless usernet is the client.
 *   dgram       QEMU binds its own datagram socket (`local.path`, here PATH + ".qemu") and sends
 *               to usernet's (`remote.path`); usernet learns QEMU's address from the first frame.
 * Every NIC gets an explicit MAC: QEMU gives every NIC 52:54:00:12:34:56 otherwise, and two VMs
 * on one usernet would then share an address.
 *
 * Output: one shell-quoted line (default), one argument per line (`--lines`) or a JSON array
 * (`--json`). A socket path that does not exist yet gets a warning on stderr (the arguments
 * are printed anyway: usernet may be started after this).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { memfdArgs, vhostUserQemuArgs } from '../transports/vhost-user';
import { vfioUserQemuArgs } from '../transports/vfio-user';
import {
  formatQemuSocketAddress,
  parseQemuSocketAddress,
  qemuDgramArgs,
  qemuStreamArgs,
  type QemuSocketAddress,
} from '../transports/qemu-socket';

/** NIC models QEMU offers for a stream/dgram netdev that the test guest has drivers for. */
export const QEMU_NIC_MODELS = ['virtio-net-pci', 'rtl8139', 'e1000'] as const;
export type QemuNicModel = (typeof QEMU_NIC_MODELS)[number];

/** Default guest RAM in MiB when a memfd backend must be printed (the launcher's default too). */
export const DEFAULT_MEMORY_MIB = 512;

/** How a VM reaches usernet: the frontends `usernet run` serves. */
export type FrontendAddress =
  | { kind: 'vhost-user'; path: string }
  /** `connect`: usernet is the client (QEMU listens, `server=on`). */
  | { kind: 'qemu-stream'; address: QemuSocketAddress; connect?: boolean }
  | { kind: 'qemu-dgram'; path: string; qemuPath?: string }
  /** usernet emulates the whole PCI NIC (an RTL8139); QEMU ≥ 10.1 `vfio-user-pci` is the client. */
  | { kind: 'vfio-user'; path: string; device?: 'rtl8139' | 'rtl8139cp' };

export interface NicArgsOptions {
  /** NIC model for stream/dgram (vhost-user is always virtio-net-pci). */
  model?: QemuNicModel;
  mac?: string;
  /** netdev id (default usernet0); the chardev of vhost-user is ID-chr. */
  id?: string;
  /** Guest RAM in MiB for the memfd backend (vhost-user). */
  memoryMiB?: number;
  /** Leave out -m/-object/-machine (a launcher that adds them itself). */
  noMemory?: boolean;
  /** QEMU major version (vhost-user: INTx below 8). Default: the host QEMU's, else 7. */
  qemuMajor?: number;
  /** vhost-user: let QEMU reconnect to a restarted usernet (default true). */
  reconnect?: boolean;
}

/** The i-th MAC usernet hands out in printed arguments: 52:54:00:12:34:56, …:57, … */
export function nthMac(i: number): string {
  const last = 0x56 + i;
  if (!Number.isInteger(i) || i < 0 || last > 0xff) throw new RangeError(`no MAC for NIC #${i}`);
  return `52:54:00:12:34:${last.toString(16).padStart(2, '0')}`;
}

/** QEMU's path for its end of a dgram pair, next to usernet's. */
export function dgramPeerPath(path: string): string {
  return `${path}.qemu`;
}

let hostMajor: number | null | undefined;
/** The major version of the host's qemu-system-x86_64 (cached), or null if there is none. */
export function hostQemuMajor(binary = process.env.USERNET_QEMU ?? 'qemu-system-x86_64'): number | null {
  if (hostMajor !== undefined) return hostMajor;
  try {
    const out = execFileSync(binary, ['--version'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] });
    const m = /version (\d+)\./.exec(out);
    hostMajor = m ? Number(m[1]) : null;
  } catch {
    hostMajor = null;
  }
  return hostMajor;
}

function invalid(message: string): Error {
  return Object.assign(new Error(message), { code: 'EINVAL' });
}

/** The QEMU arguments for one NIC on one usernet frontend. */
export function nicQemuArgs(front: FrontendAddress, opts: NicArgsOptions = {}): string[] {
  const id = opts.id ?? 'usernet0';
  switch (front.kind) {
    case 'vhost-user': {
      if (opts.model && opts.model !== 'virtio-net-pci') {
        throw invalid(`--model ${opts.model}: a vhost-user NIC is always virtio-net-pci (usernet's own virtio-net ring); use --qemu-stream for QEMU's ${opts.model}`);
      }
      const mem = opts.noMemory ? [] : memfdArgs(opts.memoryMiB ?? DEFAULT_MEMORY_MIB);
      const major = opts.qemuMajor ?? hostQemuMajor() ?? 7;
      return [
        ...mem,
        ...vhostUserQemuArgs(front.path, { id, mac: opts.mac, qemuMajor: major, reconnectSeconds: opts.reconnect === false ? undefined : 1 }),
      ];
    }
    case 'qemu-stream':
      return qemuStreamArgs(front.address, { id, model: opts.model, mac: opts.mac, usernetListens: !front.connect });
    case 'qemu-dgram':
      return qemuDgramArgs(front.path, front.qemuPath ?? dgramPeerPath(front.path), { id, model: opts.model, mac: opts.mac });
    case 'vfio-user': {
      // the MAC lives in usernet's device (its EEPROM), not on QEMU's command line
      const mem = opts.noMemory ? [] : memfdArgs(opts.memoryMiB ?? DEFAULT_MEMORY_MIB);
      return [...mem, ...vfioUserQemuArgs(front.path, { id })];
    }
  }
}

/** Quote one argument for a POSIX shell (only when needed). */
export function shellQuote(arg: string): string {
  if (arg !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function shellLine(args: readonly string[]): string {
  return args.map(shellQuote).join(' ');
}

/** A one-line description of a frontend, for summaries. */
export function describeFrontend(front: FrontendAddress): string {
  switch (front.kind) {
    case 'vhost-user':
      return `vhost-user ${front.path} (usernet's virtio-net ring)`;
    case 'qemu-stream':
      return `qemu-stream ${formatQemuSocketAddress(front.address)} (${front.connect ? 'usernet connects' : 'usernet listens'})`;
    case 'qemu-dgram':
      return `qemu-dgram ${front.path} (QEMU's socket: ${front.qemuPath ?? dgramPeerPath(front.path)})`;
    case 'vfio-user':
      return `vfio-user ${front.path} (usernet's ${front.device ?? 'rtl8139'}; QEMU >= 10.1 vfio-user-pci)`;
  }
}

function intArg(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be an integer in ${min}..${max}`);
    return n;
  };
}

export function macArg(v: string): string {
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(v)) throw new InvalidArgumentError('a MAC address is six hex pairs separated by colons');
  if (parseInt(v.slice(0, 2), 16) & 1) throw new InvalidArgumentError('a NIC MAC must be unicast (even first octet)');
  return v.toLowerCase();
}

interface QemuArgsCliOptions {
  vhostUser?: string;
  qemuStream?: string;
  qemuDgram?: string;
  connect?: boolean;
  model?: QemuNicModel;
  mac?: string;
  id?: string;
  memory?: number;
  qemuMajor?: number;
  reconnect?: boolean;
  json?: boolean;
  lines?: boolean;
}

/** The frontend named by the qemu-args options (exactly one). */
export function frontendFromOptions(o: Pick<QemuArgsCliOptions, 'vhostUser' | 'qemuStream' | 'qemuDgram' | 'connect'>): FrontendAddress {
  const given = [o.vhostUser, o.qemuStream, o.qemuDgram].filter((x) => x !== undefined).length;
  if (given !== 1) throw invalid('qemu-args: name exactly one of --vhost-user PATH, --qemu-stream ADDR, --qemu-dgram PATH');
  if (o.vhostUser !== undefined) return { kind: 'vhost-user', path: o.vhostUser };
  if (o.qemuStream !== undefined) return { kind: 'qemu-stream', address: parseQemuSocketAddress(o.qemuStream), connect: o.connect };
  return { kind: 'qemu-dgram', path: o.qemuDgram! };
}

export function qemuArgsCommand(): Command {
  return new Command('qemu-args')
    .description('print the QEMU arguments that put a VM\'s NIC on a running usernet')
    .option('--vhost-user <path>', "usernet's virtio-net ring over vhost-user (usernet run --vhost-user PATH)")
    .option('--qemu-stream <addr>', "QEMU's own NIC over -netdev stream: unix:PATH or HOST:PORT (usernet run --qemu-stream ADDR)")
    .option('--qemu-dgram <path>', "QEMU's own NIC over -netdev dgram (usernet run --qemu-dgram PATH)")
    .option('--connect', 'with --qemu-stream: usernet connects and QEMU listens (usernet run --qemu-stream-connect)')
    .addOption(new Option('--model <model>', 'NIC model for --qemu-stream/--qemu-dgram').choices(QEMU_NIC_MODELS as unknown as string[]))
    .option('--mac <mac>', 'the NIC\'s MAC address (default 52:54:00:12:34:56)', macArg)
    .option('--id <id>', 'netdev id', 'usernet0')
    .addOption(new Option('--memory <MiB>', 'guest RAM for the shared memory backend vhost-user needs').default(DEFAULT_MEMORY_MIB).argParser(intArg('--memory', 64, 1 << 20)))
    .addOption(new Option('--qemu-major <n>', 'QEMU major version the arguments are for (default: the host QEMU\'s)').argParser(intArg('--qemu-major', 2, 99)))
    .option('--no-reconnect', 'vhost-user: no reconnect=1 on the chardev')
    .option('--json', 'print a JSON array of arguments')
    .option('--lines', 'print one argument per line')
    .action((o: QemuArgsCliOptions) => {
      const front = frontendFromOptions(o);
      const args = nicQemuArgs(front, {
        model: o.model,
        mac: o.mac ?? nthMac(0),
        id: o.id,
        memoryMiB: o.memory,
        qemuMajor: o.qemuMajor,
        reconnect: o.reconnect,
      });
      // the socket usernet listens on or is bound to (none when usernet is the stream client)
      const sock =
        front.kind === 'qemu-stream' ? (front.address.type === 'unix' && !front.connect ? front.address.path : null) : front.path;
      if (sock && !sock.startsWith('@') && !existsSync(sock)) {
        process.stderr.write(`usernet: warning: ${sock} does not exist yet (start usernet run --${front.kind} ${sock} first)\n`);
      }
      if (o.json) process.stdout.write(JSON.stringify(args) + '\n');
      else if (o.lines) process.stdout.write(args.join('\n') + '\n');
      else process.stdout.write(shellLine(args) + '\n');
    });
}
