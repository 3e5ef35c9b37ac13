/**
 * Errors of the VM launcher. Each has a stable `code` (Node style) and, once QEMU has run,
 * the tail of what it printed, so a failing test or `usernet vm` can show why the guest did not
 * answer (no image, QEMU refused an argument, the guest hung, the caller aborted).
 */

export type GuestErrorCode =
  | 'ERR_GUEST_IMAGE_MISSING' // build/guest has no kernel or initramfs: run `make guest`
  | 'ERR_QEMU_NOT_FOUND' // no QEMU binary of the kind asked for
  | 'ERR_QEMU_SPAWN' // spawn() itself failed
  | 'ERR_GUEST_COMMAND_TOO_LONG' // more than the fw_cfg file route takes
  | 'ERR_GUEST_NO_RESULT' // QEMU exited before the guest printed the end marker
  | 'ERR_GUEST_TIMEOUT' // the deadline passed; QEMU was killed
  | 'ERR_GUEST_ABORTED'; // the caller's AbortSignal fired; QEMU was killed

export class GuestError extends Error {
  override readonly name = 'GuestError';

  constructor(
    readonly code: GuestErrorCode,
    message: string,
    /** The serial console as far as it came (CR LF turned into LF). */
    readonly serial = '',
    /** The last part of QEMU's stderr. */
    readonly stderr = '',
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** Message plus the last lines of serial and stderr: for test failures and the CLI. */
  describe(lines = 20): string {
    const tail = (s: string): string => s.split('\n').slice(-lines).join('\n');
    let text = `${this.code}: ${this.message}`;
    if (this.serial) text += `\n--- serial (tail) ---\n${tail(this.serial.trimEnd())}`;
    if (this.stderr) text += `\n--- qemu stderr (tail) ---\n${tail(this.stderr.trimEnd())}`;
    return text;
  }
}

export function isGuestError(e: unknown, code?: GuestErrorCode): e is GuestError {
  return e instanceof GuestError && (code === undefined || e.code === code);
}
