/**
 * FdWatcher on the real event loop: readable/writable/both, changing the set, stop/start,
 * close with the OwnedFd, the error status for POLLERR (a refused loopback connect), handing a
 * watched fd to net.Socket, one watcher per fd, GC safety of an active watcher and exceptions
 * from the callback (in a child process with --expose-gc).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { createServer, Socket } from 'node:net';
import * as native from '../../src/native';

interface Fired {
  events: number;
  status: number;
}

/** The next readiness report for `events` on `fd` (the watcher is closed afterwards). */
function nextReady(fd: native.FdLike, events: number): Promise<Fired> {
  return new Promise((resolve) => {
    const w = new native.FdWatcher(fd, (ev, st) => {
      w.close();
      resolve({ events: ev, status: st });
    });
    w.start(events);
  });
}

test('eventfd: readable fires after a write, level-triggered until drained', async (t) => {
  const efd = native.eventfdCreate();
  const seen: number[] = [];
  let resolveTwo: () => void = () => {};
  const two = new Promise<void>((r) => (resolveTwo = r));
  const w = new native.FdWatcher(efd, (events, status) => {
    t.is(status, 0);
    seen.push(events);
    if (seen.length === 2) {
      t.is(native.eventfdRead(efd), 5);
      resolveTwo();
    }
  });
  w.start(native.POLL_READABLE);
  t.true(w.active);
  t.true(native.eventfdWrite(efd, 5));
  await two; // not drained after the first callback: it fired again
  t.true(seen.every((e) => (e & native.POLL_READABLE) !== 0));
  t.is(native.eventfdRead(efd), 0);
  w.stop();
  t.false(w.active);
  efd.close();
  t.true(w.closed, 'closing the OwnedFd closed its watcher');
  t.is(w.fd, -1);
  t.throws(() => w.start(native.POLL_READABLE), { code: 'EBADF' });
});

test('writable, then both, then readable only; stop suppresses callbacks', async (t) => {
  const [a, b] = native.unixSocketPair();
  const fired: number[] = [];
  let wake: (() => void) | null = null;
  const w = new native.FdWatcher(a, (events) => {
    fired.push(events);
    const f = wake;
    wake = null;
    f?.();
  });
  const once = () => new Promise<void>((r) => (wake = r));

  let p = once();
  w.start(native.POLL_WRITABLE);
  await p;
  t.truthy(fired.at(-1)! & native.POLL_WRITABLE);

  native.write(b, Buffer.from('x'));
  p = once();
  w.start(native.POLL_READABLE | native.POLL_WRITABLE);
  await p;
  t.is(fired.at(-1)! & (native.POLL_READABLE | native.POLL_WRITABLE), native.POLL_READABLE | native.POLL_WRITABLE);

  native.read(a, new Uint8Array(8));
  w.start(native.POLL_READABLE); // nothing to read now
  w.stop();
  const count = fired.length;
  native.write(b, Buffer.from('y'));
  await new Promise((r) => setTimeout(r, 20));
  t.is(fired.length, count, 'stopped watcher stays silent');
  p = once();
  w.start(native.POLL_READABLE);
  await p;
  t.is(fired.at(-1), native.POLL_READABLE);
  w.close();
  w.close(); // idempotent
  a.close();
  b.close();
});

test('one watcher per fd: a second one throws EBUSY until the first is closed', (t) => {
  const efd = native.eventfdCreate();
  const w = new native.FdWatcher(efd, () => {});
  t.throws(() => new native.FdWatcher(efd, () => {}), { code: 'EBUSY' });
  t.throws(() => new native.FdWatcher(efd.fd, () => {}), { code: 'EBUSY' });
  w.close();
  const again = new native.FdWatcher(efd, () => {});
  again.close();
  efd.close();
});

