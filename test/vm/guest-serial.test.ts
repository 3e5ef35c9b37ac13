/**
 * The launcher's pure parts, no QEMU needed: the serial transcript gives back the command's
 * output exactly — whatever the text, however the tty (ONLCR) and the pipe cut it — and the
 * QEMU and kernel command lines say what the launcher promises.
 */
import test from 'ava';
import fc from 'fast-check';
import { kernelCommandLine, qemuArgs, SerialTranscript, TCG } from '../../src/vm';

const NONCE = '0123456789abcdef';

/** What the guest's /init puts on ttyS0, after the tty turned LF into CR LF. */
function console(output: string, rc: number, dmesg?: string): Buffer {
  let text = 'usernet-init: t=1.00 modules loaded\n';
  text += `@@usernet:begin:${NONCE} uptime=2.50@@\n${output}\n@@usernet:end:${NONCE} rc=${rc}@@\n`;
  if (dmesg !== undefined) text += `@@usernet:dmesg:${NONCE}@@\n${dmesg}\n@@usernet:dmesg-end:${NONCE}@@\n`;
  text += '[    3.000000] reboot: Power down\n';
  return Buffer.from(text.replace(/\n/g, '\r\n'), 'utf8');
}

function feedInPieces(t: SerialTranscript, data: Buffer, cuts: number[]): void {
  let at = 0;
  for (const c of [...cuts].sort((a, b) => a - b)) {
    const end = Math.min(c, data.length);
    if (end > at) t.feed(data.subarray(at, end));
    at = Math.max(at, end);
  }
  t.feed(data.subarray(at));
  t.close();
}

test('output, exit code and guest uptime come back; lines arrive with their phase', (t) => {
  const lines: string[] = [];
  let begun: number | undefined;
  let ended: number | undefined;
  const tr = new SerialTranscript(NONCE, {
    line: (l, p) => lines.push(`${p}:${l}`),
    begin: (u) => (begun = u),
    end: (rc) => (ended = rc),
  });
  tr.feed(console('hello\nworld\n', 7));
  tr.close();
  t.is(tr.output, 'hello\nworld\n');
  t.is(tr.exitCode, 7);
  t.is(tr.guestUptimeAtBegin, 2.5);
  t.is(begun, 2.5);
  t.is(ended, 7);
  t.true(lines.includes('boot:usernet-init: t=1.00 modules loaded'));
  t.true(lines.includes('command:hello'));
  t.true(lines.includes('after:[    3.000000] reboot: Power down'));
  t.notRegex(tr.serial, /\r/);
});

test('markers of another run do not end the command', (t) => {
  const tr = new SerialTranscript(NONCE);
  tr.feed(console('@@usernet:end:ffffffffffffffff rc=0@@', 0));
  tr.close();
  t.is(tr.output, '@@usernet:end:ffffffffffffffff rc=0@@');
});

test('no end marker: not finished, output so far kept', (t) => {
  const tr = new SerialTranscript(NONCE);
  tr.feed(`@@usernet:begin:${NONCE} uptime=1@@\r\npartial`);
  tr.close();
  t.false(tr.finished);
  t.is(tr.phase, 'command');
  t.is(tr.output, 'partial\n');
});

test('the kernel log section is collected separately', (t) => {
  const tr = new SerialTranscript(NONCE);
  tr.feed(console('oops', 1, '[    0.000000] Linux version 6.1\n[    1.0] eth0: link up'));
  tr.close();
  t.is(tr.output, 'oops');
  t.is(tr.dmesg, '[    0.000000] Linux version 6.1\n[    1.0] eth0: link up\n');
});

test('property: any output survives ONLCR and arbitrary chunking exactly', (t) => {
  fc.assert(
    fc.property(
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.integer({ min: 0, max: 255 }),
      fc.array(fc.nat({ max: 1200 }), { maxLength: 12 }),
      (output, rc, cuts) => {
        const tr = new SerialTranscript(NONCE);
        feedInPieces(tr, console(output, rc), cuts);
        return tr.exitCode === rc && tr.output === output;
      },
    ),
    { numRuns: 500 },
  );
  t.pass();
});

test('kernel command line: markers, network modes, options, and the command last', (t) => {
  t.is(
    kernelCommandLine({ nonce: 'n1', commandBase64: 'ZWNobw==' }),
    'console=ttyS0 quiet panic=-1 usernet.nonce=n1 usernet.net=dhcp usernet.cmd=ZWNobw==',
  );
  const s = kernelCommandLine({
    nonce: 'n2',
    net: { ip: '10.0.3.15/24', gw: '10.0.3.1', dns: '10.0.3.3', mtu: 9000 },
    console: true,
    allModules: true,
    extra: ['loglevel=7'],
  });
  t.is(
    s,
    'console=ttyS0 panic=-1 usernet.nonce=n2 usernet.net=static usernet.ip=10.0.3.15/24 usernet.gw=10.0.3.1 ' +
      'usernet.dns=10.0.3.3 usernet.mtu=9000 usernet.console=1 usernet.modules=all loglevel=7',
  );
  t.regex(kernelCommandLine({ nonce: 'n3', net: 'none' }), /usernet\.net=none/);
  t.throws(() => kernelCommandLine({ nonce: 'n4', extra: ['two words'] }), { instanceOf: TypeError });
});

test('QEMU arguments: TCG, no defaults, serial on stdio, memfd shared RAM, caller network verbatim', (t) => {
  const image = { kernel: '/k/vmlinux', initramfs: '/k/initramfs.cpio.gz' };
  const network = ['-chardev', 'socket,id=c0,path=/tmp/vu.sock', '-netdev', 'vhost-user,id=n0,chardev=c0', '-device', 'virtio-net-pci,netdev=n0'];
  const args = qemuArgs({ image, accel: TCG, kernelCmdline: 'console=ttyS0', network, memfd: true, memoryMiB: 1024 });
  const joined = args.join(' ');
  t.true(joined.includes('-accel tcg -cpu qemu64 -smp 1 -m 1024M'));
  t.true(joined.includes('-object memory-backend-memfd,id=usernet-mem,size=1024M,share=on -machine q35,memory-backend=usernet-mem'));
  t.true(joined.includes('-nodefaults') && joined.includes('-no-reboot') && joined.includes('-serial stdio'));
  t.deepEqual(args.slice(args.indexOf('-kernel'), args.indexOf('-kernel') + 6), ['-kernel', '/k/vmlinux', '-initrd', '/k/initramfs.cpio.gz', '-append', 'console=ttyS0']);
  t.deepEqual(args.slice(-network.length), network);
  const plain = qemuArgs({ image, accel: TCG, kernelCmdline: 'x', network: [], machine: 'pc' });
  t.true(plain.join(' ').includes('-machine pc'));
  t.false(plain.join(' ').includes('memfd'));
});
