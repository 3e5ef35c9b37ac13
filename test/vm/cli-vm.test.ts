/**
 * `usernet vm` and `usernet run` with VM frontends, run as a user runs them (dist/src/cli/main.js)
 * with the real test guest under QEMU (TCG):
 *   - the guest command's exit code is usernet's, and nothing is left behind (QEMU gone by PID,
 *     the socket and its folder removed);
 *   - a host HTTP server's content comes out on stdout exactly (lines streamed, last line
 *     without a newline kept so), through usernet's virtio over vhost-user and through QEMU's
 *     rtl8139 over -netdev stream (the guest's RTL8139 driver bound);
 *   - SIGTERM during the command stops the guest and cleans up (exit 143);
 *   - one `usernet run` serving a vhost-user VM and a -netdev stream VM at once: both get their
 *     own lease, reach the host and each other.
 * Each boots the guest once (a few seconds under TCG).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { nicQemuArgs, nthMac } from '../../src/cli/qemu-args';
import { runGuest } from '../../src/vm';
import { testIf } from '../helpers/env';
import { CLI, ensureBuilt } from '../helpers/nat-guest';

const vmTest = testIf('root', 'qemu');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function usernet(args: string[], opts: { timeoutMs?: number; onStderr?: (text: string, child: ChildProcess) => void } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (s: string) => (stdout += s));
    child.stderr!.on('data', (s: string) => {
      stderr += s;
      opts.onStderr?.(stderr, child);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 240_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The QEMU PID and the socket usernet vm reported on stderr. */
function reported(stderr: string): { pid: number; socket: string } {
  const pid = /usernet vm: QEMU pid (\d+)/.exec(stderr);
  const sock = /usernet vm: NIC: .*; socket (\S+)/.exec(stderr);
  if (!pid || !sock) throw new Error(`usernet vm did not report its QEMU and socket:\n${stderr}`);
  return { pid: Number(pid[1]), socket: sock[1] };
}

const TEXT = 'first line from the host\nsecond line\n\nlast line without a newline';

async function textServer(): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.url === '/text') res.end(TEXT);
    else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

vmTest.before(async () => {
  await ensureBuilt();
});

vmTest.serial("usernet vm -- sh -c 'exit 3' exits 3 and leaves no QEMU and no socket behind", async (t) => {
  const r = await usernet(['vm', '--', 'sh', '-c', 'echo in-guest; exit 3']);
  t.is(r.code, 3, r.stderr);
  t.is(r.stdout, 'in-guest\n');
  const { pid, socket } = reported(r.stderr);
  t.regex(r.stderr, /usernet vm: eth0 10\.0\.2\.15\/24 \(dhcp\)/);
  t.false(alive(pid), `QEMU ${pid} is still running`);
  t.false(existsSync(socket), `${socket} is still there`);
  t.false(existsSync(dirname(socket)), `${dirname(socket)} is still there`);
});

vmTest.serial('usernet vm -- wget -O- http://10.0.2.2:PORT/… prints the host server\'s content exactly', async (t) => {
  const http = await textServer();
  t.teardown(() => http.close());
  const r = await usernet(['vm', '--quiet', '--', 'wget', '-q', '-O-', `http://10.0.2.2:${http.port}/text`]);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, TEXT);
  t.is(r.stderr, '', 'nothing but the content with --quiet');
});

