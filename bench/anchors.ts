/**
 * The anchors a VM measurement is compared with, as QEMU network arguments for the test guest:
 *   libslirp  QEMU's own `-netdev user` (the guest's virtio-net on QEMU's virtio-net model)
 *   passt     Debian's `passt` daemon on a unix socket, QEMU `-netdev stream` to it, QEMU's
 *             virtio-net model; passt hands out (DHCP) the host's own address and MTU 65520 and
 *             maps its gateway address to the host's loopback (so the host's 127.0.0.1 servers
 *             are reached at the gateway, as with 10.0.2.2 on the other two).
 * passt is started in the foreground (`-f`), as root with `--runas 0:0` (switching to nobody, this
 * version never gets its socket listening), IPv4 only, no port forwards; it is killed by PID and
 * its socket file removed afterwards.
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { stopChild } from '../test/helpers/child-process';

export interface Anchor {
  /** QEMU arguments of the NIC. */
  network: string[];
  /** The host side as the guest sees it. */
  host: string;
  stop(): Promise<void>;
}

export function libslirpAnchor(): Anchor {
  return {
    network: ['-netdev', 'user,id=slirp0', '-device', 'virtio-net-pci,netdev=slirp0,mac=52:54:00:12:34:56'],
    host: '10.0.2.2',
    stop: async () => {},
  };
}

function listening(path: string): boolean {
  try {
    // /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path"; Flags 00010000 = listening
    return readFileSync('/proc/net/unix', 'utf8')
      .split('\n')
      .some((l) => l.endsWith(` ${path}`) && l.split(/\s+/)[3] === '00010000');
  } catch {
    return false;
  }
}

/** Start passt on `socket` with `mtu` and wait until it listens. */
export async function passtAnchor(socket: string, mtu = 65520): Promise<Anchor> {
  rmSync(socket, { force: true });
  const child = spawn('passt', ['-f', '-e', '--runas', '0:0', '-s', socket, '-m', String(mtu), '-4', '-t', 'none', '-u', 'none'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (s: string) => (log += s));
  child.on('error', (e) => (log += `\nspawn: ${e.message}`));
  const stop = async (): Promise<void> => {
    await stopChild(child, { graceMs: 3000 });
    rmSync(socket, { force: true });
  };
  const started = Date.now();
  while (!listening(socket)) {
    if (child.exitCode !== null || Date.now() - started > 10_000) {
      await stop();
      throw new Error(`passt did not start listening on ${socket}: ${log.replace(/Failed to send \d+ bytes to syslog\n?/g, '').trim()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const router = /router: (\d+\.\d+\.\d+\.\d+)/.exec(log);
  if (!router) {
    await stop();
    throw new Error(`passt did not say which gateway it hands out: ${log}`);
  }
  return {
    network: ['-netdev', `stream,id=passt0,server=off,addr.type=unix,addr.path=${socket}`, '-device', 'virtio-net-pci,netdev=passt0,mac=52:54:00:12:34:56'],
    host: router[1],
    stop,
  };
}
