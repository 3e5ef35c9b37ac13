/**
 * `usernet run --netns NS --configure`: give the tap inside the namespace what slirp4netns's
 * `--configure` gives it — an address, the MTU, link up, a default route via the gateway — so
 * the namespace can use the NAT at once without a DHCP client.
 *
 * Address: the first DHCP lease (`--dhcp-start`, 10.0.2.15 by default), not slirp4netns's
 * 10.0.2.100. The namespace is then exactly the guest QEMU users know: a hostfwd rule without a
 * guest address (`tcp::8080-:80`) reaches it, as it reaches a QEMU guest, and a DHCP client run
 * in the namespace later is offered the address it already has.
 *
 * DNS: for a namespace given by name, `ip netns exec NAME` bind-mounts
 * /etc/netns/NAME/resolv.conf over /etc/resolv.conf; if that file does not exist we write one
 * naming usernet's DNS address, so programs in the namespace resolve through usernet
 * regardless of the host's resolv.conf. (A namespace given by PID or path has no such file;
 * its owner points resolv.conf at the DNS address, as with slirp4netns.)
 *
 * Commands run as `nsenter --net=PATH ip ...`, which works alike for names, PIDs and paths.
 * Undo: the address, MTU and route die with the tap device when usernet closes its fd (a
 * non-persistent tap disappears with its last fd), so `undo()` only removes the resolv.conf we
 * created (and its directory, if we created that too).
 */
import { execFile } from 'node:child_process';
import { mkdir, rmdir, unlink, writeFile, access } from 'node:fs/promises';
import { rmdirSync, unlinkSync } from 'node:fs';
import path from 'node:path';

export interface NetnsConfigureOptions {
  /** /var/run/netns/NAME, /proc/PID/ns/net, or another path to a netns handle. */
  netnsPath: string;
  /** The namespace's name when it was given by name (for /etc/netns/NAME/resolv.conf). */
  netnsName?: string;
  ifName: string;
  address: string;
  prefixLength: number;
  gateway: string;
  dns: string;
  mtu: number;
  /** Write /etc/netns/NAME/resolv.conf when absent (default true). */
  resolvConf?: boolean;
}

export interface NetnsConfiguration {
  /** What was set, for the summary. */
  readonly address: string;
  readonly resolvConf: string | null;
  /** Remove what we added that does not vanish with the tap. Idempotent, never throws. */
  undo(): Promise<void>;
  /** The same, synchronously (for process 'exit'). */
  undoSync(): void;
}

function run(argv: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(argv[0], argv.slice(1), { timeout: 15_000 }, (err, _stdout, stderr) => {
      if (err) reject(Object.assign(new Error(`${argv.join(' ')}: ${String(stderr).trim() || err.message}`), { code: 'ECONFIGURE' }));
      else resolve();
    });
  });
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

export async function configureNetns(o: NetnsConfigureOptions): Promise<NetnsConfiguration> {
  const ip = (...args: string[]): Promise<void> => run(['nsenter', `--net=${o.netnsPath}`, 'ip', ...args]);
  await ip('link', 'set', 'dev', o.ifName, 'mtu', String(o.mtu));
  await ip('addr', 'add', `${o.address}/${o.prefixLength}`, 'dev', o.ifName);
  await ip('link', 'set', 'dev', o.ifName, 'up');
  await ip('route', 'add', 'default', 'via', o.gateway, 'dev', o.ifName);

  let resolvConf: string | null = null;
  let madeDir: string | null = null;
  if (o.netnsName && o.resolvConf !== false) {
    const dir = path.join('/etc/netns', o.netnsName);
    const file = path.join(dir, 'resolv.conf');
    if (!(await exists(file))) {
      if (!(await exists(dir))) {
        await mkdir(dir, { recursive: true });
        madeDir = dir;
      }
      await writeFile(file, `# written by usernet for the namespace ${o.netnsName}; removed when it exits\nnameserver ${o.dns}\n`, { flag: 'wx' });
      resolvConf = file;
    }
  }
  let undone = false;
  return {
    address: o.address,
    resolvConf,
    async undo() {
      if (undone) return;
      undone = true;
      if (resolvConf) await unlink(resolvConf).catch(() => {});
      if (madeDir) await rmdir(madeDir).catch(() => {});
    },
    undoSync() {
      if (undone) return;
      undone = true;
      try {
        if (resolvConf) unlinkSync(resolvConf);
        if (madeDir) rmdirSync(madeDir);
      } catch {
        /* already gone */
      }
    },
  };
}
