/**
 * AF_UNIX against the kernel: stream listen/accept/connect (filesystem and abstract names),
 * sendmsg/recvmsg with fds (an eventfd that keeps working across the socket, 16 fds in one
 * message, fds in scattered parts), datagram bind/connect/sendto/recvfrom as QEMU -netdev dgram
 * uses them.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as native from '../../src/native';

function tempDir(): { dir: string; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'usernet-native-'));
  return { dir, done: () => rmSync(dir, { recursive: true, force: true }) };
}

test('stream listen/accept/connect on a path and in the abstract namespace', (t) => {
  const { dir, done } = tempDir();
  for (const path of [join(dir, 'l.sock'), `@usernet-test-${process.pid}`]) {
    const listener = native.unixListen(path);
    t.is(native.unixAccept(listener), null, 'nothing pending');
    const client = native.unixConnect(path);
    const server = native.unixAccept(listener);
    t.truthy(server);
    t.is(native.write(client, Buffer.from('hi')), 2);
    const buf = new Uint8Array(4);
    t.is(native.read(server!, buf), 2);
    const name = native.getSockName(listener);
    t.deepEqual(name, { family: 'unix', path });
    t.deepEqual(native.getPeerName(client), { family: 'unix', path });
    client.close();
    server!.close();
    listener.close();
  }
  t.throws(() => native.unixConnect(join(dir, 'none.sock')), { code: 'ENOENT' });
  done();
});

test('sendmsg/recvmsg pass an eventfd that keeps working across the socket', (t) => {
  const [a, b] = native.unixSocketPair();
  const efd = native.eventfdCreate();
  t.is(native.sendmsg(a, Buffer.from('K'), [efd]), 1);
  const buf = new Uint8Array(8);
  const msg = native.recvmsg(b, buf)!;
  t.is(msg.bytes, 1);
  t.is(msg.fds.length, 1);
  t.is(msg.flags, 0);
  const received = msg.fds[0];
  t.true(native.isOwnedFd(received));
  t.not(received.fd, efd.fd);
  t.true(native.eventfdWrite(received, 7));
  t.is(native.eventfdRead(efd), 7, 'same counter behind both descriptors');
  t.is(native.recvmsg(b, buf), null, 'nothing more');
  received.close();
  efd.close();
  a.close();
  b.close();
});

test('16 fds in one message (vfio-user maximum), data in scattered parts', (t) => {
  const [a, b] = native.unixSocketPair();
  const fds = Array.from({ length: 16 }, (_, i) => native.memfdCreate(`region-${i}`, 4096));
  const header = Buffer.from('HEADER--');
  const body = Buffer.from('body');
  t.is(native.sendmsg(a, [header, body], fds), 12);
  const h = new Uint8Array(8);
  const rest = new Uint8Array(16);
  const msg = native.recvmsg(b, [h, rest])!;
  t.is(msg.bytes, 12);
  t.is(Buffer.from(h).toString(), 'HEADER--');
  t.is(Buffer.from(rest.subarray(0, 4)).toString(), 'body');
  t.is(msg.fds.length, 16);
  // each received fd is the same memory as the one sent: write through one mapping, read through the other
  for (let i = 0; i < 16; i++) {
    const mine = new Uint8Array(native.mmap(fds[i], 0, 4096));
    const theirs = new Uint8Array(native.mmap(msg.fds[i], 0, 4096));
    mine[0] = i + 1;
    t.is(theirs[0], i + 1);
    native.munmap(mine.buffer as ArrayBuffer);
    native.munmap(theirs.buffer as ArrayBuffer);
  }
  for (const fd of [...fds, ...msg.fds]) fd.close();
  a.close();
  b.close();
});

test('recvmsg reports end of stream as 0 bytes; sendmsg to a closed peer throws EPIPE', (t) => {
  const [a, b] = native.unixSocketPair();
  a.close();
  t.deepEqual(native.recvmsg(b, new Uint8Array(4)), { bytes: 0, fds: [], flags: 0 });
  b.close();
  const [c, d] = native.unixSocketPair();
  d.close();
  t.throws(() => native.sendmsg(c, Buffer.from('x')), { code: 'EPIPE' });
  c.close();
});

test('datagram sockets: bind + connect (QEMU -netdev dgram), sendto/recvfrom with paths', (t) => {
  const { dir, done } = tempDir();
  const qemuSide = join(dir, 'qemu.sock');
  const ourSide = join(dir, 'usernet.sock');
  const qemu = native.unixDgram({ bind: qemuSide });
  const ours = native.unixDgram({ bind: ourSide, connect: qemuSide });
  // connected: plain write / readFrames work
  t.is(native.write(ours, Buffer.from('frame-1')), 7);
  const buf = new Uint8Array(64);
  t.deepEqual(native.unixRecvFrom(qemu, buf), { bytes: 7, path: ourSide });
  t.is(native.unixSendTo(qemu, Buffer.from('frame-2'), ourSide), 7);
  const slab = new native.FrameSlab(4, 64);
  t.is(slab.read(ours), 1);
  t.is(Buffer.from(slab.frame(0)).toString(), 'frame-2');
  t.is(native.unixRecvFrom(qemu, buf), null);
  // an unbound sender has no path
  const anon = native.unixDgram();
  native.unixSendTo(anon, Buffer.from('x'), qemuSide);
  t.deepEqual(native.unixRecvFrom(qemu, buf), { bytes: 1, path: null });
  const connected = native.unixConnect(qemuSide, native.SOCK_DGRAM);
  t.is(native.write(connected, Buffer.from('yz')), 2);
  t.is(native.unixRecvFrom(qemu, buf)!.bytes, 2);
  for (const fd of [qemu, ours, anon, connected]) fd.close();
  done();
});
