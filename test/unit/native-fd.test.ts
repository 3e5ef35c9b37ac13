/**
 * OwnedFd against the real kernel: explicit close and release, garbage collection closing fds
 * (in a child process with --expose-gc), error paths that must not leak, and argument checking
 * that throws instead of crashing. The fd count is read from /proc/self/fd.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import * as native from '../../src/native';

const openFds = (): number => readdirSync('/proc/self/fd').length;

test('close and release change ownership; close is idempotent; release of a closed fd throws EBADF', (t) => {
  const a = native.eventfdCreate();
  t.true(native.isOwnedFd(a));
  t.true(a.fd >= 0);
  a.close();
  t.is(a.fd, -1);
  t.notThrows(() => a.close());
  t.throws(() => a.release(), { code: 'EBADF' });
  t.throws(() => native.eventfdRead(a), { code: 'EBADF' });

  const b = native.eventfdCreate();
  const n = b.release();
  t.is(b.fd, -1);
  // we own the number now: adopt it back and close it through the addon
  const again = native.adoptFd(n);
  t.is(again.fd, n);
  again.close();
  t.throws(() => native.adoptFd(n), { code: 'EBADF' });
});

test('10,000 explicit open/close cycles leave the fd count unchanged', (t) => {
  const before = openFds();
  for (let i = 0; i < 10_000; i++) {
    const fd = native.eventfdCreate();
    fd.close();
  }
  for (let i = 0; i < 2_000; i++) {
    const [x, y] = native.unixSocketPair();
    x.close();
    y.close();
  }
  t.is(openFds(), before);
});

test('error paths close what they opened (connect/bind/mmap failures, bad netns)', (t) => {
  const before = openFds();
  const stats = native.nativeStats().ownedFds;
  for (let i = 0; i < 500; i++) {
    t.throws(() => native.unixConnect(`/nonexistent/usernet-${i}.sock`), { code: 'ENOENT' });
    t.throws(() => native.unixListen('/nonexistent/dir/x.sock'), { code: 'ENOENT' });
    t.throws(() => native.udpSocket(4, { address: '192.0.2.123' }), { code: 'EADDRNOTAVAIL' });
    t.throws(() => native.socketInNetns('/nonexistent/netns', native.AF_INET, native.SOCK_DGRAM), { code: 'ENOENT' });
    t.throws(() => native.tapOpen('x', native.IFF_TAP, '/proc/self/status'), { code: 'EINVAL' });
  }
  t.is(openFds(), before);
  t.is(native.nativeStats().ownedFds, stats);
});

test('bad arguments throw TypeError/RangeError instead of crashing', (t) => {
  const fd = native.eventfdCreate();
  t.throws(() => native.read('3' as unknown as number, new Uint8Array(8)), { instanceOf: TypeError });
  t.throws(() => native.read(fd, 'abc' as unknown as Uint8Array), { instanceOf: TypeError });
  t.throws(() => native.read(-1, new Uint8Array(8)), { instanceOf: RangeError });
  t.throws(() => native.read(1.5, new Uint8Array(8)), { instanceOf: RangeError });
  t.throws(() => native.readFrames(fd, new Uint8Array(8), 0, 1, new Int32Array(1)), { instanceOf: RangeError });
  t.throws(() => native.readFrames(fd, new Uint8Array(8), 8, 1, new Uint32Array(1) as unknown as Int32Array), {
    instanceOf: TypeError,
  });
  t.throws(() => native.writeFrames(fd, [new Uint8Array(1)], 1, 2), { instanceOf: RangeError });
  t.throws(() => native.writeFrames(fd, [new Uint8Array(1)], 9, 0), { instanceOf: RangeError });
  t.throws(() => native.tapOpen('a-name-that-is-far-too-long', native.IFF_TAP), { instanceOf: RangeError });
  t.throws(() => native.unixConnect('x\u0000y'), { instanceOf: TypeError });
  t.throws(() => native.sendTo(fd, new Uint8Array(1), 'not-an-ip', 1), { instanceOf: TypeError });
  t.throws(() => native.sendTo(fd, new Uint8Array(1), new Uint8Array(5), 1), { instanceOf: TypeError });
  t.throws(() => native.munmap(new ArrayBuffer(8)), { instanceOf: TypeError });
  t.throws(() => new native.FdWatcher(fd, 'nope' as unknown as () => void), { instanceOf: TypeError });
  t.throws(() => native.adoptFd({} as unknown as number), { instanceOf: TypeError });
  // an OwnedFd method called on a foreign object
  const close = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(fd), 'close')!.value as () => void;
  t.throws(() => close.call({}), { instanceOf: TypeError });
  fd.close();
});

test('errors carry Node-style code, errno and syscall', (t) => {
  const e = t.throws(() => native.unixConnect('/nonexistent/usernet.sock')) as native.NativeError;
  t.is(e.code, 'ENOENT');
  t.is(e.errno, -native.Errno.ENOENT);
  t.is(e.syscall, 'connect');
  t.is(native.errnoName(native.Errno.ECONNREFUSED), 'ECONNREFUSED');
  t.is(native.errnoError(111, 'connect').code, 'ECONNREFUSED');
});

test('10,000 dropped OwnedFds are closed by garbage collection (child process, --expose-gc)', (t) => {
  const script = `
    const m = require(${JSON.stringify(native.addonPath())});
    const fs = require('fs');
    const count = () => fs.readdirSync('/proc/self/fd').length;
    const settle = async () => {
      for (let k = 0; k < 50; k++) {
        global.gc();
        await new Promise((r) => setImmediate(r));
        await new Promise((r) => setTimeout(r, 5));
        const s = m.nativeStats();
        if (s.ownedFds === 0 && s.watchers === 0 && s.mappings === 0) return;
      }
    };
    (async () => {
      const before = count();
      let peak = 0;
      for (let round = 0; round < 20; round++) {
        for (let i = 0; i < 250; i++) m.eventfdCreate(0, false);
        for (let i = 0; i < 125; i++) m.unixSocketPair(1);
        peak = Math.max(peak, count());
        await settle();
      }
      await settle();
      // an idle watcher (holding its OwnedFd) and a mapping (holding nothing) are collected too
      (() => {
        new m.FdWatcher(m.eventfdCreate(0, false), () => {});
        m.mmap(m.memfdCreate('gc', 65536), 0, 65536);
      })();
      await settle();
      console.log(JSON.stringify({ before, peak, after: count(), stats: m.nativeStats() }));
    })();
  `;
  const out = execFileSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' });
  const r = JSON.parse(out.trim().split('\n').pop()!) as {
    before: number;
    peak: number;
    after: number;
    stats: native.NativeStats;
  };
  t.true(r.peak > r.before, 'fds were really open before collection');
  t.is(r.after, r.before);
  t.is(r.stats.ownedFds, 0);
  t.is(r.stats.watchers, 0);
  t.is(r.stats.mappings, 0);
});
