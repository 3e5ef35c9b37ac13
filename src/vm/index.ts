/**
 * The VM launcher: boot the test guest (guest-images/) under QEMU, run a command, get its output
 * and exit code back. See guest.ts for the life of one run, cmdline.ts for the arguments.
 */
export { runGuest, liveGuestPids, type GuestOptions, type GuestResult } from './guest';
export { GuestError, isGuestError, type GuestErrorCode } from './errors';
export { findQemu, haveQemu, guestImage, repoRoot, buildDir, type QemuKind, type QemuBinary, type GuestImage } from './paths';
export { qemuArgs, kernelCommandLine, KERNEL_CMDLINE_MAX, type GuestNet, type GuestStaticNet, type AccelChoice, type Accelerator } from './cmdline';
export { detectAccel, TCG, KVM } from './accel';
export { parseCpuList, checkCpuList, allowedCpus, pinProcess, affinityPrefix } from './cpu-affinity';
export { SerialTranscript, type SerialPhase, type SerialListener } from './serial';
