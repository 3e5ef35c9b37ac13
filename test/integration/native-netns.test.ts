/**
 * The setns dance: fds made "inside" a namespace (by name, by /proc/PID/ns/net of a process
 * living there) belong to it, and the calling thread is back in its own namespace afterwards —
 * after failures too.
 */
import { readlinkSync, statSync } from 'node:fs';
import { testIf } from '../helpers/env';
import { withSandbox } from '../helpers/netns';
import * as native from '../../src/native';

const test = testIf('root', 'netns');

const here = (): string => readlinkSync('/proc/thread-self/ns/net');

test('sockets made by name or by PID live in that namespace; the thread returns home', async (t) => {
  await withSandbox(async (sb) => {
    const home = here();
    const ns = await sb.netns('setns');
    await sb.must(['ip', 'addr', 'add', '10.99.0.1/32', 'dev', 'lo'], ns);

    // 10.99.0.1 exists only there: binding works inside, fails here
    const inside = native.udpSocket(4, { netns: ns, address: '10.99.0.1' });
    t.is(here(), home);
    t.throws(() => native.udpSocket(4, { address: '10.99.0.1' }), { code: 'EADDRNOTAVAIL' });

    const sleeper = sb.spawn(ns, ['sleep', '60']);
    // wait until `ip netns exec` has entered the namespace (same nsfs inode)
    const target = statSync(`/var/run/netns/${ns}`).ino;
    while (statSync(`/proc/${sleeper.pid!}/ns/net`).ino !== target) await new Promise((r) => setTimeout(r, 10));
    const byPid = native.udpSocket(4, { netns: sleeper.pid!, address: '10.99.0.1' });
    t.is(here(), home);

    // a generic socket there, and loopback isolation: a listener on 127.0.0.1 inside is not ours
    const raw = native.socketInNetns(ns, native.AF_INET, native.SOCK_DGRAM, 0);
    t.is(native.getsockoptInt(raw, native.SOL_SOCKET, 3 /* SO_TYPE */), native.SOCK_DGRAM);
    const listener = native.tcpListen('127.0.0.1', 0, { netns: ns });
    const port = (native.getSockName(listener) as native.InetAddress).port;
    const fromInside = native.tcpConnect('127.0.0.1', port, { netns: ns });
    await new Promise<void>((resolve) => {
      const w = new native.FdWatcher(fromInside, () => {
        w.close();
        resolve();
      });
      w.start(native.POLL_WRITABLE);
    });
    t.is(native.getSocketError(fromInside), 0);
    const accepted = native.unixAccept(listener); // accept4 works on any stream socket
    t.truthy(accepted);

    // failures inside the namespace still restore it
    t.throws(() => native.tapOpen('x', 0xffff, ns));
    t.throws(() => native.tcpConnect('127.0.0.1', 1, { netns: ns, bindAddress: '10.55.0.1' }), { code: 'EADDRNOTAVAIL' });
    t.throws(() => native.socketInNetns(ns, 63, native.SOCK_DGRAM, 0), { code: 'EAFNOSUPPORT' });
    t.throws(() => native.socketInNetns('/proc/self/ns/uts', native.AF_INET, native.SOCK_DGRAM, 0), { code: 'EINVAL' });
    t.is(here(), home);

    for (const fd of [inside, byPid, raw, listener, fromInside, accepted!]) fd.close();
  });
});
