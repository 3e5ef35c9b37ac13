/**
 * The built `usernet` command (dist/src/cli/main.js, run as a user runs it): help, usage
 * errors exit 2 with one `usernet:` line, runtime failures exit 1 and leave nothing behind,
 * SIGTERM shuts a serving instance down cleanly (exit 0, control socket removed, tap gone,
 * resolv.conf written by --configure removed).
 */
import { existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { testIf } from '../helpers/env';
import { withSandbox } from '../helpers/netns';
import { CLI, ensureBuilt } from '../helpers/nat-guest';
import { execFile } from 'node:child_process';

function usernet(args: string[], timeoutMs = 30_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

test.before(async () => {
  await ensureBuilt();
});

test('help and version', async (t) => {
  const h = await usernet(['--help']);
  t.is(h.code, 0);
  t.regex(h.stdout, /\brun\b/);
  t.regex(h.stdout, /\bctl\b/);
  const rh = await usernet(['run', '--help']);
  t.is(rh.code, 0);
  for (const opt of ['--netns', '--configure', '--mtu', '--hostfwd', '--dns-upstream', '--dns-host', '--control', '--pcap', '--no-host-loopback', '--log-level']) {
    t.true(rh.stdout.includes(opt), opt);
  }
  const v = await usernet(['--version']);
  t.is(v.code, 0);
  t.regex(v.stdout, /^\d+\.\d+\.\d+/);
});

test('usage errors exit 2 with one usernet: line', async (t) => {
  const cases: [string[], RegExp][] = [
    [['run'], /frontend is required/],
    [['run', '--netns', 'x', '--mtu', '70000'], /--mtu/],
    [['run', '--netns', 'x', '-o', 'bogus=1'], /unknown -netdev user option/],
    [['run', '--netns', 'x', '--dhcp-start', '192.168.1.5'], /outside/],
    [['run', '--netns', 'x', '--hostfwd', 'nonsense'], /hostfwd/],
    [['run', '--netns', 'x', '--log-level', 'loud'], /log-level/],
    [['nonsense-verb'], /unknown command/],
  ];
  for (const [args, re] of cases) {
    const r = await usernet(args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, re, args.join(' '));
  }
});

test('ctl against a socket nobody serves exits 1 with a clear message', async (t) => {
  const r = await usernet(['ctl', '--control', path.join(os.tmpdir(), `usernet-none-${process.pid}.sock`), 'hostfwd', 'list']);
  t.is(r.code, 1);
  t.regex(r.stderr, /^usernet: .*cannot connect to control socket/m);
});

testIf('root', 'netns', 'tun')('a namespace that does not exist: exit 1, nothing left behind', async (t) => {
  const ctl = path.join(os.tmpdir(), `usernet-cli-${process.pid}.sock`);
  const r = await usernet(['run', '--netns', `usernet-no-such-ns-${process.pid}`, '--configure', '--control', ctl]);
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, /ENOENT/);
  t.false(existsSync(ctl));
});

testIf('root', 'netns', 'tun')('SIGTERM and SIGINT: clean shutdown, exit 0, tap, control socket and resolv.conf gone', async (t) => {
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    await withSandbox(async (sb) => {
      const ns = await sb.netns('cli');
      const ctl = path.join(os.tmpdir(), `usernet-cli-${process.pid}-${sig}.sock`);
      const child = spawn(process.execPath, [CLI, 'run', '--netns', ns, '--configure', '--control', ctl], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      for (let i = 0; i < 300 && !/^ready\b/m.test(out) && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 100));
      t.regex(out, /^ready\b/m, err);
      t.regex(out, /Gateway:\s+10\.0\.2\.2/);
      t.true(existsSync(ctl));
      t.true(existsSync(`/etc/netns/${ns}/resolv.conf`));
      const addr = await sb.must(['ip', '-4', '-o', 'addr', 'show', 'dev', 'tap0'], ns);
      t.regex(addr, /10\.0\.2\.15\/24/);
      const link = await sb.must(['ip', '-o', 'link', 'show', 'dev', 'tap0'], ns);
      t.regex(link, /mtu 65520/);
      process.kill(child.pid!, sig);
      t.is(await exited, 0, err);
      t.false(existsSync(ctl), 'control socket removed');
      t.false(existsSync(`/etc/netns/${ns}/resolv.conf`), 'resolv.conf removed');
      const links = await sb.must(['ip', '-o', 'link', 'show'], ns);
      t.false(links.includes('tap0'), 'tap gone');
    });
  }
});

testIf('root', 'netns', 'tun', 'cmd:unshare', 'cmd:nsenter')('--netns PID: a namespace held only by a process is configured and served', async (t) => {
  await withSandbox(async (sb) => {
    const holder = sb.spawn(null, ['unshare', '--net', 'sleep', '120']);
    await new Promise((r) => setTimeout(r, 300));
    const pid = holder.pid!;
    const child = sb.spawn(null, [process.execPath, CLI, 'run', '--netns', String(pid), '--configure', '--mtu', '1500']);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    for (let i = 0; i < 300 && !/^ready\b/m.test(out) && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 100));
    t.regex(out, /^ready\b/m);
    const inNs = (argv: string[]) => sb.exec(null, ['nsenter', `--net=/proc/${pid}/ns/net`, ...argv]);
    const addr = await inNs(['ip', '-4', '-o', 'addr', 'show', 'dev', 'tap0']);
    t.regex(addr.stdout, /10\.0\.2\.15\/24/);
    const ping = await inNs(['ping', '-c', '1', '-W', '5', '10.0.2.2']);
    t.is(ping.code, 0, ping.stdout + ping.stderr);
  });
});
