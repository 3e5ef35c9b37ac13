/**
 * The addon's TCP stream calls (native/src/tcpstream.c) on real loopback sockets: peek at an
 * offset without consuming, discard without copying, send a slice, queue sizes, half-close,
 * abortive close.
 */
import anyTest, { type TestFn } from 'ava';
import net from 'node:net';
import { addon, addonLoadError, type OwnedFd } from '../../src/native/binding';
import { tcpConnect } from '../../src/native/sockets';
import { FdWatcher, POLL_WRITABLE } from '../../src/native/watcher';
import { fdHostSocketsAvailable } from '../../src/backends/nat/tcp-host-fd';

interface TcpStreamAddon {
  tcpPeek(fd: OwnedFd, buf: Uint8Array, off: number, len: number, streamOffset: number): number;
  tcpDiscard(fd: OwnedFd, len: number): number;
  tcpSendAt(fd: OwnedFd, buf: Uint8Array, off: number, len: number): number;
  tcpShutdown(fd: OwnedFd, how: number): number;
  tcpSetLingerZero(fd: OwnedFd): number;
  tcpQueues(fd: OwnedFd, out: Int32Array): number;
}

const test: TestFn = !addonLoadError && fdHostSocketsAvailable() ? anyTest : (anyTest.skip as unknown as TestFn);
const A = (): TcpStreamAddon => addon as unknown as TcpStreamAddon;

async function pair(): Promise<{ fd: OwnedFd; peer: net.Socket; server: net.Server }> {
  let peer!: net.Socket;
  const server = net.createServer({ allowHalfOpen: true });
  const accepted = new Promise<void>((r) => {
    server.once('connection', (s) => {
      peer = s;
      r();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const fd = tcpConnect('127.0.0.1', port);
  await new Promise<void>((r) => {
    const w = new FdWatcher(fd, () => {
      w.close();
      r();
    });
    w.start(POLL_WRITABLE);
  });
  await accepted;
  return { fd, peer, server };
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
}

test('peek at offsets, discard, queues', async (t) => {
  const { fd, peer, server } = await pair();
  try {
    peer.write('0123456789abcdef');
    const q = new Int32Array(3);
    await until(() => (A().tcpQueues(fd, q), q[0] === 16));
    t.is(q[0], 16, 'SIOCINQ');
    t.true(q[2] > 0, 'SO_SNDBUF');
    const buf = new Uint8Array(32);
    t.is(A().tcpPeek(fd, buf, 4, 6, 10), 6);
    t.is(Buffer.from(buf.subarray(4, 10)).toString(), 'abcdef');
    t.is(A().tcpPeek(fd, buf, 0, 4, 0), 4, 'the same bytes again from the start');
    t.is(Buffer.from(buf.subarray(0, 4)).toString(), '0123');
    t.is(A().tcpDiscard(fd, 10), 10);
    t.is(A().tcpPeek(fd, buf, 0, 16, 0), 6);
    t.is(Buffer.from(buf.subarray(0, 6)).toString(), 'abcdef');
    t.is(A().tcpPeek(fd, buf, 0, 16, 6), -11, 'nothing past the end: EAGAIN');
    t.throws(() => A().tcpPeek(fd, buf, 30, 16, 0), { instanceOf: RangeError });
    // A slice out, then half-close: the peer sees the bytes and the end.
    const got: Buffer[] = [];
    peer.on('data', (d) => got.push(d));
    const ended = new Promise((r) => peer.once('end', r));
    t.is(A().tcpSendAt(fd, Buffer.from('xxhello'), 2, 5), 5);
    t.is(A().tcpShutdown(fd, 1), 0);
    await ended;
    t.is(Buffer.concat(got).toString(), 'hello');
    // The peer ends too: a peek at the end reads EOF (0).
    peer.end();
    await until(() => A().tcpPeek(fd, buf, 0, 1, 6) === 0);
    t.is(A().tcpPeek(fd, buf, 0, 1, 6), 0);
  } finally {
    fd.close();
    peer.destroy();
    server.close();
  }
});

test('linger zero makes close() a reset', async (t) => {
  const { fd, peer, server } = await pair();
  try {
    const outcome = new Promise<string>((r) => {
      peer.once('error', (e: NodeJS.ErrnoException) => r(e.code ?? 'error'));
      peer.once('end', () => r('end'));
    });
    peer.resume();
    t.is(A().tcpSetLingerZero(fd), 0);
    fd.close();
    t.is(await outcome, 'ECONNRESET');
  } finally {
    peer.destroy();
    server.close();
  }
});
