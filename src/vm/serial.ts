/**
 * Reads the test guest's serial console (ttyS0) and pulls out the command's output and exit
 * code. The guest's /init (guest-images/init) prints, each marker on a line of its own:
 *
 *   usernet-init: t=… …                      boot diagnostics (modules, DHCP)
 *   @@usernet:begin:NONCE uptime=SECONDS@@   the command starts
 *   …output…                                 stdout and stderr of the command
 *   (one extra newline)                      so the end marker starts a line
 *   @@usernet:end:NONCE rc=N@@
 *   @@usernet:dmesg:NONCE@@ … @@usernet:dmesg-end:NONCE@@   only with usernet.console=1 and rc ≠ 0
 *
 * Phases: boot → command → after (→ dmesg → after). The nonce is random per run, so output that
 * happens to contain a marker of another run, or the kernel command line, never ends a phase.
 * The tty turns LF into CR LF (ONLCR); one CR before each LF is dropped, so the output comes
 * back exactly as the command wrote it (text; binary output should be base64'd by the command).
 */
import { StringDecoder } from 'node:string_decoder';

export type SerialPhase = 'boot' | 'command' | 'after' | 'dmesg';

export interface SerialListener {
  /** Every complete line, in the phase it belongs to (the marker lines themselves: 'boot'/'command'). */
  line?(line: string, phase: SerialPhase): void;
  /** The command started; `guestUptime` is the guest kernel's uptime then, in seconds. */
  begin?(guestUptime: number | undefined): void;
  /** The command finished with this exit code. */
  end?(exitCode: number): void;
}

/** Caps keep a runaway guest from filling the launcher's memory. */
const MAX_TEXT = 16 * 1024 * 1024;

export class SerialTranscript {
  phase: SerialPhase = 'boot';
  /** The whole console, LF line ends, capped at 16 MiB (then `truncated`). */
  serial = '';
  /** The command's output, exact (see the file comment). */
  output = '';
  exitCode: number | undefined;
  guestUptimeAtBegin: number | undefined;
  dmesg = '';
  truncated = false;

  private readonly decoder = new StringDecoder('utf8');
  private partial = '';
  private readonly beginMarker: string;
  private readonly endMarker: string;
  private readonly dmesgMarker: string;
  private readonly dmesgEndMarker: string;

  constructor(
    readonly nonce: string,
    private readonly listener: SerialListener = {},
  ) {
    this.beginMarker = `@@usernet:begin:${nonce} `;
    this.endMarker = `@@usernet:end:${nonce} rc=`;
    this.dmesgMarker = `@@usernet:dmesg:${nonce}@@`;
    this.dmesgEndMarker = `@@usernet:dmesg-end:${nonce}@@`;
  }

  /** True once the end marker has been seen. */
  get finished(): boolean {
    return this.exitCode !== undefined;
  }

  feed(chunk: Buffer | string): void {
    const text = typeof chunk === 'string' ? chunk : this.decoder.write(chunk);
    if (text.length === 0) return;
    let data = this.partial + text;
    let nl = data.indexOf('\n');
    while (nl >= 0) {
      let line = data.slice(0, nl);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      this.take(line);
      data = data.slice(nl + 1);
      nl = data.indexOf('\n');
    }
    this.partial = data;
  }

  /** QEMU's stdout closed: a last line without LF still counts. */
  close(): void {
    const rest = this.partial + this.decoder.end();
    this.partial = '';
    if (rest.length > 0) this.take(rest.endsWith('\r') ? rest.slice(0, -1) : rest);
  }

  /** The last `n` lines of the console, for error messages. */
  tail(n = 30): string {
    const lines = (this.serial + this.partial).split('\n');
    return lines.slice(-n - 1).join('\n');
  }

  private append(field: 'serial' | 'output' | 'dmesg', line: string): void {
    if (this[field].length + line.length + 1 > MAX_TEXT) {
      this.truncated = true;
      return;
    }
    this[field] += line + '\n';
  }

  private take(line: string): void {
    this.append('serial', line);
    const phase = this.phase;
    switch (phase) {
      case 'boot':
        if (line.startsWith(this.beginMarker) && line.endsWith('@@')) {
          this.phase = 'command';
          const m = /uptime=([0-9.]+)/.exec(line);
          this.guestUptimeAtBegin = m ? Number(m[1]) : undefined;
          this.listener.line?.(line, phase);
          this.listener.begin?.(this.guestUptimeAtBegin);
          return;
        }
        break;
      case 'command':
        if (line.startsWith(this.endMarker) && line.endsWith('@@')) {
          const rc = Number.parseInt(line.slice(this.endMarker.length), 10);
          // init printed one newline of its own before the marker.
          if (this.output.endsWith('\n')) this.output = this.output.slice(0, -1);
          this.exitCode = Number.isFinite(rc) ? rc : 255;
          this.phase = 'after';
          this.listener.line?.(line, phase);
          this.listener.end?.(this.exitCode);
          return;
        }
        this.append('output', line);
        break;
      case 'after':
        if (line === this.dmesgMarker) this.phase = 'dmesg';
        break;
      case 'dmesg':
        if (line === this.dmesgEndMarker) this.phase = 'after';
        else this.append('dmesg', line);
        break;
    }
    this.listener.line?.(line, phase);
  }
}