test('a closed fd number reused by a new fd is unaffected by the old watcher', async (t) => {
  const first = native.eventfdCreate();
  const number = first.fd;
  const old = new native.FdWatcher(first, () => t.fail('old watcher fired'));
  old.start(native.POLL_READABLE);
  first.close();
  const second = native.eventfdCreate();
  t.is(second.fd, number, 'the kernel reused the lowest free number');
  native.eventfdWrite(second, 1);
  const r = await nextReady(second, native.POLL_READABLE);
  t.is(r.events, native.POLL_READABLE);
  old.close();
  second.close();
});

test('POLLERR: a refused loopback connect reports a negative status, then SO_ERROR says why', async (t) => {
  // find a closed port: bind, note it, close
  const probe = native.tcpListen('127.0.0.1', 0);
  const port = (native.getSockName(probe) as native.InetAddress).port;
  probe.close();
  const fd = native.tcpConnect('127.0.0.1', port);
  const r = await nextReady(fd, native.POLL_WRITABLE);
  if (r.status < 0) t.is(r.events, 0);
  else t.truthy(r.events & native.POLL_WRITABLE);
  t.is(native.errnoName(native.getSocketError(fd)), 'ECONNREFUSED');
  fd.close();
});

test('a connected fd released to net.Socket carries data; releasing closes the watcher', async (t) => {
  const server = createServer((s) => s.pipe(s)); // echo
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const fd = native.tcpConnect('127.0.0.1', port);
  let onReady: (f: Fired) => void = () => {};
  const ready = new Promise<Fired>((resolve) => (onReady = resolve));
  const w = new native.FdWatcher(fd, (events, status) => {
    w.stop();
    onReady({ events, status });
  });
  w.start(native.POLL_WRITABLE);
  const r = await ready;
  t.truthy(r.events & native.POLL_WRITABLE);
  t.is(native.getSocketError(fd), 0);
  const sock = new Socket({ fd: fd.release(), readable: true, writable: true });
  t.true(w.closed);
  const echoed = await new Promise<string>((resolve) => {
    sock.once('data', (d) => resolve(d.toString()));
    sock.write('ping over a released fd');
  });
  t.is(echoed, 'ping over a released fd');
  sock.destroy();
  await new Promise((r) => server.close(r));
});

test('an active watcher survives GC with no JS reference; a throwing callback reaches uncaughtException', (t) => {
  const script = `
    const m = require(${JSON.stringify(native.addonPath())});
    let fired = 0;
    const efd = m.eventfdCreate(0, false);
    (() => {
      const w = new m.FdWatcher(efd, () => {
        fired++;
        m.eventfdRead(efd);
        if (fired === 1) throw new Error('boom from callback');
        w.close();
        console.log(JSON.stringify({ fired, caught }));
      });
      w.start(m.POLL_READABLE);
    })();
    let caught = null;
    process.on('uncaughtException', (e) => {
      caught = e.message;
      m.eventfdWrite(efd, 1);
    });
    global.gc();
    setTimeout(() => { global.gc(); m.eventfdWrite(efd, 1); }, 10);
  `;
  const out = execFileSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 20_000 });
  t.deepEqual(JSON.parse(out.trim()), { fired: 2, caught: 'boom from callback' });
});

test('tcpConnect from a listening port: EADDRINUSE, unless both set SO_REUSEPORT (reusePort)', async (t) => {
  const lfd = native.tcpListen('127.0.0.1', 0);
  t.teardown(() => lfd.close());
  native.setsockoptInt(lfd, native.SOL_SOCKET, native.SO_REUSEPORT, 1);
  const port = (native.getSockName(lfd) as native.InetAddress).port;
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const dst = (server.address() as { port: number }).port;
  t.throws(() => native.tcpConnect('127.0.0.1', dst, { bindAddress: '127.0.0.1', bindPort: port }), { code: 'EADDRINUSE' });
  const fd = native.tcpConnect('127.0.0.1', dst, { bindAddress: '127.0.0.1', bindPort: port, reusePort: true });
  t.teardown(() => fd.close());
  t.is((native.getSockName(fd) as native.InetAddress).port, port);
});
