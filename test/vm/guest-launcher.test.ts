/**
 * The launcher's promises about QEMU's life: on a deadline, an abort, a QEMU that refuses its
 * arguments or a command that never ends, QEMU is killed by its PID and the temp folder is gone
 * before the promise settles. Also: long commands travel by fw_cfg, guest RAM can be a shared
 * memfd, and QEMU 11 (build/qemu11, for vfio-user) boots the same guest.
 */
import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { testIf } from '../helpers/env';
import { GuestError, haveQemu, isGuestError, liveGuestPids, runGuest } from '../../src/vm';

const vmTest = testIf('root', 'qemu');

function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

vmTest.serial('a command that outlives the deadline: ERR_GUEST_TIMEOUT, QEMU killed', async (t) => {
  let pid = -1;
  const err = await t.throwsAsync(
    runGuest({ network: [], net: 'none', command: 'sleep 600', timeoutMs: 5_000, onSpawn: (s) => (pid = s.pid) }),
  );
  t.true(isGuestError(err, 'ERR_GUEST_TIMEOUT'), String(err));
  t.true(pid > 0);
  t.true(gone(pid), `QEMU ${pid} is gone`);
});

vmTest.serial('an abort once the command runs: ERR_GUEST_ABORTED, QEMU killed, temp file removed', async (t) => {
  const ac = new AbortController();
  let pid = -1;
  let commandFile = '';
  // Longer than the kernel command line takes: the command goes by fw_cfg from a temp file.
  const command = `: ${'x'.repeat(3000)}\necho started\nsleep 600`;
  const err = await t.throwsAsync(
    runGuest({
      network: [],
      net: 'none',
      command,
      timeoutMs: 180_000,
      signal: ac.signal,
      onSpawn: (s) => {
        pid = s.pid;
        const fw = s.args.find((a) => a.startsWith('name=opt/usernet/cmd,file='));
        commandFile = fw ? fw.slice('name=opt/usernet/cmd,file='.length) : '';
      },
      onLine: (line, phase) => {
        if (phase === 'command' && line === 'started') ac.abort();
      },
    }),
  );
  t.true(isGuestError(err, 'ERR_GUEST_ABORTED'), String(err));
  t.regex((err as GuestError).serial, /^started$/m);
  t.true(gone(pid), `QEMU ${pid} is gone`);
  t.regex(commandFile, /usernet-vm-/);
  t.false(existsSync(path.dirname(commandFile)), `${commandFile} is removed`);
});

vmTest.serial('an already aborted signal starts nothing', async (t) => {
  const ac = new AbortController();
  ac.abort();
  let spawned = false;
  const err = await t.throwsAsync(runGuest({ network: [], command: 'true', signal: ac.signal, onSpawn: () => (spawned = true) }));
  t.true(isGuestError(err, 'ERR_GUEST_ABORTED'));
  t.false(spawned);
});

vmTest.serial('QEMU refuses the network arguments: ERR_GUEST_NO_RESULT with its stderr', async (t) => {
  const err = await t.throwsAsync(runGuest({ network: ['-netdev', 'no-such-backend,id=n0'], command: 'true', timeoutMs: 60_000 }));
  t.true(isGuestError(err, 'ERR_GUEST_NO_RESULT'), String(err));
  t.regex((err as GuestError).stderr, /no-such-backend/);
});

vmTest.serial('a long command by fw_cfg, guest RAM as a shared memfd, kernel log on failure', async (t) => {
  const lines = Array.from({ length: 200 }, (_, i) => `echo line-${i}`);
  const r = await runGuest({
    network: ['-nic', 'user,model=virtio-net-pci'],
    command: lines.join('\n') + '\nexit 3',
    memfd: true,
    console: true,
    timeoutMs: 180_000,
  });
  t.is(r.exitCode, 3);
  t.is(r.output, Array.from({ length: 200 }, (_, i) => `line-${i}\n`).join(''));
  t.true(r.qemu.args.some((a) => a.startsWith('memory-backend-memfd,') && a.includes('share=on')));
  t.true(r.qemu.args.some((a) => a.startsWith('name=opt/usernet/cmd,file=')));
  t.regex(r.dmesg, /Linux version 6\./);
});

// QEMU 11 comes with `make setup` (make qemu11); without it this one is skipped.
(haveQemu('v11') ? vmTest.serial : test.skip)('QEMU 11 (build/qemu11) boots the same guest on a shared memfd', async (t) => {
  const r = await runGuest({
    qemu: 'v11',
    network: ['-nic', 'user,model=virtio-net-pci'],
    memfd: true,
    command: 'ip -4 -o addr show dev eth0',
    timeoutMs: 180_000,
  });
  t.log(`QEMU 11 boot ${r.bootMs} ms`);
  t.is(r.exitCode, 0);
  t.regex(r.output, /inet 10\.0\.2\.15\/24/);
  t.regex(r.qemu.path, /qemu11/);
  t.true(r.qemu.args.includes('q35,memory-backend=usernet-mem'));
});

vmTest.serial('cpus: QEMU runs on the CPU list given (taskset execs it in place: the PID is QEMU)', async (t) => {
  let allowed = '';
  let comm = '';
  let pid = -1;
  const r = await runGuest({
    network: [],
    net: 'none',
    command: 'echo ok',
    cpus: '0',
    onSpawn: (info) => (pid = info.pid),
    onBegin: () => {
      // by now setpriv and taskset have exec'd QEMU in place
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      allowed = /^Cpus_allowed_list:\s*(\S+)/m.exec(status)?.[1] ?? '';
      comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    },
  });
  t.is(r.exitCode, 0);
  t.is(r.output.trim(), 'ok');
  t.is(allowed, '0');
  t.not(comm, 'taskset', `comm ${comm}`);
});

vmTest.after.always('no QEMU started by these tests is left running', (t) => {
  t.deepEqual(liveGuestPids(), []);
});
