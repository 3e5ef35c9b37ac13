/**
 * Bad arguments never crash the process: every native function (except the tap ones, which
 * would create devices in the host namespace) is called tens of thousands of times with random
 * argument lists drawn from wrong types, out-of-range numbers, closed fds and valid values, in a
 * child process (a crash shows as a signal/exit code there, not as a dead test worker). Only
 * loopback addresses and abstract unix names are in the pool, so nothing leaves the machine
 * and files are created only in a scratch directory.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as native from '../../src/native';

test('20,000 random calls with wrong, odd and valid arguments: exceptions only, no crash, no fd leak', (t) => {
  const script = `
    const m = require(${JSON.stringify(native.addonPath())});
    const fs = require('fs');
    let seed = 12345;
    const rnd = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
    const before = fs.readdirSync('/proc/self/fd').length;
    // OwnedFd would adopt (and then close) numbers owned elsewhere — misuse by definition
    const skip = new Set(['OwnedFd', 'tapOpen', 'tapFeatures', 'tapSetVnetHdrSize', 'tapGetVnetHdrSize', 'tapSetOffload', 'tapInfo']);
    const fns = Object.entries(m).filter(([k, v]) => typeof v === 'function' && !skip.has(k));
    const stats = { calls: 0, threw: 0, returned: 0 };
    const mkPool = () => {
      const live = m.eventfdCreate(0, false);
      const closed = m.eventfdCreate(0, false); closed.close();
      const pair = m.unixSocketPair(2);
      return { fds: [live, closed, ...pair], values: [
        undefined, null, -1, 0, 1.5, NaN, Infinity, 2 ** 40, -(2 ** 40), 65536, 99999,
        '', '127.0.0.1', '::1', '@usernet-fuzz', 'not an address', 'x'.repeat(5000), true, false, 1n,
        {}, [], [new Uint8Array(3)], [null, new Uint8Array(2)], new Uint8Array(0), new Uint8Array(16),
        new Int32Array(8), new Int32Array(1), new Float64Array(2), new DataView(new ArrayBuffer(4)),
        new ArrayBuffer(8), () => {}, Symbol('s'), live, closed, pair[0], pair[1], live.fd, pair[1].fd,
      ] };
    };
    for (let round = 0; round < 20; round++) {
      const pool = mkPool();
      for (let i = 0; i < 1000; i++) {
        const [name, fn] = fns[rnd(fns.length)];
        const args = Array.from({ length: rnd(8) }, () => pool.values[rnd(pool.values.length)]);
        stats.calls++;
        try {
          const r = name === 'FdWatcher' ? new fn(...args) : fn(...args);
          stats.returned++;
          if (r && typeof r === 'object') {
            if (typeof r.close === 'function') r.close();
            if (r.fd && typeof r.fd.close === 'function') r.fd.close();
            if (Array.isArray(r)) for (const x of r) if (x && typeof x.close === 'function') x.close();
            if (Array.isArray(r.fds)) for (const x of r.fds) x.close();
            if (r instanceof ArrayBuffer) try { m.munmap(r); } catch {}
          }
        } catch (e) {
          stats.threw++;
        }
      }
      for (const fd of pool.fds) fd.close();
    }
    stats.leaked = fs.readdirSync('/proc/self/fd').length - before;
    console.log(JSON.stringify(stats));
  `;
  // unix paths without '@' create socket files: run in a scratch directory
  const cwd = mkdtempSync(join(tmpdir(), 'usernet-fuzz-'));
  const r = spawnSync(process.execPath, ['-e', script], {
    cwd,
    encoding: 'utf8',
    timeout: 120_000,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  rmSync(cwd, { recursive: true, force: true });
  t.is(r.signal, null, r.stderr);
  t.is(r.status, 0, r.stderr);
  const stats = JSON.parse(r.stdout.trim().split('\n').pop()!) as { calls: number; threw: number; returned: number; leaked: number };
  t.is(stats.calls, 20_000);
  t.true(stats.threw > 0 && stats.returned > 0);
  t.is(stats.leaked, 0);
});
