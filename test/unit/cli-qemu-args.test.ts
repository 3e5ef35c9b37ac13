/**
 * The QEMU arguments usernet prints (`usernet qemu-args`, `usernet run`'s summary) and passes to
 * QEMU (`usernet vm`): one function makes them all, checked here without QEMU; then the verb as
 * a user runs it (dist/), its output formats and its usage errors. Also the parsing of the
 * frontends of `usernet run` and of `usernet vm`'s COMMAND words.
 */
import { execFile } from 'node:child_process';
import test from 'ava';
import { frontendSpecs } from '../../src/cli/frontends';
import { frontendFromOptions, nicQemuArgs, nthMac, shellLine, shellQuote } from '../../src/cli/qemu-args';
import { guestCommandLine } from '../../src/cli/vm';
import { CLI, ensureBuilt } from '../helpers/nat-guest';

function usernet(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

test('vhost-user: shared memfd RAM of -m, chardev with reconnect, virtio-net-pci on INTx for QEMU 7', (t) => {
  const a = nicQemuArgs({ kind: 'vhost-user', path: '/run/vm1.sock' }, { qemuMajor: 7, memoryMiB: 1024, mac: '52:54:00:12:34:56' });
  t.deepEqual(a, [
    '-m',
    '1024M',
    '-object',
    'memory-backend-memfd,id=usernet-mem,size=1024M,share=on',
    '-machine',
    'q35,memory-backend=usernet-mem',
    '-chardev',
    'socket,id=usernet0-chr,path=/run/vm1.sock,reconnect=1',
    '-netdev',
    'vhost-user,id=usernet0,chardev=usernet0-chr',
    '-device',
    'virtio-net-pci,netdev=usernet0,vectors=0,mac=52:54:00:12:34:56',
  ]);
  const v11 = nicQemuArgs({ kind: 'vhost-user', path: '/s' }, { qemuMajor: 11, noMemory: true, reconnect: false, id: 'n1' });
  t.deepEqual(v11, ['-chardev', 'socket,id=n1-chr,path=/s', '-netdev', 'vhost-user,id=n1,chardev=n1-chr', '-device', 'virtio-net-pci,netdev=n1']);
  t.throws(() => nicQemuArgs({ kind: 'vhost-user', path: '/s' }, { model: 'rtl8139' }), { message: /always virtio-net-pci/ });
});

test('stream (usernet listening or connecting, unix or TCP) and dgram, with the NIC model', (t) => {
  t.deepEqual(nicQemuArgs({ kind: 'qemu-stream', address: { type: 'unix', path: '/run/s' } }, { model: 'rtl8139', mac: nthMac(1) }), [
    '-netdev',
    'stream,id=usernet0,server=off,addr.type=unix,addr.path=/run/s',
    '-device',
    'rtl8139,netdev=usernet0,mac=52:54:00:12:34:57',
  ]);
  t.deepEqual(nicQemuArgs({ kind: 'qemu-stream', address: { type: 'inet', host: '127.0.0.1', port: 5555 }, connect: true }, { model: 'e1000' }), [
    '-netdev',
    'stream,id=usernet0,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=5555',
    '-device',
    'e1000,netdev=usernet0',
  ]);
  t.deepEqual(nicQemuArgs({ kind: 'qemu-dgram', path: '/run/d' }), [
    '-netdev',
    'dgram,id=usernet0,local.type=unix,local.path=/run/d.qemu,remote.type=unix,remote.path=/run/d',
    '-device',
    'virtio-net-pci,netdev=usernet0',
  ]);
});

test('MACs, shell quoting, option parsing', (t) => {
  t.is(nthMac(0), '52:54:00:12:34:56');
  t.is(nthMac(9), '52:54:00:12:34:5f');
  t.throws(() => nthMac(-1));
  t.is(shellQuote('virtio-net-pci,netdev=n0'), 'virtio-net-pci,netdev=n0');
  t.is(shellQuote("it's"), `'it'\\''s'`);
  t.is(shellQuote(''), "''");
  t.is(shellLine(['-append', 'console=ttyS0 quiet']), "-append 'console=ttyS0 quiet'");
  t.deepEqual(frontendFromOptions({ qemuStream: '10.0.0.1:7' }), { kind: 'qemu-stream', address: { type: 'inet', host: '10.0.0.1', port: 7 }, connect: undefined });
  t.throws(() => frontendFromOptions({}), { message: /exactly one/ });
  t.throws(() => frontendFromOptions({ vhostUser: '/a', qemuDgram: '/b' }), { message: /exactly one/ });
});

test('usernet run frontends: several of each kind, duplicates refused', (t) => {
  const specs = frontendSpecs({ vhostUser: ['/a', '/b'], qemuStream: ['unix:/c'], qemuStreamConnect: ['127.0.0.1:9'], qemuDgram: ['/d'] });
  t.deepEqual(
    specs.map((s) => s.kind),
    ['vhost-user', 'vhost-user', 'qemu-stream', 'qemu-stream', 'qemu-dgram'],
  );
  t.true(specs[3].kind === 'qemu-stream' && specs[3].connect === true);
  t.throws(() => frontendSpecs({ vhostUser: ['/a', '/a'] }), { message: /two frontends/ });
  t.throws(() => frontendSpecs({ qemuStream: ['nonsense'] }), { message: /not a socket address/ });
});

test('usernet vm COMMAND words: several words are quoted argv, one word is a shell line', (t) => {
  t.is(guestCommandLine(['sh', '-c', 'exit 3']), "sh -c 'exit 3'");
  t.is(guestCommandLine(['ip addr; ping -c1 10.0.2.2']), 'ip addr; ping -c1 10.0.2.2');
  t.is(guestCommandLine(['echo', "it's", '$HOME']), `echo 'it'\\''s' '$HOME'`);
});

test('usernet qemu-args as a user runs it: line, --lines, --json, warnings, usage errors', async (t) => {
  await ensureBuilt();
  const line = await usernet(['qemu-args', '--vhost-user', '/nonexistent/vm.sock', '--qemu-major', '7', '--memory', '256']);
  t.is(line.code, 0, line.stderr);
  t.is(
    line.stdout,
    '-m 256M -object memory-backend-memfd,id=usernet-mem,size=256M,share=on -machine q35,memory-backend=usernet-mem ' +
      '-chardev socket,id=usernet0-chr,path=/nonexistent/vm.sock,reconnect=1 -netdev vhost-user,id=usernet0,chardev=usernet0-chr ' +
      '-device virtio-net-pci,netdev=usernet0,vectors=0,mac=52:54:00:12:34:56\n',
  );
  t.regex(line.stderr, /warning: \/nonexistent\/vm\.sock does not exist yet/);
  const json = await usernet(['qemu-args', '--qemu-stream', '127.0.0.1:5555', '--model', 'rtl8139', '--json']);
  t.is(json.code, 0, json.stderr);
  t.deepEqual(JSON.parse(json.stdout), ['-netdev', 'stream,id=usernet0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=5555', '-device', 'rtl8139,netdev=usernet0,mac=52:54:00:12:34:56']);
  t.is(json.stderr, '');
  const lines = await usernet(['qemu-args', '--qemu-dgram', '/tmp/x.sock', '--lines', '--mac', '52:54:00:aa:bb:cc']);
  t.is(lines.stdout.split('\n')[3], 'virtio-net-pci,netdev=usernet0,mac=52:54:00:aa:bb:cc');
  for (const [args, re] of [
    [['qemu-args'], /exactly one/],
    [['qemu-args', '--vhost-user', '/a', '--model', 'rtl8139'], /always virtio-net-pci/],
    [['qemu-args', '--qemu-stream', '/a', '--model', 'ne2k'], /--model/],
    [['qemu-args', '--vhost-user', '/a', '--mac', '01:00:00:00:00:01'], /unicast/],
    [['vm', '--nic', 'bogus', '--', 'true'], /--nic/],
    [['vm'], /missing required argument/],
    [['vm', '--cpus', '0-x', '--', 'true'], /bad CPU list/],
    [['vm', '--cpus', '4095', '--', 'true'], /not available/],
  ] as [string[], RegExp][]) {
    const r = await usernet(args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, re, args.join(' '));
  }
});