vmTest.serial("usernet vm --nic qemu-rtl8139: QEMU's rtl8139 over -netdev stream, the guest's RTL8139 driver bound", async (t) => {
  const http = await textServer();
  t.teardown(() => http.close());
  const r = await usernet(['vm', '--nic', 'qemu-rtl8139', '--', `basename $(readlink /sys/class/net/eth0/device/driver); wget -q -O- http://10.0.2.2:${http.port}/text`]);
  t.is(r.code, 0, r.stderr);
  // QEMU's model is revision 0x20, which Linux gives to 8139cp (8139too takes revisions below)
  t.regex(r.stdout, /^8139(cp|too)\n/);
  t.is(r.stdout.slice(r.stdout.indexOf('\n') + 1), TEXT);
  t.regex(r.stderr, /QEMU's rtl8139 over -netdev stream/);
  const { pid, socket } = reported(r.stderr);
  t.false(alive(pid));
  t.false(existsSync(socket));
});

vmTest.serial('usernet vm: SIGTERM during the command stops the guest and cleans up', async (t) => {
  let sent = false;
  const r = await usernet(['vm', '--', 'sh', '-c', 'echo started; sleep 120'], {
    onStderr: (text, child) => {
      // the lease line comes right before the command starts
      if (!sent && /usernet vm: eth0 /.test(text)) {
        sent = true;
        setTimeout(() => child.kill('SIGTERM'), 1000);
      }
    },
  });
  t.true(sent, r.stderr);
  t.is(r.code, 143, r.stderr);
  const { pid, socket } = reported(r.stderr);
  t.false(alive(pid), `QEMU ${pid} is still running`);
  t.false(existsSync(socket));
});

vmTest.serial('usernet run --vhost-user A --qemu-stream B: two VMs on one usernet, each leased, reaching the host and each other', async (t) => {
  const http = await textServer();
  const dir = mkdtempSync(join(tmpdir(), 'usernet-run-vms-'));
  const vu = join(dir, 'vm1.sock');
  const st = join(dir, 'vm2.sock');
  const child = spawn(process.execPath, [CLI, 'run', '--vhost-user', vu, '--qemu-stream', `unix:${st}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, USERNET_LOG: 'warn' },
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  t.teardown(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await http.close();
    rmSync(dir, { recursive: true, force: true });
  });
  let out = '';
  child.stdout!.setEncoding('utf8');
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (s: string) => {
      out += s;
      if (/^ready pid=/m.test(out)) resolve();
    });
    child.once('exit', () => reject(new Error(`usernet run exited: ${out}`)));
  });
  // the summary carries the arguments to paste, with distinct MACs
  t.regex(out, /QEMU arguments: .*-netdev vhost-user,id=usernet0.*mac=52:54:00:12:34:56/);
  t.regex(out, /QEMU arguments: .*-netdev stream,id=usernet1,server=off,addr\.type=unix,addr\.path=\S+vm2\.sock -device virtio-net-pci,netdev=usernet1,mac=52:54:00:12:34:57/);
  const cmd = [
    "echo addr=$(ip -4 -o addr show eth0 | awk '{print $4}')",
    `echo text=$(wget -q -O- http://10.0.2.2:${http.port}/text | head -1 | tr ' ' _)`,
    'sleep 3', // both guests up before they ping each other
    'for a in 10.0.2.15 10.0.2.16; do ping -c 2 -W 3 $a >/dev/null && echo ping-$a=ok; done',
    'sleep 2',
  ].join('\n');
  const [a, b] = await Promise.all([
    runGuest({ network: nicQemuArgs({ kind: 'vhost-user', path: vu }, { mac: nthMac(0), noMemory: true }), memfd: true, command: cmd, timeoutMs: 180_000 }),
    runGuest({ network: nicQemuArgs({ kind: 'qemu-stream', address: { type: 'unix', path: st } }, { mac: nthMac(1), model: 'rtl8139' }), command: cmd, timeoutMs: 180_000 }),
  ]);
  const addrs = [a, b].map((r) => /addr=(\S+)/.exec(r.output)?.[1]).sort();
  t.deepEqual(addrs, ['10.0.2.15/24', '10.0.2.16/24'], a.output + b.output);
  for (const r of [a, b]) {
    t.regex(r.output, /text=first_line_from_the_host/);
    t.regex(r.output, /ping-10\.0\.2\.15=ok/);
    t.regex(r.output, /ping-10\.0\.2\.16=ok/);
  }
  child.kill('SIGTERM');
  t.is(await exited, 0);
  t.false(existsSync(vu), 'the vhost-user socket is removed');
  t.false(existsSync(st), 'the stream socket is removed');
});
