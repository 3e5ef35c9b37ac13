/**
 * The test guest boots and answers: command output and exit code come back through the serial
 * markers, /init got a DHCP lease (or took the static address from the kernel command line), and
 * both NIC drivers bind — virtio_net for virtio-net-pci, 8139cp for QEMU's rtl8139 (an
 * RTL8139C+, revision 0x20). The network is QEMU's own `-nic user` (libslirp): all traffic stays
 * inside QEMU (DHCP, ICMP to the slirp gateway). And a rebuild of the image is byte-identical.
 */
import type { ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { testIf } from '../helpers/env';
import { GuestError, liveGuestPids, repoRoot, runGuest, type GuestOptions, type GuestResult } from '../../src/vm';

const run = promisify(execFile);
const vmTest = testIf('root', 'qemu');
const TIMEOUT = 180_000;

function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** runGuest, with the serial tail in the failure message and a check that QEMU is gone. */
async function boot(t: ExecutionContext, opts: Omit<GuestOptions, 'timeoutMs'>): Promise<GuestResult> {
  let pid = -1;
  try {
    const r = await runGuest({ timeoutMs: TIMEOUT, ...opts, onSpawn: (s) => (pid = s.pid) });
    t.log(`boot ${r.bootMs} ms (guest uptime ${r.guestUptime} s at command start), total ${r.totalMs} ms, ${r.qemu.accel}`);
    return r;
  } catch (e) {
    if (e instanceof GuestError) t.log(e.describe());
    throw e;
  } finally {
    t.true(pid > 0, 'QEMU was spawned');
    t.true(gone(pid), `QEMU ${pid} is gone`);
  }
}

vmTest.serial('virtio-net-pci on -nic user: output, exit code 0, DHCP lease, virtio_net bound', async (t) => {
  const r = await boot(t, {
    network: ['-nic', 'user,model=virtio-net-pci'],
    command: [
      'echo hello from the guest',
      'ifconfig eth0',
      'ip route',
      'cat /etc/resolv.conf',
      'basename "$(readlink /sys/class/net/eth0/device/driver)"',
    ].join('\n'),
  });
  t.log(r.output);
  t.is(r.exitCode, 0);
  t.true(r.output.startsWith('hello from the guest\n'));
  t.regex(r.output, /inet addr:10\.0\.2\.15\s+Bcast:10\.0\.2\.255\s+Mask:255\.255\.255\.0/);
  t.regex(r.output, /^default via 10\.0\.2\.2 dev eth0/m);
  t.regex(r.output, /^nameserver 10\.0\.2\.3$/m);
  t.regex(r.output, /^virtio_net$/m);
  t.regex(r.serial, /usernet-init: t=[0-9.]+ eth0 dhcp 10\.0\.2\.15\/24/);
});

vmTest.serial('a failing command: exit code, stderr and output without a final newline come back exactly', async (t) => {
  const r = await boot(t, {
    network: [],
    net: 'none',
    command: 'echo to stdout; echo to stderr >&2; printf "no newline"; exit 42',
  });
  t.is(r.exitCode, 42);
  t.is(r.output, 'to stdout\nto stderr\nno newline');
});

vmTest.serial('QEMU rtl8139 (RTL8139C+) on -nic user: 8139cp binds and gets a lease', async (t) => {
  const r = await boot(t, {
    network: ['-nic', 'user,model=rtl8139'],
    command: [
      'basename "$(readlink /sys/class/net/eth0/device/driver)"',
      'cat /sys/class/net/eth0/device/vendor /sys/class/net/eth0/device/device /sys/class/net/eth0/device/revision',
      'ip -4 -o addr show dev eth0',
      'ping -c 1 -W 5 10.0.2.2 >/dev/null && echo gateway answers',
    ].join('\n'),
  });
  t.log(r.output);
  t.is(r.exitCode, 0);
  t.regex(r.output, /^8139cp$/m);
  t.regex(r.output, /^0x10ec\n0x8139\n0x20$/m);
  t.regex(r.output, /inet 10\.0\.2\.15\/24/);
  t.regex(r.output, /^gateway answers$/m);
});

vmTest.serial('a static address from the kernel command line instead of DHCP', async (t) => {
  const r = await boot(t, {
    network: ['-nic', 'user,model=virtio-net-pci'],
    net: { ip: '10.0.2.77/24', gw: '10.0.2.2', dns: '10.0.2.3', mtu: 1400 },
    command: 'ip -4 -o addr show dev eth0; ip route; cat /sys/class/net/eth0/mtu; cat /etc/resolv.conf',
  });
  t.is(r.exitCode, 0);
  t.regex(r.output, /inet 10\.0\.2\.77\/24/);
  t.regex(r.output, /^default via 10\.0\.2\.2 dev eth0/m);
  t.regex(r.output, /^1400$/m);
  t.regex(r.output, /^nameserver 10\.0\.2\.3$/m);
});

vmTest.serial('the tools the tests rely on are in the image', async (t) => {
  const tools = ['iperf3', 'nfs-cat', 'nfs-ls', 'wget', 'ping', 'traceroute', 'nslookup', 'nc', 'sha256sum', 'udhcpc', 'ip', 'mount'];
  const r = await boot(t, {
    network: [],
    net: 'none',
    command: `for c in ${tools.join(' ')}; do command -v $c >/dev/null || echo "missing $c"; done; iperf3 --version | head -n1; modprobe nfsv3 && grep -w nfs /proc/filesystems`,
  });
  t.is(r.exitCode, 0, r.output);
  t.notRegex(r.output, /missing/);
  t.regex(r.output, /^iperf 3\./m);
  t.regex(r.output, /\tnfs$/m);
});

testIf('cmd:dpkg', 'cmd:apt-cache', 'cmd:cpio', 'cmd:xz')('rebuilding the image gives byte-identical files', async (t) => {
  const dirs = [await mkdtemp(path.join(os.tmpdir(), 'usernet-guest-a-')), await mkdtemp(path.join(os.tmpdir(), 'usernet-guest-b-'))];
  try {
    const script = path.join(repoRoot(), 'guest-images', 'build-guest.sh');
    const sums: Record<string, string>[] = [];
    for (const dir of dirs) {
      await run(script, [dir], { maxBuffer: 16 * 1024 * 1024 });
      const files: Record<string, string> = {};
      for (const f of ['vmlinuz', 'vmlinux', 'initramfs.cpio.gz']) {
        files[f] = createHash('sha256').update(await readFile(path.join(dir, f))).digest('hex');
      }
      sums.push(files);
    }
    t.log(sums[0]);
    t.deepEqual(sums[0], sums[1]);
  } finally {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  }
});

vmTest.after.always('no QEMU started by these tests is left running', (t) => {
  t.deepEqual(liveGuestPids(), []);
});
