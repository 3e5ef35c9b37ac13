/**
 * The QEMU command line and the guest kernel command line for one run of the test guest.
 * Pure functions: what the launcher spawns can be checked without QEMU.
 *
 * QEMU: direct kernel boot (`-kernel` takes the uncompressed vmlinux through its PVH entry note,
 * or a bzImage), `-nodefaults` (no default NIC, VGA, monitor: the caller's network arguments are
 * the only NIC), the serial port on stdio (a pipe to the launcher), `-no-reboot` so the guest's
 * power-off — or a panic with panic=-1 — ends QEMU. With `memfd`, guest RAM is a shared memfd
 * (`memory-backend-memfd,share=on`, size = -m), which vhost-user and vfio-user back-ends need to
 * map it (protocols.md §1.9, §3.8).
 *
 * Kernel: console=ttyS0, `quiet` (unless `console`), panic=-1, and the usernet.* parameters /init reads (see
 * guest-images/init). The x86 kernel command line holds 2047 bytes (COMMAND_LINE_SIZE 2048).
 */
import type { GuestImage } from './paths';

export const KERNEL_CMDLINE_MAX = 2047;

export type Accelerator = 'kvm' | 'tcg';

export interface AccelChoice {
  accel: Accelerator;
  /** `-cpu` model: `host` under KVM, `qemu64` under TCG. */
  cpu: string;
}

export interface GuestStaticNet {
  /** Address with prefix length, e.g. 10.0.3.15/24. */
  ip: string;
  gw?: string;
  dns?: string;
  mtu?: number;
}

/** How /init configures eth0: DHCP (default), a static address, or not at all. */
export type GuestNet = 'dhcp' | 'none' | GuestStaticNet;

export interface KernelCmdlineSpec {
  nonce: string;
  /** base64 of the command; absent when it travels as the fw_cfg file opt/usernet/cmd. */
  commandBase64?: string;
  net?: GuestNet;
  /** usernet.console=1: print the guest's kernel log after a failing command; boot messages too. */
  console?: boolean;
  /** Load the NFS client modules at boot instead of on demand. */
  allModules?: boolean;
  /** Appended last (a later parameter wins in /init). */
  extra?: readonly string[];
}

function noSpace(what: string, value: string): string {
  if (value.length === 0 || /\s/.test(value)) throw new TypeError(`${what}: no whitespace allowed, got ${JSON.stringify(value)}`);
  return value;
}

export function kernelCommandLine(spec: KernelCmdlineSpec): string {
  // With `console`, the kernel's boot messages go to the serial port too (no `quiet`), so a
  // guest that never reaches /init still says why.
  const parts = ['console=ttyS0', ...(spec.console ? [] : ['quiet']), 'panic=-1', `usernet.nonce=${noSpace('nonce', spec.nonce)}`];
  const net = spec.net ?? 'dhcp';
  if (net === 'dhcp' || net === 'none') {
    parts.push(`usernet.net=${net}`);
  } else {
    parts.push('usernet.net=static', `usernet.ip=${noSpace('ip', net.ip)}`);
    if (net.gw) parts.push(`usernet.gw=${noSpace('gw', net.gw)}`);
    if (net.dns) parts.push(`usernet.dns=${noSpace('dns', net.dns)}`);
    if (net.mtu !== undefined) parts.push(`usernet.mtu=${Math.trunc(net.mtu)}`);
  }
  if (spec.console) parts.push('usernet.console=1');
  if (spec.allModules) parts.push('usernet.modules=all');
  for (const a of spec.extra ?? []) parts.push(noSpace('kernel argument', a));
  if (spec.commandBase64 !== undefined) parts.push(`usernet.cmd=${spec.commandBase64}`);
  return parts.join(' ');
}

export interface QemuArgsSpec {
  image: GuestImage;
  accel: AccelChoice;
  kernelCmdline: string;
  /** The NIC(s): `-nic user,model=virtio-net-pci`, `-netdev stream,… -device …`, … verbatim. */
  network: readonly string[];
  memoryMiB?: number;
  smp?: number;
  machine?: string;
  memfd?: boolean;
  /** Shown by ps as the QEMU main thread's name (`-name …,process=`). */
  processName?: string;
  /** A file QEMU hands the guest as fw_cfg opt/usernet/cmd (for long commands). */
  commandFile?: string;
  extra?: readonly string[];
}

export function qemuArgs(spec: QemuArgsSpec): string[] {
  const mem = spec.memoryMiB ?? 512;
  const machine = spec.machine ?? 'q35';
  const args = ['-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot'];
  if (spec.processName) args.push('-name', `usernet-guest,process=${spec.processName}`);
  args.push('-accel', spec.accel.accel, '-cpu', spec.accel.cpu, '-smp', String(spec.smp ?? 1), '-m', `${mem}M`);
  if (spec.memfd) {
    args.push('-object', `memory-backend-memfd,id=usernet-mem,size=${mem}M,share=on`);
    args.push('-machine', `${machine},memory-backend=usernet-mem`);
  } else {
    args.push('-machine', machine);
  }
  args.push('-serial', 'stdio');
  args.push('-kernel', spec.image.kernel, '-initrd', spec.image.initramfs, '-append', spec.kernelCmdline);
  if (spec.commandFile) args.push('-fw_cfg', `name=opt/usernet/cmd,file=${spec.commandFile}`);
  args.push(...spec.network);
  args.push(...(spec.extra ?? []));
  return args;
}
