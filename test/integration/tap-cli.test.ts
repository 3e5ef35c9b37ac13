/**
 * `usernet run --tap NAME --tap-netns NS` (bridged mode of the CLI), end to end without QEMU:
 * the test plays QEMU on a `-netdev dgram` socket, usernet bridges it to a tap it creates in the
 * bridged test network's namespace, the test enslaves the tap and asks the host side (10.0.3.1)
 * for its MAC by ARP — the answer comes back through usernet. SIGTERM removes the tap. Bad
 * combinations of options exit 2.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { testIf } from '../helpers/env';
import { withBridgedNet } from '../helpers/bridged-net';
import { read, unixDgram, write } from '../../src/native';

const test = testIf('root', 'netns', 'tun');
const ROOT = path.resolve(__dirname, '..', '..');
const CLI = [process.execPath, '-r', 'ts-node/register/transpile-only', path.join(ROOT, 'src', 'cli', 'main.ts')];

function runCli(args: string[], timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(CLI[0], [...CLI.slice(1), ...args], { cwd: ROOT, env: { ...process.env, USERNET_LOG: 'warn' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test.serial('run --qemu-dgram … --tap … --tap-netns …: frames cross between the frontend and the tap; the tap goes with usernet', async (t) => {
  await withBridgedNet(
    async (net) => {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'usernet-tap-cli-'));
      t.teardown(() => rmSync(dir, { recursive: true, force: true }));
      const ours = path.join(dir, 'qemu.sock');
      const theirs = path.join(dir, 'usernet.sock');
      const child = spawn(CLI[0], [...CLI.slice(1), 'run', '--qemu-dgram', theirs, '--tap', 'uclitap0', '--tap-netns', net.netns], {
        cwd: ROOT,
        env: { ...process.env, USERNET_LOG: 'warn' },
      });
      t.teardown(() => {
        if (child.exitCode === null) child.kill('SIGKILL');
      });
      let stdout = '';
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`not ready: ${stdout} ${stderr}`)), 60_000);
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
          if (/^ready\b/m.test(stdout)) {
            clearTimeout(timer);
            resolve();
          }
        });
        child.once('exit', () => reject(new Error(`exited: ${stdout} ${stderr}`)));
      });
      t.regex(stdout, /bridged to tap uclitap0 in namespace/);
      await net.attach('uclitap0');

      const sock = unixDgram({ bind: ours, connect: theirs });
      t.teardown(() => sock.close());
      const mac = [0x52, 0x54, 0x00, 0xaa, 0x00, 0x10];
      const arp = Buffer.alloc(42);
      arp.fill(0xff, 0, 6);
      arp.set(mac, 6);
      arp.writeUInt16BE(0x0806, 12);
      arp.set([0, 1, 8, 0, 6, 4, 0, 1], 14);
      arp.set(mac, 22);
      arp.set([10, 0, 3, 10], 28);
      arp.set([10, 0, 3, 1], 38);
      const buf = Buffer.alloc(2048);
      let reply: Buffer | null = null;
      for (let i = 0; i < 100 && !reply; i++) {
        if (i % 10 === 0) write(sock, arp);
        await new Promise((r) => setTimeout(r, 50));
        for (;;) {
          const n = read(sock, buf);
          if (n <= 0) break;
          const f = buf.subarray(0, n);
          if (f.readUInt16BE(12) === 0x0806 && f.readUInt16BE(20) === 2) reply = Buffer.from(f);
        }
      }
      t.truthy(reply, `an ARP reply came back through usernet (${stderr})`);
      t.deepEqual([...reply!.subarray(28, 32)], [10, 0, 3, 1]);
      const bridgeMac = (await net.exec(['cat', `/sys/class/net/${net.bridge}/address`])).stdout.trim();
      t.is([...reply!.subarray(22, 28)].map((b) => b.toString(16).padStart(2, '0')).join(':'), bridgeMac);

      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGTERM');
      t.is(await exited, 0, stderr);
      t.not((await net.exec(['ip', 'link', 'show', 'uclitap0'])).code, 0, 'the tap is gone');
    },
    { httpFileBytes: 0, iperfServers: 0 },
  );
});

test('bad --tap combinations are usage errors (exit 2)', async (t) => {
  const alone = await runCli(['run', '--tap', 'x0']);
  t.is(alone.code, 2, alone.stderr);
  t.regex(alone.stderr, /--tap/);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'usernet-tap-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const fwd = await runCli(['run', '--qemu-dgram', path.join(dir, 'a.sock'), '--tap', 'x0', '--hostfwd', 'tcp::2222-:22']);
  t.is(fwd.code, 2, fwd.stderr);
  t.regex(fwd.stderr, /hostfwd/);
  const nsOnly = await runCli(['run', '--qemu-dgram', path.join(dir, 'b.sock'), '--tap-netns', 'whatever']);
  t.is(nsOnly.code, 2, nsOnly.stderr);
});
